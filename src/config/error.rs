//! Errors of the config loader. Every message names the file (and the line, section, key or
//! variable where there is one) and says what to do, because the person reading it is usually
//! a lab user editing an INI file, not a developer.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can go wrong while finding, reading, parsing or expanding a config file.
///
/// `Clone` so that an error found in a section nobody has asked for yet can be stored and
/// handed out later (the reference only complains about a section when it uses it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be opened or read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said. In an `Arc` so that the error stays `Clone`.
        #[source]
        source: Arc<io::Error>,
    },

    /// The file is far larger than any config file; probably the wrong file was given.
    #[error(
        "{} is larger than {limit} bytes, which is too big for a config file; \
         check that --config names the right file",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The size limit in bytes.
        limit: u64,
    },

    /// The file is not UTF-8 text.
    #[error(
        "config file {} line {line} is not valid UTF-8 text; save the file with UTF-8 encoding",
        path.display()
    )]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
    },

    /// One or more lines do not follow the INI syntax `configparser` accepts.
    #[error("{}", DisplaySyntax { path, errors })]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The bad lines, in line order (never empty).
        errors: Vec<SyntaxError>,
    },

    /// A `%` in a value is not valid `configparser` interpolation (`%%` or `%(name)s`).
    #[error(
        "config file {} line {line}, key '{key}' in [{section}]: {problem}",
        path.display()
    )]
    Interpolation {
        /// The file.
        path: PathBuf,
        /// The section being read (the key may be inherited from `[DEFAULT]`).
        section: String,
        /// The key whose value could not be interpolated.
        key: String,
        /// 1-based line where that key is set.
        line: usize,
        /// What is wrong.
        problem: InterpolationProblem,
    },

    /// A value starting with `$` names an environment variable that is not set.
    #[error(
        "environment variable {var} is not set, but config file {} line {line} uses it for \
         key '{key}' in [{section}]; set it in the environment or edit the file",
        path.display()
    )]
    UnsetVariable {
        /// The file.
        path: PathBuf,
        /// The section being read.
        section: String,
        /// The key whose value names the variable.
        key: String,
        /// 1-based line where that key is set.
        line: usize,
        /// The variable name, without `$` or braces.
        var: String,
    },

    /// A value starts with `$` but contains no `$NAME` / `${NAME}` reference, which the
    /// reference implementation rejects too.
    #[error(
        "config file {} line {line}, key '{key}' in [{section}]: {problem}; a value that \
         starts with '$' is read as an environment variable ($NAME, ${{NAME}} or $NAME/rest)",
        path.display()
    )]
    BadVariable {
        /// The file.
        path: PathBuf,
        /// The section being read.
        section: String,
        /// The key.
        key: String,
        /// 1-based line where that key is set.
        line: usize,
        /// What is wrong (never contains the value itself: it may be a secret).
        problem: String,
    },

    /// `[broker]` and its old name `[cluster]` both set a key, to different values.
    #[error(
        "config file {}: '{key}' is set to different values in [broker] (line {broker_line}) \
         and [cluster] (line {cluster_line}); [cluster] is the old name of [broker], so keep \
         the key in only one of them",
        path.display()
    )]
    BrokerClusterConflict {
        /// The file.
        path: PathBuf,
        /// The key set twice.
        key: String,
        /// Line of the key as `[broker]` sees it.
        broker_line: usize,
        /// Line of the key as `[cluster]` sees it.
        cluster_line: usize,
    },

    /// No config file matched the name given; lists every place that was searched.
    #[error("{}", DisplayNotFound { spec, searched })]
    NotFound {
        /// What the user gave (`--config X`).
        spec: String,
        /// Every path (or built-in name) that was tried, in order.
        searched: Vec<String>,
    },
}

impl ConfigError {
    /// The config file the error is about, if it is about one file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::TooLarge { path, .. }
            | ConfigError::NotUtf8 { path, .. }
            | ConfigError::Syntax { path, .. }
            | ConfigError::Interpolation { path, .. }
            | ConfigError::UnsetVariable { path, .. }
            | ConfigError::BadVariable { path, .. }
            | ConfigError::BrokerClusterConflict { path, .. } => Some(path),
            ConfigError::NotFound { .. } => None,
        }
    }

    /// The 1-based line the error is about (the first bad line for syntax errors).
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::NotUtf8 { line, .. }
            | ConfigError::Interpolation { line, .. }
            | ConfigError::UnsetVariable { line, .. }
            | ConfigError::BadVariable { line, .. } => Some(*line),
            ConfigError::Syntax { errors, .. } => errors.first().map(|e| e.line),
            ConfigError::BrokerClusterConflict { broker_line, .. } => Some(*broker_line),
            ConfigError::Read { .. }
            | ConfigError::TooLarge { .. }
            | ConfigError::NotFound { .. } => None,
        }
    }
}

/// One bad line of an INI file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: SyntaxProblem,
}

/// The kinds of INI syntax errors, named after the `configparser` exceptions they mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxProblem {
    /// A key (or any non-comment text) before the first `[section]` header
    /// (`MissingSectionHeaderError`).
    MissingSectionHeader,
    /// A line starting with `[` that has no closing `]` and no `=`/`:` (`ParsingError`).
    UnterminatedSectionHeader,
    /// A line that is neither a header, a comment, a continuation nor `key = value`
    /// (`ParsingError`). Holds the start of the line to help find it.
    NoDelimiter {
        /// The line's text, shortened.
        text: String,
    },
    /// `= value` with nothing before the delimiter (`ParsingError`).
    EmptyKey,
    /// A key set twice in one section (`DuplicateOptionError`, strict mode).
    DuplicateKey {
        /// The section.
        section: String,
        /// The key, lower-cased.
        key: String,
        /// Where it was first set.
        first_line: usize,
    },
    /// A section header used twice (`DuplicateSectionError`, strict mode).
    DuplicateSection {
        /// The section.
        section: String,
        /// Where it first appeared.
        first_line: usize,
    },
}

impl fmt::Display for SyntaxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyntaxProblem::MissingSectionHeader => f.write_str(
                "settings must come after a section header such as [broker]; add one above this line",
            ),
            SyntaxProblem::UnterminatedSectionHeader => {
                f.write_str("section header is missing its closing ']'")
            }
            SyntaxProblem::NoDelimiter { text } => write!(
                f,
                "expected 'key = value', 'key: value' or a [section] header, found \"{text}\" \
                 (to continue the previous value on this line, indent it)"
            ),
            SyntaxProblem::EmptyKey => f.write_str("there is no key name before the '=' or ':'"),
            SyntaxProblem::DuplicateKey {
                section,
                key,
                first_line,
            } => write!(
                f,
                "key '{key}' is already set in [{section}] at line {first_line}; \
                 remove one of the two"
            ),
            SyntaxProblem::DuplicateSection {
                section,
                first_line,
            } => write!(
                f,
                "section [{section}] already appeared at line {first_line}; \
                 merge the two sections into one"
            ),
        }
    }
}

/// Why a `%` in a value could not be interpolated the way `configparser.BasicInterpolation`
/// does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolationProblem {
    /// A `%` not followed by `%` or `(` (`InterpolationSyntaxError`).
    LonePercent {
        /// The key whose raw text holds the `%` (differs from the key read when it is
        /// reached through a `%(name)s` reference).
        in_key: String,
        /// 1-based character position of the `%` in that text.
        column: usize,
    },
    /// `%(` not closed by `)s` (`InterpolationSyntaxError`).
    BadReference {
        /// As in `LonePercent`.
        in_key: String,
        /// As in `LonePercent`.
        column: usize,
    },
    /// `%(name)s` names a key that the section and `[DEFAULT]` do not set
    /// (`InterpolationMissingOptionError`).
    MissingKey {
        /// The referenced key, lower-cased.
        name: String,
    },
    /// References nest more than 10 deep, usually a value that refers to itself
    /// (`InterpolationDepthError`).
    TooDeep,
}

impl fmt::Display for InterpolationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpolationProblem::LonePercent { in_key, column } => write!(
                f,
                "the '%' at character {column} of '{in_key}' must be followed by '%' or '(' \
                 (config files use configparser interpolation: write '%%' for a literal '%')"
            ),
            InterpolationProblem::BadReference { in_key, column } => write!(
                f,
                "the '%(' at character {column} of '{in_key}' is not a complete '%(name)s' \
                 reference (write '%%' for a literal '%')"
            ),
            InterpolationProblem::MissingKey { name } => write!(
                f,
                "'%({name})s' refers to key '{name}', which is set neither in this section nor \
                 in [DEFAULT] (write '%%' for a literal '%')"
            ),
            InterpolationProblem::TooDeep => f.write_str(
                "'%(name)s' references nest more than 10 levels deep; does a value refer to itself?",
            ),
        }
    }
}

/// Formats `ConfigError::Syntax`: one line for one error, a list for several.
struct DisplaySyntax<'a> {
    path: &'a Path,
    errors: &'a [SyntaxError],
}

impl fmt::Display for DisplaySyntax<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors {
            [one] => write!(
                f,
                "config file {} line {}: {}",
                self.path.display(),
                one.line,
                one.problem
            ),
            many => {
                write!(
                    f,
                    "config file {} has {} syntax errors:",
                    self.path.display(),
                    many.len()
                )?;
                for e in many {
                    write!(f, "\n  line {}: {}", e.line, e.problem)?;
                }
                Ok(())
            }
        }
    }
}

/// Formats `ConfigError::NotFound` with every place searched, one per line.
struct DisplayNotFound<'a> {
    spec: &'a str,
    searched: &'a [String],
}

impl fmt::Display for DisplayNotFound<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.spec.trim().is_empty() {
            return f.write_str("no config file was given; pass --config with a path or a name");
        }
        write!(f, "config file '{}' not found; looked in:", self.spec)?;
        for place in self.searched {
            write!(f, "\n  {place}")?;
        }
        write!(
            f,
            "\ngive the path of an existing file, or put {} in a folder named by \
             OPENMSI_CONFIG_DIR",
            DisplayConfigName(self.spec)
        )
    }
}

/// `X.config` for a bare name, `X` otherwise.
struct DisplayConfigName<'a>(&'a str);

impl fmt::Display for DisplayConfigName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if Path::new(self.0).extension().is_none() {
            write!(f, "{}.config", self.0)
        } else {
            f.write_str(self.0)
        }
    }
}
