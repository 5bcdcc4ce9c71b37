//! A resume that lands while the campaign's driver is ending on the pause
//! before it must still find a driver: the campaign may not stay `sending`
//! with nothing to move it. The driver ends at once on a pause when it has
//! nothing in flight, as in an A/B test's wait; pauses and resumes follow
//! each other here with no HTTP between them, hundreds of times. The
//! window is narrow (it opens when the machine is loaded, as on CI); with
//! a 3 ms sleep put before the driver's exit, the code before the fix
//! failed this test on every run.

use std::time::{Duration, Instant};

use posta::domain::ab::{AbTestSetup, Metric, Variant};
use posta::domain::{Action, CampaignDraft, Status};

use crate::support::{self, t};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_while_the_driver_ends_on_a_pause_still_drives_the_campaign() {
    let running = support::running(false, "2026-06-01T10:00:00Z", |_| {}).await;
    let (store, engine, clock) = (&running.store, &running.engine, &running.clock);
    let (user, list) = support::readers(store, "ab@example.org", 20).await;
    let variant = |s: &str| Variant {
        subject: Some(s.into()),
        ..Variant::default()
    };
    let draft = CampaignDraft {
        from_email: "a@example.org".into(),
        track_opens: true,
        ab_test: Some(AbTestSetup {
            variants: vec![variant("A"), variant("B")],
            test_share: 0.5,
            metric: Metric::Opens,
            wait_minutes: 30,
        }),
        ..CampaignDraft::minimal(list)
    };
    let c = store
        .create_campaign(user, draft, "log".into(), engine.now())
        .await
        .unwrap();
    let c = store.send(user, c.id, engine.now()).await.unwrap();
    engine.kick(&c);

    // The test goes out; the decision waits for the (manual) clock.
    let start = Instant::now();
    while store
        .campaign(user, c.id)
        .await
        .unwrap()
        .ab_test
        .unwrap()
        .decides_at
        .is_none()
    {
        assert!(start.elapsed() < Duration::from_secs(30), "the test never went out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for round in 0..500u32 {
        for action in [Action::Pause, Action::Resume] {
            let now = engine.now();
            let c = store.act(user, c.id, action, now).await.unwrap();
            engine.kick(&c);
        }
        // Now and then a little time for the driver to reach its end.
        if round % 3 == 0 {
            tokio::time::sleep(Duration::from_micros(u64::from(round % 7) * 100)).await;
        }
    }

    // Only a driver decides the test and sends the rest.
    clock.set(t("2026-06-01T11:00:00Z"));
    let start = Instant::now();
    loop {
        let now = store.campaign(user, c.id).await.unwrap();
        if now.status == Status::Sent {
            assert_eq!(now.stats.sent, 20);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "left {:?} with nobody driving it: {:?}",
            now.status,
            now.stats
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
