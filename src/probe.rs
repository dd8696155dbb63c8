//! What a broker's port speaks, found by asking it: one plaintext Kafka ApiVersions request (v0, no
//! credentials) on a connection of its own, sent by the consumer thread only when start-up keeps failing
//! and librdkafka says nothing about why. A TLS client talking to a plaintext listener is the case this
//! exists for: some brokers (tansu) wait forever for the rest of what they take for a huge request, and
//! librdkafka gives up only after its 30 s connection set-up timeout, long after every request has failed
//! without a reason.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What a port did with a plaintext ApiVersions request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// It answered as a Kafka broker does: it speaks plaintext Kafka.
    Kafka,
    /// It answered with a TLS alert, or hung up without a word: it expects TLS, as a rule.
    HungUp,
    /// It accepted the connection and said nothing within the time allowed.
    Silent,
    /// It answered something else.
    Other,
}

/// A Kafka ApiVersions v0 request with correlation id `id`: size, api key 18, version 0, id, client id.
fn api_versions_request(id: i32) -> Vec<u8> {
    let client_id = b"kong-confluent-consume-probe";
    let mut body = Vec::with_capacity(10 + client_id.len());
    body.extend_from_slice(&18_i16.to_be_bytes());
    body.extend_from_slice(&0_i16.to_be_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);
    request
}

/// What the first bytes of an answer say.
fn classify(answer: &[u8], id: i32) -> Listener {
    // a TLS record of type alert (21), version 3.x
    if answer.len() >= 2 && answer[0] == 0x15 && answer[1] == 0x03 {
        return Listener::HungUp;
    }
    if answer.len() >= 8 {
        let size = i32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]);
        let correlation = i32::from_be_bytes([answer[4], answer[5], answer[6], answer[7]]);
        if (4..=(1 << 20)).contains(&size) && correlation == id {
            return Listener::Kafka;
        }
    }
    Listener::Other
}

/// Sends one plaintext ApiVersions request to `host:port` and reads the first bytes of the answer,
/// within `timeout` in all.
///
/// # Errors
/// The connection cannot be made (refused, unreachable, a name that does not resolve).
pub fn probe(host: &str, port: u16, timeout: Duration) -> std::io::Result<Listener> {
    let deadline = Instant::now() + timeout;
    let address = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    let id = 0x6b6f_6e67; // "kong"
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&api_versions_request(id))?;
    let mut answer = [0u8; 8];
    let mut got = 0;
    while got < answer.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Listener::Silent);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut answer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(if got == 0 { Listener::Silent } else { classify(&answer[..got], id) });
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(if got == 0 { Listener::HungUp } else { classify(&answer[..got], id) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-connection server on a free loopback port that reads the request and then does `then`.
    fn server(then: impl FnOnce(TcpStream, Vec<u8>) + Send + 'static) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).unwrap();
            let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
            stream.read_exact(&mut request).unwrap();
            then(stream, request);
        });
        port
    }

    #[test]
    fn a_kafka_answer_with_our_correlation_id_is_kafka() {
        let port = server(|mut stream, request| {
            assert_eq!(&request[..4], &[0, 18, 0, 0], "ApiVersions v0");
            let mut answer = 6_i32.to_be_bytes().to_vec();
            answer.extend_from_slice(&request[4..8]); // correlation id
            answer.extend_from_slice(&[0, 0]);
            stream.write_all(&answer).unwrap();
        });
        assert_eq!(probe("127.0.0.1", port, Duration::from_secs(5)).unwrap(), Listener::Kafka);
    }

    #[test]
    fn a_tls_alert_or_a_hang_up_is_hung_up() {
        let alert = server(|mut stream, _| stream.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]).unwrap());
        assert_eq!(probe("127.0.0.1", alert, Duration::from_secs(5)).unwrap(), Listener::HungUp);
        let closed = server(|stream, _| drop(stream));
        assert_eq!(probe("127.0.0.1", closed, Duration::from_secs(5)).unwrap(), Listener::HungUp);
    }

    #[test]
    fn silence_and_other_answers() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let silent = server(move |stream, _| {
            let _ = rx.recv(); // holds the connection open until the probe is done
            drop(stream);
        });
        assert_eq!(probe("127.0.0.1", silent, Duration::from_millis(300)).unwrap(), Listener::Silent);
        drop(tx);
        let http = server(|mut stream, _| stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap());
        assert_eq!(probe("127.0.0.1", http, Duration::from_secs(5)).unwrap(), Listener::Other);
    }

    #[test]
    fn a_closed_port_is_an_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(probe("127.0.0.1", port, Duration::from_secs(1)).is_err());
    }
}
