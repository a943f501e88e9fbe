//! What a sync does to one tunnel: the per-inbound difference between the users the core has and
//! the users it should have, and the removal guard. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{Protocol, User, is_unmanaged};

/// One change to one inbound. Operations on the same email run in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Add(User),
    Remove(String),
}

impl Op {
    pub fn email(&self) -> &str {
        match self {
            Op::Add(user) => &user.email,
            Op::Remove(email) => email,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Op::Add(_) => "add",
            Op::Remove(_) => "remove",
        }
    }
}

/// The difference for one inbound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundDiff {
    pub add: Vec<User>,
    /// Emails to remove (users no longer wanted).
    pub remove: Vec<String>,
    /// Users whose credential, flow or level changed: removed, then added again.
    pub change: Vec<User>,
}

impl InboundDiff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.change.is_empty()
    }

    /// The operations, grouped per email so that a change is remove-then-add. A change takes
    /// the old credential away, so it is withheld with the removals.
    pub fn ops(&self, with_removals: bool) -> Vec<Vec<Op>> {
        let changes = self
            .change
            .iter()
            .filter(|_| with_removals)
            .map(|u| vec![Op::Remove(u.email.clone()), Op::Add(u.clone())]);
        let adds = self.add.iter().map(|u| vec![Op::Add(u.clone())]);
        let removes = self
            .remove
            .iter()
            .filter(|_| with_removals)
            .map(|e| vec![Op::Remove(e.clone())]);
        changes.chain(adds).chain(removes).collect()
    }
}

/// Cores treat emails case-insensitively ("remove ALICE@X" removes alice@x), so users are
/// matched on the lower-cased email.
fn key(email: &str) -> String {
    email.to_lowercase()
}

/// The difference between `current` and `desired` for one inbound. Users whose email is in
/// `held` (lower-cased: their entry in the document is invalid) are left exactly as they are:
/// never added, changed or removed; so are users the core holds without a real email
/// ([`is_unmanaged`]: a config client with none), unless the desired set names them.
pub fn diff(current: &[User], desired: &[User], held: &BTreeSet<String>) -> InboundDiff {
    let free = |u: &&User| !held.contains(&key(&u.email));
    let desired: BTreeMap<String, &User> = desired
        .iter()
        .filter(free)
        .map(|u| (key(&u.email), u))
        .collect();
    let current: BTreeMap<String, &User> = current
        .iter()
        .filter(free)
        .filter(|u| !is_unmanaged(&u.email) || desired.contains_key(&key(&u.email)))
        .map(|u| (key(&u.email), u))
        .collect();
    let mut out = InboundDiff::default();
    for (k, want) in &desired {
        match current.get(k) {
            None => out.add.push((*want).clone()),
            Some(have) if !same_login(have, want) => out.change.push((*want).clone()),
            Some(_) => {}
        }
    }
    for (k, have) in &current {
        if !desired.contains_key(k) {
            out.remove.push(have.email.clone());
        }
    }
    out
}

fn same_login(a: &User, b: &User) -> bool {
    a.credential == b.credential && a.flow == b.flow && a.level == b.level
}

/// Users of one inbound that differ between the core's live list and the desired set: missing,
/// extra, or with another credential, flow or level (held and unmanaged users left out). Measured
/// before the round repairs them: `xray_usersync_drift_users`.
pub fn drift(diff: &InboundDiff) -> usize {
    diff.add.len() + diff.remove.len() + diff.change.len()
}

/// Gives desired VLESS users without a flow the inbound's `settings.flow`, as Xray gives it to
/// config clients without one and lists them with it (semantics §3). The warden then adds them
/// with that flow, so the live users match what a restart would load, and a stable config
/// makes no operation on the next round.
pub fn inherit_flow(users: &mut [User], default_flow: &str) {
    for user in users.iter_mut().filter(|u| u.flow.is_empty()) {
        user.flow = default_flow.to_owned();
    }
}

/// Whether a changed credential on a `protocol` inbound can be applied as remove-then-add
/// without risking the user: the new user's add is tried first, while the old one is there, and
/// must answer "already exists" without changing anything. VLESS, VMess and Trojan cores refuse a
/// second user with an email already there (semantics, exact texts). Shadowsocks too, through the
/// client: it sends adds only to a multi-user Shadowsocks-2022 inbound and asks that inbound for
/// the email first (its own check is case-sensitive), and refuses every add to an AEAD inbound,
/// which would take a second user with the same email (semantics §1) — so there the trial is
/// refused and the old credential stays. Anything else takes no users.
pub fn changes_in_place(protocol: &Protocol) -> bool {
    matches!(
        protocol,
        Protocol::Vless | Protocol::Vmess | Protocol::Trojan | Protocol::Shadowsocks
    )
}

/// The removal guard's verdict for one tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Removals may go ahead.
    Allow,
    /// Removals would drop `removing` of `total` users, more than the allowed fraction.
    Tripped { removing: usize, total: usize },
}

/// Whether the removals and credential changes of a tunnel's diffs may be applied: not when
/// they would take away more than `max_fraction` of the tunnel's users (counted once per email
/// across its inbounds). A change counts: it locks the user's current credential out just as a
/// removal does, so a source that regenerates every UUID trips it too. A source that suddenly
/// returns nothing, a fraction of its users or new credentials for all is far likelier broken
/// than right; an operator can force it.
pub fn guard(current: &[&[User]], diffs: &[&InboundDiff], max_fraction: f64) -> Guard {
    let total: BTreeSet<String> = current
        .iter()
        .flat_map(|users| users.iter().map(|u| key(&u.email)))
        .filter(|email| !is_unmanaged(email))
        .collect();
    let removing: BTreeSet<String> = diffs
        .iter()
        .flat_map(|d| {
            let removed = d.remove.iter().map(|e| key(e));
            removed.chain(d.change.iter().map(|u| key(&u.email)))
        })
        .collect();
    let allowed = (total.len() as f64 * max_fraction).floor() as usize;
    if removing.len() > allowed {
        Guard::Tripped {
            removing: removing.len(),
            total: total.len(),
        }
    } else {
        Guard::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Credential;

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn user(email: &str, id: &str) -> User {
        User {
            email: email.into(),
            credential: Credential::Id(id.into()),
            flow: String::new(),
            level: 0,
        }
    }

    #[test]
    fn diff_finds_adds_removes_and_changes() {
        let current = [user("a@x", "1"), user("b@x", "2"), user("c@x", "3")];
        let desired = [user("A@x", "1"), user("b@x", "9"), user("d@x", "4")];
        let d = diff(&current, &desired, &none());
        assert_eq!(d.add, vec![user("d@x", "4")]);
        assert_eq!(d.remove, vec!["c@x".to_owned()]);
        assert_eq!(d.change, vec![user("b@x", "9")]);
    }

    #[test]
    fn no_change_is_empty() {
        let users = [user("a@x", "1"), user("b@x", "2")];
        assert!(diff(&users, &users, &none()).is_empty());
    }

    #[test]
    fn a_change_is_remove_then_add() {
        let d = diff(&[user("b@x", "2")], &[user("b@x", "9")], &none());
        assert_eq!(
            d.ops(true),
            vec![vec![Op::Remove("b@x".into()), Op::Add(user("b@x", "9"))]]
        );
    }

    #[test]
    fn removals_can_be_withheld() {
        let d = diff(&[user("a@x", "1")], &[user("b@x", "2")], &none());
        assert_eq!(d.ops(false), vec![vec![Op::Add(user("b@x", "2"))]]);
        assert_eq!(d.ops(true).len(), 2);
    }

    #[test]
    fn guard_trips_on_mass_removal() {
        let current: Vec<User> = (0..10).map(|i| user(&format!("{i}@x"), "1")).collect();
        let empty = diff(&current, &[], &none());
        assert_eq!(
            guard(&[&current], &[&empty], 0.5),
            Guard::Tripped {
                removing: 10,
                total: 10
            }
        );
        let half = diff(&current, &current[..5], &none());
        assert_eq!(guard(&[&current], &[&half], 0.5), Guard::Allow);
        let six = diff(&current, &current[..4], &none());
        assert!(matches!(
            guard(&[&current], &[&six], 0.5),
            Guard::Tripped { .. }
        ));
        // Nobody to remove from an empty tunnel.
        assert_eq!(guard(&[&[]], &[&InboundDiff::default()], 0.5), Guard::Allow);
    }

    #[test]
    fn guard_counts_each_email_once_across_inbounds() {
        let a = [user("a@x", "1"), user("b@x", "2")];
        let d = diff(&a, &a[..1], &none());
        // b@x removed from two inbounds is one user of two: 50% is allowed.
        assert_eq!(guard(&[&a, &a], &[&d, &d], 0.5), Guard::Allow);
    }

    #[test]
    fn held_users_are_neither_added_changed_nor_removed() {
        let current = [user("a@x", "1"), user("b@x", "2"), user("c@x", "3")];
        // b@x's entry is invalid (so b@x is not desired); A@x is held in another case.
        let desired = [user("a@x", "9"), user("c@x", "3"), user("d@x", "4")];
        let held = BTreeSet::from(["b@x".to_owned(), "a@x".to_owned(), "d@x".to_owned()]);
        let d = diff(&current, &desired, &held);
        assert!(d.is_empty(), "{d:?}");
        // Without the hold, b@x would be removed and a@x changed.
        let d = diff(&current, &desired, &none());
        assert_eq!(d.remove, vec!["b@x".to_owned()]);
        assert_eq!(d.change, vec![user("a@x", "9")]);
    }

    #[test]
    fn guard_counts_credential_changes() {
        let current: Vec<User> = (0..10).map(|i| user(&format!("{i}@x"), "1")).collect();
        let regenerated: Vec<User> = (0..10).map(|i| user(&format!("{i}@x"), "2")).collect();
        let all_new = diff(&current, &regenerated, &none());
        assert_eq!(
            guard(&[&current], &[&all_new], 0.5),
            Guard::Tripped {
                removing: 10,
                total: 10
            }
        );
        // Tripped, nothing that takes a credential away runs; forced, all of it does.
        assert!(all_new.ops(false).is_empty());
        assert_eq!(all_new.ops(true).len(), 10);
        // Three changes and three removals of ten: six, over half.
        let mut mixed = regenerated[..3].to_vec();
        mixed.extend_from_slice(&current[3..7]);
        let d = diff(&current, &mixed, &none());
        assert_eq!((d.change.len(), d.remove.len()), (3, 3));
        assert!(matches!(
            guard(&[&current], &[&d], 0.5),
            Guard::Tripped { removing: 6, .. }
        ));
    }

    #[test]
    fn users_without_a_real_email_are_never_removed_nor_counted() {
        let unnamed = "unnamed-user-0-eecb6b1b-a14f-459e-b8ba-50448af50a8a";
        let current = [user("", "1"), user(unnamed, "2"), user("a@x", "3")];
        let desired = [user("a@x", "3"), user("b@x", "4")];
        let d = diff(&current, &desired, &none());
        assert!(d.remove.is_empty() && d.change.is_empty(), "{d:?}");
        assert_eq!(d.add, vec![user("b@x", "4")]);
        // Only a@x counts: removing it alone is all of the tunnel's users.
        let gone = diff(&current, &[], &none());
        assert_eq!(gone.remove, vec!["a@x".to_owned()]);
        assert_eq!(
            guard(&[&current], &[&gone], 0.5),
            Guard::Tripped {
                removing: 1,
                total: 1
            }
        );
    }

    #[test]
    fn inherited_flows_make_a_stable_inbound_equal() {
        let vision = "xtls-rprx-vision";
        let mut live = user("a@x", "1");
        live.flow = vision.into();
        let mut want = vec![user("a@x", "1")];
        assert_eq!(drift(&diff(&[live.clone()], &want, &none())), 1);
        inherit_flow(&mut want, vision);
        assert!(diff(&[live], &want, &none()).is_empty());
    }

    #[test]
    fn drift_counts_missing_extra_and_changed_users() {
        let current = [user("a@x", "1"), user("b@x", "2"), user("c@x", "3")];
        let desired = [user("a@x", "1"), user("b@x", "9"), user("d@x", "4")];
        assert_eq!(drift(&diff(&current, &desired, &none())), 3);
        assert_eq!(drift(&diff(&current, &current, &none())), 0);
    }

    #[test]
    fn only_protocols_whose_core_refuses_a_second_email_change_in_place() {
        assert!(changes_in_place(&Protocol::Vless));
        assert!(changes_in_place(&Protocol::Vmess));
        assert!(changes_in_place(&Protocol::Trojan));
        assert!(changes_in_place(&Protocol::Shadowsocks));
        assert!(!changes_in_place(&Protocol::parse("socks")));
    }
}
