//! The registry's own health checking: TTL expiry, HTTP polling and reaping of services
//! critical for longer than `DeregisterCriticalServiceAfter`. Results go through the writer
//! like any other change, so they are durable and indexed.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use meshplane_model::Health;
use parking_lot::RwLock;
use tokio::{
    sync::{Semaphore, mpsc},
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::Catalog,
    registration::CheckKind,
    writer::{Command, Op},
};

/// How often deadlines are checked; the resolution of TTL expiry and reaping.
pub const TICK: Duration = Duration::from_millis(100);
/// Most HTTP checks in flight at once.
const MAX_CONCURRENT_PROBES: usize = 64;
/// Most bytes of a check response kept as its output (Consul's default is 4 KiB).
const MAX_OUTPUT: usize = 4096;

/// Runs TTL expiry, reaping and HTTP checks until `shutdown` is cancelled.
pub async fn run(
    catalog: Arc<RwLock<Catalog>>,
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP check client; HTTP checks will not run");
            return;
        }
    };
    let probes = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
    let mut next_run: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let (ops, due) = {
            let catalog = catalog.read();
            let mut ops: Vec<Op> = catalog
                .expired_ttls(now)
                .into_iter()
                .map(|check_id| Op::CheckResult {
                    check_id,
                    status: Health::Critical,
                    output: "TTL expired".into(),
                    ttl_expiry: true,
                })
                .collect();
            ops.extend(catalog.reapable(now).into_iter().map(Op::Reap));
            let due = due_http_checks(&catalog, &mut next_run, now);
            (ops, due)
        };
        for op in ops {
            if commands.send(Command { op, reply: None }).await.is_err() {
                return;
            }
        }
        for (check_id, kind) in due {
            let (client, commands, probes) = (client.clone(), commands.clone(), probes.clone());
            tokio::spawn(async move {
                let Ok(_permit) = probes.acquire_owned().await else {
                    return;
                };
                let (status, output) = probe(&client, &kind).await;
                let op = Op::CheckResult {
                    check_id,
                    status,
                    output,
                    ttl_expiry: false,
                };
                let _ = commands.send(Command { op, reply: None }).await;
            });
        }
    }
}

/// HTTP checks due now; schedules their next run and forgets vanished checks.
fn due_http_checks(
    catalog: &Catalog,
    next_run: &mut HashMap<String, Instant>,
    now: Instant,
) -> Vec<(String, CheckKind)> {
    let mut due = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (id, kind) in catalog.http_checks() {
        seen.insert(id);
        let CheckKind::Http { interval, .. } = kind else {
            continue;
        };
        let next = next_run.entry(id.to_string()).or_insert(now);
        if *next <= now {
            *next = now + *interval;
            due.push((id.to_string(), kind.clone()));
        }
    }
    next_run.retain(|id, _| seen.contains(id.as_str()));
    due
}

/// One HTTP check run: 2xx passing, 429 warning, anything else critical (Consul's rules).
async fn probe(client: &reqwest::Client, kind: &CheckKind) -> (Health, String) {
    let CheckKind::Http {
        url,
        interval,
        timeout,
        method,
        header,
    } = kind
    else {
        return (Health::Critical, "not an HTTP check".into());
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = client
        .request(method.clone(), url)
        .timeout((*timeout).min(*interval).max(Duration::from_millis(100)))
        .header("User-Agent", "Consul Health Check");
    for (name, values) in header {
        for value in values {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    match request.send().await {
        Ok(response) => {
            let code = response.status();
            let body = response.bytes().await.unwrap_or_default();
            let body = String::from_utf8_lossy(&body[..body.len().min(MAX_OUTPUT)]).into_owned();
            let status = if code.is_success() {
                Health::Passing
            } else if code.as_u16() == 429 {
                Health::Warning
            } else {
                Health::Critical
            };
            (
                status,
                format!("HTTP {method} {url}: {code} Output: {body}"),
            )
        }
        Err(e) => (Health::Critical, format!("HTTP {method} {url}: {e}")),
    }
}
