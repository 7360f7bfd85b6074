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
    services: HashMap<String, u64>,
    nodes: HashMap<String, u64>,
    /// Services with checks on each node, as of the last answer.
    on_node: HashMap<String, BTreeSet<String>>,
    index: u64,
    seen: bool,
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

    /// Takes in an answer at `index`. The first answer only sets the baseline.
    pub fn update(&mut self, checks: &[CheckState], index: u64) -> Changes {
        let mut per_service: HashMap<&str, Vec<&CheckState>> = HashMap::new();
        let mut per_node: HashMap<&str, Vec<&CheckState>> = HashMap::new();
        let mut on_node: HashMap<String, BTreeSet<String>> = HashMap::new();
        for check in checks {
            if check.service_name.is_empty() {
                per_node.entry(&check.node).or_default().push(check);
            } else {
                per_service
                    .entry(&check.service_name)
                    .or_default()
                    .push(check);
                on_node
                    .entry(check.node.clone())
                    .or_default()
                    .insert(check.service_name.clone());
            }
        }
        let services: HashMap<String, u64> = per_service
            .into_iter()
            .map(|(name, checks)| (name.to_owned(), fingerprint(checks)))
            .collect();
        let nodes: HashMap<String, u64> = per_node
            .into_iter()
            .map(|(node, checks)| (node.to_owned(), fingerprint(checks)))
            .collect();
        let mut changes = Changes::default();
        if self.seen {
            changes.services = moved(&self.services, &services).cloned().collect();
            let mut nodes_moved = false;
            for node in moved(&self.nodes, &nodes) {
                nodes_moved = true;
                for side in [&self.on_node, &on_node] {
                    changes
                        .services
                        .extend(side.get(node).into_iter().flatten().cloned());
                }
            }
            changes.unexplained =
                index != self.index && changes.services.is_empty() && !nodes_moved;
        }
        *self = CheckSignals {
            services,
            nodes,
            on_node,
            index,
            seen: true,
        };
        changes
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

/// An order-independent hash of checks.
fn fingerprint(mut checks: Vec<&CheckState>) -> u64 {
    checks.sort_by(|a, b| (&a.node, &a.check_id).cmp(&(&b.node, &b.check_id)));
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

    fn check(node: &str, service: &str, id: &str, status: &str, index: u64) -> CheckState {
        CheckState {
            node: node.into(),
            check_id: format!("{id}:check"),
            service_id: id.into(),
            service_name: service.into(),
            status: status.into(),
            modify_index: index,
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_answer_is_the_baseline() {
        let mut s = CheckSignals::default();
        let c = s.update(&[check("n1", "web", "web-1", "passing", 5)], 5);
        assert_eq!(c, Changes::default());
        assert_eq!(s.index(), 5);
    }

    #[test]
    fn registration_health_change_and_deregistration_name_their_service() {
        let mut s = CheckSignals::default();
        let web = check("n1", "web", "web-1", "passing", 5);
        let db = check("n1", "db", "db-1", "passing", 6);
        s.update(&[web.clone(), db.clone()], 6);
        // A second web instance registers.
        let web2 = check("n2", "web", "web-2", "passing", 7);
        let c = s.update(&[web.clone(), db.clone(), web2.clone()], 7);
        assert_eq!(c.services, names(&["web"]));
        assert!(!c.unexplained);
        // db fails.
        let db_failing = check("n1", "db", "db-1", "critical", 8);
        let c = s.update(&[web.clone(), db_failing, web2.clone()], 8);
        assert_eq!(c.services, names(&["db"]));
        // db deregisters: its checks are gone.
        let c = s.update(&[web, web2], 9);
        assert_eq!(c.services, names(&["db"]));
    }

    #[test]
    fn order_does_not_matter_and_an_unmoved_index_says_nothing() {
        let mut s = CheckSignals::default();
        let a = check("n1", "web", "web-1", "passing", 5);
        let b = check("n2", "web", "web-2", "passing", 6);
        s.update(&[a.clone(), b.clone()], 6);
        assert_eq!(s.update(&[b, a], 6), Changes::default());
    }

    #[test]
    fn a_node_check_marks_every_service_on_its_node() {
        let mut s = CheckSignals::default();
        let serf = |status: &str, index| CheckState {
            check_id: "serfHealth".into(),
            service_id: String::new(),
            service_name: String::new(),
            ..check("n1", "", "", status, index)
        };
        let web = check("n1", "web", "web-1", "passing", 5);
        let db = check("n1", "db", "db-1", "passing", 6);
        let api = check("n2", "api", "api-1", "passing", 6);
        s.update(
            &[serf("passing", 2), web.clone(), db.clone(), api.clone()],
            6,
        );
        let c = s.update(&[serf("critical", 9), web, db, api], 9);
        assert_eq!(c.services, names(&["db", "web"]));
    }

    #[test]
    fn an_index_that_moves_without_a_check_change_is_unexplained() {
        let mut s = CheckSignals::default();
        let web = check("n1", "web", "web-1", "passing", 5);
        s.update(std::slice::from_ref(&web), 5);
        let c = s.update(&[web], 8);
        assert!(c.unexplained);
        assert!(c.services.is_empty());
    }
}
