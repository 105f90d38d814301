//! The `/metrics` endpoint: a blocking HTTP/1.1 responder on one thread. A scrape is a few
//! kilobytes once every few seconds, so one connection at a time is plenty, and no async
//! runtime or HTTP crate is needed (nor one more TLS stack: put a reverse proxy in front for
//! TLS). The socket is bound when the command starts, before anything else, so an address in
//! use fails at once with one line.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use tracing::{debug, info};

/// A `HOST:PORT` to serve metrics on, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsAddr {
    /// As written (for messages).
    pub text: String,
    /// Resolved.
    pub addr: SocketAddr,
}

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("`{text}` is not a HOST:PORT to serve metrics on ({why}); for example 127.0.0.1:9464 or 0.0.0.0:9464")
        };
        let (_, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        port.parse::<u16>()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        let addr = text
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("the host name has no address"))?;
        Ok(Self {
            text: text.to_string(),
            addr,
        })
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Binding failed (in use, not an address of this machine, a privileged port).
    #[error(
        "cannot serve metrics on {addr} (--metrics-addr): {source}{}",
        advice(source)
    )]
    Bind {
        /// The address.
        addr: MetricsAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn advice(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::AddrInUse => "; another process listens there: choose another port",
        io::ErrorKind::AddrNotAvailable => "; that is not an address of this machine",
        io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges: choose another",
        _ => "",
    }
}

/// A bound, not yet serving, endpoint.
pub struct MetricsServer {
    listener: TcpListener,
    addr: MetricsAddr,
}

impl MetricsServer {
    /// Binds `addr` (nothing is served until [`MetricsServer::serve`]).
    pub fn bind(addr: &MetricsAddr) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr.addr).map_err(|source| MetricsError::Bind {
            addr: addr.clone(),
            source,
        })?;
        Ok(Self {
            listener,
            addr: addr.clone(),
        })
    }

    /// The bound address (the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `GET /metrics` from the process registry on a thread of its own, for the rest
    /// of the process's life (it holds nothing that needs flushing at exit).
    pub fn serve(self) {
        let registry = super::registry();
        registry.enable();
        let shown = self
            .listener
            .local_addr()
            .map_or_else(|_| self.addr.text.clone(), |a| a.to_string());
        info!(address = %shown, "serving metrics at http://{shown}/metrics");
        let spawned = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if let Err(e) = answer(stream) {
                                debug!(error = %e, "metrics request failed");
                            }
                        }
                        Err(e) => debug!(error = %e, "metrics connection failed"),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the metrics thread; metrics are off");
        }
    }
}

/// The longest request head read (a scrape's is a few hundred bytes).
const MAX_REQUEST: usize = 16 << 10;

/// Answers one request on `stream` and closes it.
fn answer(mut stream: TcpStream) -> io::Result<()> {
    // A client that connects and says nothing must not hold the only thread.
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            super::registry().render(),
        ),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "openmsi: metrics are at /metrics\n".to_string(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let server = MetricsServer::bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        server.serve();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("\nopenmsi_build_info{version=\""), "{ok}");
        let missing = get(addr, "GET /nope HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }

    #[test]
    fn an_address_in_use_or_malformed_is_one_clear_line() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: MetricsAddr = taken.local_addr().unwrap().to_string().parse().unwrap();
        let err = MetricsServer::bind(&addr).err().unwrap().to_string();
        assert!(err.contains("cannot serve metrics on 127.0.0.1:"), "{err}");
        assert!(err.contains("choose another port"), "{err}");
        for bad in ["9464", "127.0.0.1:http", "127.0.0.1:70000"] {
            let err = bad.parse::<MetricsAddr>().unwrap_err();
            assert!(err.contains("is not a HOST:PORT"), "{bad}: {err}");
        }
    }
}
