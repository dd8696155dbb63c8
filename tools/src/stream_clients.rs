//! `sse-clients` and `ws-clients`: many concurrent stream clients (server-sent events, or WebSockets of the
//! `websocket` mode), cheap enough that the benchmark measures the gateway rather than its client (a Python
//! asyncio client saturated a core at 1,000 streams). SSE clients share a few threads polling their sockets
//! (mio): a thread per client made thousands of threads runnable at each record, which the scheduler served
//! before the gateway's two workers, so that 10,000 of them measured the scheduler. WebSocket clients keep a
//! thread each (tungstenite's blocking client). Counts records per client;
//! `--sample` clients also time each record from its `ts_us` stamp (set by `produce`) to its arrival.
//! `ws-clients --acks` acknowledges every frame (for a `--path` with `acks=true`).
//! The summary gives the quantiles over every timed record of every timed client, and the CPU seconds this
//! process used (`cpu_seconds`), so that a benchmark can tell whether the clients, rather than the gateway,
//! were the limit. `--no-samples` leaves the samples themselves out of it (10,000 clients time millions).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use serde::Deserialize;
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

use crate::args::Args;
use crate::{now_us, print_json, round3, Result};

/// What one client saw.
struct Seen {
    events: usize,
    delays_ms: Vec<f64>,
}

/// Which protocol the clients speak.
#[derive(Clone, Copy)]
pub enum Protocol {
    Sse,
    WebSocket { acks: bool },
}

/// One client's parameters.
struct Client {
    port: u16,
    host: String,
    path: String,
    events: usize,
    timed: bool,
    timeout: Duration,
}

pub fn sse_clients(argv: &[String]) -> Result<()> {
    clients(argv, &[], |_| Protocol::Sse)
}

pub fn ws_clients(argv: &[String]) -> Result<()> {
    clients(argv, &["acks"], |args| Protocol::WebSocket { acks: args.flag("acks") })
}

fn clients(argv: &[String], flags: &[&str], protocol: impl Fn(&Args) -> Protocol) -> Result<()> {
    let args = Args::parse(
        argv,
        &["port", "host", "path", "clients", "events", "sample", "timeout-ms", "ready-file"],
        &[flags, &["no-samples"]].concat(),
    )?;
    let protocol = protocol(&args);
    let port: u16 = args.number("port")?.ok_or("--port is required")?;
    let host = args.required("host")?.to_string();
    let path = args.get("path").unwrap_or("/").to_string();
    let clients: usize = args.number("clients")?.unwrap_or(1);
    let events: usize = args.number("events")?.ok_or("--events is required")?;
    let sample: usize = args.number("sample")?.unwrap_or(0);
    let timeout = Duration::from_millis(args.number("timeout-ms")?.unwrap_or(60_000));
    raise_fd_limit(clients)?;
    let results = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    // every client's stream is open (or failed) once this reaches `clients`
    let opened = Arc::new(AtomicUsize::new(0));
    let client = |i: usize| Client { port, host: host.clone(), path: path.clone(), events, timed: i < sample, timeout };
    let mut threads = Vec::new();
    match protocol {
        Protocol::Sse => {
            let pollers = SSE_POLLERS.min(clients.max(1));
            for t in 0..pollers {
                let mine: Vec<Client> = (t..clients).step_by(pollers).map(client).collect();
                let (opened, results) = (opened.clone(), results.clone());
                threads.push(std::thread::Builder::new().spawn(move || {
                    let seen = sse_poller(&mine, &opened);
                    results.lock().expect("results lock").extend(seen);
                })?);
            }
        }
        Protocol::WebSocket { acks } => {
            for i in 0..clients {
                let (c, opened, results) = (client(i), opened.clone(), results.clone());
                threads.push(std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
                    let seen = ws_client(&c, acks, &opened);
                    results.lock().expect("results lock").push(seen);
                })?);
            }
        }
    }
    while opened.load(Ordering::Acquire) < clients {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(file) = args.get("ready-file") {
        std::fs::write(file, clients.to_string())?;
    }
    for t in threads {
        let _ = t.join();
    }
    let results = results.lock().expect("results lock");
    let mut delays: Vec<f64> = results.iter().flat_map(|s| s.delays_ms.iter().copied()).collect();
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if delays.is_empty() {
            return 0.0;
        }
        delays[((p * delays.len() as f64).ceil() as usize).clamp(1, delays.len()) - 1]
    };
    let mut summary = json!({
        "clients": clients,
        "complete": results.iter().filter(|s| s.events >= events).count(),
        "min_events": results.iter().map(|s| s.events).min().unwrap_or(0),
        "samples": delays.len(),
        "p50_ms": round3(pct(0.5)),
        "p99_ms": round3(pct(0.99)),
        "p999_ms": round3(pct(0.999)),
        "max_ms": round3(pct(1.0)),
        "seconds": round3(started.elapsed().as_secs_f64()),
        "cpu_seconds": round3(cpu_seconds()?),
    });
    if !args.flag("no-samples") {
        summary["samples_ms"] = delays.iter().map(|d| round3(*d)).collect();
    }
    print_json(summary);
    Ok(())
}

/// Raises this process's soft limit of open files to its hard limit when `clients` sockets (and a few
/// more) would not fit under it: many systems start processes at 1,024.
///
/// # Errors
/// When even the hard limit is too low for `clients`, or the limit cannot be read or set.
fn raise_fd_limit(clients: usize) -> Result<()> {
    let needed = clients as libc::rlim_t + 64;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error()).into());
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        return Err(format!("{clients} clients need {needed} open files; the hard limit is {} (raise it: \
                            ulimit -Hn, /etc/security/limits.conf)", limit.rlim_max).into());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads one rlimit from the struct it is given, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!("setrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

/// User and system CPU seconds this process used so far, all its threads together.
///
/// # Errors
/// When getrusage fails.
fn cpu_seconds() -> Result<f64> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the struct it is given, which lives for the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(format!("getrusage: {}", std::io::Error::last_os_error()).into());
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// SSE clients per polling thread: two threads share the clients, one per core of the machine the
/// benchmark was made on, whatever their number.
const SSE_POLLERS: usize = 2;

/// One SSE client's connection: its socket (until it ends) and the rest of its request to send.
struct SseConn {
    socket: Option<mio::net::TcpStream>,
    request: Vec<u8>,
    stream: SseStream,
}

/// What one SSE client has received.
struct SseStream {
    /// bytes received and not yet parsed: the response headers, then events
    pending: Vec<u8>,
    headers_done: bool,
    seen: Seen,
    done: bool,
}

impl SseStream {
    /// Parses what arrived at `arrived_us`: the headers first (the stream is open and positioned once they
    /// came), then `event: message` blocks; chunk-size lines sit between events, and an event is complete at
    /// its blank line.
    fn feed(&mut self, bytes: &[u8], arrived_us: i64, client: &Client) {
        self.pending.extend_from_slice(bytes);
        if !self.headers_done {
            let Some(end) = find(&self.pending, b"\r\n\r\n") else { return };
            self.pending.drain(..end + 4);
            self.headers_done = true;
        }
        let mut parsed = 0;
        while let Some(end) = find(&self.pending[parsed..], b"\n\n") {
            let block = &self.pending[parsed..parsed + end];
            if let Some(at) = find(block, b"event: message") {
                self.seen.events += 1;
                if client.timed {
                    if let Some(ts) = stamp(&block[at..]) {
                        self.seen.delays_ms.push((arrived_us - ts) as f64 / 1e3);
                    }
                }
            }
            parsed += end + 2;
        }
        self.pending.drain(..parsed);
        if self.seen.events >= client.events {
            self.done = true;
        }
    }
}

/// The streams of `clients`, polled by this one thread: each connects, sends its GET, and counts
/// `event: message` blocks until `events`, its stream ends, or `timeout`. `opened` counts the clients whose
/// response headers came (or whose connection failed).
fn sse_poller(clients: &[Client], opened: &AtomicUsize) -> Vec<Seen> {
    let mut conns: Vec<SseConn> = clients
        .iter()
        .map(|c| SseConn {
            socket: None,
            request: format!("GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n", c.path, c.host)
                .into_bytes(),
            stream: SseStream {
                pending: Vec::new(),
                headers_done: false,
                seen: Seen { events: 0, delays_ms: Vec::new() },
                done: false,
            },
        })
        .collect();
    let Ok(mut poll) = Poll::new() else {
        opened.fetch_add(clients.len(), Ordering::AcqRel);
        return conns.into_iter().map(|c| c.stream.seen).collect();
    };
    let end = |conn: &mut SseConn, poll: &Poll, opened: &AtomicUsize| {
        if let Some(mut socket) = conn.socket.take() {
            let _ = poll.registry().deregister(&mut socket);
        }
        if !conn.stream.headers_done {
            opened.fetch_add(1, Ordering::AcqRel);
            conn.stream.headers_done = true;
        }
        conn.stream.done = true;
    };
    for (i, (conn, client)) in conns.iter_mut().zip(clients).enumerate() {
        let address = SocketAddr::from(([127, 0, 0, 1], client.port));
        match mio::net::TcpStream::connect(address) {
            Ok(mut socket) => {
                if poll.registry().register(&mut socket, Token(i), Interest::READABLE | Interest::WRITABLE).is_ok() {
                    conn.socket = Some(socket);
                } else {
                    end(conn, &poll, opened);
                }
            }
            Err(_) => end(conn, &poll, opened),
        }
    }
    let deadline = Instant::now() + clients.first().map_or(Duration::ZERO, |c| c.timeout);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = conns.iter().filter(|c| !c.stream.done).count();
    while open > 0 && Instant::now() < deadline {
        if poll.poll(&mut events, Some(deadline.saturating_duration_since(Instant::now()))).is_err() {
            break;
        }
        let arrived_us = now_us();
        for event in &events {
            let i = event.token().0;
            let (conn, client) = (&mut conns[i], &clients[i]);
            let Some(socket) = conn.socket.as_mut() else { continue };
            let mut failed = false;
            if event.is_writable() && !conn.request.is_empty() {
                match socket.write(&conn.request) {
                    Ok(n) => {
                        conn.request.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => failed = true,
                }
            }
            // edge-triggered: read until the socket has nothing more
            while !failed && !conn.stream.done && event.is_readable() {
                match socket.read(&mut buf) {
                    Ok(0) => failed = true,
                    Ok(n) => {
                        let was_open = conn.stream.headers_done;
                        conn.stream.feed(&buf[..n], arrived_us, client);
                        if !was_open && conn.stream.headers_done {
                            opened.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => failed = true,
                }
            }
            if failed || conn.stream.done {
                end(conn, &poll, opened);
                open -= 1;
            }
        }
    }
    for conn in &mut conns {
        end(conn, &poll, opened);
    }
    conns.into_iter().map(|c| c.stream.seen).collect()
}

/// A `websocket` mode frame, as far as the clients need it.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default, borrow)]
    records: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    cursor: Option<&'a str>,
}

/// One WebSocket: counts records until `events`, or the connection ends, or `timeout`; with `acks`,
/// acknowledges every frame by its cursor.
fn ws_client(c: &Client, acks: bool, opened: &AtomicUsize) -> Seen {
    let mut seen = Seen { events: 0, delays_ms: Vec::new() };
    let socket = (|| -> Result<_> {
        let stream = TcpStream::connect(("127.0.0.1", c.port))?;
        stream.set_read_timeout(Some(c.timeout))?;
        stream.set_nodelay(true)?;
        let mut request = format!("ws://{}{}", c.host, c.path).into_client_request()?;
        request.headers_mut().insert("Host", c.host.parse()?);
        let config = tungstenite::protocol::WebSocketConfig { max_message_size: None, max_frame_size: None,
                                                              ..Default::default() };
        let (socket, _) = tungstenite::client::client_with_config(request, stream, Some(config))
            .map_err(|e| e.to_string())?;
        Ok(socket)
    })();
    opened.fetch_add(1, Ordering::AcqRel);
    let Ok(mut socket) = socket else {
        return seen;
    };
    let deadline = Instant::now() + c.timeout;
    while seen.events < c.events && Instant::now() < deadline {
        let text = match socket.read() {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let arrived_us = now_us();
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(&text) else { break };
        if frame.kind != "records" {
            continue;
        }
        seen.events += frame.records.len();
        if c.timed {
            for record in &frame.records {
                if let Some(ts) = stamp(record.get().as_bytes()) {
                    seen.delays_ms.push((arrived_us - ts) as f64 / 1e3);
                }
            }
        }
        if let (true, Some(cursor)) = (acks, frame.cursor) {
            let ack = json!({ "type": "ack", "cursor": cursor }).to_string();
            if socket.send(Message::text(ack)).is_err() {
                break;
            }
        }
    }
    let _ = socket.close(None);
    seen
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `ts_us` stamp inside a record's (JSON-escaped or embedded) value.
fn stamp(block: &[u8]) -> Option<i64> {
    let at = find(block, b"ts_us")? + 5;
    let digits: Vec<u8> = block[at..]
        .iter()
        .skip_while(|b| !b.is_ascii_digit())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}
