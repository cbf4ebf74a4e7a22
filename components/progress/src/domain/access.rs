//! Who may do what. Record-scoped actions also need a relation between the
//! user and the client record.

use edge_common::auth::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ClientCreate,
    ClientList,
    ClientRead,
    ClientArchive,
    SessionWrite,
    JournalWrite,
    EntryRead,
    EntryAmend,
    MeasureWrite,
    MeasureRead,
    GoalWrite,
    GoalRead,
    TrendRead,
    ReportRead,
    HistoryRead,
    Export,
    Erase,
    UserAdmin,
    AssignmentAdmin,
    RetentionRun,
    AuditRead,
    BreakGlassOpen,
    BreakGlassReview,
}

impl Action {
    /// Audit action code.
    pub fn code(self) -> &'static str {
        match self {
            Self::ClientCreate => "client.create",
            Self::ClientList => "client.list",
            Self::ClientRead => "client.read",
            Self::ClientArchive => "client.archive",
            Self::SessionWrite => "session.create",
            Self::JournalWrite => "journal.create",
            Self::EntryRead => "session.read",
            Self::EntryAmend => "session.amend",
            Self::MeasureWrite => "measure.create",
            Self::MeasureRead => "measure.read",
            Self::GoalWrite => "goal.write",
            Self::GoalRead => "goal.read",
            Self::TrendRead => "trend.read",
            Self::ReportRead => "report.read",
            Self::HistoryRead => "history.read",
            Self::Export => "client.export",
            Self::Erase => "client.erase",
            Self::UserAdmin => "user.admin",
            Self::AssignmentAdmin => "assignment.admin",
            Self::RetentionRun => "retention.run",
            Self::AuditRead => "audit.read",
            Self::BreakGlassOpen => "break-glass.open",
            Self::BreakGlassReview => "break-glass.review",
        }
    }

    /// Whether the action is about one client's record.
    pub fn is_record_scoped(self) -> bool {
        !matches!(
            self,
            Self::ClientCreate
                | Self::ClientList
                | Self::UserAdmin
                | Self::AssignmentAdmin
                | Self::RetentionRun
                | Self::AuditRead
                | Self::BreakGlassOpen
                | Self::BreakGlassReview
        )
    }
}

/// How the user stands to the client record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The client user of this record.
    Own,
    /// A therapist assigned to this client.
    Assigned,
    /// A therapist with an open break-glass grant for this client.
    BreakGlass,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow { break_glass: bool },
    Deny(&'static str),
}

/// Record actions a client may take on their own record.
const CLIENT_OWN: &[Action] = &[
    Action::ClientRead,
    Action::JournalWrite,
    Action::EntryRead,
    Action::MeasureWrite,
    Action::MeasureRead,
    Action::GoalRead,
    Action::TrendRead,
    Action::ReportRead,
    Action::HistoryRead,
    Action::Export,
];

/// Record actions a therapist may take on an assigned (or break-glass) client.
const THERAPIST_RECORD: &[Action] = &[
    Action::ClientRead,
    Action::ClientArchive,
    Action::SessionWrite,
    Action::EntryRead,
    Action::EntryAmend,
    Action::MeasureWrite,
    Action::MeasureRead,
    Action::GoalWrite,
    Action::GoalRead,
    Action::TrendRead,
    Action::ReportRead,
    Action::HistoryRead,
    Action::Export,
];

pub fn decide(role: Role, action: Action, relation: Relation) -> Decision {
    use Decision::*;
    let allow = Allow { break_glass: false };
    match role {
        Role::Client => {
            if CLIENT_OWN.contains(&action) && relation == Relation::Own {
                allow
            } else {
                Deny("clients may only read their own record and write their own journal and measures")
            }
        }
        Role::Therapist => match action {
            Action::ClientCreate | Action::ClientList | Action::BreakGlassOpen => allow,
            a if THERAPIST_RECORD.contains(&a) => match relation {
                Relation::Assigned => allow,
                Relation::BreakGlass => Allow { break_glass: true },
                _ => Deny("therapists may only access clients assigned to them (or use break-glass access)"),
            },
            _ => Deny("this action is not available to therapists"),
        },
        Role::Admin => match action {
            Action::UserAdmin | Action::AssignmentAdmin | Action::RetentionRun | Action::ClientList | Action::Erase => allow,
            _ => Deny("administrators manage users and assignments and have no access to clinical data"),
        },
        Role::Auditor => match action {
            Action::AuditRead | Action::BreakGlassReview => allow,
            _ => Deny("auditors may only read the audit trail"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_only_own_record() {
        assert_eq!(decide(Role::Client, Action::ClientRead, Relation::Own), Decision::Allow { break_glass: false });
        assert!(matches!(decide(Role::Client, Action::ClientRead, Relation::None), Decision::Deny(_)));
        assert!(matches!(decide(Role::Client, Action::SessionWrite, Relation::Own), Decision::Deny(_)));
        assert!(matches!(decide(Role::Client, Action::Erase, Relation::Own), Decision::Deny(_)));
        assert!(matches!(decide(Role::Client, Action::GoalWrite, Relation::Own), Decision::Deny(_)));
    }

    #[test]
    fn therapists_need_assignment_or_break_glass() {
        assert_eq!(decide(Role::Therapist, Action::ReportRead, Relation::Assigned), Decision::Allow { break_glass: false });
        assert_eq!(decide(Role::Therapist, Action::ReportRead, Relation::BreakGlass), Decision::Allow { break_glass: true });
        assert!(matches!(decide(Role::Therapist, Action::ReportRead, Relation::None), Decision::Deny(_)));
        assert!(matches!(decide(Role::Therapist, Action::Erase, Relation::Assigned), Decision::Deny(_)));
        assert!(matches!(decide(Role::Therapist, Action::AuditRead, Relation::None), Decision::Deny(_)));
    }

    #[test]
    fn admin_and_auditor_see_no_phi() {
        for a in [Action::ClientRead, Action::EntryRead, Action::ReportRead, Action::Export, Action::HistoryRead] {
            for r in [Relation::None, Relation::Assigned] {
                assert!(matches!(decide(Role::Admin, a, r), Decision::Deny(_)));
                assert!(matches!(decide(Role::Auditor, a, r), Decision::Deny(_)));
            }
        }
        assert!(matches!(decide(Role::Auditor, Action::AuditRead, Relation::None), Decision::Allow { .. }));
        assert!(matches!(decide(Role::Admin, Action::AuditRead, Relation::None), Decision::Deny(_)));
    }
}
