//! The push planner: one pure, synchronous answer to "what does this proxy get next, and in
//! which order", shared by both protocol flavours.
//!
//! It knows, per type, what the proxy holds (name → version, from our responses or reported
//! on reconnect) and what it subscribes to, and turns a snapshot into ordered [`Step`]s. The
//! flavours only render steps: SotW as full sets (CDS/LDS) or partial sets (EDS/RDS/SDS),
//! delta as diffs with `removed_resources`. The make-before-break rules (DESIGN.md §4) live
//! here only:
//! - push order CDS → EDS → LDS → RDS, then cluster removals, then SDS;
//! - a cluster (re)created by a CDS step warms until it gets its EDS, so the endpoints of
//!   upserted clusters are re-sent even if unchanged, every subscribed EDS name is answered
//!   (empty for unknown services), and listeners, routes and cluster removals wait until every
//!   (re)created cluster has been sent its endpoints;
//! - a cluster leaves only once the listeners and routes that named it have been replaced
//!   and the proxy has ACKed them (a rejected route keeps naming it), and until then keeps
//!   the endpoints it had;
//! - nothing is sent that the proxy already holds, so a NACKed version is never re-sent in a
//!   loop and a reconnect reporting what it holds gets nothing, but for SotW endpoints: one
//!   version cannot say which assignments a proxy kept, so they are sent once more (a
//!   delta proxy reports each; one whose cluster was re-created just before the stream
//!   dropped warms until Envoy's initial fetch timeout, then uses the endpoints it holds);
//! - a NACK of a superseded SotW CDS response means the full set on its way may (re)create
//!   any cluster in it, so their endpoints are sent again.
//!
//! Per-push work is proportional to the types whose content or subscription changed: a type
//! is skipped when its snapshot version and subscription are those it was last brought in
//! line with.

mod held;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::resource::{Resource, ResourceType};
use crate::snapshot::Snapshot;
use held::{Held, Holdings};

/// Which protocol renders the steps; they differ only in which endpoints a cluster update
/// re-sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// State of the world: CDS and LDS steps carry the full set the proxy holds afterwards,
    /// and a cluster update re-sends every subscribed assignment (SotW Envoys re-request EDS
    /// after each CDS response and warm on its answer).
    Sotw,
    /// Incremental: steps carry upserts and removals; a cluster update re-sends the
    /// assignments of the clusters it (re)created.
    Delta,
}

/// One response to send: a type, the resources it carries and the names it removes.
#[derive(Debug)]
pub(crate) struct Step {
    /// The resource type.
    pub(crate) kind: ResourceType,
    /// SotW CDS/LDS: every resource the proxy holds afterwards. Otherwise the upserts.
    pub(crate) resources: Vec<Arc<Resource>>,
    /// Names the proxy no longer holds (delta renders them; SotW full sets imply them).
    pub(crate) removals: Vec<String>,
    /// Version of everything the proxy holds of this type afterwards (SotW `version_info`,
    /// delta `system_version_info`).
    pub(crate) version: String,
}

/// Subscription and holdings of one type.
#[derive(Debug, Default)]
struct TypePlan {
    wildcard: bool,
    /// Subscribed names, shared with the snapshot's resources of those names when it has them.
    names: BTreeSet<Arc<str>>,
    held: Holdings,
    /// SotW reconnect: the version the proxy reported holding, adopted if the first target
    /// has it.
    reported: Option<String>,
    /// Whether anything was sent or adopted since the type was (re)subscribed.
    synced: bool,
    /// The snapshot type version `held` was last brought fully in line with, while the
    /// subscription and what it depends on stayed the same: planning again finds nothing.
    evaluated: Option<String>,
    /// Endpoints: [`Planner::endpoint_context`] when `evaluated` was set. The target of a
    /// name the snapshot lacks depends on it, so only within one context may a diff look at
    /// the changed names alone.
    context: (u64, String),
}

impl TypePlan {
    fn subscribed(&self) -> bool {
        self.wildcard || !self.names.is_empty()
    }

    /// The resource to send for `name`, unless the proxy holds that version.
    fn outdated(&self, name: &str, want: &Want) -> Option<Arc<Resource>> {
        match want {
            Want::Send(r)
                if self
                    .held
                    .get(name)
                    .is_none_or(|h| h.version() != r.version()) =>
            {
                Some(r.clone())
            }
            _ => None,
        }
    }
}

/// A subscribed name's target, and whether the snapshot has it.
struct Target {
    want: Want,
    in_snapshot: bool,
}

/// What one type should become: per name, the resource to hold.
struct Diff {
    kind: ResourceType,
    upserts: Vec<Arc<Resource>>,
    removals: Vec<String>,
    /// The whole target equals the snapshot's map of the type (its version is precomputed).
    whole_type: bool,
    /// The proxy reported holding exactly the target (SotW reconnect): nothing to send.
    adopt: bool,
}

#[cfg(test)]
impl Diff {
    /// What the diff would do, comparable across the full and the incremental diff.
    fn summary(&self) -> (Vec<(String, String)>, Vec<String>, bool, bool) {
        (
            self.upserts
                .iter()
                .map(|r| (r.name().to_owned(), r.version().to_owned()))
                .collect(),
            self.removals.clone(),
            self.whole_type,
            self.adopt,
        )
    }
}

/// The planner of one stream.
#[derive(Debug)]
pub(crate) struct Planner {
    flavour: Flavour,
    /// An ADS stream: a proxy that watches listeners on it asks for the endpoints of the
    /// clusters it gets here, even its first ones (Envoy opens its EDS watch only once it has
    /// an EDS cluster). Per-type CDS streams, and clients that watch clusters only, get no
    /// routing from this stream and never wait.
    ads: bool,
    types: [Option<TypePlan>; 5],
    /// EDS names of (re)created clusters not yet sent their endpoints: listeners, routes and
    /// cluster removals wait for them (make-before-break). Settled by `await_endpoints`.
    awaiting_endpoints: BTreeSet<Arc<str>>,
    /// SotW: the proxy rejected the latest clusters and kept older ones, so the next full set
    /// may (re)create any cluster in it.
    clusters_rejected: bool,
    /// Per type (listeners, routes): a response is on its way or was rejected, so the proxy
    /// may still hold what the previous one named. Cluster removals wait for the ACK.
    routing_unacked: [bool; 5],
    /// Cluster removals held back until the routing naming them has been replaced and ACKed.
    removals_deferred: bool,
    /// Changes whenever the clusters the proxy holds may have changed.
    clusters_held_generation: u64,
}

// === impl Planner ===

impl Planner {
    pub(crate) fn new(flavour: Flavour, ads: bool) -> Self {
        Planner {
            flavour,
            ads,
            types: Default::default(),
            awaiting_endpoints: BTreeSet::new(),
            clusters_rejected: false,
            routing_unacked: [false; 5],
            removals_deferred: false,
            clusters_held_generation: 0,
        }
    }

    fn plan_mut(&mut self, kind: ResourceType) -> &mut TypePlan {
        self.types[kind.index()].get_or_insert_with(TypePlan::default)
    }

    /// `plan_mut` for a change that may alter what the proxy holds of `kind`.
    fn holdings_mut(&mut self, kind: ResourceType) -> &mut TypePlan {
        if kind == ResourceType::Cluster {
            self.clusters_held_generation += 1;
        }
        self.plan_mut(kind)
    }

    /// Whether the proxy has asked for `kind` on this stream.
    pub(crate) fn knows(&self, kind: ResourceType) -> bool {
        self.types[kind.index()].is_some()
    }

    /// Replaces the subscription of `kind` (SotW requests carry the whole set). An empty
    /// subscription forgets what the proxy held: Envoy drops a type it no longer watches, and
    /// a later subscription starts afresh.
    /// `names` may contain `*`, which `wildcard` stands for.
    pub(crate) fn set_subscription(
        &mut self,
        kind: ResourceType,
        wildcard: bool,
        names: &[String],
        snapshot: Option<&Snapshot>,
    ) {
        let tp = self.plan_mut(kind);
        // SotW repeats the whole subscription on every request: compare it in place, and
        // build (and intern) names only when it changed.
        let mut requested: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "*")
            .collect();
        requested.sort_unstable();
        requested.dedup();
        if tp.wildcard != wildcard || !tp.names.iter().map(|n| &**n).eq(requested.iter().copied()) {
            tp.names = requested
                .iter()
                .map(|n| {
                    tp.names
                        .get(*n)
                        .cloned()
                        .unwrap_or_else(|| intern(kind, n, snapshot))
                })
                .collect();
            tp.wildcard = wildcard;
            tp.evaluated = None;
        }
        if !tp.subscribed() {
            let tp = if tp.held.is_empty() {
                tp
            } else {
                self.holdings_mut(kind)
            };
            tp.held.clear();
            tp.reported = None;
            tp.synced = false;
            tp.evaluated = None;
        }
    }

    /// Adds to (`subscribe`) or takes from the subscription of `kind` (delta); `*` is the
    /// wildcard. An unsubscribed name is no longer held.
    pub(crate) fn change_subscription(
        &mut self,
        kind: ResourceType,
        subscribe: &[String],
        unsubscribe: &[String],
        snapshot: Option<&Snapshot>,
    ) {
        let tp = if unsubscribe.is_empty() {
            self.plan_mut(kind)
        } else {
            self.holdings_mut(kind)
        };
        let mut added = Vec::new();
        for name in subscribe {
            if name == "*" {
                tp.wildcard = true;
            } else if !tp.names.contains(name.as_str()) {
                added.push(intern(kind, name, snapshot));
            }
        }
        if tp.names.is_empty() {
            // A first subscription, built in one go.
            tp.names = added.into_iter().collect();
        } else {
            tp.names.extend(added);
        }
        for name in unsubscribe {
            if name == "*" {
                tp.wildcard = false;
            } else {
                tp.names.remove(name.as_str());
                tp.held.remove(name);
            }
        }
        if !subscribe.is_empty() || !unsubscribe.is_empty() {
            tp.evaluated = None;
        }
        if !tp.subscribed() {
            tp.held.clear();
        }
    }

    /// Delta reconnect: what the proxy already holds of `kind` (`initial_resource_versions`).
    pub(crate) fn report_held<'a>(
        &mut self,
        kind: ResourceType,
        held: impl IntoIterator<Item = (&'a String, &'a String)>,
        snapshot: Option<&Snapshot>,
    ) {
        // Endpoints of clusters (re)created on this stream before the proxy reported them are
        // due again: the new cluster warms until it gets them.
        let awaited = (kind == ResourceType::Endpoint).then(|| self.awaiting_endpoints.clone());
        let tp = self.holdings_mut(kind);
        tp.held = held
            .into_iter()
            .map(|(name, version)| {
                if awaited.as_ref().is_some_and(|a| a.contains(name.as_str())) {
                    Held::stale_unknown(name)
                } else {
                    Held::reported(name, version, snapshot.and_then(|s| s.get(kind, name)))
                }
            })
            .collect();
        tp.synced = !tp.held.is_empty();
        tp.evaluated = None;
    }

    /// SotW reconnect: the version of `kind` the proxy reports holding. Ignored once the type
    /// has been sent on this stream.
    pub(crate) fn report_version(&mut self, kind: ResourceType, version: &str) {
        // Endpoints are sent again: a SotW version names the last EDS response, not what the
        // proxy kept of it. A cluster removed and re-added, or re-created just before the
        // stream dropped, waits for an assignment the version says it has; it would warm
        // until Envoy's initial fetch timeout and could then route to no hosts.
        if kind == ResourceType::Endpoint {
            return;
        }
        let tp = self.plan_mut(kind);
        if !tp.synced {
            tp.reported = Some(version.to_owned());
            tp.evaluated = None;
        }
    }

    /// Whether the version the proxy would report for `kind` is worth recording (SotW).
    pub(crate) fn synced(&self, kind: ResourceType) -> bool {
        self.types[kind.index()]
            .as_ref()
            .is_some_and(|tp| tp.synced)
    }

    /// The proxy rejected a response of `kind`. It will not ask for the endpoints of clusters
    /// it rejected, so they no longer hold routing.
    pub(crate) fn rejected(&mut self, kind: ResourceType) {
        if kind == ResourceType::Cluster {
            self.awaiting_endpoints.clear();
            self.clusters_rejected = true;
        }
    }

    /// SotW: the proxy rejected a CDS response that a later one, already on its way, has
    /// superseded. It kept older clusters than we thought, so the later full set may
    /// (re)create any cluster in it: each warms until it gets its endpoints again, and routing
    /// waits for them. Returns the steps to send now (the endpoints, and whatever was held).
    pub(crate) fn superseded_clusters_rejected(&mut self, snapshot: &Snapshot) -> Vec<Step> {
        let was_holding = self.holding();
        let held: Vec<Arc<Resource>> = self.types[ResourceType::Cluster.index()]
            .as_ref()
            .map(|cds| {
                cds.held
                    .iter()
                    .filter_map(Held::resource)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        self.clusters_rejected = true;
        self.clusters_changed(&held);
        self.awaiting_endpoints
            .extend(held.iter().flat_map(|c| endpoint_names(c).cloned()));
        self.answer(ResourceType::Endpoint, was_holding, snapshot)
    }

    /// The proxy accepted the latest response of `kind`.
    pub(crate) fn accepted(&mut self, kind: ResourceType) {
        match kind {
            ResourceType::Cluster => self.clusters_rejected = false,
            ResourceType::Listener | ResourceType::Route => {
                self.routing_unacked[kind.index()] = false;
            }
            _ => {}
        }
    }

    /// Whether the proxy may still hold listeners or routes older than those sent.
    fn routing_unacked(&self) -> bool {
        self.routing_unacked.iter().any(|u| *u)
    }

    /// Whether listeners, routes and cluster removals are held until (re)created clusters
    /// have their endpoints.
    pub(crate) fn holding(&self) -> bool {
        !self.awaiting_endpoints.is_empty() && self.expects_endpoints()
    }

    /// Whether the proxy will ask this stream for the endpoints of the clusters it gets.
    fn expects_endpoints(&self) -> bool {
        self.knows(ResourceType::Endpoint) || (self.ads && self.knows(ResourceType::Listener))
    }

    /// Everything to send after the snapshot changed, in make-before-break order.
    pub(crate) fn push(&mut self, snapshot: &Snapshot) -> Vec<Step> {
        let mut out = Vec::new();
        let mut deferred_removals = false;
        if let Some(mut diff) = self.diff(ResourceType::Cluster, snapshot) {
            // Delta also sends removals apart from additions when routing is unchanged: a
            // removal-only response is cheap, and a proxy never sees a cluster replaced in
            // one step.
            let split = self.flavour == Flavour::Delta && !diff.upserts.is_empty();
            if !diff.removals.is_empty()
                && (split || self.routing_unacked() || self.routing_changes(snapshot))
            {
                // Removed clusters stay until the listeners and routes naming them are
                // replaced, below or in the push resumed once new clusters have endpoints.
                diff.removals.clear();
                deferred_removals = true;
            }
            out.extend(self.apply(diff, snapshot, !deferred_removals));
        }
        self.push_type(ResourceType::Endpoint, snapshot, &mut out);
        self.await_endpoints(snapshot);
        if self.holding() {
            self.push_type(ResourceType::Secret, snapshot, &mut out);
            return out;
        }
        self.push_type(ResourceType::Listener, snapshot, &mut out);
        self.push_type(ResourceType::Route, snapshot, &mut out);
        self.removals_deferred = deferred_removals;
        if deferred_removals && !self.routing_unacked() {
            self.removals_deferred = false;
            let recreates = self.clusters_rejected && self.flavour == Flavour::Sotw;
            self.push_type(ResourceType::Cluster, snapshot, &mut out);
            if recreates {
                // After a rejection, that full set may (re)create the clusters it keeps.
                self.push_type(ResourceType::Endpoint, snapshot, &mut out);
                self.await_endpoints(snapshot);
            }
        }
        self.push_type(ResourceType::Secret, snapshot, &mut out);
        out
    }

    /// Answers a request for `kind`; `held` is [`Planner::holding`] before the request was
    /// taken in. While routing is held, only endpoints and secrets are answered: clusters
    /// (whose removal waits for the routes), listeners and routes go out with the push that
    /// resumes once the awaited endpoints have been sent (or their clusters rejected).
    pub(crate) fn answer(
        &mut self,
        kind: ResourceType,
        held: bool,
        snapshot: &Snapshot,
    ) -> Vec<Step> {
        let mut out = Vec::new();
        let routing = matches!(
            kind,
            ResourceType::Cluster | ResourceType::Listener | ResourceType::Route
        );
        if kind == ResourceType::Cluster && !held {
            // Clusters go in push order: removals wait for the routing like a push's do.
            out.extend(self.push(snapshot));
        } else if !(routing && held) {
            self.push_type(kind, snapshot, &mut out);
        }
        self.endpoints_delivered();
        let routing_acked = self.removals_deferred && !self.routing_unacked();
        if (held || routing_acked) && !self.holding() {
            out.extend(self.push(snapshot));
        }
        out
    }

    /// One-shot answer for the `Fetch*` RPCs: `(version, resources)` of `names` (or every
    /// resource of a full-state type when none are named).
    pub(crate) fn fetch(
        kind: ResourceType,
        wildcard: bool,
        names: &[String],
        snapshot: &Snapshot,
    ) -> (String, Vec<Arc<Resource>>) {
        let mut planner = Planner::new(Flavour::Sotw, false);
        planner.set_subscription(kind, wildcard, names, Some(snapshot));
        let mut out = Vec::new();
        planner.push_type(kind, snapshot, &mut out);
        match out.pop() {
            Some(step) => (step.version, step.resources),
            None => (String::new(), Vec::new()),
        }
    }

    fn push_type(&mut self, kind: ResourceType, snapshot: &Snapshot, out: &mut Vec<Step>) {
        if let Some(diff) = self.diff(kind, snapshot)
            && let Some(step) = self.apply(diff, snapshot, true)
        {
            out.push(step);
        }
    }

    /// Whether listeners or routes would change: only then can a held route still name a
    /// cluster the snapshot dropped.
    fn routing_changes(&self, snapshot: &Snapshot) -> bool {
        [ResourceType::Listener, ResourceType::Route]
            .into_iter()
            .any(|kind| {
                self.diff(kind, snapshot)
                    .is_some_and(|d| d.adopt || !d.upserts.is_empty() || !d.removals.is_empty())
            })
    }

    /// What `kind` lacks against the snapshot, or `None` when it is in line (or unwatched).
    /// When the proxy was in line with the snapshot this one was derived from, only the
    /// names that changed are looked at: the work is proportional to the change.
    fn diff(&self, kind: ResourceType, snapshot: &Snapshot) -> Option<Diff> {
        let tp = self.types[kind.index()].as_ref()?;
        if !tp.subscribed() || tp.evaluated.as_deref() == Some(snapshot.type_version(kind)) {
            return None;
        }
        let changed = tp
            .evaluated
            .as_deref()
            .filter(|_| kind != ResourceType::Endpoint || self.same_endpoint_context(tp, snapshot))
            .and_then(|from| snapshot.changed_since(kind, from));
        let diff = match changed {
            Some(names) => self.diff_names(kind, tp, snapshot, names),
            None => self.diff_all(kind, tp, snapshot),
        };
        #[cfg(test)]
        if changed.is_some() {
            // The shortcut must find exactly what the full diff finds.
            let full = self.diff_all(kind, tp, snapshot);
            assert_eq!(
                diff.summary(),
                full.summary(),
                "incremental {kind} diff differs from the full diff"
            );
        }
        Some(diff)
    }

    /// What the EDS target depends on besides the subscription and the endpoints: the
    /// clusters the proxy holds (which keep the endpoints of clusters gone from the snapshot)
    /// and the snapshot's clusters (what a reported cluster uses).
    fn endpoint_context(&self, snapshot: &Snapshot) -> (u64, String) {
        (
            self.clusters_held_generation,
            snapshot.type_version(ResourceType::Cluster).to_owned(),
        )
    }

    /// Whether `tp` was evaluated in the [`Planner::endpoint_context`] that holds now (compared
    /// in place: this runs on every endpoint diff of every stream).
    fn same_endpoint_context(&self, tp: &TypePlan, snapshot: &Snapshot) -> bool {
        tp.context.0 == self.clusters_held_generation
            && tp.context.1 == snapshot.type_version(ResourceType::Cluster)
    }

    /// The full diff of `kind`: every subscribed name and everything held.
    fn diff_all(&self, kind: ResourceType, tp: &TypePlan, snapshot: &Snapshot) -> Diff {
        let all = snapshot.resources(kind);
        let mut target: BTreeMap<&str, Want> = BTreeMap::new();
        let mut whole_type = tp.wildcard;
        if tp.wildcard {
            target.extend(all.iter().map(|(n, r)| (n.as_str(), Want::Send(r.clone()))));
        }
        let mut users = None;
        for name in &tp.names {
            match self.want(kind, tp, snapshot, name, &mut users) {
                Some(want) => {
                    whole_type &= want.in_snapshot;
                    target.insert(&**name, want.want);
                }
                None => continue,
            }
        }
        // A reported version is adopted unless it predates clusters (re)created since.
        let adopt = match (&tp.reported, tp.synced) {
            (Some(reported), false) => {
                !target.keys().any(|n| self.awaiting_endpoints.contains(*n))
                    && *reported
                        == hash_versions(target.iter().map(|(n, w)| (*n, w.version(tp, n))))
            }
            _ => false,
        };
        let mut upserts = Vec::new();
        if adopt {
            upserts.extend(target.values().filter_map(Want::resource).cloned());
        } else {
            upserts.extend(
                target
                    .iter()
                    .filter_map(|(name, want)| tp.outdated(name, want)),
            );
        }
        let removals = tp
            .held
            .iter()
            .map(Held::name)
            .filter(|n| !target.contains_key(n))
            .map(str::to_owned)
            .collect();
        Diff {
            kind,
            upserts,
            removals,
            whole_type,
            adopt,
        }
    }

    /// The diff of `kind` over `names` only, for a proxy in line with the snapshot before
    /// `snapshot`, where only `names` changed. (In line means synced: nothing to adopt.)
    fn diff_names(
        &self,
        kind: ResourceType,
        tp: &TypePlan,
        snapshot: &Snapshot,
        names: &[String],
    ) -> Diff {
        let all = snapshot.resources(kind);
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        let mut users = None;
        for name in names {
            let want = if tp.names.contains(name.as_str()) {
                self.want(kind, tp, snapshot, name, &mut users)
                    .map(|w| w.want)
            } else if tp.wildcard {
                all.get(name).map(|r| Want::Send(r.clone()))
            } else {
                None
            };
            match want {
                Some(want) => upserts.extend(tp.outdated(name, &want)),
                None if tp.held.contains(name) => removals.push(name.clone()),
                None => {}
            }
        }
        // Names missing from the snapshot that are not among the changed ones were missing
        // before too; only they make the target differ from the snapshot's whole type.
        let whole_type = tp.wildcard
            && ((kind != ResourceType::Endpoint && !snapshot.has_fallback(kind))
                || tp.names.iter().all(|n| all.contains_key(&**n)));
        Diff {
            kind,
            upserts,
            removals,
            whole_type,
            adopt: false,
        }
    }

    /// What the proxy should hold for a subscribed `name`, or `None` when nothing (a name of
    /// another type than endpoints that the snapshot lacks and has no fallback for).
    fn want<'s>(
        &'s self,
        kind: ResourceType,
        tp: &TypePlan,
        snapshot: &'s Snapshot,
        name: &str,
        users: &mut Option<BTreeSet<&'s str>>,
    ) -> Option<Target> {
        if let Some(r) = snapshot.get(kind, name) {
            return Some(Target {
                want: Want::Send(r.clone()),
                in_snapshot: true,
            });
        }
        if kind != ResourceType::Endpoint {
            // Answered with the snapshot's fallback for the type, when it has one.
            return snapshot.fallback(kind, name).map(|r| Target {
                want: Want::Send(r),
                in_snapshot: false,
            });
        }
        // Never leave a cluster warming: unknown names get an empty assignment. But a
        // cluster gone from the snapshot and still held is still routed to until the routes
        // change: it keeps the endpoints it has.
        let users = users.get_or_insert_with(|| self.held_cluster_endpoints(snapshot));
        let kept = tp.held.get(name).filter(|_| users.contains(name));
        let want = match kept {
            Some(h) if h.is_reported() => Want::Keep,
            Some(h) => match h.resource() {
                Some(r) => Want::Send(r.clone()),
                None => Want::Send(Resource::empty_endpoints(name)),
            },
            None => Want::Send(Resource::empty_endpoints(name)),
        };
        Some(Target {
            want,
            in_snapshot: false,
        })
    }

    /// Brings what the proxy holds in line with `diff`; the step to send, if any. `complete`
    /// is false when removals were held back, so the type is not yet in line.
    fn apply(&mut self, diff: Diff, snapshot: &Snapshot, complete: bool) -> Option<Step> {
        let kind = diff.kind;
        let flavour = self.flavour;
        let context = if kind == ResourceType::Endpoint {
            self.endpoint_context(snapshot)
        } else {
            Default::default()
        };
        let tp = if diff.upserts.is_empty() && diff.removals.is_empty() {
            self.plan_mut(kind)
        } else {
            self.holdings_mut(kind)
        };
        // A proxy waits for a first response to each subscription, even an empty one (its
        // initial fetch; Envoy would otherwise stall until its timeout).
        let first = !tp.synced;
        tp.reported = None;
        tp.synced = true;
        // Not in line while removals wait: a later snapshot equal to an older one must not
        // find the type evaluated and leave them pending.
        tp.evaluated = complete.then(|| snapshot.type_version(kind).to_owned());
        tp.context = context;
        tp.held.sent(&diff.upserts);
        for name in &diff.removals {
            tp.held.remove(name);
        }
        if diff.adopt || (diff.upserts.is_empty() && diff.removals.is_empty() && !first) {
            return None;
        }
        let version = if diff.whole_type && complete {
            snapshot.type_version(kind).to_owned()
        } else {
            hash_versions(tp.held.iter().map(|h| (h.name(), h.version())))
        };
        let resources = if flavour == Flavour::Sotw && kind.is_full_state() {
            tp.held.iter().filter_map(Held::resource).cloned().collect()
        } else {
            diff.upserts.clone()
        };
        if matches!(kind, ResourceType::Listener | ResourceType::Route) {
            self.routing_unacked[kind.index()] = true;
        }
        if kind == ResourceType::Cluster {
            let recreated = if self.clusters_rejected && flavour == Flavour::Sotw {
                &resources
            } else {
                &diff.upserts
            };
            self.clusters_changed(recreated);
            self.awaiting_endpoints
                .extend(recreated.iter().flat_map(|c| endpoint_names(c).cloned()));
        }
        Some(Step {
            kind,
            resources,
            removals: diff.removals,
            version,
        })
    }

    /// After clusters are (re)created, the endpoints they use are planned again (held
    /// clusters keep theirs), and they warm until they receive an EDS response, even an
    /// unchanged one. Removals alone change nothing here: the proxy unsubscribes from the
    /// endpoints of removed clusters, and would not ACK an answer for them.
    fn clusters_changed(&mut self, upserts: &[Arc<Resource>]) {
        let flavour = self.flavour;
        let Some(eds) = self.types[ResourceType::Endpoint.index()].as_mut() else {
            return;
        };
        if upserts.is_empty() {
            return;
        }
        eds.evaluated = None;
        match flavour {
            Flavour::Sotw => eds.held.mark_all_stale(),
            Flavour::Delta => {
                for name in upserts.iter().flat_map(|c| endpoint_names(c)) {
                    eds.held.mark_stale(name);
                }
            }
        }
    }

    /// Settles the awaited endpoints once clusters and then endpoints were sent. Per-type CDS
    /// streams never wait: their endpoints come on another stream. An ADS stream keeps them
    /// until the proxy shows it routes here (see [`Planner::holding`]).
    fn await_endpoints(&mut self, snapshot: &Snapshot) {
        if !self.ads && !self.knows(ResourceType::Endpoint) {
            self.awaiting_endpoints.clear();
            return;
        }
        let mut awaiting = std::mem::take(&mut self.awaiting_endpoints);
        if !awaiting.is_empty() {
            // Only clusters the proxy still holds matter.
            let used = self.held_cluster_endpoints(snapshot);
            awaiting.retain(|name| used.contains(&**name));
        }
        self.awaiting_endpoints = awaiting;
        self.endpoints_delivered();
    }

    /// Drops from the awaited endpoints those the proxy has now been sent.
    fn endpoints_delivered(&mut self) {
        let Some(eds) = self.types[ResourceType::Endpoint.index()].as_ref() else {
            return;
        };
        self.awaiting_endpoints
            .retain(|name| !eds.held.get(name).is_some_and(Held::fresh));
    }

    /// The EDS names used by the clusters the proxy holds. A cluster it reported holding
    /// uses what the snapshot's cluster of that name uses, or its own name when gone.
    fn held_cluster_endpoints<'s>(&'s self, snapshot: &'s Snapshot) -> BTreeSet<&'s str> {
        let Some(cds) = self.types[ResourceType::Cluster.index()].as_ref() else {
            return BTreeSet::new();
        };
        let mut used = BTreeSet::new();
        for held in cds.held.iter() {
            match held
                .resource()
                .or_else(|| snapshot.get(ResourceType::Cluster, held.name()))
            {
                Some(c) => used.extend(endpoint_names(c).map(|n| &**n)),
                None => {
                    used.insert(held.name());
                }
            }
        }
        used
    }
}

#[cfg(test)]
impl Planner {
    /// Takes out the subscription and the holdings of `kind`, to measure what they keep
    /// (`server::footprint`).
    pub(crate) fn take_parts(
        &mut self,
        kind: ResourceType,
    ) -> (Box<dyn std::any::Any>, Box<dyn std::any::Any>) {
        let tp = self.plan_mut(kind);
        (
            Box::new(std::mem::take(&mut tp.names)),
            Box::new(std::mem::take(&mut tp.held)),
        )
    }
}

/// What a type's target holds for one name.
enum Want {
    /// This resource.
    Send(Arc<Resource>),
    /// Whatever the proxy reported holding (endpoints of a held cluster after a reconnect).
    Keep,
}

impl Want {
    fn resource(&self) -> Option<&Arc<Resource>> {
        match self {
            Want::Send(r) => Some(r),
            Want::Keep => None,
        }
    }

    fn version<'a>(&'a self, tp: &'a TypePlan, name: &str) -> &'a str {
        match self {
            Want::Send(r) => r.version(),
            Want::Keep => tp.held.get(name).map_or("", Held::version),
        }
    }
}

/// The version of a set of resources, from their names and versions in name order: the same
/// hash as the snapshot's per-type version, so a proxy holding a whole type reports the
/// snapshot's version.
fn hash_versions<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, version) in entries {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(version.as_bytes());
        hasher.update(&[0]);
    }
    format!("{:016x}", hasher.digest())
}

/// `name` to keep in a subscription: the snapshot's own copy when it has a resource of that
/// name (every stream of the group then shares it), else a new one.
fn intern(kind: ResourceType, name: &str, snapshot: Option<&Snapshot>) -> Arc<str> {
    snapshot
        .and_then(|s| s.get(kind, name))
        .map_or_else(|| Arc::from(name), |r| r.shared_name().clone())
}

/// The EDS resources a cluster uses.
fn endpoint_names(cluster: &Resource) -> impl Iterator<Item = &Arc<str>> {
    cluster
        .references()
        .iter()
        .filter(|r| r.kind == ResourceType::Endpoint)
        .map(|r| &r.name)
}

#[cfg(test)]
mod tests;
