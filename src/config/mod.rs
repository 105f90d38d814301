//! Config files (`docs/CONFIG.md`): OpenMSIStream-compatible INI files turned into the
//! settings of our Kafka clients.
//!
//! Layers, each usable on its own:
//! - [`lookup`]: `--config X` → a file (or a built-in copy);
//! - [`ini`]: text → sections and raw values, exactly as Python's `configparser` reads them,
//!   with `%(name)s` interpolation;
//! - [`LoadedConfig`]: interpolated values with `$VAR` expanded, and the producer and consumer
//!   properties for librdkafka derived from them.
//!
//! When errors surface: syntax errors always fail the load, as in the reference. Problems in
//! the values of `[broker]`, `[cluster]`, `[producer]` and `[consumer]` fail the load too, since
//! every run builds a Kafka client from them. In any other section (`[s3]`, `[heartbeat]`, …)
//! an unset variable or bad `%` is kept with the value and reported by
//! [`LoadedConfig::checked_section`] / [`Section::try_get`] when a feature uses the section,
//! because the reference, too, only looks at a section when it needs it (its shipped
//! `test_s3_transfer.config` names S3 variables an upload never needs).

pub mod error;
mod expand;
pub mod ini;
pub mod lookup;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::ConfigError;
use expand::ExpandProblem;
use ini::{IniFile, DEFAULT_SECTION};
use lookup::ConfigSource;

/// The section merged into every Kafka client.
pub const BROKER_SECTION: &str = "broker";
/// Older name of [`BROKER_SECTION`], still accepted.
pub const CLUSTER_SECTION: &str = "cluster";
/// Settings for producers only.
pub const PRODUCER_SECTION: &str = "producer";
/// Settings for consumers only.
pub const CONSUMER_SECTION: &str = "consumer";

/// Keys that name Python (de)serializer classes in OpenMSIStream files. They mean nothing to
/// librdkafka (which would reject them), and our wire format is fixed, so they are dropped.
pub const SERIALIZER_KEYS: [&str; 4] = [
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
];

/// OpenMSIStream drops `node_id` (a KafkaCrypto setting, often put in `[DEFAULT]`) from the
/// broker, producer and consumer settings; so do we, or librdkafka would reject it.
const NODE_ID_KEY: &str = "node_id";

/// `group.id` values that ask for a fresh group for this run (`new` is the older spelling).
const CREATE_NEW_GROUP_IDS: [&str; 2] = ["create_new", "new"];

/// Which kind of Kafka client a property list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// `[broker]`/`[cluster]` + `[producer]`.
    Producer,
    /// `[broker]`/`[cluster]` + `[consumer]`.
    Consumer,
}

/// A config file after interpolation and environment expansion.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// Where it came from, for messages (`<built-in>/local.config` for an embedded copy).
    path: PathBuf,
    /// Every section except `[DEFAULT]`, in file order; each holds its inherited keys too.
    sections: Vec<Section>,
    /// `[DEFAULT]` itself, when the file has one.
    defaults: Option<Section>,
    /// The group id made for `group.id = create_new`, made once so that every consumer built
    /// from this config joins the same group.
    fresh_group_id: OnceLock<String>,
}

/// One section: its keys in order (own keys in file order, then inherited `[DEFAULT]` keys),
/// with values interpolated and expanded.
#[derive(Debug, Clone)]
pub struct Section {
    /// Name as in the file (case-sensitive).
    name: String,
    /// 1-based line of its header.
    line: usize,
    /// Keys in `configparser`'s order.
    entries: Vec<Entry>,
}

/// One key of a [`Section`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// Lower-cased key.
    key: String,
    /// The final value, or why there is none (kept, not raised, outside the client sections).
    value: Result<String, ConfigError>,
    /// 1-based line where the key is set.
    line: usize,
    /// Section where the key is set (`DEFAULT` when inherited).
    defined_in: String,
}

impl Entry {
    /// The lower-cased key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value after interpolation and expansion, or why it could not be computed.
    pub fn value(&self) -> Result<&str, &ConfigError> {
        self.value.as_deref()
    }

    /// 1-based line where the key is set.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The section where the key is written: this section, or `DEFAULT` when inherited.
    pub fn defined_in(&self) -> &str {
        &self.defined_in
    }
}

impl Section {
    /// The section's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// 1-based line of its header.
    pub fn line(&self) -> usize {
        self.line
    }

    /// All keys in order, including inherited ones.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn entry(&self, key: &str) -> Option<&Entry> {
        let key = key.to_lowercase();
        self.entries.iter().find(|e| e.key == key)
    }

    /// The value of `key` (case-insensitive). `None` if the key is absent *or* its value could
    /// not be computed; use [`Section::try_get`] to tell the two apart.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).and_then(|e| e.value.as_deref().ok())
    }

    /// The value of `key` (case-insensitive), or the error that prevented computing it.
    pub fn try_get(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        match self.entry(key) {
            None => Ok(None),
            Some(e) => e.value.as_deref().map(Some).map_err(Clone::clone),
        }
    }

    /// 1-based line where `key` is set.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.entry(key).map(|e| e.line)
    }

    /// The first value that could not be computed, skipping `skip` keys.
    fn first_error(&self, skip: &[&str]) -> Option<&ConfigError> {
        self.entries
            .iter()
            .filter(|e| !skip.contains(&e.key.as_str()))
            .find_map(|e| e.value.as_ref().err())
    }

    /// `(key, value)` pairs whose value could be computed.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str, &Entry)> {
        self.entries
            .iter()
            .filter_map(|e| e.value.as_deref().ok().map(|v| (e.key.as_str(), v, e)))
    }
}

impl LoadedConfig {
    /// Finds `spec` (see [`lookup`]), reads it, parses it and expands `$VAR`s from the process
    /// environment.
    pub fn load(spec: &str) -> Result<LoadedConfig, ConfigError> {
        Self::load_from(lookup::find_config(spec)?)
    }

    /// Reads a config from where [`lookup`] found it, expanding from the process environment.
    pub fn load_from(source: ConfigSource) -> Result<LoadedConfig, ConfigError> {
        let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        match source {
            ConfigSource::File(path) => {
                let file = std::fs::File::open(&path).map_err(|e| ConfigError::Read {
                    path: path.clone(),
                    source: std::sync::Arc::new(e),
                })?;
                Self::from_reader(&path, file, &env)
            }
            embedded @ ConfigSource::Embedded { text, .. } => {
                Self::from_reader(&embedded.display_path(), text.as_bytes(), &env)
            }
        }
    }

    /// Parses a config from any reader; `path` is used in messages only. Environment lookups
    /// go through `env` so tests need not touch the process environment.
    pub fn from_reader(
        path: &Path,
        reader: impl std::io::Read,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LoadedConfig, ConfigError> {
        Self::from_ini(&ini::parse(path, reader)?, env)
    }

    /// Interpolates and expands an already parsed file; fails on any problem in the client
    /// sections and on `[broker]`/`[cluster]` disagreeing.
    pub fn from_ini(
        ini: &IniFile,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LoadedConfig, ConfigError> {
        let build = |name: &str, line: usize| Section {
            name: name.to_string(),
            line,
            entries: ini
                .items(name)
                .unwrap_or_default()
                .into_iter()
                .map(|item| expand_item(ini.path(), name, item, env))
                .collect(),
        };
        let config = LoadedConfig {
            path: ini.path().to_path_buf(),
            sections: ini
                .sections()
                .iter()
                .map(|s| build(s.name(), s.line()))
                .collect(),
            defaults: ini
                .has_default_section()
                .then(|| build(DEFAULT_SECTION, ini.defaults().line())),
            fresh_group_id: OnceLock::new(),
        };
        for name in [
            BROKER_SECTION,
            CLUSTER_SECTION,
            PRODUCER_SECTION,
            CONSUMER_SECTION,
        ] {
            if let Some(e) = config
                .section(name)
                .and_then(|s| s.first_error(&[NODE_ID_KEY]))
            {
                return Err(e.clone());
            }
        }
        config.check_broker_cluster()?;
        Ok(config)
    }

    /// `[broker]` and `[cluster]` may both exist, but must not disagree.
    fn check_broker_cluster(&self) -> Result<(), ConfigError> {
        let (Some(broker), Some(cluster)) =
            (self.section(BROKER_SECTION), self.section(CLUSTER_SECTION))
        else {
            return Ok(());
        };
        for (key, value, entry) in broker.pairs() {
            if let Some(other) = cluster.entry(key) {
                if other.value.as_deref().ok() != Some(value) {
                    return Err(ConfigError::BrokerClusterConflict {
                        path: self.path.clone(),
                        key: key.to_string(),
                        broker_line: entry.line,
                        cluster_line: other.line,
                    });
                }
            }
        }
        Ok(())
    }

    /// Where the config came from (`<built-in>/local.config` for a built-in copy).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every section except `[DEFAULT]`, in file order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// A section by exact (case-sensitive) name, as the reference looks them up; `DEFAULT`
    /// gives `[DEFAULT]` when the file has one. Values that could not be computed are kept in
    /// the section: see [`LoadedConfig::checked_section`].
    pub fn section(&self, name: &str) -> Option<&Section> {
        if name == DEFAULT_SECTION {
            return self.defaults.as_ref();
        }
        self.sections.iter().find(|s| s.name == name)
    }

    /// Like [`LoadedConfig::section`], but fails with the first value of the section that
    /// could not be computed (unset variable, bad `%`), as the reference does when it reads a
    /// section. Features call this for the section they use.
    pub fn checked_section(&self, name: &str) -> Result<Option<&Section>, ConfigError> {
        match self.section(name) {
            Some(s) => match s.first_error(&[]) {
                Some(e) => Err(e.clone()),
                None => Ok(Some(s)),
            },
            None => Ok(None),
        }
    }

    /// The sections a client of this kind is built from, in merge order.
    fn client_sections(&self, kind: ClientKind) -> impl Iterator<Item = &Section> {
        let own = match kind {
            ClientKind::Producer => PRODUCER_SECTION,
            ClientKind::Consumer => CONSUMER_SECTION,
        };
        // [broker] and [cluster] in file order (they cannot disagree), then the client's own.
        let brokers = self
            .sections
            .iter()
            .filter(|s| s.name == BROKER_SECTION || s.name == CLUSTER_SECTION);
        brokers.chain(self.section(own))
    }

    /// The merged settings of one client kind. Each key once, at its first position, with the
    /// last value (as Python's `{**broker, **producer}`); serializer keys and `node_id` dropped.
    fn merged(&self, kind: ClientKind) -> Vec<(String, String)> {
        let mut props: Vec<(String, String)> = Vec::new();
        for section in self.client_sections(kind) {
            for (key, value, _) in section.pairs() {
                if SERIALIZER_KEYS.contains(&key) || key == NODE_ID_KEY {
                    continue;
                }
                set_property(&mut props, key, value);
            }
        }
        props
    }

    /// `[broker]`/`[cluster]` + `[producer]`, serializer keys dropped, in order; later keys
    /// override earlier ones, and each key appears once.
    pub fn producer_properties(&self) -> Vec<(String, String)> {
        self.merged(ClientKind::Producer)
    }

    /// True when the file asks every run for a fresh consumer group (`group.id` missing,
    /// `create_new` or `new`): a service must be given a group of its own to resume.
    pub fn consumer_group_is_fresh(&self) -> bool {
        property(&self.merged(ClientKind::Consumer), "group.id").is_none_or(is_create_new)
    }

    /// `[broker]`/`[cluster]` + `[consumer]`, serializer keys dropped, with:
    /// - `group.id`: `group_id_override` (from the command line) wins over the file; with
    ///   neither, `create_new`; `create_new` or `new` (any case) becomes a fresh id, the same
    ///   one for every call on this config so that all consumers of a run share one group;
    /// - `auto.offset.reset = none` mapped to librdkafka's `error`;
    /// - when `commits_offsets_itself`, `enable.auto.commit` and `enable.auto.offset.store`
    ///   forced to `false`, with one warning if the file set either to true, because openmsi
    ///   commits an offset only once the data is durable and auto-commit would break that.
    pub fn consumer_properties(
        &self,
        group_id_override: Option<&str>,
        commits_offsets_itself: bool,
    ) -> Vec<(String, String)> {
        let mut props = self.merged(ClientKind::Consumer);

        let group_id = group_id_override
            .map(str::to_string)
            .or_else(|| property(&props, "group.id").map(str::to_string))
            .unwrap_or_else(|| CREATE_NEW_GROUP_IDS[0].to_string());
        let group_id = if is_create_new(&group_id) {
            self.fresh_group_id.get_or_init(fresh_group_id).clone()
        } else {
            group_id
        };
        set_property(&mut props, "group.id", &group_id);

        if property(&props, "auto.offset.reset").is_some_and(|v| v.eq_ignore_ascii_case("none")) {
            // Kafka's Java clients say "none" for "fail if the group has no committed offset";
            // librdkafka calls that "error".
            set_property(&mut props, "auto.offset.reset", "error");
        }

        if commits_offsets_itself {
            let overridden: Vec<&str> = ["enable.auto.commit", "enable.auto.offset.store"]
                .into_iter()
                .filter(|key| property(&props, key).is_some_and(librdkafka_true))
                .collect();
            if !overridden.is_empty() {
                let lines: Vec<String> = overridden
                    .iter()
                    .filter_map(|k| self.property_origin_in(ClientKind::Consumer, k))
                    .map(|(section, line)| format!("[{section}] line {line}"))
                    .collect();
                tracing::warn!(
                    path = %self.path.display(),
                    keys = %overridden.join(", "),
                    at = %lines.join(", "),
                    "config sets {} to true, which is overridden to false: openmsi commits a \
                     message's offset only after its data is durable on disk, and automatic \
                     offset commits would not guarantee at-least-once delivery",
                    overridden.join(" and "),
                );
            }
            set_property(&mut props, "enable.auto.commit", "false");
            set_property(&mut props, "enable.auto.offset.store", "false");
        }
        props
    }

    /// Which section and line set `key` (case-insensitive) for the Kafka clients, for
    /// messages such as "librdkafka rejected property X (file F line L)". Looks in
    /// `[consumer]`, `[producer]`, then `[broker]`/`[cluster]`; when a key may be in both
    /// client sections, [`LoadedConfig::property_origin_in`] gives the right one. The section
    /// is `DEFAULT` for an inherited key.
    pub fn property_origin(&self, key: &str) -> Option<(String, usize)> {
        self.property_origin_in(ClientKind::Consumer, key)
            .or_else(|| self.property_origin_in(ClientKind::Producer, key))
    }

    /// Which section and line set `key` for clients of one kind: the last section in merge
    /// order that sets it, as that is the value the client gets.
    pub fn property_origin_in(&self, kind: ClientKind, key: &str) -> Option<(String, usize)> {
        let key = key.to_lowercase();
        self.client_sections(kind)
            .filter_map(|s| s.entry(&key))
            .last()
            .map(|e| (e.defined_in.clone(), e.line))
    }
}

/// Expands one interpolated value, turning an expansion problem into an error that names
/// the file, section, key and line.
fn expand_item(
    path: &Path,
    section: &str,
    item: ini::Item,
    env: &dyn Fn(&str) -> Option<String>,
) -> Entry {
    let value = item.value.and_then(|value| {
        if !expand::wants_expansion(&value) {
            return Ok(value);
        }
        expand::expand(&value, env).map_err(|problem| match problem {
            ExpandProblem::Unset(var) => ConfigError::UnsetVariable {
                path: path.to_path_buf(),
                section: section.to_string(),
                key: item.key.clone(),
                line: item.line,
                var,
            },
            ExpandProblem::EmptyName => ConfigError::BadVariable {
                path: path.to_path_buf(),
                section: section.to_string(),
                key: item.key.clone(),
                line: item.line,
                problem: "'${}' has no variable name".to_string(),
            },
            ExpandProblem::NoReference => ConfigError::BadVariable {
                path: path.to_path_buf(),
                section: section.to_string(),
                key: item.key.clone(),
                line: item.line,
                problem: "the value starts with '$' but names no environment variable".to_string(),
            },
        })
    });
    Entry {
        key: item.key,
        value,
        line: item.line,
        defined_in: item.defined_in,
    }
}

/// The value of `key` in a property list.
fn property<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Sets `key` in place if present, else appends it.
fn set_property(props: &mut Vec<(String, String)>, key: &str, value: &str) {
    match props.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value.to_string(),
        None => props.push((key.to_string(), value.to_string())),
    }
}

/// Whether a `group.id` asks for a fresh group.
/// Whether `group_id` asks for a fresh group for this run (`create_new`, or the older `new`).
pub fn is_create_new(group_id: &str) -> bool {
    CREATE_NEW_GROUP_IDS
        .iter()
        .any(|magic| group_id.trim().eq_ignore_ascii_case(magic))
}

/// How librdkafka reads a boolean property as true (`true`, `t` in any case, or `1`).
fn librdkafka_true(value: &str) -> bool {
    value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("t") || value == "1"
}

/// A group id no other run uses: `openmsi-<host>-<unix nanos>-<pid>`. The nanoseconds are
/// made strictly increasing within the process so two ids made in the same clock tick differ.
fn fresh_group_id() -> String {
    static LAST_NANOS: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let prev = LAST_NANOS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(0);
    let nanos = now.max(prev + 1);
    format!(
        "openmsi-{}-{nanos}-{}",
        crate::host::id_safe_name(),
        std::process::id()
    )
}
