//! Our config reader against the reference: a corpus of tricky INI inputs is read by Python's
//! `configparser` (and by OpenMSIStream's own `ConfigFileParser` for `$VAR` expansion) from the
//! OpenMSIStream 1.8.8 venv, and by `openmsi::config`; the results must agree. The config files
//! the reference ships (in its installed package; they are GPL-3.0 and not copied into this
//! repository) must all load with our reader.
//!
//! Needs the reference venv (`scripts/install-reference.sh`); its python is taken from
//! `OPENMSI_REFERENCE_PYTHON`, by default `~/.cache/openmsi/venv-openmsistream-1.8.8/bin/python`.
//! No Kafka broker is needed. The test fails (it does not skip) when python is missing, so a
//! machine without the reference cannot silently pass it.

use std::path::{Path, PathBuf};
use std::process::Command;

use openmsi::config::ini::{self, IniFile};
use openmsi::config::{ConfigError, LoadedConfig, SERIALIZER_KEYS};
use serde_json::{json, Value};

/// Environment the Python side runs with (and nothing else), and our side looks up.
const ENV: &[(&str, &str)] = &[
    ("OMS_HOST", "kafka.example:9092"),
    ("OMS_USER", "alice"),
    ("OMS_EMPTY", ""),
    ("OMS_PCT", "50%"),
    ("OMS_DOLLAR", "$OMS_USER"),
    ("OMS_DIR", "/data"),
];

/// The corpus: (name, file contents). Names say what each case is about.
const CORPUS: &[(&str, &str)] = &[
    ("empty file", ""),
    ("only comments", "# a\n; b\n   # c\n\n"),
    ("section without keys", "[s]\n"),
    ("delimiters", "[s]\na=1\nb : 2\nc\t=\t3  \nd:4=5\ne = x:y\nf =\ng:\nh == i\nj :=k\n"),
    ("keys with spaces and case", "[s]\nMy Key = v\nUPPER.Case = w\n\u{c4}BC = x\n"),
    (
        "comments are whole lines only",
        "[s]\na = 1 # not a comment\nb = 2 ; nor this\n  # indented comment\n\t; tab comment\n#c = 3\n",
    ),
    (
        "continuation lines",
        "[s]\nkey = first\n  second\n\n\tthird\n# comment inside\n  fourth\n\n\nnext = 1\n   \nlast = a\n b\n",
    ),
    ("continuation shallower than first", "[s]\n    a = 1\n      more\n  b = 2\n   still b\n"),
    ("indented header after key", "[s]\na = 1\n  [t]\n  b = 2\n[u]\nc = 3\n"),
    ("indented keys first", "[s]\n  a = 1\n  b = 2\n    c\n"),
    ("whitespace only lines in value", "[s]\na = x\n \t \n  y\n\t\n"),
    ("value starting on next line", "[s]\na =\n  one\n  two\n"),
    ("header oddities", "[ spaced ]\na = 1\n[x] trailing\nb = 2\n[a]b]\nc = 3\n[[n]]\nd = 4\n[s] ; comment\ne = 5\n"),
    ("empty header", "[s]\n[]\n"),
    ("unterminated header", "[broker]\na = 1\n[producer\nb = 2\n"),
    ("unterminated header first", "[broker\na = 1\n"),
    ("unterminated header with delimiter", "[s]\n[broker=x\n"),
    ("default twice", "[DEFAULT]\na = 1\n[s]\nb = 2\n[DEFAULT]\nc = 3\n"),
    ("default duplicate key across blocks", "[DEFAULT]\na = 1\n[s]\n[DEFAULT]\na = 2\n"),
    ("lowercase default", "[default]\na = 1\n[s]\n"),
    ("default inheritance order", "[DEFAULT]\nz = 1\na = 2\n[s]\nb = 3\na = 4\n[t]\n"),
    ("duplicate key", "[s]\na = 1\n\nA = 2\n"),
    ("duplicate key other section ok", "[s]\na = 1\n[t]\na = 2\n"),
    ("duplicate section", "[s]\na = 1\n[t]\n[s]\nb = 2\n"),
    ("missing header", "# x\n\na = 1\n[s]\n"),
    ("missing header indented", "  a = 1\n"),
    ("no delimiter", "[s]\na = 1\njust words\nb = 2\nmore words\n"),
    ("empty key", "[s]\n = 1\n"),
    ("empty key colon then indented", "[s]\n: v\n  x = 1\n"),
    ("empty key twice", "[s]\n= 1\n= 2\n"),
    ("line errors then fatal", "[s]\nbad line\na = 1\nanother bad\na = 2\n"),
    ("line error then continuation", "[s]\na = 1\n  bad but continuation\nbad\n  cont after bad\n"),
    ("crlf", "[s]\r\na = 1\r\n  b\r\nc = 3\r\n"),
    ("lone cr", "[s]\ra = 1\r  more\rb = 2"),
    ("no final newline", "[s]\na = 1"),
    ("unicode whitespace", "[s]\n\u{a0}key\u{a0}=\u{a0}v\u{a0}\nk2 =\u{2003}w\u{3000}\n"),
    ("python-only whitespace", "[s]\na = \u{1c}x\u{1f}\n\u{1d}\n"),
    ("nul and control chars", "[s]\na = x\u{0}y\nb = \u{7}\n"),
    ("interpolation", "[DEFAULT]\nroot = /srv\n[s]\ndir = %(root)s/data\nall = %(DIR)s/x\npct = 100%%\nraw = a%%(b)s\n"),
    ("interpolation in reading section", "[DEFAULT]\nurl = %(host)s:9092\n[a]\nhost = one\n[b]\nhost = two\n"),
    ("interpolation missing key", "[s]\na = %(nope)s\nb = fine\n"),
    ("interpolation missing key only in default use", "[DEFAULT]\nd = %(only_in_a)s\n[a]\nonly_in_a = 1\n[b]\n"),
    ("interpolation bad reference", "[s]\na = %(x\nx = 1\n"),
    ("interpolation empty name", "[s]\na = %()s\n"),
    ("interpolation wrong conversion", "[s]\na = %(x)d\nx = 1\n"),
    ("lone percent", "[s]\na = 50%\n"),
    ("lone percent middle", "[s]\na = ab%cd\n"),
    ("percent then paren later", "[s]\na = %x(y)s\n"),
    ("nested interpolation", "[s]\na = %(b)s!\nb = %(c)s?\nc = %%end\n"),
    ("self reference", "[s]\na = %(a)s\n"),
    (
        "chain of ten",
        "[s]\nv0 = %(v1)s\nv1 = %(v2)s\nv2 = %(v3)s\nv3 = %(v4)s\nv4 = %(v5)s\nv5 = %(v6)s\nv6 = %(v7)s\nv7 = %(v8)s\nv8 = %(v9)s\nv9 = %(v10)s\nv10 = %%\n",
    ),
    (
        "chain of eleven",
        "[s]\nv0 = %(v1)s\nv1 = %(v2)s\nv2 = %(v3)s\nv3 = %(v4)s\nv4 = %(v5)s\nv5 = %(v6)s\nv6 = %(v7)s\nv7 = %(v8)s\nv8 = %(v9)s\nv9 = %(v10)s\nv10 = %(v11)s\nv11 = %%\n",
    ),
    ("interpolation multiline", "[s]\nx = X\na = one %(x)s\n  two %(x)s\n"),
    ("interpolation name with paren chars", "[s]\na = %(a b)s\n"),
    ("env forms", "[s]\na = $OMS_HOST\nb = ${OMS_USER}\nc = $OMS_DIR/rest\nd = ${OMS_DIR}rest\ne = $OMS_HOST:$OMS_USER\nf = $OMS_EMPTY\n"),
    ("env only at start", "[s]\na = x$OMS_HOST\nb = ${OMS_USER} and $OMS_DIR\n"),
    ("env not rescanned", "[s]\na = $OMS_DOLLAR\nb = $OMS_PCT\n"),
    ("env dollars", "[s]\na = $$OMS_USER\nb = $OMS_USER$\nc = $OMS_USER ${unclosed\n"),
    ("env unset", "[s3]\nkey = $OMS_NOT_SET\nother = fine\n"),
    ("env partly unset", "[s3]\nkey = $OMS_HOST/$OMS_NOT_SET\n"),
    ("env no reference", "[s3]\na = $\nb = $-x\n"),
    ("env empty braces", "[s3]\na = ${}\n"),
    ("env empty braces with other", "[s3]\na = $OMS_USER${}\n"),
    ("env via interpolation", "[DEFAULT]\nh = $OMS_HOST\n[s]\nurl = %(h)s\nraw = h\n"),
    ("env in default", "[DEFAULT]\nuser = $OMS_USER\n[s]\n[t]\nuser = local\n"),
    ("env unset in broker", "[broker]\nbootstrap.servers = $OMS_NOT_SET\n"),
    ("bad percent in consumer", "[consumer]\nsasl.password = a%b\n"),
    ("node_id in client sections", "[DEFAULT]\nnode_id = n1\n[broker]\nbootstrap.servers = b\n[producer]\nnode_id = n2\n[kafkacrypto]\n"),
    (
        "typical file",
        "[broker]\nbootstrap.servers = $OMS_HOST\nsasl.username = $OMS_USER\n\n[producer]\nbatch.size       = 2000000\nkey.serializer   = StringSerializer\n\n[consumer]\ngroup.id           = create_new\nauto.offset.reset  = earliest\n",
    ),
];

/// The Python side: for each file, what configparser and OpenMSIStream's ConfigFileParser make
/// of it, as JSON.
const PYTHON: &str = r#"
import configparser, json, sys, logging
from openmsistream.utilities.config_file_parser import ConfigFileParser

def pairs(items):
    return [[k, v] for k, v in items]

out = []
for path in sys.argv[1:]:
    r = {}
    cp = configparser.ConfigParser()
    try:
        cp.read(path)
    except configparser.ParsingError as e:
        if isinstance(e, configparser.MissingSectionHeaderError):
            r["error"] = [e.lineno]
        else:
            r["error"] = sorted({lineno for lineno, _ in e.errors})
    except (configparser.DuplicateSectionError, configparser.DuplicateOptionError) as e:
        r["error"] = [e.lineno]
    except UnicodeDecodeError:
        r["error"] = "decode"
    else:
        r["sections"] = cp.sections()
        raw = {"DEFAULT": pairs(cp.defaults().items())}
        interpolated = {}
        expanded = {}
        for name in cp.sections():
            # In the order the reference sees (the section proxy's: own keys, then inherited);
            # cp.items(name, raw=True) would list inherited keys first.
            raw[name] = [[k, cp.get(name, k, raw=True)] for k in cp[name]]
            try:
                interpolated[name] = pairs(cp[name].items())
            except configparser.InterpolationError as e:
                interpolated[name] = "error"
            try:
                expanded[name] = pairs(ConfigFileParser(path).get_config_dict_for_groups(name).items())
            except Exception as e:
                expanded[name] = "error"
        r["raw"] = raw
        r["interpolated"] = interpolated
        r["expanded"] = expanded
    out.append(r)
print(json.dumps(out))
"#;

fn reference_python() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENMSI_REFERENCE_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/openmsi/venv-openmsistream-1.8.8/bin/python")
}

fn env_lookup(name: &str) -> Option<String> {
    ENV.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The reference python; panics with instructions if it is missing.
fn checked_reference_python() -> PathBuf {
    let python = reference_python();
    assert!(
        python.is_file(),
        "reference python {} not found: run scripts/install-reference.sh (or set \
         OPENMSI_REFERENCE_PYTHON to the python of a venv with openmsistream==1.8.8)",
        python.display()
    );
    python
}

/// Runs the Python side on `files`; panics with instructions if the reference is missing.
fn run_python(dir: &Path, files: &[PathBuf]) -> Vec<Value> {
    let python = checked_reference_python();
    let script = dir.join("read_configs.py");
    std::fs::write(&script, PYTHON).unwrap();
    let output = Command::new(&python)
        .arg(&script)
        .args(files)
        .env_clear()
        .envs(ENV.iter().copied())
        .env("PYTHONUTF8", "1")
        .env("HOME", dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "{} failed ({}); is openmsistream 1.8.8 installed in that venv? run \
         scripts/install-reference.sh\n{}",
        python.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python printed JSON")
}

/// Whether the reference's ConfigFileParser drops `node_id` from this section.
fn reference_drops_node_id(section: &str) -> bool {
    ["broker", "producer", "consumer"]
        .iter()
        .any(|stem| section.contains(stem))
}

/// Our reading of one file, in the shape the Python script prints.
fn ours(ini: &IniFile) -> Value {
    let sections: Vec<&str> = ini.sections().iter().map(|s| s.name()).collect();
    let mut raw = serde_json::Map::new();
    let default_pairs: Vec<Value> = ini
        .defaults()
        .entries()
        .iter()
        .map(|e| json!([e.key(), e.value()]))
        .collect();
    raw.insert("DEFAULT".into(), Value::Array(default_pairs));
    let mut interpolated = serde_json::Map::new();
    for section in ini.sections() {
        let own = section.entries().iter();
        let inherited = ini
            .defaults()
            .entries()
            .iter()
            .filter(|d| section.entries().iter().all(|e| e.key() != d.key()));
        let pairs: Vec<Value> = own
            .chain(inherited)
            .map(|e| json!([e.key(), e.value()]))
            .collect();
        raw.insert(section.name().into(), Value::Array(pairs));

        let items = ini.items(section.name()).unwrap();
        let value = if items.iter().any(|i| i.value.is_err()) {
            json!("error")
        } else {
            Value::Array(
                items
                    .iter()
                    .map(|i| json!([i.key, i.value.as_ref().unwrap()]))
                    .collect(),
            )
        };
        interpolated.insert(section.name().into(), value);
    }
    json!({"sections": sections, "raw": raw, "interpolated": interpolated})
}

/// Checks our expansion of one section against the reference's. `ours` is what our loader
/// gave for the section: the values, or the error it reported for it.
fn check_expanded(
    case: &str,
    section: &str,
    ours: Result<Vec<(String, String)>, &ConfigError>,
    python: &Value,
    failures: &mut Vec<String>,
) {
    let python_pairs: Option<Vec<(String, String)>> = python.as_array().map(|a| {
        a.iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    });
    match (ours, python_pairs) {
        (Ok(mut ours), Some(python)) => {
            if reference_drops_node_id(section) {
                ours.retain(|(k, _)| k != "node_id");
            }
            if ours != python {
                failures.push(format!(
                    "{case}: [{section}] expanded differently:\n  ours:   {ours:?}\n  python: {python:?}"
                ));
            }
        }
        (Ok(ours), None) => failures.push(format!(
            "{case}: [{section}] python failed to expand it, we gave {ours:?}"
        )),
        (Err(_), None) => {}
        // We are stricter on purpose: the reference keeps references to unset variables as
        // literal text when something else in the value was expanded.
        (Err(ConfigError::UnsetVariable { key, var, .. }), Some(python)) => {
            let kept = python.iter().any(|(k, v)| {
                k == key && (v.contains(&format!("${var}")) || v.contains(&format!("${{{var}}}")))
            });
            if !kept {
                failures.push(format!(
                    "{case}: [{section}] we say {var} is unset, python expanded {python:?}"
                ));
            }
        }
        (Err(ConfigError::BadVariable { key, .. }), Some(python)) => {
            let kept = python.iter().any(|(k, v)| k == key && v.contains("${}"));
            if !kept {
                failures.push(format!(
                    "{case}: [{section}] we rejected '{key}', python expanded {python:?}"
                ));
            }
        }
        (Err(e), Some(python)) => failures.push(format!(
            "{case}: [{section}] we failed with \"{e}\", python expanded {python:?}"
        )),
    }
}

/// The section an expansion-time error is about.
fn error_section(e: &ConfigError) -> Option<&str> {
    match e {
        ConfigError::Interpolation { section, .. }
        | ConfigError::UnsetVariable { section, .. }
        | ConfigError::BadVariable { section, .. } => Some(section),
        _ => None,
    }
}

fn compare(case: &str, path: &Path, python: &Value, failures: &mut Vec<String>) {
    let parsed = ini::parse(path, std::fs::File::open(path).unwrap());
    match (&parsed, python.get("error")) {
        (Err(ConfigError::Syntax { errors, .. }), Some(Value::Array(py_lines))) => {
            let ours: Vec<u64> = errors.iter().map(|e| e.line as u64).collect();
            let theirs: Vec<u64> = py_lines.iter().map(|l| l.as_u64().unwrap()).collect();
            // configparser stops at the first fatal error and drops the line errors before
            // it; we report those too. So theirs ⊆ ours, with the same last line.
            if !theirs.iter().all(|l| ours.contains(l)) || ours.last() != theirs.last() {
                failures.push(format!(
                    "{case}: error lines differ: ours {ours:?}, python {theirs:?}"
                ));
            }
        }
        (Err(ConfigError::NotUtf8 { .. }), Some(Value::String(s))) if s == "decode" => {}
        (Err(e), py) => failures.push(format!(
            "{case}: we failed with \"{e}\", python gave {py:?}"
        )),
        (Ok(_), Some(py)) => {
            failures.push(format!("{case}: python failed with {py}, we parsed it"))
        }
        (Ok(ini), None) => {
            let ours = ours(ini);
            for field in ["sections", "raw", "interpolated"] {
                if ours[field] != python[field] {
                    failures.push(format!(
                        "{case}: {field} differ:\n  ours:   {}\n  python: {}",
                        ours[field], python[field]
                    ));
                }
            }
            let expanded = &python["expanded"];
            match LoadedConfig::from_ini(ini, &env_lookup) {
                Ok(config) => {
                    for section in config.sections() {
                        let result: Result<Vec<(String, String)>, _> =
                            config.checked_section(section.name()).map(|s| {
                                s.unwrap()
                                    .entries()
                                    .iter()
                                    .map(|e| (e.key().to_string(), e.value().unwrap().to_string()))
                                    .collect()
                            });
                        check_expanded(
                            case,
                            section.name(),
                            result.as_ref().cloned(),
                            &expanded[section.name()],
                            failures,
                        );
                    }
                }
                Err(e) => match error_section(&e) {
                    Some(section) => {
                        check_expanded(case, section, Err(&e), &expanded[section], failures)
                    }
                    None => failures.push(format!("{case}: load failed with \"{e}\"")),
                },
            }
        }
    }
}

#[test]
fn config_reader_agrees_with_python_configparser() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = CORPUS
        .iter()
        .enumerate()
        .map(|(i, (_, text))| {
            let path = dir.path().join(format!("case{i:03}.config"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let mut names: Vec<&str> = CORPUS.iter().map(|(name, _)| *name).collect();
    // Bytes that are not UTF-8 cannot be in the &str corpus.
    let bad = dir.path().join("not_utf8.config");
    std::fs::write(&bad, b"[s]\na = 1\nb = \xff\xfe\n").unwrap();
    files.push(bad);
    names.push("not utf-8");

    let python = run_python(dir.path(), &files);
    assert_eq!(python.len(), files.len());
    let mut failures = Vec::new();
    for ((name, path), py) in names.iter().zip(&files).zip(&python) {
        compare(name, path, py, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Python:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// The one deliberate difference in parsing: we skip a UTF-8 byte order mark (Notepad writes
/// one), where Python's default UTF-8 decoding keeps it and then finds no section header.
#[test]
fn byte_order_mark_is_our_documented_difference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bom.config");
    std::fs::write(&path, "\u{feff}[broker]\nbootstrap.servers = h\n").unwrap();
    let python = run_python(dir.path(), std::slice::from_ref(&path));
    assert_eq!(
        python[0]["error"],
        json!([1]),
        "python rejects a BOM: {}",
        python[0]
    );
    let ini = ini::parse(&path, std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(
        ini.section("broker").unwrap().get("bootstrap.servers"),
        Some("h")
    );
}

// ---------------------------------------------------------------- the reference's config files

/// The folder of config files shipped inside the installed reference package
/// (`openmsistream/kafka_wrapper/config_files/`), as the reference python reports it.
fn reference_config_dir() -> PathBuf {
    let python = checked_reference_python();
    let output = Command::new(&python)
        .args([
            "-c",
            "import importlib.util, os; \
             spec = importlib.util.find_spec('openmsistream'); \
             print(os.path.join(os.path.dirname(spec.origin), 'kafka_wrapper', 'config_files'))",
        ])
        .env("PYTHONUTF8", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "{} cannot locate openmsistream ({}); is openmsistream 1.8.8 installed in that venv? \
         run scripts/install-reference.sh\n{}",
        python.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim_end());
    assert!(
        dir.is_dir(),
        "the reference's config folder {} does not exist; run scripts/install-reference.sh",
        dir.display()
    );
    dir
}

fn prop<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A fresh group id, `openmsi-<host>-<unix nanos>-<pid>`, made by this process.
fn assert_fresh(id: &str) {
    let parts: Vec<&str> = id.rsplitn(3, '-').collect();
    assert!(id.starts_with("openmsi-"), "{id}");
    assert_eq!(parts.len(), 3, "{id}");
    assert_eq!(parts[0], std::process::id().to_string(), "{id}");
    assert!(parts[1].parse::<u64>().is_ok(), "{id}");
}

/// Loads one of the reference's config files with the environment `env`.
fn load_reference(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigError> {
    let path = reference_config_dir().join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    LoadedConfig::from_reader(&path, file, env)
}

#[test]
fn every_reference_config_loads() {
    let env = |name: &str| Some(format!("value-of-{name}"));
    let mut count = 0;
    for entry in std::fs::read_dir(reference_config_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("config") {
            continue;
        }
        count += 1;
        let file = std::fs::File::open(&path).unwrap();
        let c = LoadedConfig::from_reader(&path, file, &env)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy();
        let producer = c.producer_properties();
        let consumer = c.consumer_properties(None, true);
        for props in [&producer, &consumer] {
            assert!(
                prop(props, "bootstrap.servers")
                    .is_some_and(|v| v.starts_with("value-of-KAFKA_")
                        || v.starts_with("value-of-LOCAL_KAFKA_")),
                "{name}: {props:?}"
            );
            assert!(
                props
                    .iter()
                    .all(|(k, _)| !SERIALIZER_KEYS.contains(&k.as_str())),
                "{name}: {props:?}"
            );
        }
        assert_fresh(prop(&consumer, "group.id").unwrap());
        assert_eq!(
            prop(&consumer, "enable.auto.commit"),
            Some("false"),
            "{name}"
        );
    }
    assert_eq!(count, 23, "the reference ships 23 config files");
}

#[test]
fn reference_prod_config_in_detail() {
    let c = load_reference("prod.config", &|n: &str| Some(n.to_lowercase())).unwrap();
    assert_eq!(
        c.producer_properties(),
        [
            ("bootstrap.servers", "kafka_prod_cluster_bootstrap_servers"),
            ("sasl.mechanism", "PLAIN"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "kafka_prod_cluster_username"),
            ("sasl.password", "kafka_prod_cluster_password"),
            ("batch.size", "2000000"),
            ("linger.ms", "100"),
            ("compression.type", "lz4"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        c.property_origin("fetch.min.bytes"),
        Some(("consumer".into(), 19))
    );
}

#[test]
fn unset_variables_elsewhere_wait_until_the_section_is_used() {
    let env = |name: &str| name.starts_with("KAFKA_").then(|| "set".to_string());
    let c = load_reference("test_s3_transfer.config", &env)
        .expect("s3 variables are not needed to load");
    assert!(matches!(
        c.checked_section("s3"),
        Err(ConfigError::UnsetVariable { ref var, ref section, .. }) if var == "ACCESS_KEY_ID" && section == "s3"
    ));
}

/// s3-transfer reads the reference's own S3 config (`test_s3_transfer.config`): the same keys,
/// `$VAR` values, and `https://` added to an endpoint without a scheme, as OpenMSIStream does.
#[test]
fn the_references_s3_config_gives_s3_transfer_its_endpoint_and_keys() {
    let env = |name: &str| {
        match name {
            "ACCESS_KEY_ID" => Some("AK"),
            "SECRET_KEY_ID" => Some("SK"),
            "ENDPOINT_URL" => Some("s3.lab.example.org:9000"),
            "REGION" => Some("eu-west-3"),
            n if n.starts_with("KAFKA_") => Some("set"),
            _ => None,
        }
        .map(str::to_string)
    };
    let c = load_reference("test_s3_transfer.config", &env).unwrap();
    let s = openmsi::s3::settings::S3Settings::from_config(&c, &|_| None).unwrap();
    assert_eq!(s.endpoint.as_str(), "https://s3.lab.example.org:9000/");
    assert_eq!(s.region, "eu-west-3");
    assert_eq!(
        (s.access_key_id.as_str(), s.secret_key.as_str()),
        ("AK", "SK")
    );
    assert!(
        s.secret_origin.starts_with("secret_key_id in [s3] of "),
        "{}",
        s.secret_origin
    );
}
