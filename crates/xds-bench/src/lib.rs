//! Fan-out benchmark of Meshplane's xDS server (figures in BENCHMARKS.md): N Envoy-like ADS streams,
//! state-of-the-world or delta, against the real [`meshplane_xds::XdsServer`] on 127.0.0.1,
//! and against a [`floor`] server that only writes pre-encoded responses, in the same run.
//!
//! ```text
//! cargo run --release -p meshplane-xds-bench -- --streams 100,1000,10000 --mode sotw,delta
//! ```
//!
//! Each scenario runs in a fresh server process ([`bench`]) that spawns this binary again as
//! the client ([`child`]), so the server's memory growth per stream is measured without the
//! client's; the floor then runs the same scenario in its own fresh process. The client
//! ([`client`]) behaves like Envoy: wildcard CDS and LDS with the node on the first request,
//! then EDS and RDS for the names received, every response ACKed. [`scenario`] says what is
//! published and changed, and which proxies a change affects; [`report`] turns results into
//! rows, Meshplane's latency as a multiple of the floor's.
//!
//! `--storm reconnect|registry` runs the [`storm`]s instead, through the real control plane
//! on its embedded registry (`mixed` layout): every proxy reconnecting at once after a
//! control-plane restart, or every service changing at once; one row each per mode and
//! stream count (BENCHMARKS.md, "Storms"):
//!
//! ```text
//! cargo run --release -p meshplane-xds-bench -- --storm reconnect --streams 10000 --mode sotw,delta
//! cargo run --release -p meshplane-xds-bench -- --storm registry --streams 5000 --mode sotw,delta
//! ```
//!
//! The reliability suite's reconnect storm (`crates/cli/tests/reliability_storm.rs`) uses
//! this library as its simulated proxies: [`plane::register_services`] loads the `mixed`
//! layout's services into a `meshplane control-plane` process, and a [`client::Fleet`] per
//! protocol flavour connects, survives the process's restart and reports a
//! [`client::StormReport`].

pub mod bench;
pub mod child;
pub mod client;
pub mod floor;
pub mod plane;
pub mod probe;
pub mod report;
pub mod scenario;
pub mod storm;
mod target;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};

use bench::{Placement, ScenarioConfig, ServerKind};
use child::Timeouts;
use client::{FleetConfig, Mode};
use scenario::Layout;
use storm::{Storm, StormConfig};

/// Fan-out benchmark of the xDS server.
#[derive(Debug, Parser)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One scenario, with the client in a child process (used by the default command).
    #[command(hide = true)]
    Scenario(ScenarioArgs),
    /// The client side of a scenario (spawned by `scenario`).
    #[command(hide = true)]
    Client(ClientArgs),
}

/// Every combination of the lists is a scenario, each in a fresh server process.
#[derive(Debug, Args)]
struct RunArgs {
    /// Numbers of ADS streams (proxies).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    streams: Vec<usize>,
    /// Protocol flavours: `sotw`, `delta`.
    #[arg(long, value_delimiter = ',', default_value = "sotw,delta")]
    mode: Vec<Mode>,
    /// `groups`: five proxies per group, five clusters each, every group changes per round;
    /// `shared`: one group of 1,000 clusters × 20 endpoints, one service changes per round;
    /// `mixed`: 1,000 services × 20 instances, 1 % wildcard proxies, the rest in groups of
    /// five, one service changes per round.
    #[arg(long, value_delimiter = ',', default_value = "groups,shared")]
    layout: Vec<Layout>,
    /// Servers measured in each scenario (besides the floor): `meshplane` (the xDS server
    /// fed with the layout's snapshots), `control-plane` (the whole control plane on its
    /// embedded registry, changes through its Consul-compatible API) and
    /// `control-plane-consul` (the control plane with `--registry consul`, following an
    /// embedded registry's API over plain HTTP/1.1) and `control-plane-consul-https` (the
    /// same over HTTPS, where HTTP/2 is negotiated); the control-plane servers run the
    /// `mixed` layout only.
    #[arg(long, value_delimiter = ',', default_value = "meshplane")]
    server: Vec<ServerKind>,
    /// Skip the floor server (by default each scenario also runs against it).
    #[arg(long)]
    no_floor: bool,
    /// Run these storms instead of the fan-out scenarios: `reconnect` (every proxy
    /// reconnects at once after a control-plane restart) and/or `registry` (all 1,000
    /// services change at once). Always the control plane on its embedded registry and the
    /// `mixed` layout (`--layout`, `--server`, `--rounds` and the floor do not apply).
    #[arg(long, value_delimiter = ',')]
    storm: Vec<Storm>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
struct CommonArgs {
    /// ADS streams per HTTP/2 connection. A real Envoy uses one connection; sharing keeps
    /// descriptors and client cost down (the server sets no concurrent-stream limit).
    #[arg(long, default_value_t = 100)]
    streams_per_conn: usize,
    /// Changes published per scenario.
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// Instances per service loaded into the control-plane servers' registry.
    #[arg(long, default_value_t = 20)]
    instances: usize,
    /// Seconds allowed to connect and sync every stream.
    #[arg(long, default_value_t = 600)]
    sync_timeout_secs: u64,
    /// Seconds allowed for every stream to ACK one change.
    #[arg(long, default_value_t = 120)]
    ack_timeout_secs: u64,
}

impl CommonArgs {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            sync: Duration::from_secs(self.sync_timeout_secs),
            ack: Duration::from_secs(self.ack_timeout_secs),
        }
    }
}

#[derive(Debug, Args)]
struct ScenarioArgs {
    #[arg(long, default_value = "meshplane")]
    server: ServerKind,
    /// Run this storm instead of rounds.
    #[arg(long)]
    storm: Option<Storm>,
    #[arg(long)]
    layout: Layout,
    #[arg(long)]
    mode: Mode,
    #[arg(long)]
    streams: usize,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct ClientArgs {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    layout: Layout,
    #[arg(long)]
    mode: Mode,
    #[arg(long)]
    streams: usize,
    /// Put service descriptors in node metadata (for the control-plane servers).
    #[arg(long)]
    descriptors: bool,
    /// Record the endpoints each proxy holds (the storms' exactness check).
    #[arg(long)]
    track: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None if !cli.run.storm.is_empty() => run_storms(cli.run).await,
        None => run_all(cli.run).await,
        Some(Command::Scenario(ScenarioArgs {
            storm: Some(storm),
            mode,
            streams,
            common,
            ..
        })) => {
            let result = storm::run_storm(StormConfig {
                storm,
                mode,
                streams,
                streams_per_conn: common.streams_per_conn,
                instances: common.instances,
                placement: Placement::Child,
                timeouts: common.timeouts(),
            })
            .await?;
            println!("ROW {}\t", report::storm_row(&result));
            Ok(())
        }
        Some(Command::Scenario(args)) => {
            let result = bench::run_scenario(ScenarioConfig {
                server: args.server,
                layout: args.layout,
                mode: args.mode,
                streams: args.streams,
                streams_per_conn: args.common.streams_per_conn,
                instances: args.common.instances,
                rounds: args.common.rounds,
                placement: Placement::Child,
                timeouts: args.common.timeouts(),
            })
            .await?;
            let (head, tail) = report::row_parts(&result);
            println!(
                "LATENCY {}",
                report::latency_line(&report::latency(&result))
            );
            println!("ROW {head}\t{tail}");
            Ok(())
        }
        Some(Command::Client(args)) => {
            let config = FleetConfig {
                addr: args.addr,
                streams: args.streams,
                streams_per_conn: args.common.streams_per_conn,
                mode: args.mode,
                layout: args.layout,
                descriptors: args.descriptors,
                track: args.track,
            };
            child::run_client(config, args.common.timeouts()).await
        }
    }
}

/// Runs every scenario, each in its own server process (then the floor in another), and
/// prints the table.
async fn run_all(args: RunArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    println!("{}", report::HEADER);
    let mut failures = 0;
    for &layout in &args.layout {
        for &mode in &args.mode {
            for &streams in &args.streams {
                // The wildcard layout at 10,000 streams needs more memory than most machines
                // have (see BENCHMARKS.md); skip rather than push the machine into the OOM killer.
                let (need, available) = (
                    layout.memory_estimate(streams),
                    probe::mem_available_bytes()?,
                );
                if need > available / 10 * 7 {
                    println!(
                        "| {layout} | {mode} | {streams} | skipped: needs ~{} GiB, {} GiB available |",
                        need >> 30,
                        available >> 30
                    );
                    continue;
                }
                failures += run_pair(&exe, (layout, mode, streams), &args).await?;
            }
        }
    }
    anyhow::ensure!(failures == 0, "{failures} scenario(s) failed");
    Ok(())
}

/// Runs every storm × mode × stream count, each in its own server process, and prints the
/// table.
async fn run_storms(args: RunArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    println!("{}", report::STORM_HEADER);
    let mut failures = 0;
    let server = ServerKind::ControlPlane(plane::PlaneRegistry::Embedded);
    for &storm in &args.storm {
        for &mode in &args.mode {
            for &streams in &args.streams {
                let scenario = (Layout::Mixed, mode, streams);
                let outcome = run_one(&exe, server, scenario, Some(storm), &args.common).await?;
                match outcome.row {
                    Some((row, _)) => println!("{row}"),
                    None => {
                        failures += 1;
                        println!(
                            "| {storm} | {mode} | {streams} | {server} | failed: see stderr |"
                        );
                    }
                }
            }
        }
    }
    anyhow::ensure!(failures == 0, "{failures} storm(s) failed");
    Ok(())
}

/// Runs one scenario against each `--server` that runs its layout, then (unless
/// `--no-floor`) against the floor, and prints their rows; returns how many failed.
async fn run_pair(
    exe: &std::path::Path,
    scenario: (Layout, Mode, usize),
    args: &RunArgs,
) -> anyhow::Result<usize> {
    let (layout, mode, streams) = scenario;
    let mut outcomes = Vec::new();
    for &server in &args.server {
        if matches!(server, ServerKind::ControlPlane(_)) && layout != Layout::Mixed {
            continue;
        }
        outcomes.push((
            server,
            Some(run_one(exe, server, scenario, None, &args.common).await?),
        ));
    }
    if !args.no_floor {
        let floor = run_one(exe, ServerKind::Floor, scenario, None, &args.common).await?;
        outcomes.push((ServerKind::Floor, Some(floor)));
    }
    let floor_latency = outcomes
        .iter()
        .find(|(s, _)| *s == ServerKind::Floor)
        .and_then(|(_, o)| o.as_ref().and_then(|f| f.latency));
    let mut failures = 0;
    for (server, outcome) in outcomes {
        let Some(outcome) = outcome else { continue };
        match outcome.row {
            Some((head, tail)) => {
                let cell =
                    report::floor_cell(server, outcome.latency.as_ref(), floor_latency.as_ref());
                println!("{head} {cell} {tail}");
            }
            None => {
                failures += 1;
                println!("| {layout} | {mode} | {streams} | {server} | failed: see stderr |");
            }
        }
    }
    Ok(failures)
}

/// What a scenario process printed.
struct Outcome {
    /// The row's halves around the "× floor" cell; `None` when the scenario failed.
    row: Option<(String, String)>,
    latency: Option<report::Latency>,
}

/// Runs one scenario process against `server` (a storm, if given).
async fn run_one(
    exe: &std::path::Path,
    server: ServerKind,
    (layout, mode, streams): (Layout, Mode, usize),
    storm: Option<Storm>,
    c: &CommonArgs,
) -> anyhow::Result<Outcome> {
    let mut child = tokio::process::Command::new(exe)
        .arg("scenario")
        .args(["--server", &server.to_string()])
        .args(
            storm
                .iter()
                .flat_map(|s| ["--storm".to_owned(), s.to_string()]),
        )
        .args(["--layout", &layout.to_string(), "--mode", &mode.to_string()])
        .args(["--streams", &streams.to_string()])
        .args(["--streams-per-conn", &c.streams_per_conn.to_string()])
        .args(["--rounds", &c.rounds.to_string()])
        .args(["--instances", &c.instances.to_string()])
        .args(["--sync-timeout-secs", &c.sync_timeout_secs.to_string()])
        .args(["--ack-timeout-secs", &c.ack_timeout_secs.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning a scenario process")?;
    let stdout = child.stdout.take().context("scenario stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut row, mut latency) = (None, None);
    while let Some(line) = lines.next_line().await? {
        if let Some(r) = line.strip_prefix("ROW ") {
            row = r
                .split_once('\t')
                .map(|(h, t)| (h.to_owned(), t.to_owned()));
        } else if let Some(l) = line.strip_prefix("LATENCY ") {
            latency = report::parse_latency_line(l);
        } else {
            eprintln!("{line}");
        }
    }
    let ok = child.wait().await?.success();
    Ok(Outcome {
        row: row.filter(|_| ok),
        latency,
    })
}
