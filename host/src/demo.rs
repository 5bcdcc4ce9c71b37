//! `posta demo`: seeds a list across timezones, sends a campaign through
//! the log transport with a progress bar, and shows where to look next.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::domain::{CampaignDraft, Email, NewSubscriber, Status};
use crate::server::Instance;

const ZONES: &[&str] = &[
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Africa/Lagos",
    "Asia/Tokyo",
];

/// The demo campaign's templates; the benchmarks render the same ones.
pub const SUBJECT: &str = "Hello {{ subscriber.name }}";
pub const HTML: &str = "<p>Hi {{ subscriber.name }}, you are on the {{ subscriber.attributes.plan }} plan.</p>\
                        <p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>";
pub const TEXT: &str = "Hi {{ subscriber.name }}, you are on the {{ subscriber.attributes.plan }} plan.\n\
                        Unsubscribe: {{ unsubscribe_url }}\n";

pub async fn run(mut config: Config, data_dir: Option<PathBuf>, subscribers: usize) -> anyhow::Result<()> {
    let dir = match data_dir {
        Some(d) => d,
        None => tempfile::Builder::new().prefix("posta-demo-").tempdir()?.keep(),
    };
    config.server.data_dir = dir;
    let instance = Instance::start(config).await?;
    let store = instance.store.clone();
    let (user, key) = store
        .create_user(format!("demo-{}@posta.localhost", Utc::now().timestamp_millis()))
        .await?;
    store.add_domain(user.id, "posta.localhost".into(), Utc::now()).await?;
    let list = store.create_list(user.id, "Demo readers".into()).await?;
    let people: Vec<NewSubscriber> = (0..subscribers)
        .map(|i| NewSubscriber {
            email: Email::parse(&format!("reader{i}@example.org")).expect("a valid address"),
            name: format!("Reader {i}"),
            timezone: Some(ZONES[i % ZONES.len()].to_string()),
            attributes: serde_json::json!({"plan": if i % 3 == 0 { "pro" } else { "free" }})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            status: Default::default(),
        })
        .collect();
    for chunk in people.chunks(5_000) {
        store.upsert_subscribers(user.id, list.id, chunk.to_vec()).await?;
    }
    let draft = CampaignDraft {
        name: "Posta demo".into(),
        subject: SUBJECT.into(),
        from_email: "demo@posta.localhost".into(),
        from_name: "Posta".into(),
        list_id: Some(list.id),
        segment_id: None,
        track_opens: false,
        track_clicks: false,
        ab_test: None,
        html: HTML.into(),
        text: TEXT.into(),
        transport: Some("log".into()),
        send_rate: None,
        send_at_local_time: false,
        scheduled_at: None,
    };
    let campaign = store.create_campaign(user.id, draft, "log".into(), Utc::now()).await?;
    let started = Instant::now();
    let campaign = store.send(user.id, campaign.id, Utc::now()).await?;
    instance.engine.kick(&campaign);

    let bar = ProgressBar::new(campaign.stats.total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} sending [{bar:40}] {pos}/{len} {per_sec} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let done = loop {
        let c = store.campaign_by_id(campaign.id).await?;
        bar.set_position(c.stats.finished());
        if c.status == Status::Sent {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let outbox = instance.data_dir.join("outbox").join("outbox.jsonl");
    println!(
        "sent campaign {} to {} subscribers in {secs:.2} s ({:.0} messages/s)",
        done.id,
        done.stats.total,
        done.stats.finished() as f64 / secs
    );
    println!("stats: {}", serde_json::to_string(&done.stats)?);
    println!("outbox: {}", outbox.display());
    println!();
    println!("explore it:");
    // As the user can run it from where they are: through cargo when the
    // demo came from `cargo run`, else the binary they started.
    let posta = if std::env::var_os("CARGO").is_some() {
        "cargo run --".to_string()
    } else {
        std::env::args().next().unwrap_or_else(|| "posta".into())
    };
    println!("  {posta} serve --data-dir {}", instance.data_dir.display());
    println!(
        "  curl -H 'Authorization: Bearer {key}' http://{}/api/v1/users/me/campaigns/{}",
        instance.config.server.listen, done.id
    );
    println!(
        "  or open http://{}/ and sign in with that key (the dashboard)",
        instance.config.server.listen
    );
    Ok(())
}
