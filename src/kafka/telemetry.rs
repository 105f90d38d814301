//! Optional heartbeat and log topics in OpenMSIStream's formats (`docs/WIRE_FORMAT.md`), so
//! existing OpenMSI dashboards keep working: every interval, a heartbeat (key
//! `<program_id>_heartbeat`, JSON with an ISO-8601 UTC timestamp and the messages and bytes
//! produced since the previous one) and the log lines since the previous send (key
//! `<program_id>_log`, JSON with a Unix timestamp and the lines). Best effort: a failure to
//! send is logged and never affects the data stream.
//!
//! With encryption on (`[kafkacrypto]`), heartbeats and log lines are encrypted like the data,
//! with the node's key for each telemetry topic's root, as OpenMSIStream does (it sends them
//! through its encrypting producer): log lines name files. A node not entitled to encrypt to
//! those topics is refused at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::client::{client_config, create_client, KafkaSetupError};
use super::context::LogContext;
use crate::config::LoadedConfig;
use crate::contract::{ChunkMessage, Envelope};
use crate::logging;

/// Where and how often to send.
#[derive(Clone)]
pub struct TelemetrySettings {
    /// Heartbeat topic, if any.
    pub heartbeat_topic: Option<String>,
    /// Log topic, if any.
    pub log_topic: Option<String>,
    /// Period of both.
    pub interval: Duration,
    /// Names this program in the keys.
    pub program_id: String,
    /// The encryption of each topic that needs it (none for plaintext).
    pub sealers: Sealers,
}

impl std::fmt::Debug for TelemetrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetrySettings")
            .field("heartbeat_topic", &self.heartbeat_topic)
            .field("log_topic", &self.log_topic)
            .field("interval", &self.interval)
            .field("program_id", &self.program_id)
            .field("encrypted", &self.sealers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The envelope (encryption) for each telemetry topic that needs one, built by the command
/// layer like the data's: heartbeats and log lines name files, so on an encrypted topic they
/// are encrypted too, as OpenMSIStream does.
pub type Sealers = HashMap<String, Arc<dyn Envelope>>;

/// Running totals the heartbeat reports differences of, by their heartbeat field name
/// (`n_messages_produced`, ... for uploaders; `n_messages_read`, ... for downloaders). Always
/// the same names in the same order.
pub type Totals = Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// Starts the sender thread (when a topic is set); it sends once more when `cancel` fires.
pub fn spawn(
    config: &LoadedConfig,
    settings: TelemetrySettings,
    totals: Totals,
    cancel: CancellationToken,
) -> Result<Option<std::thread::JoinHandle<()>>, KafkaSetupError> {
    if settings.heartbeat_topic.is_none() && settings.log_topic.is_none() {
        return Ok(None);
    }
    if settings.log_topic.is_some() {
        logging::capture_for_log_topic(true);
    }
    let cfg = client_config(&config.producer_properties(), &[], &[]);
    let producer: ThreadedProducer<LogContext> =
        create_client(&cfg, LogContext, config, "heartbeat producer")?;
    let sealers = settings.sealers.clone();
    Ok(Some(std::thread::spawn(move || {
        let mut last: Vec<(&'static str, u64)> = Vec::new();
        loop {
            let stopping = wait(&cancel, settings.interval);
            let now = totals();
            if let Some(topic) = &settings.heartbeat_topic {
                let mut value = serde_json::Map::new();
                value.insert("timestamp".into(), iso8601_utc(SystemTime::now()).into());
                for (i, (name, total)) in now.iter().enumerate() {
                    let before = last.get(i).map_or(0, |(_, v)| *v);
                    value.insert((*name).into(), total.saturating_sub(before).into());
                }
                let value = serde_json::Value::Object(value).to_string();
                send(
                    &producer,
                    sealers.get(topic),
                    topic,
                    &format!("{}_heartbeat", settings.program_id),
                    &value,
                );
            }
            last = now;
            if let Some(topic) = &settings.log_topic {
                let messages = logging::drain_captured();
                if !messages.is_empty() {
                    let value = json!({"timestamp": unix_now(), "messages": messages}).to_string();
                    send(
                        &producer,
                        sealers.get(topic),
                        topic,
                        &format!("{}_log", settings.program_id),
                        &value,
                    );
                }
            }
            if stopping {
                let _ = producer.flush(Duration::from_secs(5));
                // Dropping the envelopes stops their key exchanges (replies flushed).
                drop(sealers);
                return;
            }
        }
    })))
}

/// Sleeps `interval` or until cancelled; true when cancelled.
fn wait(cancel: &CancellationToken, interval: Duration) -> bool {
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while waited < interval {
        if cancel.is_cancelled() {
            return true;
        }
        std::thread::sleep(step.min(interval - waited));
        waited += step;
    }
    cancel.is_cancelled()
}

fn send(
    producer: &ThreadedProducer<LogContext>,
    envelope: Option<&Arc<dyn Envelope>>,
    topic: &str,
    key: &str,
    value: &str,
) {
    let mut message = ChunkMessage {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..ChunkMessage::default()
    };
    if let Some(envelope) = envelope {
        envelope.seal(&mut message);
    }
    let (key, value) = (message.key, message.value);
    if let Err((e, _)) = producer.send(BaseRecord::to(topic).key(&key).payload(&value)) {
        warn!(topic, error = %e, "could not queue a heartbeat/log message");
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, what Python's `datetime.now(timezone.utc).isoformat()`
/// gives.
pub fn iso8601_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Reads an ISO-8601 time as heartbeats carry it (`2026-11-22T14:58:38.250000+00:00`, also
/// with `Z`, another offset, or none: then UTC is assumed).
pub fn parse_iso8601(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', ' '])?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    // The offset: after the seconds, a `Z` or a sign.
    let (clock, offset_secs) = match time.find(['Z', '+', '-']) {
        Some(i) if &time[i..] == "Z" => (&time[..i], 0),
        Some(i) => {
            let sign = if time.as_bytes()[i] == b'-' { -1 } else { 1 };
            let (h, m) = time[i + 1..]
                .split_once(':')
                .unwrap_or((&time[i + 1..], "0"));
            (
                &time[..i],
                sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60),
            )
        }
        None => (time, 0),
    };
    let mut hms = clock.splitn(3, ':');
    let (h, m) = (
        hms.next()?.parse::<i64>().ok()?,
        hms.next()?.parse::<i64>().ok()?,
    );
    let seconds: f64 = hms.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let whole = days * 86_400 + h * 3600 + m * 60 - offset_secs;
    let total = whole as f64 + seconds;
    (total >= 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_reads_back_what_it_writes_and_python_variants() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_359_518_250_000);
        assert_eq!(parse_iso8601(&iso8601_utc(t)), Some(t));
        assert_eq!(parse_iso8601("2026-11-22T14:58:38.25Z"), Some(t));
        assert_eq!(parse_iso8601("2026-11-22T16:58:38.25+02:00"), Some(t));
        assert_eq!(parse_iso8601("2026-11-22 14:58:38.250000"), Some(t));
        assert_eq!(parse_iso8601("yesterday"), None);
        assert_eq!(parse_iso8601("2026-13-01T00:00:00"), None);
    }

    #[test]
    fn iso8601_matches_python() {
        // datetime.fromtimestamp(1795359518.25, timezone.utc).isoformat()
        let t = UNIX_EPOCH + Duration::from_micros(1_795_359_518_250_000);
        assert_eq!(iso8601_utc(t), "2026-11-22T14:58:38.250000+00:00");
        assert_eq!(iso8601_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000000+00:00");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso8601_utc(leap), "2000-02-29T00:00:00.000000+00:00");
    }
}
