//! Goal lifecycle (FHIR Goal.lifecycleStatus subset) and achievement status.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    Proposed,
    Active,
    OnHold,
    Completed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Achievement {
    InProgress,
    Improving,
    Worsening,
    NoChange,
    Achieved,
    NotAchieved,
}

macro_rules! codes {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn code(self) -> &'static str { match self { $(Self::$v => $s),* } }
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some(Self::$v),)* _ => None } }
        }
    };
}
codes!(Lifecycle { Proposed => "proposed", Active => "active", OnHold => "on-hold", Completed => "completed", Cancelled => "cancelled" });
codes!(Achievement { InProgress => "in-progress", Improving => "improving", Worsening => "worsening", NoChange => "no-change", Achieved => "achieved", NotAchieved => "not-achieved" });

impl Lifecycle {
    /// Completed and cancelled goals are closed.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }
}

/// Whether a goal may move from `from` to `to`.
pub fn can_transition(from: Lifecycle, to: Lifecycle) -> bool {
    use Lifecycle::*;
    from == to
        || matches!(
            (from, to),
            (Proposed, Active | Cancelled) | (Active, OnHold | Completed | Cancelled) | (OnHold, Active | Cancelled)
        )
}

/// Checks a goal's status pair after a change. A completed goal must say whether
/// it was achieved; an open goal cannot be "achieved"/"not-achieved" yet.
pub fn check_state(lifecycle: Lifecycle, achievement: Achievement) -> Result<(), String> {
    let final_achievement = matches!(achievement, Achievement::Achieved | Achievement::NotAchieved);
    match lifecycle {
        Lifecycle::Completed if !final_achievement => {
            Err("a completed goal needs achievement_status achieved or not-achieved".into())
        }
        Lifecycle::Proposed | Lifecycle::Active | Lifecycle::OnHold if final_achievement => {
            Err("achieved / not-achieved is only valid for a completed or cancelled goal".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Lifecycle::*;

    #[test]
    fn transitions() {
        assert!(can_transition(Proposed, Active));
        assert!(can_transition(Active, OnHold));
        assert!(can_transition(OnHold, Active));
        assert!(can_transition(Active, Completed));
        assert!(!can_transition(Completed, Active));
        assert!(!can_transition(Cancelled, Active));
        assert!(!can_transition(Proposed, Completed));
        assert!(!can_transition(OnHold, Completed));
    }

    #[test]
    fn state_consistency() {
        assert!(check_state(Completed, Achievement::Achieved).is_ok());
        assert!(check_state(Completed, Achievement::Improving).is_err());
        assert!(check_state(Active, Achievement::Achieved).is_err());
        assert!(check_state(Active, Achievement::Improving).is_ok());
        assert!(check_state(Cancelled, Achievement::NotAchieved).is_ok());
    }

    #[test]
    fn codes_round_trip() {
        for l in [Proposed, Active, OnHold, Completed, Cancelled] {
            assert_eq!(Lifecycle::parse(l.code()), Some(l));
        }
        assert_eq!(Achievement::parse("no-change"), Some(Achievement::NoChange));
        assert_eq!(Achievement::parse("done"), None);
    }
}
