//! Property tests of the config reader: random and malformed INI text never panics, and every
//! error names the file and a line (except "too large", which is about the whole file).
//!
//! Inputs are lines built from fragments that hit the parser's edge cases (headers,
//! continuations, interpolation, `$VAR`, `[broker]`/`[cluster]`, bad UTF-8, NUL, CR, very long
//! lines), raw random bytes, and arbitrary text; proptest shrinks a failure to a small input.
//! CI runs a bounded number of cases (a few seconds); `PROPTEST_CASES=100000` runs more.

use std::path::Path;

use openmsi::config::{ConfigError, LoadedConfig};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// Cases per property: `PROPTEST_CASES` when set, else `default` (sized for CI).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const SECTIONS: &[&[u8]] = &[
    b"[broker]",
    b"[cluster]",
    b"[producer]",
    b"[consumer]",
    b"[DEFAULT]",
    b"[",
    b"[broker",
    b"[]",
    b"[[x]]",
    b" [consumer]",
    b"[broker] trailing",
    b"[\xff\xfe]",
];
const KEYS: &[&[u8]] = &[
    b"bootstrap.servers",
    b"group.id",
    b"auto.offset.reset",
    b"enable.auto.commit",
    b"sasl.password",
    b"key.serializer",
    b"",
    b" ",
    b"=",
    b"k\0ey",
    b"\xc3\x28",
    b"%(x)s",
];
const SEPARATORS: &[&[u8]] = &[b" = ", b"=", b": ", b":", b" ", b"==", b" := ", b"\t=\t"];
const VALUES: &[&[u8]] = &[
    b"localhost:9092",
    b"$KAFKA_SERVER",
    b"${KAFKA_SERVER}",
    b"$",
    b"${",
    b"${}",
    b"$UNSET_VARIABLE_FOR_FUZZ",
    b"%",
    b"%%",
    b"%(",
    b"%(group.id)s",
    b"%(missing)s",
    b"%(bootstrap.servers)s%(bootstrap.servers)s",
    b"%(a",
    b"none",
    b"earliest",
    b"True",
    b"create_new",
    b"",
    b"\xff",
    b"caf\xc3\xa9",
    b"\0",
    b"\r",
    b"a = b = c",
];
const LINES: &[&[u8]] = &[
    b"",
    b"# comment",
    b"; comment",
    b"   continued value",
    b"\tcontinued",
    b"no separator at all",
    b"\r",
    b"\xef\xbb\xbf[broker]",
    b"=value without key",
];

fn pick(items: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(items).prop_map(<[u8]>::to_vec)
}

/// One line (without its end) of a file that may be anything.
fn wild_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => pick(SECTIONS),
        1 => pick(LINES),
        // Raw random bytes.
        1 => prop::collection::vec(any::<u8>(), 0..40),
        // A very long value.
        1 => (0usize..5_000).prop_map(|n| {
            let mut line = b"bootstrap.servers = ".to_vec();
            line.extend(std::iter::repeat_n(b'x', n));
            line
        }),
        5 => entry_line(),
    ]
}

/// One line of a file that stays close to a valid one, so the checks after a successful
/// parse (interpolation, `$VAR`s, [broker]/[cluster]) get exercised too.
fn mild_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::sample::select(&SECTIONS[..5]).prop_map(<[u8]>::to_vec),
        2 => Just(b"# comment".to_vec()),
        6 => entry_line(),
    ]
}

/// `key SEP value...`.
fn entry_line() -> impl Strategy<Value = Vec<u8>> {
    (
        pick(KEYS),
        pick(SEPARATORS),
        prop::collection::vec(pick(VALUES), 1..4),
    )
        .prop_map(|(key, sep, values)| [key, sep, values.concat()].concat())
}

fn line_end() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![1 => Just(&b"\r\n"[..]), 1 => Just(&b"\r"[..]), 6 => Just(&b"\n"[..])]
}

fn join(lines: Vec<(Vec<u8>, &'static [u8])>, prefix: &[u8]) -> Vec<u8> {
    let mut text = prefix.to_vec();
    for (line, end) in lines {
        text.extend_from_slice(&line);
        text.extend_from_slice(end);
    }
    text
}

/// One config text: half close to valid, half wild (and sometimes with a few bytes flipped).
fn config_text() -> impl Strategy<Value = Vec<u8>> {
    let mild = prop::collection::vec((mild_line(), line_end()), 0..14)
        .prop_map(|lines| join(lines, b"[broker]\n"));
    let wild = (
        prop::collection::vec((wild_line(), line_end()), 0..14),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    )
        .prop_map(|(lines, flips)| {
            let mut text = join(lines, b"");
            if !text.is_empty() {
                for (i, b) in flips {
                    let n = text.len();
                    text[i % n] = b;
                }
            }
            text
        });
    prop_oneof![mild, wild]
}

/// Checks that `e` names `path` and a line.
fn check_error(path: &Path, text: &[u8], e: &ConfigError) {
    let message = e.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the error does not name the file: {message}\ninput: {:?}",
        String::from_utf8_lossy(text)
    );
    if matches!(e, ConfigError::TooLarge { .. }) {
        return;
    }
    let line = e.line().unwrap_or_else(|| {
        panic!(
            "the error has no line: {message}\ninput: {:?}",
            String::from_utf8_lossy(text)
        )
    });
    assert!(
        message.contains(&format!("line {line}")) || message.contains(&format!("line{line}")),
        "the message does not show line {line}: {message}\ninput: {:?}",
        String::from_utf8_lossy(text)
    );
    // Lines as Python's configparser counts them: `\n`, `\r\n` and a lone `\r` end a line.
    let lines = 1 + text
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && text.get(i + 1) != Some(&b'\n')))
        .count();
    assert!(
        (1..=lines + 1).contains(&line),
        "line {line} is outside the file's {lines} lines: {message}"
    );
}

/// Parses `text` and touches everything a command would use, checking every error.
fn exercise(text: &[u8]) {
    let path = Path::new("/configs/fuzz case.config");
    let env = |name: &str| (name == "KAFKA_SERVER").then(|| "127.0.0.1:9092".to_string());
    let config = match LoadedConfig::from_reader(path, text, &env) {
        Ok(c) => c,
        Err(e) => return check_error(path, text, &e),
    };
    for name in ["broker", "cluster", "producer", "consumer", "DEFAULT"] {
        if let Err(e) = config.checked_section(name) {
            check_error(path, text, &e);
        }
    }
    for section in config.sections() {
        for entry in section.entries() {
            if let Err(e) = entry.value() {
                check_error(path, text, e);
            }
        }
    }
    let _ = config.producer_properties();
    let _ = config.consumer_properties(None, true);
    let _ = config.consumer_properties(Some("g"), false);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(20_000)))]

    /// Fragment-built INI text: parses or fails with an error naming the file and line.
    #[test]
    fn malformed_config_text_never_panics_and_errors_name_file_and_line(text in config_text()) {
        exercise(&text);
    }

    /// Arbitrary text and arbitrary bytes, the same.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        exercise(text.as_bytes());
        exercise(&bytes);
    }
}

/// The generator must actually reach the error paths, and not only them.
#[test]
fn generated_configs_reach_both_success_and_error_paths() {
    const SAMPLES: u32 = 2_000;
    let mut runner = TestRunner::deterministic();
    let strategy = config_text();
    let mut errors = 0;
    for _ in 0..SAMPLES {
        let text = strategy
            .new_tree(&mut runner)
            .expect("the strategy never rejects")
            .current();
        if LoadedConfig::from_reader(Path::new("/x.config"), text.as_slice(), &|_| None).is_err() {
            errors += 1;
        }
    }
    assert!(
        errors > SAMPLES / 10 && errors < SAMPLES * 9 / 10,
        "{errors} of {SAMPLES} inputs were rejected: the generator needs rebalancing"
    );
}

#[test]
fn oversized_config_is_refused_with_the_file_name() {
    let text = vec![b'#'; 64 << 20];
    let path = Path::new("/configs/huge.config");
    let e = LoadedConfig::from_reader(path, text.as_slice(), &|_| None)
        .expect_err("a 64 MiB config was accepted");
    assert!(e.to_string().contains("/configs/huge.config"), "{e}");
}
