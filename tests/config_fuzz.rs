//! Fuzz-style test of the config reader: random and malformed INI text never panics, and every
//! error names the file and a line (except "too large", which is about the whole file).
//!
//! No fuzzing dependency: a seeded generator builds lines from fragments that hit the parser's
//! edge cases (headers, continuations, interpolation, `$VAR`, `[broker]`/`[cluster]`, bad
//! UTF-8, NUL, CR, very long lines) plus raw random bytes, so every run tests the same inputs
//! and a failure names the case to reproduce.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use openmsi::config::{ConfigError, LoadedConfig};

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
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

/// One random config text.
fn config_text(rng: &mut Rng) -> Vec<u8> {
    let mut text = Vec::new();
    // Half the cases stay close to a valid file, so the checks after a successful parse
    // (interpolation, `$VAR`s, [broker]/[cluster]) get exercised too.
    let mild = rng.below(2) == 0;
    if mild {
        text.extend_from_slice(b"[broker]\n");
    }
    let lines = rng.below(14);
    for _ in 0..lines {
        match rng.below(10) {
            0 | 1 if mild => text.extend_from_slice(rng.pick(&SECTIONS[..5])),
            2 | 3 if mild => text.extend_from_slice(b"# comment"),
            0 | 1 => text.extend_from_slice(rng.pick(SECTIONS)),
            2 => text.extend_from_slice(rng.pick(LINES)),
            3 => {
                // Raw random bytes.
                for _ in 0..rng.below(40) {
                    text.push(rng.next() as u8);
                }
            }
            4 => {
                // A very long value.
                text.extend_from_slice(b"bootstrap.servers = ");
                text.extend(std::iter::repeat_n(b'x', rng.below(5_000)));
            }
            _ => {
                text.extend_from_slice(rng.pick(KEYS));
                text.extend_from_slice(rng.pick(SEPARATORS));
                for _ in 0..1 + rng.below(3) {
                    text.extend_from_slice(rng.pick(VALUES));
                }
            }
        }
        text.extend_from_slice(match rng.below(8) {
            0 => b"\r\n",
            1 => b"\r",
            _ => b"\n",
        });
    }
    // Sometimes flip a few bytes of the whole text.
    if !mild && rng.below(4) == 0 && !text.is_empty() {
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(text.len());
            text[i] = rng.next() as u8;
        }
    }
    text
}

/// Checks that `e` names `path` and a line.
fn check_error(case: u64, path: &Path, text: &[u8], e: &ConfigError) {
    let message = e.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "case {case}: the error does not name the file: {message}\ninput: {:?}",
        String::from_utf8_lossy(text)
    );
    if matches!(e, ConfigError::TooLarge { .. }) {
        return;
    }
    let line = e.line().unwrap_or_else(|| {
        panic!(
            "case {case}: the error has no line: {message}\ninput: {:?}",
            String::from_utf8_lossy(text)
        )
    });
    assert!(
        message.contains(&format!("line {line}")) || message.contains(&format!("line{line}")),
        "case {case}: the message does not show line {line}: {message}\ninput: {:?}",
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
        "case {case}: line {line} is outside the file's {lines} lines: {message}"
    );
}

/// Parses `text` and touches everything a command would use, checking every error.
fn exercise(case: u64, text: &[u8]) {
    let path = Path::new("/configs/fuzz case.config");
    let env = |name: &str| (name == "KAFKA_SERVER").then(|| "127.0.0.1:9092".to_string());
    let config = match LoadedConfig::from_reader(path, text, &env) {
        Ok(c) => c,
        Err(e) => return check_error(case, path, text, &e),
    };
    for name in ["broker", "cluster", "producer", "consumer", "DEFAULT"] {
        if let Err(e) = config.checked_section(name) {
            check_error(case, path, text, &e);
        }
    }
    for section in config.sections() {
        for entry in section.entries() {
            if let Err(e) = entry.value() {
                check_error(case, path, text, e);
            }
        }
    }
    let _ = config.producer_properties();
    let _ = config.consumer_properties(None, true);
    let _ = config.consumer_properties(Some("g"), false);
}

#[test]
fn random_and_malformed_config_text_never_panics_and_errors_name_file_and_line() {
    const CASES: u64 = 10_000;
    let mut errors = 0u64;
    for case in 0..CASES {
        let mut rng = Rng(case.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x0DD5_EED5);
        let text = config_text(&mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(case, &text)));
        if let Err(panic) = outcome {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "case {case} panicked: {what}\ninput: {:?}",
                String::from_utf8_lossy(&text)
            );
        }
        let path = Path::new("/x.config");
        if LoadedConfig::from_reader(path, text.as_slice(), &|_| None).is_err() {
            errors += 1;
        }
    }
    // The generator must actually reach the error paths, and not only them.
    assert!(
        errors > CASES / 10 && errors < CASES * 9 / 10,
        "{errors} of {CASES} inputs were rejected: the generator needs rebalancing"
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
