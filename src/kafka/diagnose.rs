//! Turning librdkafka's connection errors into one line that names the cause and the setting to
//! fix.
//!
//! librdkafka reports a failed connection as a burst of raw lines (the same TLS or SASL error
//! through the log and the error callbacks, then "1/1 brokers are down", repeated at every
//! retry), and the metadata request that was waiting only says "BrokerTransportFailure". Every
//! client's callbacks feed one process-wide [`watch`]: until a command has connected, the raw
//! lines go to the debug log and the watch keeps the most telling one; the connection check
//! ([`super::topic::check_topic`]) then fails with that cause, in one line, as soon as the cause
//! is certain (a certificate or password is not going to fix itself) or when the connect
//! timeout ends. After a command has connected, each distinct problem is logged once a minute
//! at most.
//!
//! Where librdkafka's words do not tell causes apart ("certificate verify failed" for an unknown
//! CA, a host name mismatch or an expired broker certificate; silence when TLS meets a
//! plaintext port), [`probe`] makes one TLS handshake of its own with the same CA file and asks
//! OpenSSL why.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Why the broker could not be used, as far as the client can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Nothing accepts connections at the address.
    Refused,
    /// The host name in bootstrap.servers does not resolve.
    UnknownHost,
    /// The broker's certificate failed verification; the detail says why when known.
    BrokerCertificate(Option<String>),
    /// The broker wants a client certificate and none was sent.
    ClientCertificateRequired,
    /// The client certificate was sent but is not signed by a CA the broker trusts.
    ClientCertificateUntrusted,
    /// The broker says the client certificate has expired.
    ClientCertificateExpired,
    /// The broker turned the client certificate down for another reason (the TLS alert).
    ClientCertificateRejected(String),
    /// SCRAM authentication failed: the broker's reason (invalid-proof, unknown-user, ...).
    SaslAuthentication(String),
    /// The broker does not accept the configured SASL mechanism.
    SaslMechanism(String),
    /// security.protocol is plaintext but the port speaks TLS.
    PlaintextToTls,
    /// security.protocol uses TLS but the port does not.
    TlsToPlaintext,
    /// The broker closed the connection at the client's first request: a TLS port answering a
    /// plaintext client does this, and so does a broker that is shutting down or starting, so
    /// it is only a suspicion until a TLS handshake of our own confirms it (see
    /// [`super::topic`]).
    ClosedAtFirstRequest,
    /// The broker closed the connection once it was up, without saying why (tansu does this to
    /// clients that do not authenticate when authentication is on).
    ClosedByBroker,
}

impl Cause {
    /// True when waiting longer cannot help: the settings must change.
    pub fn is_certain(&self) -> bool {
        !matches!(
            self,
            Cause::Refused
                | Cause::UnknownHost
                | Cause::ClosedByBroker
                | Cause::ClosedAtFirstRequest
        )
    }

    /// More specific causes replace vaguer ones seen in the same attempt.
    fn weight(&self) -> u8 {
        match self {
            Cause::Refused | Cause::UnknownHost => 1,
            Cause::ClosedByBroker | Cause::ClosedAtFirstRequest => 2,
            Cause::BrokerCertificate(None) => 3,
            // librdkafka says "not sending any client certificates" first, then the broker's
            // "certificate required": the first is the real cause.
            Cause::ClientCertificateUntrusted => 5,
            _ => 4,
        }
    }

    /// The cause and what to change, in one sentence or two.
    pub fn explain(&self) -> String {
        match self {
            Cause::Refused => "nothing accepts connections there (connection refused). Check that the broker is running and that bootstrap.servers names its host and port".into(),
            Cause::UnknownHost => "the host name does not resolve. Check bootstrap.servers".into(),
            Cause::BrokerCertificate(why) => format!(
                "the broker's TLS certificate was not accepted{}. {}",
                why.as_deref().map(|w| format!(" ({w})")).unwrap_or_default(),
                match why.as_deref().map(str::to_ascii_lowercase) {
                    Some(w) if w.contains("mismatch") => "The certificate does not name the host in bootstrap.servers: connect by a name the certificate lists, or have the broker's certificate reissued for this name",
                    Some(w) if w.contains("expired") => "The broker's certificate has expired: it must be renewed on the broker",
                    Some(w) if w.contains("not yet valid") => "The broker's certificate is not valid yet: check the clocks of both machines",
                    _ => "Set ssl.ca.location to the CA certificate that signed the broker's certificate",
                }
            ),
            Cause::ClientCertificateRequired => "the broker requires a client certificate and none was sent. Set ssl.certificate.location and ssl.key.location (PEM) or ssl.keystore.location and ssl.keystore.password (PKCS#12)".into(),
            Cause::ClientCertificateUntrusted => "the client certificate is not signed by a CA the broker trusts, so it was not sent and the broker refused the connection. Use the certificate issued for this cluster (ssl.certificate.location / ssl.keystore.location)".into(),
            Cause::ClientCertificateExpired => "the broker refused the client certificate: it has expired. Renew it and point ssl.certificate.location (or ssl.keystore.location) at the new one".into(),
            Cause::ClientCertificateRejected(alert) => format!("the broker refused the client certificate ({alert}). Check ssl.certificate.location / ssl.keystore.location"),
            Cause::SaslAuthentication(reason) => format!(
                "SASL authentication failed: the broker answered {reason}. {}",
                if reason.contains("unknown-user") {
                    "The user does not exist for this mechanism: check sasl.username and sasl.mechanism"
                } else {
                    "Check sasl.username and sasl.password"
                }
            ),
            Cause::SaslMechanism(mechanism) => format!("the broker does not accept SASL mechanism {mechanism}. Set sasl.mechanism to one it offers (for example SCRAM-SHA-512)"),
            Cause::PlaintextToTls => "the port expects TLS but the client spoke plaintext. Set security.protocol = SSL (or SASL_SSL with SASL)".into(),
            Cause::TlsToPlaintext => "the client spoke TLS but the port does not answer TLS. Set security.protocol = PLAINTEXT (or SASL_PLAINTEXT), or use the broker's TLS port".into(),
            Cause::ClosedByBroker => "the broker closed the connection without an answer. If the broker requires authentication, set security.protocol = SASL_SSL with sasl.mechanism, sasl.username and sasl.password".into(),
            Cause::ClosedAtFirstRequest => "the broker closed the connection at the first request. Check that the port in bootstrap.servers is a Kafka listener and that security.protocol matches it (SSL for a TLS port)".into(),
        }
    }
}

/// Reads one librdkafka line (log or error callback) for a connection cause.
pub fn classify(message: &str) -> Option<Cause> {
    let m = message.to_ascii_lowercase();
    if m.contains("connection refused") {
        return Some(Cause::Refused);
    }
    if m.contains("failed to resolve") || m.contains("name or service not known") {
        return Some(Cause::UnknownHost);
    }
    if m.contains("certificate verify failed") {
        return Some(Cause::BrokerCertificate(None));
    }
    if m.contains("alert certificate required") {
        return Some(Cause::ClientCertificateRequired);
    }
    if m.contains("no matching issuer found") {
        return Some(Cause::ClientCertificateUntrusted);
    }
    if m.contains("alert certificate expired") {
        return Some(Cause::ClientCertificateExpired);
    }
    for alert in [
        "alert unknown ca",
        "alert bad certificate",
        "alert certificate revoked",
        "alert certificate unknown",
        "alert unsupported certificate",
        "alert access denied",
    ] {
        if m.contains(alert) {
            return Some(Cause::ClientCertificateRejected(
                alert["alert ".len()..].into(),
            ));
        }
    }
    if let Some(at) = m.find("broker responded with ") {
        let reason = message[at + "broker responded with ".len()..]
            .split([' ', '('])
            .next()
            .unwrap_or("")
            .to_string();
        return Some(Cause::SaslAuthentication(reason));
    }
    if m.contains("sasl authentication error") || m.contains("authentication failed") {
        return Some(Cause::SaslAuthentication(
            "an authentication failure".into(),
        ));
    }
    if let Some(at) = m.find("sasl ") {
        let rest = &message[at + 5..];
        if rest
            .to_ascii_lowercase()
            .contains("mechanism handshake failed")
        {
            let mechanism = rest.split(' ').next().unwrap_or("").to_string();
            return Some(Cause::SaslMechanism(mechanism));
        }
    }
    if m.contains("unsupported sasl mechanism") {
        return Some(Cause::SaslMechanism("configured".into()));
    }
    if m.contains("wrong version number") || m.contains("packet length too long") {
        return Some(Cause::TlsToPlaintext);
    }
    if m.contains("connecting to a ssl listener") {
        return Some(Cause::PlaintextToTls);
    }
    // A plaintext client's first request answered by a TLS server's reset (or by a broker
    // going down: a suspicion only).
    if m.contains("disconnected") && m.contains("apiversion") && !m.contains("ssl") {
        return Some(Cause::ClosedAtFirstRequest);
    }
    if m.contains("disconnected") && m.contains("state up") {
        return Some(Cause::ClosedByBroker);
    }
    None
}

/// What the process has seen of its broker connections.
#[derive(Default)]
struct State {
    /// A connection check has succeeded: later problems are news, logged as warnings.
    connected: bool,
    /// The most telling cause seen since the current check started.
    cause: Option<Cause>,
    /// When each problem was last logged as a warning (after connecting), to log it once a
    /// minute at most.
    last_logged: HashMap<String, Instant>,
}

/// The process-wide view of connection problems.
pub struct Watch {
    state: Mutex<State>,
}

/// Repeats of one problem within this time are logged at debug level only.
const REPEAT_QUIET: Duration = Duration::from_secs(60);

/// The process's [`Watch`].
pub fn watch() -> &'static Watch {
    static WATCH: OnceLock<Watch> = OnceLock::new();
    WATCH.get_or_init(|| Watch {
        state: Mutex::new(State::default()),
    })
}

/// How loud a librdkafka line should be.
#[derive(Debug, PartialEq, Eq)]
pub enum Loudness {
    /// As librdkafka rated it.
    AsRated,
    /// Debug only: before the first connection (the check reports it) or a repeat.
    Quiet,
}

impl Watch {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// A connection check begins: causes from earlier attempts no longer count.
    pub fn begin_check(&self) {
        self.lock().cause = None;
    }

    /// A connection check succeeded.
    pub fn connected(&self) {
        let mut state = self.lock();
        state.connected = true;
        state.cause = None;
    }

    /// The cause found so far in this check.
    pub fn cause(&self) -> Option<Cause> {
        self.lock().cause.clone()
    }

    /// Notes a librdkafka line and says how loud to log it. `key` identifies the problem for
    /// repeats (the line without its timing details).
    pub fn observe(&self, message: &str) -> Loudness {
        let cause = classify(message);
        let mut state = self.lock();
        if !state.connected {
            if let Some(cause) = cause {
                if state
                    .cause
                    .as_ref()
                    .is_none_or(|c| cause.weight() >= c.weight())
                {
                    state.cause = Some(cause);
                }
            }
            return Loudness::Quiet;
        }
        let key = repeat_key(message);
        let now = Instant::now();
        match state.last_logged.get(&key) {
            Some(&at) if now.duration_since(at) < REPEAT_QUIET => Loudness::Quiet,
            _ => {
                state.last_logged.insert(key, now);
                Loudness::AsRated
            }
        }
    }
}

/// A librdkafka line without the parts that change between repeats ("(after 3ms in state X,
/// 2 identical error(s) suppressed)").
fn repeat_key(message: &str) -> String {
    match message.find(" (after ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// What one TLS handshake of our own found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// The port speaks TLS and its certificate verifies.
    TlsOk,
    /// The port speaks TLS; verifying its certificate failed for this reason.
    TlsCertificate(String),
    /// The port did not complete a TLS handshake.
    NotTls,
    /// Could not connect at all.
    Unreachable,
}

/// True when every address of every bootstrap server refuses a TCP connection at once. A
/// refusal on loopback or a reachable host is immediate and certain: nothing listens there, so
/// waiting the whole connect timeout would only delay the same answer. A server that does not
/// resolve, or an address that does not answer within `timeout` (a firewall, a host that is
/// down), is not a refusal: the caller keeps waiting for those.
pub fn every_bootstrap_refuses(servers: &str, timeout: Duration) -> bool {
    use std::io::ErrorKind;
    use std::net::{TcpStream, ToSocketAddrs};

    let mut any = false;
    for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // librdkafka accepts an optional "PROTOCOL://" before host:port.
        let address = server.rsplit("://").next().unwrap_or(server);
        let Ok(addrs) = address.to_socket_addrs() else {
            return false;
        };
        for addr in addrs {
            any = true;
            match TcpStream::connect_timeout(&addr, timeout) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                _ => return false,
            }
        }
    }
    any
}

/// Makes one TLS handshake with `host:port`, verifying the certificate against `ca_file` (or the
/// system's CAs) and `host`, within `timeout`.
pub fn probe(host: &str, port: u16, ca_file: Option<&str>, timeout: Duration) -> Probe {
    use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslVerifyMode};
    use openssl::x509::X509VerifyResult;
    use std::net::{TcpStream, ToSocketAddrs};

    let Some(addr) = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return Probe::Unreachable;
    };
    let Ok(stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return Probe::Unreachable;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let Ok(mut builder) = SslConnector::builder(SslMethod::tls_client()) else {
        return Probe::Unreachable;
    };
    if let Some(ca) = ca_file {
        if builder.set_ca_file(ca).is_err() {
            return Probe::TlsCertificate(format!("cannot read the CA file {ca}"));
        }
    }
    builder.set_verify(SslVerifyMode::PEER);
    let connector = builder.build();
    match connector.connect(host, stream) {
        Ok(_) => Probe::TlsOk,
        Err(HandshakeError::Failure(mid) | HandshakeError::WouldBlock(mid)) => {
            let verdict = mid.ssl().verify_result();
            if verdict == X509VerifyResult::OK {
                Probe::NotTls
            } else {
                Probe::TlsCertificate(verdict.error_string().to_string())
            }
        }
        Err(HandshakeError::SetupFailure(_)) => Probe::NotTls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_lines_are_classified() {
        let cases = [
            ("Connect to ipv4#127.0.0.1:19999 failed: Connection refused (after 0ms in state CONNECT)", Cause::Refused),
            ("SSL handshake failed: ../ssl/statem/statem_clnt.c:1889:tls_post_process_server_certificate error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified", Cause::BrokerCertificate(None)),
            ("Receive failed: ../ssl/record/rec_layer_s3.c:1601:ssl3_read_bytes error:0A00045C:SSL routines::tlsv13 alert certificate required: SSL alert number 116", Cause::ClientCertificateRequired),
            ("No matching issuer found in server trusted certificate authorities, not sending any client certificates", Cause::ClientCertificateUntrusted),
            ("error:0A000415:SSL routines::sslv3 alert certificate expired: SSL alert number 45", Cause::ClientCertificateExpired),
            ("SASL authentication error: SASL SCRAM authentication failed: broker responded with invalid-proof (after 33ms in state AUTH_REQ)", Cause::SaslAuthentication("invalid-proof".into())),
            ("SASL PLAIN mechanism handshake failed: Local: Broker transport failure: broker's supported mechanisms: (n/a) (after 0ms in state DOWN)", Cause::SaslMechanism("PLAIN".into())),
            ("127.0.0.1:19093/bootstrap: Disconnected: connection reset by peer (after 2ms in state APIVERSION_QUERY)", Cause::ClosedAtFirstRequest),
            ("ssl://127.0.0.1:19193/bootstrap: Disconnected: SSL connection closed by peer (after 0ms in state UP)", Cause::ClosedByBroker),
        ];
        for (line, cause) in cases {
            assert_eq!(classify(line), Some(cause), "{line}");
        }
        assert_eq!(classify("1/1 brokers are down"), None);
    }

    #[test]
    fn specific_causes_win_and_certain_ones_are_marked() {
        assert!(Cause::SaslAuthentication("x".into()).weight() > Cause::ClosedByBroker.weight());
        assert!(!Cause::Refused.is_certain());
        assert!(!Cause::ClosedAtFirstRequest.is_certain());
        assert!(Cause::ClientCertificateRequired.is_certain());
        assert!(Cause::BrokerCertificate(Some("Hostname mismatch".into()))
            .explain()
            .contains("does not name the host"));
    }

    #[test]
    fn refusal_on_every_bootstrap_address_is_seen_at_once() {
        // A port that was just free: nothing listens there.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = free.local_addr().unwrap().port();
        drop(free);
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listening = open.local_addr().unwrap().port();
        let timeout = Duration::from_millis(300);
        assert!(every_bootstrap_refuses(
            &format!("127.0.0.1:{closed}"),
            timeout
        ));
        assert!(every_bootstrap_refuses(
            &format!("PLAINTEXT://127.0.0.1:{closed}, 127.0.0.1:{closed}"),
            timeout
        ));
        // One address that answers is enough to keep waiting for the broker.
        assert!(!every_bootstrap_refuses(
            &format!("127.0.0.1:{closed},127.0.0.1:{listening}"),
            timeout
        ));
        assert!(!every_bootstrap_refuses("", timeout));
        assert!(!every_bootstrap_refuses(
            "no-such-host.invalid:9092",
            timeout
        ));
    }

    #[test]
    fn repeats_differ_only_in_timing() {
        assert_eq!(
            repeat_key(
                "x failed: refused (after 0ms in state CONNECT, 1 identical error(s) suppressed)"
            ),
            repeat_key("x failed: refused (after 3ms in state CONNECT)")
        );
    }
}
