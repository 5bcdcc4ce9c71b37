//! Campaign use cases: create, edit, send and the lifecycle actions, each
//! after the checks the change needs.

use chrono::Utc;

use super::{App, AppError};
use crate::domain::campaign::audience_list;
use crate::domain::segment::Segment;
use crate::domain::{Action, Campaign, CampaignDraft, CampaignId, CampaignPatch, FieldError, SegmentId, UserId};
use crate::engine::RenderError;
use crate::plugins::PluginError;
use crate::store::StoreError;

/// Creates a draft after every check (transport, fields, sender domain,
/// templates).
pub async fn create(app: &App, user: UserId, mut draft: CampaignDraft) -> Result<Campaign, AppError> {
    let segment = segment_named(app, user, draft.segment_id).await?;
    draft.list_id = Some(audience_list(draft.list_id, segment.as_ref())?);
    let preview = unsaved(app, user, draft.clone())?;
    preview.validate()?;
    check_from(app, user, &preview.from_email).await?;
    check_templates(app, &preview).await?;
    let transport = preview.transport;
    Ok(app.store.create_campaign(user, draft, transport, Utc::now()).await?)
}

/// The campaign a draft body would make, not stored (id 0): its transport
/// defaulted and checked. What create validates, and the dashboard previews.
pub fn unsaved(app: &App, user: UserId, draft: CampaignDraft) -> Result<Campaign, AppError> {
    let transport = draft
        .transport
        .clone()
        .unwrap_or_else(|| app.engine.default_transport());
    app.engine.check_transport(&transport)?;
    Ok(Campaign::from_draft(
        CampaignId::new(0),
        user,
        draft,
        transport,
        Utc::now(),
    ))
}

/// Edits a draft after the same checks as creating one.
pub async fn update(app: &App, user: UserId, id: CampaignId, patch: CampaignPatch) -> Result<Campaign, AppError> {
    if let Some(t) = &patch.transport {
        app.engine.check_transport(t)?;
    }
    let mut preview = app.store.campaign(user, id).await?;
    crate::domain::lifecycle::transition(preview.status, Action::Edit)?;
    preview.apply(patch.clone());
    // A new segment brings its list unless the patch names one; any
    // segment must be of the campaign's list.
    let segment = segment_named(app, user, preview.segment_id).await?;
    let list_given = match patch.segment_id {
        Some(Some(_)) => patch.list_id,
        _ => Some(preview.list_id),
    };
    let list = audience_list(list_given, segment.as_ref())?;
    let mut patch = patch;
    if list != preview.list_id {
        patch.list_id = Some(list);
        preview.list_id = list;
    }
    preview.validate()?;
    check_from(app, user, &preview.from_email).await?;
    check_templates(app, &preview).await?;
    Ok(app.store.edit_campaign(user, id, patch, Utc::now()).await?)
}

/// Sends (or schedules) a draft whose transport, sender domain and
/// templates still check; the engine gets the campaign as stored.
pub async fn send(app: &App, user: UserId, id: CampaignId) -> Result<Campaign, AppError> {
    let current = app.store.campaign(user, id).await?;
    crate::domain::lifecycle::transition(current.status, Action::Send { future: false })?;
    // Starting a segment's send reads its whole list, like a count.
    let _scan = match current.segment_id {
        Some(_) if !current.starts_after(app.engine.now()) => Some(super::segments::place(&app.scans, user)?),
        _ => None,
    };
    app.engine.check_transport(&current.transport)?;
    let segment = segment_named(app, user, current.segment_id).await?;
    audience_list(Some(current.list_id), segment.as_ref())?;
    // Checked again: the domain may have been taken away since the draft.
    check_from(app, user, &current.from_email).await?;
    check_templates(app, &current).await?;
    let now = app.engine.now();
    let c = app.store.send(user, id, now).await?;
    app.engine.kick(&c);
    Ok(c)
}

/// Pause, resume and cancel: the transition, then the engine reacts. A
/// resume checks the sender domain again.
pub async fn act(app: &App, user: UserId, id: CampaignId, action: Action) -> Result<Campaign, AppError> {
    if action == Action::Resume {
        let current = app.store.campaign(user, id).await?;
        check_from(app, user, &current.from_email).await?;
    }
    let c = app.store.act(user, id, action, Utc::now()).await?;
    app.engine.kick(&c);
    Ok(c)
}

/// Picks the winner of a campaign's A/B test before its metric would: the
/// rest of the audience gets variant `variant`.
pub async fn pick_winner(app: &App, user: UserId, id: CampaignId, variant: u8) -> Result<Campaign, AppError> {
    let current = app.store.campaign(user, id).await?;
    let Some(ab) = &current.ab_test else {
        return Err(StoreError::Conflict("the campaign has no A/B test".into()).into());
    };
    if let Some(w) = ab.winner {
        return Err(StoreError::Conflict(format!("the A/B test is decided: variant {w} won")).into());
    }
    if usize::from(variant) >= ab.variants.len() {
        return Err(FieldError::new(
            "variant",
            format!("the test has variants 0 to {}", ab.variants.len() - 1),
        )
        .into());
    }
    act(app, user, id, Action::PickWinner { variant }).await
}

/// The segment a campaign names, if it names one; one the user does not
/// have is a field error, not a 404 (the campaign is what was asked for).
async fn segment_named(app: &App, user: UserId, id: Option<SegmentId>) -> Result<Option<Segment>, AppError> {
    let Some(id) = id else { return Ok(None) };
    match app.store.segment(user, id).await {
        Ok(s) => Ok(Some(s)),
        Err(StoreError::NotFound) => Err(FieldError::new("segment_id", format!("no segment {}", id.get())).into()),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a `from_email` that is not on one of `user`'s sender domains
/// (a field error naming `from_email`).
pub async fn check_from(app: &App, user: UserId, from_email: &str) -> Result<(), AppError> {
    let domains = app.store.domains(user).await?;
    Ok(crate::domain::sender::check_from(from_email, &domains)?)
}

/// Refuses templates the personalizer cannot compile, with its message:
/// the campaign's, then each A/B variant's (named `ab_test.variants[i].…`).
async fn check_templates(app: &App, c: &Campaign) -> Result<(), AppError> {
    check_template(app, c, "").await?;
    for (i, v) in c.variants().iter().enumerate() {
        check_template(app, v, &format!("ab_test.variants[{i}].")).await?;
    }
    Ok(())
}

async fn check_template(app: &App, c: &Campaign, field_prefix: &str) -> Result<(), AppError> {
    match app.engine.validate(c).await {
        Ok(()) => Ok(()),
        Err(RenderError::Template(e)) => {
            Err(crate::domain::FieldError::new(format!("{field_prefix}{}", e.part.field()), e.message).into())
        }
        // No instance could be had now: the client may retry shortly.
        Err(RenderError::Unavailable(e @ PluginError::Instantiate { .. })) => Err(AppError::Busy(format!(
            "the templates cannot be checked right now, try again: {e}"
        ))),
        // Compiling the templates themselves ran out of time or memory.
        Err(e) => Err(crate::domain::FieldError::new(
            format!("{field_prefix}html"),
            format!("the templates cannot be compiled: {e}"),
        )
        .into()),
    }
}
