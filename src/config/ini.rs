//! An INI reader that reads files exactly as Python's `configparser.ConfigParser()` (3.11, the
//! defaults OpenMSIStream uses) does, because OpenMSIStream's config files are a contract:
//!
//! - `[section]` headers; the name is everything between the first `[` and the *last* `]` of
//!   the line, unstripped and case-sensitive. `[DEFAULT]` holds values every section inherits
//!   and may appear more than once.
//! - `key = value` or `key: value`, split at the first `=` or `:`; key and value stripped, key
//!   lower-cased.
//! - Whole-line comments start with `#` or `;` after any indentation. There are no inline
//!   comments: `a = b # c` sets `a` to `b # c`.
//! - A line indented deeper than its key line continues the value (joined with `\n`); empty
//!   lines inside a value are kept, trailing ones dropped. Because of this, an indented
//!   `[section]` or `key = value` right after a key is part of that key's value.
//! - Strict mode: a duplicate section or a duplicate key in one section is an error, as is a
//!   key before the first header. Lines that are not `key = value` are collected and reported
//!   together, as `configparser` does.
//! - Values are interpolated on read with `BasicInterpolation`: `%%` is `%`, `%(name)s` is the
//!   value of `name` from the same section or `[DEFAULT]`; any other `%` is an error.
//!
//! Two deliberate differences: a UTF-8 byte order mark at the start is skipped (Python's
//! default UTF-8 decoding keeps it and then fails with "no section header"), and the file must
//! be UTF-8 (Python uses the locale's encoding, which is UTF-8 on the systems we target).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ConfigError, InterpolationProblem, SyntaxError, SyntaxProblem};

/// The name of the section whose values every other section inherits.
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// Config files are a few kilobytes; refusing anything huge turns "--config points at a data
/// file" into a clear message instead of reading gigabytes into memory.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// `configparser`'s `MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// How much of a bad line to quote in an error message: enough to find it, not a whole
/// (possibly secret) value.
const QUOTE_CHARS: usize = 60;

/// A parsed INI file: raw values (continuation lines joined, not yet interpolated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniFile {
    /// For messages only.
    path: PathBuf,
    /// The `[DEFAULT]` section (empty, line 0, when the file has none).
    defaults: RawSection,
    /// Every other section in file order.
    sections: Vec<RawSection>,
}

/// One section as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSection {
    /// Section name as written between the brackets (case-sensitive, not stripped).
    name: String,
    /// 1-based line of its (first) header; 0 for an absent `[DEFAULT]`.
    line: usize,
    /// Its own keys in file order.
    entries: Vec<RawEntry>,
}

/// One `key = value` as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Lower-cased, stripped key.
    key: String,
    /// Stripped value with continuation lines joined by `\n`, not interpolated.
    value: String,
    /// 1-based line of the key.
    line: usize,
}

/// One value as `configparser` hands it out (`parser[section].items()`): interpolated, and
/// possibly inherited from `[DEFAULT]`.
#[derive(Debug, Clone)]
pub struct Item {
    /// Lower-cased key.
    pub key: String,
    /// The interpolated value, or why it could not be interpolated.
    pub value: Result<String, ConfigError>,
    /// 1-based line where the key is set.
    pub line: usize,
    /// The section where the key is set: the section itself, or `DEFAULT` when inherited.
    pub defined_in: String,
}

impl IniFile {
    /// The path given to [`parse`], for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every section except `[DEFAULT]`, in file order (`configparser`'s `sections()`).
    pub fn sections(&self) -> &[RawSection] {
        &self.sections
    }

    /// A section by exact (case-sensitive) name; `DEFAULT` gives the defaults.
    pub fn section(&self, name: &str) -> Option<&RawSection> {
        if name == DEFAULT_SECTION {
            return Some(&self.defaults);
        }
        self.sections.iter().find(|s| s.name == name)
    }

    /// The `[DEFAULT]` section (empty when the file has none).
    pub fn defaults(&self) -> &RawSection {
        &self.defaults
    }

    /// Whether the file has a `[DEFAULT]` header.
    pub fn has_default_section(&self) -> bool {
        self.defaults.line > 0
    }

    /// What `configparser` gives for `parser[name].items()`: the section's own keys in file
    /// order, then the `[DEFAULT]` keys it does not set itself, each interpolated in the
    /// context of this section. Each value carries its own result so that one bad value
    /// does not hide the others. `None` if there is no such section.
    pub fn items(&self, name: &str) -> Option<Vec<Item>> {
        let section = self.section(name)?;
        let own = if name == DEFAULT_SECTION {
            &[][..]
        } else {
            &section.entries[..]
        };
        let inherited = self
            .defaults
            .entries
            .iter()
            .filter(|d| !own.iter().any(|e| e.key == d.key));
        let items = own
            .iter()
            .map(|e| (e, name))
            .chain(inherited.map(|e| (e, DEFAULT_SECTION)))
            .map(|(entry, defined_in)| Item {
                key: entry.key.clone(),
                value: self.interpolate(name, entry),
                line: entry.line,
                defined_in: defined_in.to_string(),
            })
            .collect();
        Some(items)
    }

    /// The raw value `configparser`'s interpolation sees for `key` when reading `section`.
    fn lookup(&self, section: &str, key: &str) -> Option<&str> {
        let own = if section == DEFAULT_SECTION {
            None
        } else {
            self.section(section).and_then(|s| s.get(key))
        };
        own.or_else(|| self.defaults.get(key))
    }

    fn interpolate(&self, section: &str, entry: &RawEntry) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(entry.value.len());
        self.interpolate_into(section, &entry.key, &entry.value, 1, &mut out)
            .map_err(|problem| ConfigError::Interpolation {
                path: self.path.clone(),
                section: section.to_string(),
                key: entry.key.clone(),
                line: entry.line,
                problem,
            })?;
        Ok(out)
    }

    /// `BasicInterpolation._interpolate_some`, step for step (including where the depth is
    /// checked), so that the same values are accepted and rejected.
    fn interpolate_into(
        &self,
        section: &str,
        in_key: &str,
        text: &str,
        depth: usize,
        out: &mut String,
    ) -> Result<(), InterpolationProblem> {
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(InterpolationProblem::TooDeep);
        }
        // 1-based character position of byte `at` in `text`, for messages.
        let column = |at: usize| text[..at].chars().count() + 1;
        let mut pos = 0;
        while let Some(found) = text[pos..].find('%') {
            let at = pos + found;
            out.push_str(&text[pos..at]);
            let after = &text[at + 1..];
            if after.starts_with('%') {
                out.push('%');
                pos = at + 2;
            } else if let Some(inner) = after.strip_prefix('(') {
                // `%\(([^)]+)\)s`: a non-empty name without ')', then ")s".
                let name = match inner.find(')') {
                    Some(close) if close > 0 && inner[close + 1..].starts_with('s') => {
                        &inner[..close]
                    }
                    _ => {
                        return Err(InterpolationProblem::BadReference {
                            in_key: in_key.to_string(),
                            column: column(at),
                        })
                    }
                };
                pos = at + name.len() + 4;
                let var = name.to_lowercase();
                let value = self
                    .lookup(section, &var)
                    .ok_or_else(|| InterpolationProblem::MissingKey { name: var.clone() })?;
                if value.contains('%') {
                    self.interpolate_into(section, &var, value, depth + 1, out)?;
                } else {
                    out.push_str(value);
                }
            } else {
                return Err(InterpolationProblem::LonePercent {
                    in_key: in_key.to_string(),
                    column: column(at),
                });
            }
        }
        out.push_str(&text[pos..]);
        Ok(())
    }
}

impl RawSection {
    /// The section name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// 1-based line of its header (0 for a `[DEFAULT]` the file does not have).
    pub fn line(&self) -> usize {
        self.line
    }

    /// Its own keys in file order (without inherited `[DEFAULT]` keys).
    pub fn entries(&self) -> &[RawEntry] {
        &self.entries
    }

    /// The raw value of one of its own keys (`key` is lower-cased first, as configparser does).
    pub fn get(&self, key: &str) -> Option<&str> {
        let key = key.to_lowercase();
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }
}

impl RawEntry {
    /// The lower-cased key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The raw (not interpolated) value.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// 1-based line of the key.
    pub fn line(&self) -> usize {
        self.line
    }
}

/// Reads and parses an INI file from any reader. `path_for_messages` is used in errors only.
pub fn parse(path_for_messages: &Path, reader: impl Read) -> Result<IniFile, ConfigError> {
    let text = read_text(path_for_messages, reader)?;
    parse_str(path_for_messages, &text)
}

/// Parses INI text that is already in memory. `path_for_messages` is used in errors only.
pub fn parse_str(path_for_messages: &Path, text: &str) -> Result<IniFile, ConfigError> {
    parse_dialect(path_for_messages, text, Dialect::OPENMSISTREAM)
}

/// How a family of files spells keys and comments: `configparser`'s `delimiters` and
/// `comment_prefixes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// What separates a key from its value (the first one on the line wins).
    pub delimiters: &'static [char],
    /// What starts a whole-line comment.
    pub comment_prefixes: &'static [char],
}

impl Dialect {
    /// OpenMSIStream's config files: `configparser`'s defaults.
    pub const OPENMSISTREAM: Dialect = Dialect {
        delimiters: &['=', ':'],
        comment_prefixes: &['#', ';'],
    };
    /// A KafkaCrypto node's `.config` file (`ConfigParser(delimiters=(':'),
    /// comment_prefixes=(';'))`): base64 values may hold `=`, which is no delimiter there.
    pub const KAFKACRYPTO: Dialect = Dialect {
        delimiters: &[':'],
        comment_prefixes: &[';'],
    };
}

/// Parses INI text of `dialect`.
pub fn parse_dialect(
    path_for_messages: &Path,
    text: &str,
    dialect: Dialect,
) -> Result<IniFile, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Parser::new(path_for_messages, dialect).run(text)
}

/// Reads the whole input (bounded) and decodes it as UTF-8.
fn read_text(path: &Path, reader: impl Read) -> Result<String, ConfigError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: Arc::new(e),
        })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ConfigError::NotUtf8 {
            path: path.to_path_buf(),
            line: count_line_breaks(good) + 1,
        }
    })
}

/// Line breaks as Python's universal newlines count them: `\n`, `\r\n` and a lone `\r`.
fn count_line_breaks(bytes: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => n += 1,
            b'\r' => {
                n += 1;
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    n
}

/// Splits text into lines the way Python's text files do with universal newlines (`\n`,
/// `\r\n`, lone `\r`); the breaks are not included.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\n', '\r']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]).filter(|r| !r.is_empty());
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// Python's `str.isspace()`: Unicode White_Space plus the four ASCII separators U+001C–U+001F
/// that Python also counts as whitespace. Used everywhere Python strips or matches `\s`.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// `configparser.SECTCRE` (`\[(?P<header>.+)\]` with `match`): the name runs from the first
/// `[` to the last `]` on the line (the regex is greedy and not anchored at the end, so
/// anything after that `]` is ignored) and must not be empty.
fn section_header(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('[')?;
    let close = inner.rfind(']')?;
    (close > 0).then(|| &inner[..close])
}

/// `configparser.OPTCRE`: split at the first delimiter (`=` or `:` by default); key
/// right-stripped, value stripped.
fn split_option<'v>(value: &'v str, delimiters: &[char]) -> Option<(&'v str, &'v str)> {
    let i = value.find(delimiters)?;
    Some((
        value[..i].trim_end_matches(is_py_space),
        py_strip(&value[i + 1..]),
    ))
}

/// Shortens a line for quoting in an error message.
fn quote(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// Which section the parser is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Default,
    Section(usize),
}

/// An entry while its value may still grow by continuation lines.
struct Pending {
    key: String,
    line: usize,
    pieces: Vec<String>,
}

/// State of `RawConfigParser._read`, kept variable for variable so the two stay in step.
struct Parser<'p> {
    path: &'p Path,
    dialect: Dialect,
    defaults: (usize, Vec<Pending>),
    sections: Vec<(String, usize, Vec<Pending>)>,
    /// `cursect`.
    cursor: Option<Cursor>,
    /// `optname` when it is truthy: the entry continuation lines and empty lines go to.
    current: Option<(Cursor, usize)>,
    /// `indent_level`: indentation of the last header or key line.
    indent_level: usize,
    /// `elements_added`, with the line of each for messages.
    seen_sections: HashMap<String, usize>,
    seen_keys: HashMap<(String, String), usize>,
    errors: Vec<SyntaxError>,
}

impl<'p> Parser<'p> {
    fn new(path: &'p Path, dialect: Dialect) -> Self {
        Parser {
            path,
            dialect,
            defaults: (0, Vec::new()),
            sections: Vec::new(),
            cursor: None,
            current: None,
            indent_level: 0,
            seen_sections: HashMap::new(),
            seen_keys: HashMap::new(),
            errors: Vec::new(),
        }
    }

    fn entries_mut(&mut self, cursor: Cursor) -> &mut Vec<Pending> {
        match cursor {
            Cursor::Default => &mut self.defaults.1,
            Cursor::Section(i) => &mut self.sections[i].2,
        }
    }

    fn section_name(&self, cursor: Cursor) -> &str {
        match cursor {
            Cursor::Default => DEFAULT_SECTION,
            Cursor::Section(i) => &self.sections[i].0,
        }
    }

    fn append_to_current(&mut self, piece: &str) {
        if let Some((cursor, index)) = self.current {
            self.entries_mut(cursor)[index]
                .pieces
                .push(piece.to_string());
        }
    }

    fn run(mut self, text: &str) -> Result<IniFile, ConfigError> {
        for (index, line) in lines(text).enumerate() {
            if let Err(fatal) = self.line(index + 1, line) {
                // configparser raises these at once, dropping the line errors gathered so
                // far; we report those too, since the user has to fix them anyway.
                self.errors.push(fatal);
                return Err(self.syntax_error());
            }
        }
        if !self.errors.is_empty() {
            return Err(self.syntax_error());
        }
        Ok(self.finish())
    }

    fn syntax_error(&mut self) -> ConfigError {
        let mut errors = std::mem::take(&mut self.errors);
        errors.sort_by_key(|e| e.line);
        ConfigError::Syntax {
            path: self.path.to_path_buf(),
            errors,
        }
    }

    /// One iteration of `_read`'s loop. `Err` is a fatal error (configparser raises it at
    /// once); non-fatal errors are pushed to `self.errors`.
    fn line(&mut self, lineno: usize, line: &str) -> Result<(), SyntaxError> {
        let stripped = py_strip(line);
        let is_comment = stripped.starts_with(self.dialect.comment_prefixes);
        if is_comment || stripped.is_empty() {
            // An empty line is part of the current value; a comment line is not, but it
            // does not end the value either.
            if !is_comment {
                self.append_to_current("");
            }
            return Ok(());
        }
        let value = stripped;
        let indent = line.chars().take_while(|c| is_py_space(*c)).count();
        if self.cursor.is_some() && self.current.is_some() && indent > self.indent_level {
            self.append_to_current(value);
            return Ok(());
        }
        self.indent_level = indent;
        if let Some(name) = section_header(value) {
            self.header(lineno, name)?;
            self.current = None;
            return Ok(());
        }
        let Some(cursor) = self.cursor else {
            return Err(SyntaxError {
                line: lineno,
                problem: SyntaxProblem::MissingSectionHeader,
            });
        };
        let Some((key, val)) = split_option(value, self.dialect.delimiters) else {
            let problem = if value.starts_with('[') {
                SyntaxProblem::UnterminatedSectionHeader
            } else {
                SyntaxProblem::NoDelimiter { text: quote(value) }
            };
            self.errors.push(SyntaxError {
                line: lineno,
                problem,
            });
            return Ok(());
        };
        if key.is_empty() {
            self.errors.push(SyntaxError {
                line: lineno,
                problem: SyntaxProblem::EmptyKey,
            });
        }
        let key = key.to_lowercase();
        let section = self.section_name(cursor).to_string();
        if let Some(&first_line) = self.seen_keys.get(&(section.clone(), key.clone())) {
            return Err(SyntaxError {
                line: lineno,
                problem: SyntaxProblem::DuplicateKey {
                    section,
                    key,
                    first_line,
                },
            });
        }
        self.seen_keys.insert((section, key.clone()), lineno);
        let empty_key = key.is_empty();
        let entries = self.entries_mut(cursor);
        entries.push(Pending {
            key,
            line: lineno,
            pieces: vec![val.to_string()],
        });
        let index = entries.len() - 1;
        // An empty key name is falsy in Python: nothing can continue it.
        self.current = (!empty_key).then_some((cursor, index));
        Ok(())
    }

    fn header(&mut self, lineno: usize, name: &str) -> Result<(), SyntaxError> {
        if let Some(&first_line) = self.seen_sections.get(name) {
            return Err(SyntaxError {
                line: lineno,
                problem: SyntaxProblem::DuplicateSection {
                    section: name.to_string(),
                    first_line,
                },
            });
        }
        if name == DEFAULT_SECTION {
            // [DEFAULT] may be repeated: configparser never records it as added.
            if self.defaults.0 == 0 {
                self.defaults.0 = lineno;
            }
            self.cursor = Some(Cursor::Default);
        } else {
            self.seen_sections.insert(name.to_string(), lineno);
            self.sections.push((name.to_string(), lineno, Vec::new()));
            self.cursor = Some(Cursor::Section(self.sections.len() - 1));
        }
        Ok(())
    }

    /// `_join_multiline_values`: join with `\n`, then drop trailing whitespace (and with it
    /// trailing empty lines).
    fn finish(self) -> IniFile {
        let join = |pending: Vec<Pending>| -> Vec<RawEntry> {
            pending
                .into_iter()
                .map(|p| RawEntry {
                    key: p.key,
                    value: p
                        .pieces
                        .join("\n")
                        .trim_end_matches(is_py_space)
                        .to_string(),
                    line: p.line,
                })
                .collect()
        };
        IniFile {
            path: self.path.to_path_buf(),
            defaults: RawSection {
                name: DEFAULT_SECTION.to_string(),
                line: self.defaults.0,
                entries: join(self.defaults.1),
            },
            sections: self
                .sections
                .into_iter()
                .map(|(name, line, entries)| RawSection {
                    name,
                    line,
                    entries: join(entries),
                })
                .collect(),
        }
    }
}
