//! Choosing the members a command acts on, by name and `--role`, with
//! patronictl's rules and questions, and errors that name the member.

use pgha_core::model::{Cluster, Member, MemberData, Role, Version};

use super::{Ctl, CtlError, echo_raw, list};
use crate::output::Format;

/// patronictl's `--role` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleFilter {
    /// The leader lock's holder, whatever it runs as.
    Leader,
    /// The leader, when it runs as a primary.
    Primary,
    /// The leader of a standby cluster.
    #[value(name = "standby-leader")]
    StandbyLeader,
    /// Any member but the leader.
    Replica,
    /// Same as replica.
    Standby,
    /// Every member.
    Any,
}

impl RoleFilter {
    pub fn name(self) -> &'static str {
        match self {
            RoleFilter::Leader => "leader",
            RoleFilter::Primary => "primary",
            RoleFilter::StandbyLeader => "standby-leader",
            RoleFilter::Replica => "replica",
            RoleFilter::Standby => "standby",
            RoleFilter::Any => "any",
        }
    }

    fn is_leader_kind(self) -> bool {
        matches!(
            self,
            RoleFilter::Leader | RoleFilter::Primary | RoleFilter::StandbyLeader
        )
    }
}

/// The leader's member entry. A leader key whose member key is gone still
/// names a leader (with no addresses), as in Patroni.
pub fn leader_member(c: &Cluster) -> Option<Member> {
    let name = c.leader_name().filter(|n| !n.is_empty())?;
    Some(c.member(name).cloned().unwrap_or_else(|| Member {
        name: name.to_string(),
        version: Version::number(-1),
        owner: None,
        data: MemberData::default(),
    }))
}

/// The members that have `role`, in name order (leader kinds: at most one).
pub fn with_role(c: &Cluster, role: RoleFilter) -> Vec<Member> {
    if role.is_leader_kind() {
        let Some(leader) = leader_member(c) else {
            return Vec::new();
        };
        let leader_role = leader.data.role.as_ref();
        let keep = match role {
            RoleFilter::Leader => true,
            RoleFilter::StandbyLeader => !leader_role.is_some_and(Role::is_primary),
            _ => leader_role != Some(&Role::StandbyLeader),
        };
        return if keep { vec![leader] } else { Vec::new() };
    }
    let leader = c.leader_name();
    c.members
        .iter()
        .filter(|m| role == RoleFilter::Any || Some(m.name.as_str()) != leader)
        .cloned()
        .collect()
}

/// One member: by name (`-m`), else the first with `role` (default: the leader).
pub fn any_member(
    c: &Cluster,
    role: Option<RoleFilter>,
    member: Option<&str>,
) -> Result<Option<Member>, CtlError> {
    let role = match (member, role) {
        (Some(_), Some(_)) => {
            return Err(CtlError::failed(
                "--role and --member are mutually exclusive options",
            ));
        }
        (Some(_), None) => RoleFilter::Any,
        (None, r) => r.unwrap_or(RoleFilter::Leader),
    };
    Ok(with_role(c, role)
        .into_iter()
        .find(|m| member.is_none_or(|name| m.name == name)))
}

/// What a member-selecting command is about to do, for its questions.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    pub scope: &'a str,
    pub names: &'a [String],
    pub role: RoleFilter,
    pub force: bool,
    /// `restart`, `reload`, `reinitialize`, `flush`.
    pub action: &'a str,
}

/// patronictl's `get_members`: prints the member table, picks the named
/// members that have the role (all of them when none is named, except for
/// reinitialize, which asks), and fails naming any member that is not in
/// the cluster or does not have the role.
pub fn select(ctl: &mut Ctl, c: &Cluster, s: Selection<'_>) -> Result<Vec<Member>, CtlError> {
    let candidates = with_role(c, s.role);
    let candidate_names: Vec<&str> = candidates.iter().map(|m| m.name.as_str()).collect();
    if s.names.is_empty() && candidates.is_empty() {
        return Err(CtlError::failed(format!(
            "{} cluster doesn't have any members",
            s.scope
        )));
    }
    echo_raw(list::render(c, s.scope, false, Format::Pretty));
    let mut chosen: Vec<String> = if s.names.is_empty() {
        if s.action == "reinitialize" {
            Vec::new()
        } else {
            candidate_names.iter().map(|n| n.to_string()).collect()
        }
    } else {
        check_names(c, s, &candidate_names)?;
        s.names.to_vec()
    };
    if chosen.is_empty() {
        if s.force {
            return Err(CtlError::failed(format!(
                "name the member(s) to {} (--force does not pick any)",
                s.action
            )));
        }
        let answer = ctl.console.prompt(
            &format!(
                "Which member do you want to {} [{}]?",
                s.action,
                candidate_names.join(", ")
            ),
            Some(""),
        )?;
        if !candidate_names.contains(&answer.as_str()) {
            return Err(CtlError::failed(format!(
                "{answer} is not a member of cluster {} with role '{}'",
                s.scope,
                s.role.name()
            )));
        }
        chosen.push(answer);
    }
    Ok(candidates
        .into_iter()
        .filter(|m| chosen.contains(&m.name))
        .collect())
}

/// Every named member must exist and have the role; the error says which
/// one does not, and why.
fn check_names(c: &Cluster, s: Selection<'_>, candidates: &[&str]) -> Result<(), CtlError> {
    for name in s.names {
        if candidates.contains(&name.as_str()) {
            continue;
        }
        let why = if c.member(name).is_none() && !c.is_leader(name) {
            let known: Vec<&str> = c.members.iter().map(|m| m.name.as_str()).collect();
            format!(
                "{name} is not a member of cluster {} (members: {})",
                s.scope,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        } else if c.is_leader(name) {
            format!("{name} is the leader, not a '{}' member", s.role.name())
        } else {
            format!("{name} is not the leader (role '{}')", s.role.name())
        };
        return Err(CtlError::failed(format!(
            "No '{}' among provided members: {why}",
            s.role.name()
        )));
    }
    Ok(())
}

/// patronictl's last question before acting on members.
pub fn confirm_action(
    ctl: &mut Ctl,
    members: &[Member],
    force: bool,
    action: &str,
    scheduled_at: Option<&str>,
    pending: bool,
) -> Result<(), CtlError> {
    if force {
        return Ok(());
    }
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let (question, aborted) = match scheduled_at {
        Some(_) if pending => (
            "The nodes needing a restart will be identified at the scheduled time, and might be \
             different from the ones showing pending restart right now. Is this fine?"
                .to_string(),
            format!("Aborted scheduled {action}"),
        ),
        Some(at) => (
            format!(
                "Are you sure you want to schedule {action} of members {} at {at}?",
                names.join(", ")
            ),
            format!("Aborted scheduled {action}"),
        ),
        None => (
            format!(
                "Are you sure you want to {action} members {}?",
                names.join(", ")
            ),
            format!("Aborted {action}"),
        ),
    };
    if ctl.console.confirm(&question, false)? {
        Ok(())
    } else {
        Err(CtlError::Failed(aborted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::model::{ClusterKey, RawEntry};

    pub(crate) fn cluster(leader: Option<&str>, members: &[(&str, &str)]) -> Cluster {
        let e = |k: &str, v: &str| RawEntry {
            key: ClusterKey::parse(k).unwrap(),
            value: v.as_bytes().to_vec(),
            version: Version::number(1),
            owner: None,
        };
        let mut entries: Vec<RawEntry> = members
            .iter()
            .map(|(n, role)| {
                e(
                    &format!("members/{n}"),
                    &format!(r#"{{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"{role}"}}"#),
                )
            })
            .collect();
        if let Some(l) = leader {
            entries.push(e("leader", l));
        }
        Cluster::from_entries(entries, Version::number(1))
    }

    #[test]
    fn roles_select_like_patronictl() {
        let c = cluster(
            Some("n1"),
            &[("n1", "primary"), ("n2", "replica"), ("n3", "replica")],
        );
        let names = |v: Vec<Member>| v.into_iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(with_role(&c, RoleFilter::Leader)), ["n1"]);
        assert_eq!(names(with_role(&c, RoleFilter::Primary)), ["n1"]);
        assert!(with_role(&c, RoleFilter::StandbyLeader).is_empty());
        assert_eq!(names(with_role(&c, RoleFilter::Replica)), ["n2", "n3"]);
        assert_eq!(names(with_role(&c, RoleFilter::Any)), ["n1", "n2", "n3"]);
        let c = cluster(Some("n1"), &[("n1", "standby_leader"), ("n2", "replica")]);
        assert_eq!(names(with_role(&c, RoleFilter::StandbyLeader)), ["n1"]);
        assert!(with_role(&c, RoleFilter::Primary).is_empty());
        let c = cluster(None, &[("n2", "replica")]);
        assert!(with_role(&c, RoleFilter::Leader).is_empty());
        assert_eq!(names(with_role(&c, RoleFilter::Replica)), ["n2"]);
        // A leader key without a member key still names the leader.
        let c = cluster(Some("gone"), &[("n2", "replica")]);
        assert_eq!(names(with_role(&c, RoleFilter::Leader)), ["gone"]);
    }

    #[test]
    fn one_member_by_name_or_role() {
        let c = cluster(Some("n1"), &[("n1", "primary"), ("n2", "replica")]);
        assert_eq!(any_member(&c, None, None).unwrap().unwrap().name, "n1");
        assert_eq!(
            any_member(&c, Some(RoleFilter::Replica), None)
                .unwrap()
                .unwrap()
                .name,
            "n2"
        );
        assert_eq!(
            any_member(&c, None, Some("n2")).unwrap().unwrap().name,
            "n2"
        );
        assert!(any_member(&c, None, Some("n9")).unwrap().is_none());
        assert!(any_member(&c, Some(RoleFilter::Any), Some("n2")).is_err());
    }

    #[test]
    fn unknown_members_are_named() {
        let c = cluster(Some("n1"), &[("n1", "primary"), ("n2", "replica")]);
        let s = |names: &'static [String], role| Selection {
            scope: "demo",
            names,
            role,
            force: true,
            action: "restart",
        };
        let names: &'static [String] = Box::leak(Box::new(["n9".to_string()]));
        let e = check_names(&c, s(names, RoleFilter::Any), &["n1", "n2"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("n9 is not a member of cluster demo (members: n1, n2)"),
            "{e}"
        );
        let names: &'static [String] = Box::leak(Box::new(["n1".to_string()]));
        let e = check_names(&c, s(names, RoleFilter::Replica), &["n2"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("No 'replica' among provided members: n1 is the leader"),
            "{e}"
        );
    }
}
