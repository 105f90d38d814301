//! Unit tests of the config loader. The comparison with Python's configparser itself, and the
//! checks on the config files the reference ships, are in `tests/config_vs_python.rs`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::error::{InterpolationProblem, SyntaxProblem};
use super::lookup::{find_config_in, ConfigSource, SearchPlaces, EMBEDDED};
use super::*;

const FILE: &str = "/labs/test.config";

fn no_env(_: &str) -> Option<String> {
    None
}

fn test_env(name: &str) -> Option<String> {
    let vars: HashMap<&str, &str> = [
        ("KAFKA_HOST", "kafka.example:9092"),
        ("USER_NAME", "alice"),
        ("SECRET", "s3cr%t"),
        ("DATA", "/data"),
    ]
    .into();
    vars.get(name).map(|v| v.to_string())
}

fn load_with(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigError> {
    LoadedConfig::from_reader(Path::new(FILE), text.as_bytes(), env)
}

fn load(text: &str) -> LoadedConfig {
    load_with(text, &test_env).unwrap_or_else(|e| panic!("config should load: {e}"))
}

fn parse_ini(text: &str) -> Result<ini::IniFile, ConfigError> {
    ini::parse(Path::new(FILE), text.as_bytes())
}

/// The (line, problem) list of a syntax error, failing the test for any other outcome.
fn syntax_errors(text: &str) -> Vec<(usize, SyntaxProblem)> {
    match parse_ini(text) {
        Err(ConfigError::Syntax { errors, path }) => {
            assert_eq!(path, Path::new(FILE));
            errors.into_iter().map(|e| (e.line, e.problem)).collect()
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

fn get<'a>(config: &'a LoadedConfig, section: &str, key: &str) -> Option<&'a str> {
    config.section(section).and_then(|s| s.get(key))
}

fn prop<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn keys(props: &[(String, String)]) -> Vec<&str> {
    props.iter().map(|(k, _)| k.as_str()).collect()
}

// ---------------------------------------------------------------- INI syntax

#[test]
fn both_delimiters_and_whitespace() {
    let c = load("[s]\na=1\nb : 2\nc\t=\t3  \nd:4=5\ne = x:y\nf =\n");
    assert_eq!(get(&c, "s", "a"), Some("1"));
    assert_eq!(get(&c, "s", "b"), Some("2"));
    assert_eq!(get(&c, "s", "c"), Some("3"));
    // Split at the first delimiter, whichever it is.
    assert_eq!(get(&c, "s", "d"), Some("4=5"));
    assert_eq!(get(&c, "s", "e"), Some("x:y"));
    assert_eq!(get(&c, "s", "f"), Some(""));
}

#[test]
fn comments_hash_and_semicolon_even_indented_but_not_inline() {
    let c = load(
        "# top\n; top\n[s]\n# c\n  ; indented comment\na = 1 # not a comment\nb = 2 ; nor this\n",
    );
    let s = c.section("s").unwrap();
    assert_eq!(s.get("a"), Some("1 # not a comment"));
    assert_eq!(s.get("b"), Some("2 ; nor this"));
    assert_eq!(s.entries().len(), 2);
}

#[test]
fn keys_are_case_insensitive_sections_are_not() {
    let c = load("[Broker]\nBootstrap.Servers = X\n[broker]\nbootstrap.servers = y\n");
    assert_eq!(get(&c, "Broker", "bootstrap.servers"), Some("X"));
    assert_eq!(get(&c, "Broker", "BOOTSTRAP.SERVERS"), Some("X"));
    assert_eq!(get(&c, "broker", "bootstrap.servers"), Some("y"));
    assert_eq!(
        c.section("Broker").unwrap().entries()[0].key(),
        "bootstrap.servers"
    );
    // Only the lower-case [broker] feeds the clients, as in the reference.
    assert_eq!(
        prop(&c.producer_properties(), "bootstrap.servers"),
        Some("y")
    );
}

#[test]
fn section_names_are_taken_as_written() {
    let c = load("[ spaced ]\na = 1\n[x] trailing text\nb = 2\n[a]b]\nc = 3\n");
    let names: Vec<&str> = c.sections().iter().map(Section::name).collect();
    // Up to the last ']' of the line; what follows it is ignored.
    assert_eq!(names, [" spaced ", "x", "a]b"]);
}

#[test]
fn continuation_lines_and_empty_lines_in_values() {
    let text = "[s]\nkey = first\n  second\n\n\tthird\n# comment inside\n  fourth\n\n\nnext = 1\n";
    let c = load(text);
    assert_eq!(get(&c, "s", "key"), Some("first\nsecond\n\nthird\nfourth"));
    assert_eq!(get(&c, "s", "next"), Some("1"));
    assert_eq!(c.section("s").unwrap().line_of("next"), Some(10));
}

#[test]
fn indented_header_or_key_after_a_key_is_a_continuation() {
    let c = load("[s]\na = 1\n  [t]\n  b = 2\n");
    assert_eq!(get(&c, "s", "a"), Some("1\n[t]\nb = 2"));
    assert!(c.section("t").is_none());
}

#[test]
fn indented_keys_without_a_previous_key_are_keys() {
    let c = load("[s]\n  a = 1\n  b = 2\n");
    assert_eq!(get(&c, "s", "a"), Some("1"));
    assert_eq!(get(&c, "s", "b"), Some("2"));
}

#[test]
fn crlf_and_cr_line_endings() {
    let c = load("[s]\r\na = 1\r\nb = 2\rc = 3");
    assert_eq!(get(&c, "s", "a"), Some("1"));
    assert_eq!(get(&c, "s", "b"), Some("2"));
    assert_eq!(get(&c, "s", "c"), Some("3"));
}

#[test]
fn byte_order_mark_is_tolerated() {
    let c = load("\u{feff}[broker]\nbootstrap.servers = h:1\n");
    assert_eq!(get(&c, "broker", "bootstrap.servers"), Some("h:1"));
}

#[test]
fn default_section_is_inherited_and_may_repeat() {
    let text =
        "[DEFAULT]\nlinger.ms = 5\nacks = all\n[producer]\nacks = 1\n[DEFAULT]\nx = y\n[other]\n";
    let c = load(text);
    let p = c.section("producer").unwrap();
    let entries: Vec<(&str, &str, &str)> = p
        .entries()
        .iter()
        .map(|e| (e.key(), e.value().unwrap(), e.defined_in()))
        .collect();
    // Own keys first, then inherited ones, as configparser's items().
    assert_eq!(
        entries,
        [
            ("acks", "1", "producer"),
            ("linger.ms", "5", "DEFAULT"),
            ("x", "y", "DEFAULT")
        ]
    );
    assert_eq!(get(&c, "other", "linger.ms"), Some("5"));
    assert_eq!(get(&c, "DEFAULT", "acks"), Some("all"));
    let names: Vec<&str> = c.sections().iter().map(Section::name).collect();
    assert_eq!(names, ["producer", "other"]);
    assert_eq!(c.property_origin("linger.ms"), Some(("DEFAULT".into(), 2)));
}

#[test]
fn lowercase_default_is_an_ordinary_section() {
    let c = load("[default]\na = 1\n[s]\n");
    assert_eq!(get(&c, "s", "a"), None);
    assert_eq!(get(&c, "default", "a"), Some("1"));
}

// ---------------------------------------------------------------- syntax errors

#[test]
fn missing_section_header() {
    assert_eq!(
        syntax_errors("# comment\n\nbootstrap.servers = x\n[broker]\n"),
        [(3, SyntaxProblem::MissingSectionHeader)]
    );
}

#[test]
fn line_without_delimiter() {
    let errors = syntax_errors("[s]\na = 1\njust words\nb = 2\nmore words\n");
    assert_eq!(
        errors,
        [
            (
                3,
                SyntaxProblem::NoDelimiter {
                    text: "just words".into()
                }
            ),
            (
                5,
                SyntaxProblem::NoDelimiter {
                    text: "more words".into()
                }
            )
        ]
    );
}

#[test]
fn unterminated_section_header() {
    assert_eq!(
        syntax_errors("[broker]\na = 1\n[producer\nb = 2\n"),
        [(3, SyntaxProblem::UnterminatedSectionHeader)]
    );
    // As the first line it is a line before any header, as configparser says.
    assert_eq!(
        syntax_errors("[broker\n"),
        [(1, SyntaxProblem::MissingSectionHeader)]
    );
    assert_eq!(
        syntax_errors("[s]\n[]\n"),
        [(2, SyntaxProblem::UnterminatedSectionHeader)]
    );
}

#[test]
fn empty_key() {
    assert_eq!(syntax_errors("[s]\n = 1\n"), [(2, SyntaxProblem::EmptyKey)]);
}

#[test]
fn duplicate_key_even_in_other_case() {
    assert_eq!(
        syntax_errors("[s]\na = 1\n\nA = 2\n"),
        [(
            4,
            SyntaxProblem::DuplicateKey {
                section: "s".into(),
                key: "a".into(),
                first_line: 2
            }
        )]
    );
}

#[test]
fn duplicate_section() {
    assert_eq!(
        syntax_errors("[s]\na = 1\n[t]\n[s]\nb = 2\n"),
        [(
            4,
            SyntaxProblem::DuplicateSection {
                section: "s".into(),
                first_line: 1
            }
        )]
    );
}

#[test]
fn line_errors_before_a_fatal_one_are_all_reported() {
    let errors = syntax_errors("[s]\nbad line\na = 1\na = 2\n");
    let lines: Vec<usize> = errors.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [2, 4]);
}

#[test]
fn syntax_error_messages_name_file_and_line() {
    let e = parse_ini("[s]\na = 1\nnonsense\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(FILE) && msg.contains("line 3"), "{msg}");
    assert!(msg.contains("nonsense"), "{msg}");
    assert_eq!(e.line(), Some(3));

    let msg = parse_ini("[s]\nx\ny\n").unwrap_err().to_string();
    assert!(msg.contains("2 syntax errors") && msg.contains("line 2") && msg.contains("line 3"));

    let msg = parse_ini("a = b\n").unwrap_err().to_string();
    assert!(msg.contains("line 1") && msg.contains("[broker]"), "{msg}");
}

#[test]
fn invalid_utf8_names_the_line() {
    let e = ini::parse(Path::new(FILE), &b"[s]\na = 1\nb = \xff\n"[..]).unwrap_err();
    assert!(matches!(e, ConfigError::NotUtf8 { line: 3, .. }), "{e:?}");
    assert!(e.to_string().contains("UTF-8"));
}

#[test]
fn huge_input_is_refused() {
    let big = std::io::repeat(b'#').take(ini::MAX_CONFIG_BYTES + 10);
    let e = ini::parse(Path::new(FILE), big).unwrap_err();
    assert!(matches!(e, ConfigError::TooLarge { .. }), "{e:?}");
}

use std::io::Read as _;

// ---------------------------------------------------------------- interpolation

#[test]
fn basic_interpolation() {
    let text = "[DEFAULT]\nroot = /srv\n[s]\ndir = %(root)s/data\nall = %(DIR)s/x\npct = 100%%\nraw = a%%(b)s\n";
    let c = load(text);
    assert_eq!(get(&c, "s", "dir"), Some("/srv/data"));
    assert_eq!(get(&c, "s", "all"), Some("/srv/data/x"));
    assert_eq!(get(&c, "s", "pct"), Some("100%"));
    assert_eq!(get(&c, "s", "raw"), Some("a%(b)s"));
}

#[test]
fn default_values_interpolate_in_the_reading_section() {
    let c = load("[DEFAULT]\nurl = %(host)s:9092\n[a]\nhost = one\n[b]\nhost = two\n");
    assert_eq!(get(&c, "a", "url"), Some("one:9092"));
    assert_eq!(get(&c, "b", "url"), Some("two:9092"));
}

#[test]
fn lone_percent_in_a_client_section_fails_the_load() {
    let e = load_with("[broker]\nsasl.password = ab%cd\n", &no_env).unwrap_err();
    match &e {
        ConfigError::Interpolation {
            section,
            key,
            line,
            problem,
            ..
        } => {
            assert_eq!(
                (section.as_str(), key.as_str(), *line),
                ("broker", "sasl.password", 2)
            );
            assert_eq!(
                *problem,
                InterpolationProblem::LonePercent {
                    in_key: "sasl.password".into(),
                    column: 3
                }
            );
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("%%") && msg.contains(FILE), "{msg}");
    assert!(!msg.contains("ab%cd"), "the value may be a secret: {msg}");
}

#[test]
fn interpolation_errors_elsewhere_wait_until_the_section_is_used() {
    let c = load("[broker]\nbootstrap.servers = h:1\n[s3]\na = %(missing)s\nb = %(x\nc = fine\n");
    let s3 = c.section("s3").unwrap();
    assert_eq!(s3.get("c"), Some("fine"));
    assert_eq!(s3.get("a"), None);
    assert!(matches!(
        s3.try_get("a"),
        Err(ConfigError::Interpolation {
            problem: InterpolationProblem::MissingKey { .. },
            ..
        })
    ));
    assert!(matches!(
        s3.try_get("b"),
        Err(ConfigError::Interpolation {
            problem: InterpolationProblem::BadReference { .. },
            ..
        })
    ));
    assert!(c.checked_section("s3").is_err());
    assert!(c.checked_section("broker").unwrap().is_some());
    assert!(c.checked_section("absent").unwrap().is_none());
}

#[test]
fn self_reference_is_too_deep() {
    let c = load("[s]\na = %(a)s\n");
    assert!(matches!(
        c.section("s").unwrap().try_get("a"),
        Err(ConfigError::Interpolation {
            problem: InterpolationProblem::TooDeep,
            ..
        })
    ));
}

// ---------------------------------------------------------------- environment variables

#[test]
fn env_forms() {
    let text = "[broker]\nbootstrap.servers = $KAFKA_HOST\nsasl.username = ${USER_NAME}\n[s]\ndir = $DATA/incoming\nmixed = $DATA/${USER_NAME}\nnot = x$DATA\n";
    let c = load(text);
    assert_eq!(
        get(&c, "broker", "bootstrap.servers"),
        Some("kafka.example:9092")
    );
    assert_eq!(get(&c, "broker", "sasl.username"), Some("alice"));
    assert_eq!(get(&c, "s", "dir"), Some("/data/incoming"));
    assert_eq!(get(&c, "s", "mixed"), Some("/data/alice"));
    // Only values that start with '$' are expanded.
    assert_eq!(get(&c, "s", "not"), Some("x$DATA"));
}

#[test]
fn expanded_values_are_not_interpolated_again() {
    // SECRET holds a '%': interpolation happens before expansion, so it is kept as is.
    let c = load("[broker]\nsasl.password = $SECRET\n");
    assert_eq!(get(&c, "broker", "sasl.password"), Some("s3cr%t"));
}

#[test]
fn interpolated_dollar_values_are_expanded() {
    let c = load("[DEFAULT]\nhost = $KAFKA_HOST\n[broker]\nbootstrap.servers = %(host)s\n");
    assert_eq!(
        get(&c, "broker", "bootstrap.servers"),
        Some("kafka.example:9092")
    );
}

#[test]
fn unset_variable_error_names_variable_file_section_and_key() {
    let e = load_with("[broker]\n\nsasl.password = $KAFKA_PW\n", &no_env).unwrap_err();
    match &e {
        ConfigError::UnsetVariable {
            var,
            section,
            key,
            line,
            path,
        } => {
            assert_eq!(var, "KAFKA_PW");
            assert_eq!(section, "broker");
            assert_eq!(key, "sasl.password");
            assert_eq!(*line, 3);
            assert_eq!(path, Path::new(FILE));
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    for part in [
        "KAFKA_PW",
        FILE,
        "broker",
        "sasl.password",
        "line 3",
        "set it in the environment or edit the file",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
}

#[test]
fn every_reference_must_be_set() {
    let e = load_with(
        "[broker]\nbootstrap.servers = $KAFKA_HOST,${OTHER}\n",
        &test_env,
    )
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::UnsetVariable { ref var, .. } if var == "OTHER"),
        "{e:?}"
    );
}

#[test]
fn dollar_value_without_a_variable_is_an_error() {
    let e = load_with("[consumer]\nsasl.password = $!secret\n", &test_env).unwrap_err();
    assert!(
        matches!(e, ConfigError::BadVariable { line: 2, .. }),
        "{e:?}"
    );
    assert!(!e.to_string().contains("secret\n") && !e.to_string().contains("$!secret"));
}

// ---------------------------------------------------------------- client properties

const FULL: &str = "\
[broker]
bootstrap.servers = b:9092
security.protocol = SASL_SSL

[producer]
batch.size = 2000000
key.serializer = StringSerializer
value.serializer = DataFileChunkSerializer
security.protocol = SSL

[consumer]
group.id = lab-group
auto.offset.reset = earliest
key.deserializer = StringDeserializer
value.deserializer = DataFileChunkDeserializer
";

#[test]
fn producer_properties_merge_broker_and_drop_serializers() {
    let c = load(FULL);
    let p = c.producer_properties();
    assert_eq!(
        p,
        [
            ("bootstrap.servers".to_string(), "b:9092".to_string()),
            ("security.protocol".to_string(), "SSL".to_string()),
            ("batch.size".to_string(), "2000000".to_string()),
        ]
    );
    assert_eq!(
        c.property_origin_in(ClientKind::Producer, "security.protocol"),
        Some(("producer".into(), 9))
    );
    assert_eq!(
        c.property_origin_in(ClientKind::Consumer, "security.protocol"),
        Some(("broker".into(), 3))
    );
    assert_eq!(
        c.property_origin("BATCH.SIZE"),
        Some(("producer".into(), 6))
    );
    assert_eq!(c.property_origin("nope"), None);
}

#[test]
fn consumer_properties_drop_deserializers() {
    let p = load(FULL).consumer_properties(None, false);
    assert_eq!(
        keys(&p),
        [
            "bootstrap.servers",
            "security.protocol",
            "group.id",
            "auto.offset.reset"
        ]
    );
    assert_eq!(prop(&p, "group.id"), Some("lab-group"));
}

#[test]
fn node_id_is_not_passed_to_clients() {
    let c = load(
        "[DEFAULT]\nnode_id = n1\n[broker]\nbootstrap.servers = b\n[producer]\n[kafkacrypto]\n",
    );
    assert_eq!(keys(&c.producer_properties()), ["bootstrap.servers"]);
    assert_eq!(get(&c, "kafkacrypto", "node_id"), Some("n1"));
}

#[test]
fn cluster_is_an_alias_of_broker() {
    let c = load("[cluster]\nbootstrap.servers = old:9092\n[consumer]\ngroup.id = g\n");
    assert_eq!(
        prop(&c.producer_properties(), "bootstrap.servers"),
        Some("old:9092")
    );
    assert_eq!(
        prop(&c.consumer_properties(None, false), "bootstrap.servers"),
        Some("old:9092")
    );
    assert_eq!(
        c.property_origin("bootstrap.servers"),
        Some(("cluster".into(), 2))
    );
}

#[test]
fn broker_and_cluster_merge_and_must_agree() {
    let c =
        load("[broker]\nbootstrap.servers = b\nacks = all\n[cluster]\nacks = all\nlinger.ms = 5\n");
    assert_eq!(
        keys(&c.producer_properties()),
        ["bootstrap.servers", "acks", "linger.ms"]
    );

    let e = load_with("[broker]\nacks = all\n[cluster]\n\nacks = 1\n", &no_env).unwrap_err();
    match &e {
        ConfigError::BrokerClusterConflict {
            key,
            broker_line,
            cluster_line,
            ..
        } => assert_eq!((key.as_str(), *broker_line, *cluster_line), ("acks", 2, 5)),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("acks") && e.to_string().contains(FILE));
}

#[test]
fn missing_sections_give_empty_properties() {
    let c = load("[heartbeat]\nlinger.ms = 1\n");
    assert!(c.producer_properties().is_empty());
    let p = c.consumer_properties(None, false);
    assert_eq!(keys(&p), ["group.id"]);
}

// ---------------------------------------------------------------- group.id

fn group_id(c: &LoadedConfig, over: Option<&str>) -> String {
    prop(&c.consumer_properties(over, false), "group.id")
        .unwrap()
        .to_string()
}

fn assert_fresh(id: &str) {
    let parts: Vec<&str> = id.rsplitn(3, '-').collect();
    assert!(id.starts_with("openmsi-"), "{id}");
    assert_eq!(parts.len(), 3, "{id}");
    assert_eq!(parts[0], std::process::id().to_string(), "{id}");
    assert!(parts[1].parse::<u64>().is_ok(), "{id}");
}

#[test]
fn group_id_create_new_and_new_make_a_fresh_id() {
    for value in ["create_new", "CREATE_NEW", "new"] {
        let c = load(&format!("[consumer]\ngroup.id = {value}\n"));
        let id = group_id(&c, None);
        assert_fresh(&id);
        // Every consumer of one run must join the same group.
        assert_eq!(group_id(&c, None), id);
        assert_eq!(group_id(&c, Some("create_new")), id);
    }
    let a = group_id(&load("[consumer]\ngroup.id = create_new\n"), None);
    let b = group_id(&load("[consumer]\ngroup.id = create_new\n"), None);
    assert_ne!(a, b, "two loads are two runs");
}

#[test]
fn group_id_absent_means_create_new() {
    assert_fresh(&group_id(&load("[consumer]\n"), None));
}

#[test]
fn group_id_override_wins() {
    let c = load("[consumer]\ngroup.id = from-file\n");
    assert_eq!(group_id(&c, None), "from-file");
    assert_eq!(group_id(&c, Some("from-cli")), "from-cli");
    assert_fresh(&group_id(&c, Some("new")));
}

// ---------------------------------------------------------------- auto.offset.reset / commits

#[test]
fn auto_offset_reset_none_means_error() {
    let c = load("[consumer]\nauto.offset.reset = none\n");
    assert_eq!(
        prop(&c.consumer_properties(None, false), "auto.offset.reset"),
        Some("error")
    );
    let c = load("[consumer]\nauto.offset.reset = latest\n");
    assert_eq!(
        prop(&c.consumer_properties(None, false), "auto.offset.reset"),
        Some("latest")
    );
}

/// Captures what `tracing` logs while `f` runs.
fn captured_logs(f: impl FnOnce()) -> String {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink(Arc::new(Mutex::new(Vec::new())));
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = sink.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn consumers_that_commit_themselves_force_auto_commit_off_with_one_warning() {
    let c = load("[consumer]\nenable.auto.commit = True\nenable.auto.offset.store = 1\n");
    let mut props = Vec::new();
    let logs = captured_logs(|| props = c.consumer_properties(None, true));
    assert_eq!(prop(&props, "enable.auto.commit"), Some("false"));
    assert_eq!(prop(&props, "enable.auto.offset.store"), Some("false"));
    assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
    for part in [
        FILE,
        "enable.auto.commit",
        "enable.auto.offset.store",
        "at-least-once",
        "durable",
    ] {
        assert!(logs.contains(part), "{part:?} missing from: {logs}");
    }
}

#[test]
fn no_warning_when_the_file_agrees_or_says_nothing() {
    for text in [
        "[consumer]\nenable.auto.commit = False\n",
        "[consumer]\n",
        "[consumer]\nenable.auto.commit = false\nenable.auto.offset.store = f\n",
    ] {
        let c = load(text);
        let mut props = Vec::new();
        let logs = captured_logs(|| props = c.consumer_properties(None, true));
        assert_eq!(logs, "", "{text}");
        assert_eq!(prop(&props, "enable.auto.commit"), Some("false"));
        assert_eq!(prop(&props, "enable.auto.offset.store"), Some("false"));
    }
}

#[test]
fn auto_commit_is_left_alone_for_other_consumers() {
    let c = load("[consumer]\nenable.auto.commit = true\n");
    let mut props = Vec::new();
    let logs = captured_logs(|| props = c.consumer_properties(None, false));
    assert_eq!(logs, "");
    assert_eq!(prop(&props, "enable.auto.commit"), Some("true"));
    assert_eq!(prop(&props, "enable.auto.offset.store"), None);
}

// ---------------------------------------------------------------- lookup

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn lookup_existing_path_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "local", "[broker]\nbootstrap.servers = mine\n");
    let places = SearchPlaces {
        embedded: true,
        ..SearchPlaces::default()
    };
    let spec = path.to_str().unwrap();
    assert_eq!(
        find_config_in(spec, &places).unwrap(),
        ConfigSource::File(path.clone())
    );
    let c = LoadedConfig::load_from(find_config_in(spec, &places).unwrap()).unwrap();
    assert_eq!(c.path(), path);
}

#[test]
fn lookup_appends_config_to_a_path_without_extension() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "lab.config", "[broker]\n");
    let spec = dir.path().join("lab");
    let found = find_config_in(spec.to_str().unwrap(), &SearchPlaces::default()).unwrap();
    assert_eq!(found, ConfigSource::File(path));
}

#[test]
fn lookup_order_env_dir_then_installed_then_source_then_embedded() {
    let env_dir = tempfile::tempdir().unwrap();
    let ref_dir = tempfile::tempdir().unwrap();
    let prefix = tempfile::tempdir().unwrap();
    let source_dir = tempfile::tempdir().unwrap();
    // An installed layout: <prefix>/bin/openmsi, <prefix>/share/openmsi/config_files.
    let exe_dir = prefix.path().join("bin");
    let installed = exe_dir.join("config_files");
    let shared = exe_dir.join("../share/openmsi/config_files");
    std::fs::create_dir_all(&installed).unwrap();
    let places = SearchPlaces {
        config_dir: Some(env_dir.path().to_path_buf()),
        reference_config_dir: Some(ref_dir.path().to_path_buf()),
        exe_dir: Some(exe_dir.clone()),
        source_dir: Some(source_dir.path().to_path_buf()),
        embedded: true,
    };
    let find = |spec: &str| find_config_in(spec, &places).unwrap();

    // Nothing on disk: the built-in copy.
    assert!(matches!(
        find("local"),
        ConfigSource::Embedded {
            name: "local.config",
            ..
        }
    ));
    assert!(matches!(
        find("local.config"),
        ConfigSource::Embedded {
            name: "local.config",
            ..
        }
    ));

    let in_source = write(source_dir.path(), "local.config", "");
    assert_eq!(find("local"), ConfigSource::File(in_source));
    let in_installed = write(&installed, "local.config", "");
    assert_eq!(find("local"), ConfigSource::File(in_installed));
    let in_ref = write(ref_dir.path(), "local.config", "");
    assert_eq!(find("local"), ConfigSource::File(in_ref));
    let in_env = write(env_dir.path(), "local.config", "");
    assert_eq!(find("local"), ConfigSource::File(in_env));
    // The exact name comes before the name with ".config" appended.
    let exact = write(env_dir.path(), "local", "");
    assert_eq!(find("local"), ConfigSource::File(exact));

    std::fs::create_dir_all(&shared).unwrap();
    let in_shared = write(&shared, "lab.config", "");
    assert_eq!(find("lab"), ConfigSource::File(in_shared));
    // Not in exe_dir itself, only in its config folders.
    write(&exe_dir, "other.config", "");
    assert!(find_config_in("other", &places).is_err());
}

#[test]
fn lookup_not_found_lists_every_place() {
    let env_dir = tempfile::tempdir().unwrap();
    let exe_dir = tempfile::tempdir().unwrap();
    let places = SearchPlaces {
        config_dir: Some(env_dir.path().to_path_buf()),
        exe_dir: Some(exe_dir.path().to_path_buf()),
        embedded: true,
        ..SearchPlaces::default()
    };
    let e = find_config_in("nosuch", &places).unwrap_err();
    let ConfigError::NotFound { searched, .. } = &e else {
        panic!("{e:?}")
    };
    // cwd (2) + env dir (2) + two installed folders (2 each) + built-in list.
    assert_eq!(searched.len(), 9, "{searched:#?}");
    let msg = e.to_string();
    assert!(msg.contains("'nosuch' not found"), "{msg}");
    assert!(
        msg.contains(&env_dir.path().join("nosuch.config").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("$OPENMSI_CONFIG_DIR"), "{msg}");
    assert!(msg.contains("built-in configs: local.config"), "{msg}");

    let e = find_config_in("", &places).unwrap_err();
    assert!(e.to_string().contains("no config file was given"));
}

#[test]
fn lookup_does_not_join_absolute_paths_or_offer_built_ins_for_paths() {
    let places = SearchPlaces {
        embedded: true,
        ..SearchPlaces::default()
    };
    assert!(find_config_in("/nonexistent/local", &places).is_err());
    assert!(find_config_in("sub/local", &places).is_err());
}

#[test]
fn embedded_configs_load() {
    let env = |_: &str| Some("from-env".to_string());
    for (name, text) in EMBEDDED {
        let c =
            LoadedConfig::from_reader(&Path::new("<built-in>").join(name), text.as_bytes(), &env)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            prop(&c.producer_properties(), "bootstrap.servers").is_some(),
            "{name}"
        );
    }
    let local = LoadedConfig::load_from(ConfigSource::Embedded {
        name: EMBEDDED[0].0,
        text: EMBEDDED[0].1,
    })
    .unwrap();
    assert_eq!(local.path(), Path::new("<built-in>/local.config"));
    let p = local.consumer_properties(None, true);
    assert_eq!(prop(&p, "bootstrap.servers"), Some("127.0.0.1:9092"));
    assert_eq!(prop(&p, "fetch.wait.max.ms"), Some("10"));
    assert_eq!(prop(&p, "auto.offset.reset"), Some("earliest"));
}

#[test]
fn confluent_example_takes_secrets_from_the_reference_variables() {
    let (_, text) = EMBEDDED
        .iter()
        .find(|(n, _)| *n == "confluent_cloud_example.config")
        .unwrap();
    let env = |name: &str| Some(format!("<{name}>"));
    let c = LoadedConfig::from_reader(Path::new("x"), text.as_bytes(), &env).unwrap();
    let p = c.producer_properties();
    assert_eq!(
        prop(&p, "sasl.username"),
        Some("<KAFKA_PROD_CLUSTER_USERNAME>")
    );
    assert_eq!(
        prop(&p, "sasl.password"),
        Some("<KAFKA_PROD_CLUSTER_PASSWORD>")
    );
    assert_eq!(
        prop(&p, "bootstrap.servers"),
        Some("<KAFKA_PROD_CLUSTER_BOOTSTRAP_SERVERS>")
    );
    assert_eq!(prop(&p, "security.protocol"), Some("SASL_SSL"));
    let e = LoadedConfig::from_reader(Path::new("x"), text.as_bytes(), &no_env).unwrap_err();
    assert!(
        e.to_string()
            .contains("KAFKA_PROD_CLUSTER_BOOTSTRAP_SERVERS"),
        "{e}"
    );
}

/// The shipped local.config gives the latency the README reports: nothing that makes a producer
/// or a fetch wait longer than librdkafka's defaults (a user once got 0.165 s instead of 0.061 s
/// from its `linger.ms = 100`).
#[test]
fn the_shipped_local_config_adds_no_waiting() {
    let (_, text) = EMBEDDED.iter().find(|(n, _)| *n == "local.config").unwrap();
    let c = LoadedConfig::from_reader(Path::new("local.config"), text.as_bytes(), &no_env).unwrap();
    let p = c.producer_properties();
    let linger: f64 = prop(&p, "linger.ms").map_or(5.0, |v| v.parse().unwrap());
    assert!(linger <= 5.0, "linger.ms = {linger}");
    let q = c.consumer_properties(None, true);
    let min_bytes: u64 = prop(&q, "fetch.min.bytes").map_or(1, |v| v.parse().unwrap());
    assert_eq!(min_bytes, 1);
    let wait: u64 = prop(&q, "fetch.wait.max.ms").map_or(500, |v| v.parse().unwrap());
    assert!(wait <= 10, "fetch.wait.max.ms = {wait}");
}
