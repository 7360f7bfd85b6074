//! A TCP proxy that injects network faults between a client and a server, switchable while
//! connections are open: put it in front of a registry, a control plane or an app, point the
//! client at [`FaultProxy::addr`], and [`FaultProxy::set`] the [`Fault`].
//!
//! A fault applies to connections already open as well as to new ones, in both directions,
//! chunk by chunk (a chunk is what one read returned, at most 16 KiB): switching back to
//! [`Fault::Pass`] resumes forwarding on connections that survived. The proxy counts the
//! connections it accepted, whatever their fate, so tests can bound a client's request rate.
//! Dropping the proxy closes the listener and every connection.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The largest chunk forwarded at once.
const CHUNK: usize = 16 * 1024;

/// How finely [`Fault::Bandwidth`] paces: one slice per this much time at the capped rate.
const BANDWIDTH_SLICE: Duration = Duration::from_millis(20);

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything as it comes.
    Pass,
    /// Forward each chunk after this delay (in each direction, so a round trip takes at least
    /// twice as long).
    Delay(Duration),
    /// Close new connections as soon as they are accepted, and open ones (a FIN to both
    /// sides): a server that is down or a firewall that rejects.
    Drop,
    /// Accept and never answer: nothing is forwarded in either direction, connections stay
    /// open (a partition or a hung peer; only timeouts and keepalives notice). Data that
    /// arrives meanwhile is held and delivered if the fault is lifted.
    BlackHole,
    /// Reset connections, new and open, with a TCP RST (`SO_LINGER` 0): the client sees
    /// `ECONNRESET`.
    Reset,
    /// Forward at most this many bytes per second in each direction.
    Bandwidth(u64),
}

/// A running fault proxy on 127.0.0.1 (ephemeral port) in front of one target.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    fault_tx: watch::Sender<Fault>,
    accepted: Arc<AtomicU64>,
    /// Connections open now, and the most that were open at once.
    open: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    // Owns the connection tasks (through its `JoinSet`): aborting it aborts them all.
    accept_task: JoinHandle<()>,
}

// === impl FaultProxy ===

impl FaultProxy {
    /// Starts a proxy to `target` that passes traffic until told otherwise.
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (fault_tx, fault_rx) = watch::channel(Fault::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let (open, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            target,
            fault_rx,
            [Arc::clone(&accepted), Arc::clone(&open), Arc::clone(&peak)],
        ));
        Ok(FaultProxy {
            addr,
            target,
            fault_tx,
            accepted,
            open,
            peak,
            accept_task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the fault, for new and open connections alike.
    pub fn set(&self, fault: Fault) {
        self.fault_tx.send_replace(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.fault_tx.borrow()
    }

    /// Connections accepted since the start, including those dropped or reset at once.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once (a client's connection budget).
    pub fn peak_open(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

// === the proxy's tasks ===

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    fault_rx: watch::Receiver<Fault>,
    [accepted, open, peak]: [Arc<AtomicU64>; 3],
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // Accept errors (e.g. out of file descriptors) are transient for a listener: keep
        // serving, as a real server would.
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        peak.fetch_max(open.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        let (open, fault_rx) = (Arc::clone(&open), fault_rx.clone());
        connections.spawn(async move {
            serve(client, target, fault_rx).await;
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The sender closed its side; the other direction may go on.
    Eof,
    /// A read or write failed: the connection is gone.
    Broken,
    /// The fault closes the connection.
    Drop,
    /// The fault resets the connection.
    Reset,
}

async fn serve(client: TcpStream, target: SocketAddr, mut fault_rx: watch::Receiver<Fault>) {
    // A connection accepted during a black hole connects upstream only once it is lifted.
    match forwarding(&mut fault_rx).await {
        Ok(()) => {}
        Err(Ending::Reset) => return reset(&client),
        Err(_) => return,
    }
    let Ok(upstream) = TcpStream::connect(target).await else {
        // The target is down: the client sees the connection closed, as through a real proxy.
        return;
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
    let ending = {
        let mut up = pin!(pump(&mut client_rx, &mut upstream_tx, fault_rx.clone()));
        let mut down = pin!(pump(&mut upstream_rx, &mut client_tx, fault_rx));
        let (first, rest) = tokio::select! {
            ending = &mut up => (ending, down.as_mut()),
            ending = &mut down => (ending, up.as_mut()),
        };
        // A half-close lets the other direction finish; anything else ends both.
        if first == Ending::Eof {
            rest.await
        } else {
            first
        }
    };
    if ending == Ending::Reset {
        // Whole streams again: a dropped write half would send a FIN before the RST.
        for (rx, tx) in [(client_rx, client_tx), (upstream_rx, upstream_tx)] {
            if let Ok(stream) = rx.reunite(tx) {
                reset(&stream);
            }
        }
    }
}

/// Waits while the fault is a black hole; then `Ok` to go on forwarding, or how the fault
/// ends the connection.
async fn forwarding(fault_rx: &mut watch::Receiver<Fault>) -> Result<(), Ending> {
    loop {
        let fault = *fault_rx.borrow_and_update();
        match fault {
            Fault::Drop => return Err(Ending::Drop),
            Fault::Reset => return Err(Ending::Reset),
            Fault::BlackHole => changed(fault_rx).await?,
            Fault::Pass | Fault::Delay(_) | Fault::Bandwidth(_) => return Ok(()),
        }
    }
}

/// The next change of fault; a proxy being dropped closes the connection.
async fn changed(fault_rx: &mut watch::Receiver<Fault>) -> Result<(), Ending> {
    fault_rx.changed().await.map_err(|_| Ending::Drop)
}

/// Forwards one direction chunk by chunk, applying the fault in force at each step.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut fault_rx: watch::Receiver<Fault>,
) -> Ending {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if let Err(ending) = forwarding(&mut fault_rx).await {
            return ending;
        }
        // Reading is cancel-safe: a fault switched while idle takes effect at once.
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            switched = changed(&mut fault_rx) => match switched {
                Ok(()) => continue,
                Err(ending) => return ending,
            },
        };
        let n = match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Ending::Eof;
            }
            Ok(n) => n,
            Err(_) => return Ending::Broken,
        };
        if let Err(ending) = deliver(&buf[..n], to, &mut fault_rx).await {
            return ending;
        }
    }
}

/// Writes one chunk as the fault allows, or says how the fault ends the connection.
async fn deliver(
    mut chunk: &[u8],
    to: &mut OwnedWriteHalf,
    fault_rx: &mut watch::Receiver<Fault>,
) -> Result<(), Ending> {
    while !chunk.is_empty() {
        let fault = *fault_rx.borrow_and_update();
        let (slice, pause) = match fault {
            Fault::Drop => return Err(Ending::Drop),
            Fault::Reset => return Err(Ending::Reset),
            Fault::BlackHole => {
                changed(fault_rx).await?;
                continue;
            }
            Fault::Pass => (chunk.len(), Duration::ZERO),
            Fault::Delay(delay) => {
                // A fault switched during the delay applies to this chunk instead.
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    switched = changed(fault_rx) => {
                        switched?;
                        continue;
                    }
                }
                (chunk.len(), Duration::ZERO)
            }
            Fault::Bandwidth(bytes_per_second) => {
                let rate = bytes_per_second.max(1);
                let per_slice = (rate as f64 * BANDWIDTH_SLICE.as_secs_f64()).max(1.0) as usize;
                let slice = chunk.len().min(per_slice);
                (slice, Duration::from_secs_f64(slice as f64 / rate as f64))
            }
        };
        to.write_all(&chunk[..slice])
            .await
            .map_err(|_| Ending::Broken)?;
        chunk = &chunk[slice..];
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(())
}

/// Makes the kernel answer with RST instead of FIN when the socket closes.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

#[cfg(test)]
mod tests;
