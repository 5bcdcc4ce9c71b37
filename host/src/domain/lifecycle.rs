//! The campaign lifecycle as a total function over (status, action).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Draft,
    Scheduled,
    Sending,
    Paused,
    Cancelled,
    Sent,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Draft,
        Status::Scheduled,
        Status::Sending,
        Status::Paused,
        Status::Cancelled,
        Status::Sent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Scheduled => "scheduled",
            Status::Sending => "sending",
            Status::Paused => "paused",
            Status::Cancelled => "cancelled",
            Status::Sent => "sent",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Final statuses never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Cancelled | Status::Sent)
    }

    /// Started and not final: the campaign may still change by itself (a
    /// schedule fires, a send completes), so it holds its list (which
    /// cannot be deleted meanwhile) and is followed across nodes.
    pub const UNDER_WAY: [Status; 3] = [Status::Scheduled, Status::Sending, Status::Paused];

    pub fn is_under_way(self) -> bool {
        Status::UNDER_WAY.contains(&self)
    }

    /// Whether a campaign in this status has a driver: messages to send
    /// (sending), or queued ones to settle (paused, cancelled).
    pub fn has_messages_to_settle(self) -> bool {
        matches!(self, Status::Sending | Status::Paused | Status::Cancelled)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can happen to a campaign, from the API or the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// POST …/send; `future` when scheduled_at lies ahead of now.
    Send {
        future: bool,
    },
    /// The scheduler fires: scheduled_at (or the earliest local time) arrived.
    Fire,
    Pause,
    Resume,
    Cancel,
    /// Every message has a final outcome.
    Complete,
    /// PATCH.
    Edit,
    Delete,
    Duplicate,
    /// Picks the winner of a campaign's A/B test (the status stays).
    PickWinner {
        variant: u8,
    },
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::Send { future: false },
        Action::Send { future: true },
        Action::Fire,
        Action::Pause,
        Action::Resume,
        Action::Cancel,
        Action::Complete,
        Action::Edit,
        Action::Delete,
        Action::Duplicate,
        Action::PickWinner { variant: 0 },
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Send { .. } => "send",
            Action::Fire => "fire",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
            Action::Complete => "complete",
            Action::Edit => "edit",
            Action::Delete => "delete",
            Action::Duplicate => "duplicate",
            Action::PickWinner { .. } => "pick the A/B winner of",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a campaign that is {status}", action.name())]
pub struct TransitionError {
    pub status: Status,
    pub action: Action,
}

/// The status after `action`, or the error naming both. Actions that do not
/// change the status of the campaign they act on (edit, delete, duplicate)
/// return it unchanged when allowed.
pub fn transition(status: Status, action: Action) -> Result<Status, TransitionError> {
    use Action as A;
    use Status as S;
    let next = match (status, action) {
        (S::Draft, A::Send { future: false }) => S::Sending,
        (S::Draft, A::Send { future: true }) => S::Scheduled,
        (S::Scheduled, A::Fire) => S::Sending,
        (S::Sending, A::Pause) => S::Paused,
        (S::Paused, A::Resume) => S::Sending,
        (S::Sending | S::Paused | S::Scheduled, A::Cancel) => S::Cancelled,
        (S::Sending, A::Complete) => S::Sent,
        (S::Draft, A::Edit) => S::Draft,
        (s, A::Delete) if s != S::Sending => s,
        (s, A::Duplicate) => s,
        (s @ (S::Sending | S::Paused), A::PickWinner { .. }) => s,
        _ => return Err(TransitionError { status, action }),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Status as S;

    /// The full table, written out independently of `transition`'s match:
    /// every (status, action) pair appears once.
    fn expected(status: Status, action: Action) -> Option<Status> {
        let table: &[(Status, &[(Action, Status)])] = &[
            (
                S::Draft,
                &[
                    (A::Send { future: false }, S::Sending),
                    (A::Send { future: true }, S::Scheduled),
                    (A::Edit, S::Draft),
                    (A::Delete, S::Draft),
                    (A::Duplicate, S::Draft),
                ],
            ),
            (
                S::Scheduled,
                &[
                    (A::Fire, S::Sending),
                    (A::Cancel, S::Cancelled),
                    (A::Delete, S::Scheduled),
                    (A::Duplicate, S::Scheduled),
                ],
            ),
            (
                S::Sending,
                &[
                    (A::Pause, S::Paused),
                    (A::Cancel, S::Cancelled),
                    (A::Complete, S::Sent),
                    (A::Duplicate, S::Sending),
                    (A::PickWinner { variant: 0 }, S::Sending),
                ],
            ),
            (
                S::Paused,
                &[
                    (A::Resume, S::Sending),
                    (A::Cancel, S::Cancelled),
                    (A::Delete, S::Paused),
                    (A::Duplicate, S::Paused),
                    (A::PickWinner { variant: 0 }, S::Paused),
                ],
            ),
            (S::Cancelled, &[(A::Delete, S::Cancelled), (A::Duplicate, S::Cancelled)]),
            (S::Sent, &[(A::Delete, S::Sent), (A::Duplicate, S::Sent)]),
        ];
        table
            .iter()
            .find(|(s, _)| *s == status)
            .and_then(|(_, row)| row.iter().find(|(a, _)| *a == action).map(|(_, n)| *n))
    }

    #[test]
    fn every_status_times_every_action() {
        let mut checked = 0;
        for status in Status::ALL {
            for action in Action::ALL {
                let got = transition(status, action);
                match expected(status, action) {
                    Some(next) => assert_eq!(got, Ok(next), "{status} × {action:?}"),
                    None => {
                        let err = got.expect_err(&format!("{status} × {action:?} must be refused"));
                        assert_eq!(err, TransitionError { status, action });
                        let text = err.to_string();
                        assert!(text.contains(status.as_str()) && text.contains(action.name()), "{text}");
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 66);
    }

    #[test]
    fn final_statuses_only_allow_delete_and_duplicate() {
        for status in Status::ALL.into_iter().filter(|s| s.is_final()) {
            for action in Action::ALL {
                let ok = transition(status, action).is_ok();
                assert_eq!(ok, matches!(action, A::Delete | A::Duplicate), "{status} × {action:?}");
            }
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(Status::parse("SENT"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn action() -> impl Strategy<Value = Action> {
        proptest::sample::select(Action::ALL.to_vec())
    }

    proptest! {
        /// Any sequence of actions from a new draft keeps the lifecycle's
        /// invariants; refused actions change nothing.
        #[test]
        fn random_action_sequences_keep_the_invariants(actions in proptest::collection::vec(action(), 0..64)) {
            let mut status = Status::Draft;
            let mut left_draft = false;
            for a in actions {
                match transition(status, a) {
                    Ok(next) => {
                        // Final statuses are never left.
                        if status.is_final() {
                            prop_assert_eq!(next, status);
                        }
                        // Nothing returns to draft once it left it.
                        if left_draft {
                            prop_assert_ne!(next, Status::Draft);
                        }
                        // Sent is reached only by completing a send.
                        if next == Status::Sent && status != Status::Sent {
                            prop_assert_eq!((status, a), (Status::Sending, Action::Complete));
                        }
                        // Sending is reached only from draft, scheduled or paused.
                        if next == Status::Sending && status != Status::Sending {
                            prop_assert!(matches!(status, Status::Draft | Status::Scheduled | Status::Paused));
                        }
                        left_draft |= next != Status::Draft;
                        status = next;
                    }
                    Err(e) => {
                        prop_assert_eq!(e.status, status);
                        prop_assert_eq!(e.action, a);
                    }
                }
            }
        }
    }
}
