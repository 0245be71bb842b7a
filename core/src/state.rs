//! The job lifecycle: `queued` → `setting_up` → `executing` → `succeeded` | `failed` |
//! `cancelled`, and `rejected` for a submission that was never valid.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a job is in its life. The names are the wire and storage names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Recorded; no pod exists for the current attempt yet.
    Queued,
    /// The pod exists but its container is not running yet (scheduling, image pull).
    SettingUp,
    /// The container is running.
    Executing,
    /// The container exited with code 0.
    Succeeded,
    /// The attempt ended without success (the record says which failure class).
    Failed,
    /// Cancelled on request; never reported as failed.
    Cancelled,
    /// The submission was never valid; nothing was run.
    Rejected,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        Self::Queued,
        Self::SettingUp,
        Self::Executing,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Rejected,
    ];

    /// The storage and wire name (`setting_up`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::SettingUp => "setting_up",
            Self::Executing => "executing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }

    /// Active jobs are the ones the reconciler follows (and the only ones in the
    /// active-jobs index).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::SettingUp | Self::Executing)
    }

    /// Terminal states end an attempt; only a retry leaves them.
    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }

    /// Whether a job in `self` may move to `next`.
    ///
    /// Forward moves may skip states (a pod can finish between two observations), a
    /// retry takes a failed or cancelled job back to `queued` with a new attempt, and
    /// `rejected` is final: a submission that was never valid is never run.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Queued, SettingUp | Executing | Succeeded | Failed | Cancelled)
                | (SettingUp, Executing | Succeeded | Failed | Cancelled)
                // Put back to wait: the cluster had no room for the pod (a new attempt,
                // not a failed one).
                | (SettingUp, Queued)
                // A waiting job whose reason to wait changed.
                | (Queued, Queued)
                | (Executing, Succeeded | Failed | Cancelled)
                | (Failed | Cancelled, Queued)
                // A failed attempt whose retry is owed, cancelled before it is written.
                | (Failed, Cancelled)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`JobState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown job state {0:?}: expected one of queued, setting_up, executing, succeeded, failed, cancelled, rejected"
)]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| UnknownState(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::{self, *};

    #[test]
    fn names_round_trip_through_text_and_json() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{state}\""));
        }
        let error = "running".parse::<JobState>().unwrap_err();
        assert!(error.to_string().contains("\"running\""));
    }

    #[test]
    fn active_and_terminal_partition_the_states() {
        let active: Vec<_> = JobState::ALL.into_iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, [Queued, SettingUp, Executing]);
        assert!(JobState::ALL.into_iter().all(|s| s.is_active() != s.is_terminal()));
    }

    #[test]
    fn transitions() {
        let check = |from: JobState, to: JobState, allowed: bool| {
            assert_eq!(from.can_become(to), allowed, "{from} -> {to}");
        };
        check(Queued, SettingUp, true);
        check(SettingUp, Executing, true);
        check(Executing, Succeeded, true);
        check(SettingUp, Succeeded, true);
        check(Queued, Cancelled, true);
        check(Failed, Queued, true);
        check(Cancelled, Queued, true);
        check(Succeeded, Queued, false);
        check(Executing, SettingUp, false);
        check(Succeeded, Failed, false);
        check(Cancelled, Failed, false);
        check(Failed, Cancelled, true);
        check(Succeeded, Cancelled, false);
        check(SettingUp, Queued, true);
        check(Executing, Queued, false);
        for state in JobState::ALL {
            check(Rejected, state, false);
            check(state, Rejected, false);
            // Only a waiting job changes its reason to wait without changing its state.
            check(state, state, state == Queued);
        }
    }
}
