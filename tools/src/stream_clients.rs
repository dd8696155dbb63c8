//! `sse-clients` and `ws-clients`: many concurrent stream clients (server-sent events, or WebSockets of the
//! `websocket` mode), one thread each, cheap enough that the benchmark measures the gateway rather than its
//! client (a Python asyncio client saturated a core at 1,000 streams). Counts records per client;
//! `--sample` clients also time each record from its `ts_us` stamp (set by `produce`) to its arrival.
//! `ws-clients --acks` acknowledges every frame (for a `--path` with `acks=true`).
//! The summary gives the quantiles over every timed record of every timed client, and the CPU seconds this
//! process used (`cpu_seconds`), so that a benchmark can tell whether the clients, rather than the gateway,
//! were the limit. `--no-samples` leaves the samples themselves out of it (10,000 clients time millions).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

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
    let connected = Arc::new(Barrier::new(clients + 1));
    let results = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut threads = Vec::with_capacity(clients);
    for i in 0..clients {
        let client = Client { port, host: host.clone(), path: path.clone(), events, timed: i < sample, timeout };
        let (connected, results) = (connected.clone(), results.clone());
        threads.push(
            std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
                let seen = match protocol {
                    Protocol::Sse => sse_client(&client, &connected),
                    Protocol::WebSocket { acks } => ws_client(&client, acks, &connected),
                };
                results.lock().expect("results lock").push(seen);
            })?,
        );
    }
    connected.wait();
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

/// One stream: counts `event: message` blocks until `events`, or the stream ends, or `timeout`.
fn sse_client(c: &Client, connected: &Barrier) -> Seen {
    let (port, host, path, events, timed, timeout) = (c.port, c.host.as_str(), c.path.as_str(), c.events, c.timed, c.timeout);
    let mut seen = Seen { events: 0, delays_ms: Vec::new() };
    let stream = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
        s.set_read_timeout(Some(timeout))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n")?;
        Ok(s)
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut headers_done = false;
    let deadline = Instant::now() + timeout;
    let Ok(mut stream) = stream else {
        connected.wait();
        return seen;
    };
    // Headers first: the stream is open (and positioned) once they arrived.
    while !headers_done {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                if let Some(end) = find(&pending, b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    headers_done = true;
                }
            }
        }
    }
    connected.wait();
    let mut arrived_us = now_us();
    while headers_done && seen.events < events {
        // Events that came with the headers, or with the last read, count before the next read: the server
        // may have sent everything already.
        while let Some(end) = find(&pending, b"\n\n") {
            let block = &pending[..end];
            if let Some(at) = find(block, b"event: message") {
                seen.events += 1;
                if timed {
                    if let Some(ts) = stamp(&block[at..]) {
                        seen.delays_ms.push((arrived_us - ts) as f64 / 1e3);
                    }
                }
            }
            pending.drain(..end + 2);
        }
        if seen.events >= events || Instant::now() >= deadline {
            break;
        }
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        arrived_us = now_us();
        // Chunk-size lines sit between events; an event is complete at its blank line.
        pending.extend_from_slice(&buf[..n]);
    }
    seen
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
fn ws_client(c: &Client, acks: bool, connected: &Barrier) -> Seen {
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
    connected.wait();
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
