//! A TCP proxy that holds back some responses: latency spikes in front of a service
//! (moto's DynamoDB in the chaos tests), switched on and off at runtime.
//!
//! The delay is applied to the answer, not to the request: the service has already done
//! the work when the client is kept waiting. A client whose attempt timeout is shorter
//! than a spike therefore sees an error for a write that was applied, retries it, and
//! meets its own write — the case where a conditional put or update must still come out
//! right.
//!
//! It speaks no HTTP. A connection's bytes flow through unchanged; the first bytes coming
//! back after the client has sent something start a new answer, which is when the proxy
//! decides whether to hold it back. That is one decision per request for HTTP/1.1
//! clients, which send a request only once the previous answer has come.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Which answers are held back, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spikes {
    /// The share of answers held back, in `[0, 1]`.
    pub rate: f64,
    /// The shortest hold.
    pub min: Duration,
    /// The longest hold (holds are uniform between `min` and `max`).
    pub max: Duration,
}

/// What the proxy has done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Answers passed back (held or not).
    pub answers: u64,
    /// Answers held back by a spike.
    pub delayed: u64,
    /// Held answers whose client had gone by the time the hold ended (it timed out).
    pub abandoned: u64,
    /// Microseconds from each request's first bytes to its answer's first bytes, summed
    /// over the answers (before any hold): the service's time, queueing included.
    pub waited_micros: u64,
}

impl ProxyStats {
    /// The mean time the service took to begin an answer, over the answers since `since`.
    pub fn mean_wait_since(&self, since: &ProxyStats) -> Duration {
        let answers = self.answers.saturating_sub(since.answers).max(1);
        Duration::from_micros(self.waited_micros.saturating_sub(since.waited_micros) / answers)
    }
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    spikes: Mutex<Option<Spikes>>,
    /// Answers to hold whatever the spikes say, and for how long each.
    forced: Mutex<(u64, Duration)>,
    rng: Mutex<SplitMix64>,
    connections: AtomicU64,
    answers: AtomicU64,
    delayed: AtomicU64,
    abandoned: AtomicU64,
    waited_micros: AtomicU64,
}

impl Shared {
    /// How long to hold the answer that is starting now.
    fn hold(&self) -> Option<Duration> {
        {
            let mut forced = self.forced.lock().unwrap();
            if forced.0 > 0 {
                forced.0 -= 1;
                return Some(forced.1);
            }
        }
        let spikes = (*self.spikes.lock().unwrap())?;
        let mut rng = self.rng.lock().unwrap();
        if spikes.rate <= 0.0 || rng.unit() >= spikes.rate {
            return None;
        }
        let span = spikes.max.saturating_sub(spikes.min);
        Some(spikes.min + span.mul_f64(rng.unit()))
    }
}

/// A running proxy on `127.0.0.1`; dropping it stops accepting connections.
#[derive(Debug)]
pub struct LatencyProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LatencyProxy {
    /// Starts a proxy to `upstream` on a free loopback port, with no spikes yet. `seed`
    /// makes the choice of which answers are held, and for how long, repeatable.
    pub async fn start(upstream: SocketAddr, seed: u64) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            spikes: Mutex::new(None),
            forced: Mutex::new((0, Duration::ZERO)),
            rng: Mutex::new(SplitMix64(seed)),
            connections: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            waited_micros: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        Ok(LatencyProxy { addr, shared, task })
    }

    /// Starts a proxy to the host and port of `url` (e.g. moto's `http://127.0.0.1:PORT`).
    ///
    /// # Panics
    ///
    /// When `url` names no host and port that resolve.
    pub async fn to_url(url: &str, seed: u64) -> std::io::Result<LatencyProxy> {
        let authority = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or_default();
        let upstream = tokio::net::lookup_host(authority)
            .await?
            .next()
            .unwrap_or_else(|| panic!("{url} names no address to proxy to"));
        Self::start(upstream, seed).await
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give clients instead of the service's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds back answers as `spikes` says from now on; `None` passes everything at once.
    pub fn set_spikes(&self, spikes: Option<Spikes>) {
        *self.shared.spikes.lock().unwrap() = spikes;
    }

    /// Holds each of the next `count` answers for `hold`, whatever the spikes say: a
    /// deterministic spike for one request.
    pub fn hold_next(&self, count: u64, hold: Duration) {
        *self.shared.forced.lock().unwrap() = (count, hold);
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            answers: self.shared.answers.load(Ordering::Relaxed),
            delayed: self.shared.delayed.load(Ordering::Relaxed),
            abandoned: self.shared.abandoned.load(Ordering::Relaxed),
            waited_micros: self.shared.waited_micros.load(Ordering::Relaxed),
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(relay(client, shared.clone()));
    }
}

/// Carries one connection both ways until both sides are done.
async fn relay(client: TcpStream, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    // Set when the client sent bytes since the last answer began: the next bytes back
    // start a new answer. `asked_at` is when those bytes came.
    let asked = AtomicBool::new(false);
    let asked_at = Mutex::new(tokio::time::Instant::now());
    // Set (and notified) once the client has closed its side or its connection failed.
    let client_gone = AtomicBool::new(false);
    let gone = Notify::new();

    let requests = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !asked.load(Ordering::Acquire) {
                        *asked_at.lock().unwrap() = tokio::time::Instant::now();
                    }
                    asked.store(true, Ordering::Release);
                    if upstream_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        client_gone.store(true, Ordering::Release);
        gone.notify_one();
        let _ = upstream_write.shutdown().await;
    };
    let answers = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                read = upstream_read.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                // Nobody is left to answer.
                () = gone.notified() => break,
            };
            if asked.swap(false, Ordering::AcqRel) {
                shared.answers.fetch_add(1, Ordering::Relaxed);
                let waited = asked_at.lock().unwrap().elapsed();
                shared
                    .waited_micros
                    .fetch_add(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
                if let Some(hold) = shared.hold() {
                    shared.delayed.fetch_add(1, Ordering::Relaxed);
                    let gave_up = tokio::select! {
                        () = tokio::time::sleep(hold) => client_gone.load(Ordering::Acquire),
                        () = gone.notified() => true,
                    };
                    if gave_up {
                        // The client gave up (timed out) while the answer was held.
                        shared.abandoned.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        // The service closed (or the client left): closing towards the client makes it
        // drop the connection, which ends the other direction too.
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, answers);
}

/// A small seeded generator (SplitMix64): repeatable spikes without a dependency.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every line with the same line, and the proxy before it.
    async fn echo_behind_proxy() -> LatencyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        LatencyProxy::start(upstream, 7).await.unwrap()
    }

    async fn ask(stream: &mut TcpStream, text: &[u8]) -> Vec<u8> {
        stream.write_all(text).await.unwrap();
        let mut answer = vec![0u8; text.len()];
        stream.read_exact(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn without_spikes_bytes_pass_unchanged_and_each_answer_is_counted() {
        let proxy = echo_behind_proxy().await;
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(ask(&mut stream, b"first\n").await, b"first\n");
        assert_eq!(ask(&mut stream, b"second\n").await, b"second\n");
        let stats = proxy.stats();
        assert_eq!((stats.connections, stats.answers, stats.delayed), (1, 2, 0));
    }

    #[tokio::test]
    async fn with_every_answer_spiked_each_is_held_and_a_client_that_leaves_is_counted() {
        let proxy = echo_behind_proxy().await;
        let hold = Duration::from_millis(200);
        proxy.set_spikes(Some(Spikes { rate: 1.0, min: hold, max: hold }));
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(ask(&mut stream, b"slow\n").await, b"slow\n");
        assert!(started.elapsed() >= hold, "the answer was held for the spike");

        // A client that gives up before the hold ends: its answer is abandoned.
        stream.write_all(b"abandoned\n").await.unwrap();
        // Leave only once the proxy holds the answer, however slow the machine.
        for _ in 0..250 {
            if proxy.stats().delayed == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        drop(stream);
        for _ in 0..50 {
            if proxy.stats().abandoned == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = proxy.stats();
        assert_eq!((stats.answers, stats.delayed, stats.abandoned), (2, 2, 1));

        proxy.set_spikes(None);
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(ask(&mut stream, b"fast\n").await, b"fast\n");
        assert_eq!(proxy.stats().delayed, 2, "no spike once they are switched off");
    }

    #[test]
    fn the_generator_is_seeded_and_uniform_enough() {
        let draw = |seed| {
            let mut rng = SplitMix64(seed);
            (0..10_000).map(|_| rng.unit()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let values = draw(3);
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let below = values.iter().filter(|v| **v < 0.05).count();
        assert!((350..650).contains(&below), "about 5 % below 0.05, got {below} in 10,000");
    }
}
