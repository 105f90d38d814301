//! A real S3 server for the tests: s3s-fs (started by `scripts/broker.sh s3-start`), which
//! checks SigV4 signatures and keeps each object as a plain file `root/<bucket>/<key>`, so a
//! test compares bytes directly.

use std::path::{Path, PathBuf};

use super::{broker_sh, broker_sh_failed, free_port, EXIT_PORT_IN_USE};

/// The keys `scripts/broker.sh s3-start` gives the server.
pub const ACCESS_KEY: &str = "openmsi-test";
pub const SECRET_KEY: &str = "openmsi-test-secret";

/// One s3s-fs on 127.0.0.1, stopped on drop.
pub struct S3Server {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl S3Server {
    /// Starts a server on a free port with an empty bucket named `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("openmsi-s3-")
            .tempdir()
            .expect("cannot create a temporary folder for the S3 server");
        for _ in 0..5 {
            let port = free_port();
            if start_server(dir.path(), port) {
                let server = S3Server { dir, port };
                std::fs::create_dir_all(server.root().join(bucket)).unwrap();
                return server;
            }
        }
        panic!("no free port for the S3 server after 5 tries");
    }

    /// Stops the server (the objects stay).
    pub fn stop(&self) {
        let out = broker_sh(&["s3-stop", "--dir", self.dir.path().to_str().unwrap()]);
        if !out.status.success() {
            broker_sh_failed("s3-stop", &out);
        }
    }

    /// Starts it again on the same port, with the same objects.
    pub fn restart(&self) {
        assert!(
            start_server(self.dir.path(), self.port),
            "port {} was taken while the S3 server was down",
            self.port
        );
    }

    /// Where the objects are: `root/<bucket>/<key>`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file holding object `key` of `bucket`.
    pub fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.root().join(bucket).join(key)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Files of multipart uploads not completed nor aborted (s3s-fs keeps each part as
    /// `root/.upload_id-<id>.part-<n>` and the upload as `root/.upload-<id>.json`).
    pub fn unfinished_uploads(&self) -> Vec<String> {
        std::fs::read_dir(self.root())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3s.log")).unwrap_or_default()
    }

    /// Appends an `[s3]` section for this server (with `secret` as the secret key) to the
    /// config file at `cfg`.
    pub fn add_to_config(&self, cfg: &Path, secret: &str) {
        let mut text = std::fs::read_to_string(cfg).unwrap();
        text.push_str(&format!(
            "\n[s3]\nendpoint_url = {}\naccess_key_id = {ACCESS_KEY}\nsecret_key_id = {secret}\nregion = us-east-1\n",
            self.endpoint()
        ));
        std::fs::write(cfg, text).unwrap();
    }
}

/// Starts s3s-fs for `dir` on `port`; false when the port was taken.
fn start_server(dir: &Path, port: u16) -> bool {
    let port = port.to_string();
    let owner = std::process::id().to_string();
    let out = broker_sh(&[
        "s3-start",
        "--port",
        &port,
        "--dir",
        dir.to_str().unwrap(),
        "--owner",
        &owner,
    ]);
    if out.status.success() {
        return true;
    }
    if out.status.code() != Some(EXIT_PORT_IN_USE) {
        broker_sh_failed("s3-start", &out);
    }
    false
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = broker_sh(&["s3-stop", "--dir", self.dir.path().to_str().unwrap()]);
    }
}

/// A proxy in front of an S3 server that answers chosen requests with an error instead of
/// passing them on (S3 servers give no way to make one fail on purpose). One request per
/// connection (`Connection: close` is added), so each request can be seen whole.
pub struct FaultyProxy {
    pub port: u16,
    /// Requests answered with the error so far.
    pub failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FaultyProxy {
    /// Listens on a free port and forwards to 127.0.0.1:`upstream`, answering the first
    /// `times` requests whose request line contains `needle` with HTTP 500 InternalError.
    pub fn start(upstream: u16, needle: &str, times: u64) -> FaultyProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (counter, needle) = (std::sync::Arc::clone(&failed), needle.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                // Read the head, then the body its Content-Length announces.
                let mut request = Vec::new();
                let mut buf = [0u8; 65536];
                let head_end = loop {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i);
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while request.len() < head_end + 4 + length {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let first_line = head.lines().next().unwrap_or("").to_string();
                if first_line.contains(&needle) && counter.load(Ordering::SeqCst) < times {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = "<Error><Code>InternalError</Code><Message>injected by the test</Message></Error>";
                    let _ = write!(
                        client,
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let kept: Vec<&str> = head
                    .split("\r\n")
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .collect();
                let new_head = format!("{}\r\nConnection: close\r\n\r\n", kept.join("\r\n"));
                let _ = server.write_all(new_head.as_bytes());
                let _ = server.write_all(&request[head_end + 4..]);
                let _ = std::io::copy(&mut server, &mut client);
            }
        });
        FaultyProxy { port, failed }
    }
}
