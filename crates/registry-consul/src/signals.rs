//! Which services changed, from `/v1/health/state/any`: one blocking query that returns when
//! any check changes, turned into the names of the services to read again.
//!
//! Each service's checks (node, instance, check id, status, modify index) are reduced to a
//! hash and compared with the previous answer: a service whose hash moved, appeared or
//! disappeared changed (a registration with checks adds some, a deregistration removes them,
//! a health change moves one's status and index). A node check (`serfHealth`, maintenance)
//! counts for every instance on its node, so its change marks every service with checks on
//! that node. An answer whose index moved but whose checks did not is reported as
//! unexplained: something else changed (an instance re-registered with other ports, say) and
//! only a full read finds it.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use meshplane_consul_api::CheckState;

/// The last answer, reduced.
#[derive(Debug, Default)]
pub struct CheckSignals {
    last: Reduced,
    index: u64,
    seen: bool,
}

/// One answer reduced to what is compared with the next: a hash of each service's checks and
/// of each node's own checks, and which services have checks on each node. Built where the
/// answer is received ([`Reduced::from_body`]), so the body is parsed borrowed and dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reduced {
    services: HashMap<String, u64>,
    nodes: HashMap<String, u64>,
    /// Services with checks on each node that has checks of its own (only those can mark
    /// them all).
    on_node: HashMap<String, BTreeSet<String>>,
}

/// What one answer says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Services to read again.
    pub services: BTreeSet<String>,
    /// The index moved yet no check changed.
    pub unexplained: bool,
}

impl CheckSignals {
    /// The index of the last answer taken in (0 before the first).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Whether the first answer (the baseline every later one is compared with) is in.
    pub fn has_baseline(&self) -> bool {
        self.seen
    }

    /// Takes in an answer at `index`. The first answer only sets the baseline: a change
    /// before it shows in no signal, so what was read before it must be read again.
    pub fn update(&mut self, answer: Reduced, index: u64) -> Changes {
        let mut changes = Changes::default();
        if self.seen {
            let before = &self.last;
            changes.services = moved(&before.services, &answer.services).cloned().collect();
            let mut nodes_moved = false;
            for node in moved(&before.nodes, &answer.nodes) {
                nodes_moved = true;
                for side in [&before.on_node, &answer.on_node] {
                    changes
                        .services
                        .extend(side.get(node).into_iter().flatten().cloned());
                }
            }
            changes.unexplained =
                index != self.index && changes.services.is_empty() && !nodes_moved;
        }
        *self = CheckSignals {
            last: answer,
            index,
            seen: true,
        };
        changes
    }
}

impl Reduced {
    /// Reduces a `/v1/health/state/any` body.
    pub fn from_body(body: &[u8]) -> Result<Self, serde_json::Error> {
        let checks: Vec<CheckState<'_>> = serde_json::from_slice(body)?;
        Ok(Self::from_checks(&checks))
    }

    /// Reduces parsed checks.
    pub fn from_checks(checks: &[CheckState<'_>]) -> Self {
        let mut per_service: HashMap<&str, Vec<&CheckState<'_>>> = HashMap::new();
        let mut per_node: HashMap<&str, Vec<&CheckState<'_>>> = HashMap::new();
        for check in checks {
            let (map, key) = if check.service_name.is_empty() {
                (&mut per_node, &*check.node)
            } else {
                (&mut per_service, &*check.service_name)
            };
            map.entry(key).or_default().push(check);
        }
        let mut reduced = Self {
            services: HashMap::with_capacity(per_service.len()),
            nodes: HashMap::with_capacity(per_node.len()),
            on_node: HashMap::new(),
        };
        for (name, mut checks) in per_service {
            sort(&mut checks);
            // Sorted by node: each node once.
            let mut last: Option<&str> = None;
            for check in &checks {
                let node = &*check.node;
                if last != Some(node) && per_node.contains_key(node) {
                    reduced
                        .on_node
                        .entry(node.to_owned())
                        .or_default()
                        .insert(name.to_owned());
                }
                last = Some(node);
            }
            reduced
                .services
                .insert(name.to_owned(), fingerprint(&checks));
        }
        for (node, mut checks) in per_node {
            sort(&mut checks);
            reduced.nodes.insert(node.to_owned(), fingerprint(&checks));
        }
        reduced
    }
}

/// Keys whose value differs between `before` and `after`, or that only one has.
fn moved<'a>(
    before: &'a HashMap<String, u64>,
    after: &'a HashMap<String, u64>,
) -> impl Iterator<Item = &'a String> {
    let changed = after
        .iter()
        .filter(move |(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k);
    let gone = before.keys().filter(move |k| !after.contains_key(*k));
    changed.chain(gone)
}

/// Orders checks by node and id, so [`fingerprint`] does not depend on the answer's order.
fn sort(checks: &mut [&CheckState<'_>]) {
    checks.sort_unstable_by(|a, b| (&a.node, &a.check_id).cmp(&(&b.node, &b.check_id)));
}

/// A hash of sorted checks (SipHash: a collision would hide a change).
fn fingerprint(checks: &[&CheckState<'_>]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for c in checks {
        (
            &c.node,
            &c.check_id,
            &c.service_id,
            &c.status,
            c.modify_index,
        )
            .hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(node: &str, service: &str, id: &str, status: &str, index: u64) -> CheckState<'static> {
        CheckState {
            node: node.to_owned().into(),
            check_id: format!("{id}:check").into(),
            service_id: id.to_owned().into(),
            service_name: service.to_owned().into(),
            status: status.to_owned().into(),
            modify_index: index,
        }
    }

    /// Takes in checks as they would arrive.
    fn update(s: &mut CheckSignals, checks: &[CheckState<'_>], index: u64) -> Changes {
        s.update(Reduced::from_checks(checks), index)
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_answer_is_the_baseline() {
        let mut s = CheckSignals::default();
        let c = update(&mut s, &[check("n1", "web", "web-1", "passing", 5)], 5);
        assert_eq!(c, Changes::default());
        assert_eq!(s.index(), 5);
    }

    #[test]
    fn registration_health_change_and_deregistration_name_their_service() {
        let mut s = CheckSignals::default();
        let web = check("n1", "web", "web-1", "passing", 5);
        let db = check("n1", "db", "db-1", "passing", 6);
        update(&mut s, &[web.clone(), db.clone()], 6);
        // A second web instance registers.
        let web2 = check("n2", "web", "web-2", "passing", 7);
        let c = update(&mut s, &[web.clone(), db.clone(), web2.clone()], 7);
        assert_eq!(c.services, names(&["web"]));
        assert!(!c.unexplained);
        // db fails.
        let db_failing = check("n1", "db", "db-1", "critical", 8);
        let c = update(&mut s, &[web.clone(), db_failing, web2.clone()], 8);
        assert_eq!(c.services, names(&["db"]));
        // db deregisters: its checks are gone.
        let c = update(&mut s, &[web, web2], 9);
        assert_eq!(c.services, names(&["db"]));
    }

    #[test]
    fn order_does_not_matter_and_an_unmoved_index_says_nothing() {
        let mut s = CheckSignals::default();
        let a = check("n1", "web", "web-1", "passing", 5);
        let b = check("n2", "web", "web-2", "passing", 6);
        update(&mut s, &[a.clone(), b.clone()], 6);
        assert_eq!(update(&mut s, &[b, a], 6), Changes::default());
    }

    #[test]
    fn a_node_check_marks_every_service_on_its_node() {
        let mut s = CheckSignals::default();
        let serf = |status: &str, index| CheckState {
            check_id: "serfHealth".into(),
            service_id: "".into(),
            service_name: "".into(),
            ..check("n1", "", "", status, index)
        };
        let web = check("n1", "web", "web-1", "passing", 5);
        let db = check("n1", "db", "db-1", "passing", 6);
        let api = check("n2", "api", "api-1", "passing", 6);
        update(
            &mut s,
            &[serf("passing", 2), web.clone(), db.clone(), api.clone()],
            6,
        );
        let c = update(&mut s, &[serf("critical", 9), web, db, api], 9);
        assert_eq!(c.services, names(&["db", "web"]));
    }

    #[test]
    fn an_index_that_moves_without_a_check_change_is_unexplained() {
        let mut s = CheckSignals::default();
        let web = check("n1", "web", "web-1", "passing", 5);
        update(&mut s, std::slice::from_ref(&web), 5);
        let c = update(&mut s, &[web], 8);
        assert!(c.unexplained);
        assert!(c.services.is_empty());
    }
}
