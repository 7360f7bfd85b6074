//! The client in its own process, so the server process's memory is the server's alone.
//!
//! The server process spawns this same binary as `client` and talks to it over pipes, one
//! line per message. Streams open in the layout's phases: the child prints `SYNCED <ns>` once
//! every stream of a phase is synced, and the parent writes `NEXT` to open the next phase
//! (after reading its memory). Then, for each round, the parent writes `ARM <round>`, the
//! child answers `ARMED <round>`, and once every affected stream has ACKed that round's
//! change (and the unaffected ones stayed quiet) it prints
//! `ACKED <round> <unaffected> <unaffected touched> <ack ns>...` (monotonic clock, shared by
//! both processes). `STOP` or the end of stdin ends the child.
//!
//! A storm ([`crate::storm`]) instead writes `STORM` (answered `STORMING`: responses are
//! counted from then on), for a restart `DROP` (answered `DROPPING`: streams that end wait)
//! and, once the server is back, `RECONNECT <addr>` (answered `RECONNECTED` once the
//! connections are up and the streams re-opening), then one `EXPECT <service> <digest>` line
//! per service and `SETTLE <0|1>` (1: wait for every stream to be re-established); the child
//! answers `SETTLED` with a [`StormReport`] line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::client::{Fleet, FleetConfig, RoundAcks, StormReport};
use crate::probe::{cpu_ns_of, mono_ns, raise_nofile_limit};

/// The parent's handle on a client child.
pub struct ChildClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

// === impl ChildClient ===

impl ChildClient {
    /// Spawns this binary as a client of `config.addr`.
    pub fn spawn(config: &FleetConfig, timeouts: &Timeouts) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut child = tokio::process::Command::new(exe)
            .arg("client")
            .args(["--addr", &config.addr.to_string()])
            .args(["--streams", &config.streams.to_string()])
            .args(["--streams-per-conn", &config.streams_per_conn.to_string()])
            .args(["--mode", &config.mode.to_string()])
            .args(["--layout", &config.layout.to_string()])
            .args(config.descriptors.then_some("--descriptors"))
            .args(config.track.then_some("--track"))
            .args(["--sync-timeout-secs", &timeouts.sync.as_secs().to_string()])
            .args(["--ack-timeout-secs", &timeouts.ack.as_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning the client process")?;
        let stdin = child.stdin.take().context("client stdin")?;
        let stdout = child.stdout.take().context("client stdout")?;
        Ok(ChildClient {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Opens the next phase's streams.
    pub async fn next_phase(&mut self) -> anyhow::Result<()> {
        self.send("NEXT").await
    }

    /// Time the child took to connect and sync the current phase's streams.
    pub async fn synced(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let line = self.expect("SYNCED", timeout).await?;
        Ok(Duration::from_nanos(
            line.trim().parse().context("SYNCED line")?,
        ))
    }

    /// Arms `round`; returns once the child has.
    pub async fn arm(&mut self, round: u64) -> anyhow::Result<()> {
        self.send(&format!("ARM {round}")).await?;
        self.expect("ARMED", Duration::from_secs(30))
            .await
            .map(drop)
    }

    /// Every affected stream's ACK time (monotonic ns) for `round`, and the unaffected.
    pub async fn acked(&mut self, round: u64, timeout: Duration) -> anyhow::Result<RoundAcks> {
        // The child waits `timeout` for the ACKs, then watches the unaffected streams.
        let line = self
            .expect("ACKED", timeout + Duration::from_secs(5))
            .await?;
        let mut fields = line.split_whitespace();
        anyhow::ensure!(
            fields.next() == Some(round.to_string().as_str()),
            "ACKED for another round: {line:.40}"
        );
        let mut count = |what: &str| -> anyhow::Result<usize> {
            fields
                .next()
                .with_context(|| format!("ACKED without {what}"))?
                .parse()
                .with_context(|| format!("ACKED {what}"))
        };
        let (unaffected, unaffected_touched) = (count("unaffected")?, count("touched")?);
        let times = fields
            .map(|f| f.parse().context("ACKED time"))
            .collect::<anyhow::Result<_>>()?;
        Ok(RoundAcks {
            times,
            unaffected,
            unaffected_touched,
        })
    }

    /// Starts counting the storm's responses.
    pub async fn storm_arm(&mut self) -> anyhow::Result<()> {
        self.send("STORM").await?;
        self.expect("STORMING", Duration::from_secs(30))
            .await
            .map(drop)
    }

    /// Tells the streams the server is about to stop.
    pub async fn expect_restart(&mut self) -> anyhow::Result<()> {
        self.send("DROP").await?;
        self.expect("DROPPING", Duration::from_secs(30))
            .await
            .map(drop)
    }

    /// Tells the streams the restarted server's address; returns once they are re-opening.
    pub async fn reconnect(&mut self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        self.send(&format!("RECONNECT {addr}")).await?;
        self.expect("RECONNECTED", timeout).await.map(drop)
    }

    /// Sends the expected endpoints and waits for the fleet to settle on them.
    pub async fn settle(
        &mut self,
        expected: &BTreeMap<String, u64>,
        reconnecting: bool,
        timeout: Duration,
    ) -> anyhow::Result<StormReport> {
        let mut lines = String::new();
        for (name, digest) in expected {
            lines.push_str(&format!("EXPECT {name} {digest}\n"));
        }
        lines.push_str(&format!("SETTLE {}", u8::from(reconnecting)));
        self.send(&lines).await?;
        let line = self
            .expect("SETTLED", timeout + Duration::from_secs(30))
            .await?;
        StormReport::from_line(&line)
    }

    /// CPU time the child has used so far (ns).
    pub fn cpu_ns(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("client process already reaped")?;
        cpu_ns_of(&pid.to_string())
    }

    /// Ends the child and reaps it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.send("STOP").await;
        drop(self.stdin);
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.kill().await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    /// The rest of the next line, which must start with `tag` (`ERROR` lines fail).
    async fn expect(&mut self, tag: &str, timeout: Duration) -> anyhow::Result<String> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("client process: no {tag} within {timeout:?}"))??
            .with_context(|| format!("client process exited before {tag}"))?;
        match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            (t, rest) if t == tag => Ok(rest.to_owned()),
            _ => anyhow::bail!("client process: expected {tag}, got `{line:.200}`"),
        }
    }
}

/// How long to wait for the fleet.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Connect and sync every stream.
    pub sync: Duration,
    /// Every stream ACKs one change.
    pub ack: Duration,
}

/// The `client` mode: runs a fleet and answers the parent on stdout.
pub async fn run_client(config: FleetConfig, timeouts: Timeouts) -> anyhow::Result<()> {
    raise_nofile_limit()?;
    let mut out = tokio::io::stdout();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut start = mono_ns();
    let mut fleet = Fleet::connect(&config).await?;
    let phases = config.layout.phases(config.streams);
    for (i, phase) in phases.iter().enumerate() {
        if i > 0 {
            if lines.next_line().await?.as_deref() != Some("NEXT") {
                fleet.stop().await;
                return Ok(());
            }
            start = mono_ns();
        }
        fleet.open(phase.end);
        let done = fleet.synced(phase.clone(), timeouts.sync).await?;
        out.write_all(format!("SYNCED {}\n", done.saturating_sub(start)).as_bytes())
            .await?;
        out.flush().await?;
    }
    let mut expected = BTreeMap::new();
    while let Some(line) = lines.next_line().await? {
        let (command, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let reply = match command {
            "ARM" => None,
            "STORM" => {
                fleet.storm_arm();
                Some("STORMING".to_owned())
            }
            "DROP" => {
                fleet.expect_restart();
                Some("DROPPING".to_owned())
            }
            "RECONNECT" => {
                fleet
                    .reconnect(rest.trim().parse().context("RECONNECT address")?)
                    .await?;
                Some("RECONNECTED".to_owned())
            }
            "EXPECT" => {
                let (name, digest) = rest.split_once(' ').context("EXPECT line")?;
                expected.insert(name.to_owned(), digest.trim().parse().context("digest")?);
                continue;
            }
            "SETTLE" => {
                let report = fleet
                    .settle(&expected, rest.trim() == "1", timeouts.ack)
                    .await?;
                Some(format!("SETTLED {}", report.to_line()))
            }
            _ => break,
        };
        if let Some(reply) = reply {
            out.write_all(format!("{reply}\n").as_bytes()).await?;
            out.flush().await?;
            continue;
        }
        let round: u64 = rest.trim().parse().context("ARM line")?;
        fleet.arm(round);
        out.write_all(format!("ARMED {round}\n").as_bytes()).await?;
        out.flush().await?;
        let acks = fleet.acked(round, timeouts.ack).await?;
        let mut reply = format!(
            "ACKED {round} {} {}",
            acks.unaffected, acks.unaffected_touched
        );
        for t in acks.times {
            reply.push_str(&format!(" {t}"));
        }
        reply.push('\n');
        out.write_all(reply.as_bytes()).await?;
        out.flush().await?;
    }
    fleet.stop().await;
    Ok(())
}
