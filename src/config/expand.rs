//! Environment variables in config values, as OpenMSIStream expands them: only a value that
//! *starts* with `$` is expanded, and then every `$NAME` / `${NAME}` in it is replaced, as
//! Python's `os.path.expandvars` (POSIX flavour) does: `NAME` after a bare `$` is a run of
//! ASCII letters, digits and `_`; inside braces it is anything up to the first `}`. Replaced
//! text is not scanned again, and a `$` that starts no reference stays as it is.
//!
//! Stricter than the reference on purpose: the reference only fails when *nothing* in the
//! value could be expanded, and otherwise silently keeps unknown references (so
//! `$HOST:$PORT` with `PORT` unset becomes `kafka.example:$PORT`). Here every reference must be
//! set, and the error names the variable.

/// Why a `$` value could not be expanded. The value itself is never included: it may be a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpandProblem {
    /// `$NAME` or `${NAME}` with `NAME` not set.
    Unset(String),
    /// `${}`.
    EmptyName,
    /// Starts with `$`, but nothing in it is a `$NAME` or `${NAME}` reference.
    NoReference,
}

/// Whether OpenMSIStream would treat `value` as an environment variable reference.
pub(crate) fn wants_expansion(value: &str) -> bool {
    value.starts_with('$')
}

/// Expands every `$NAME` and `${NAME}` in `value`, looking names up with `env`.
pub(crate) fn expand(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandProblem> {
    let mut out = String::with_capacity(value.len());
    let mut pos = 0;
    let mut references = 0;
    while let Some(found) = value[pos..].find('$') {
        let dollar = pos + found;
        out.push_str(&value[pos..dollar]);
        let after = &value[dollar + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(close) => (&inner[..close], close + 2),
                None => ("", 0),
            }
        } else {
            let run = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..run], run)
        };
        if len == 0 {
            // Not a reference: keep the '$' and look for the next one.
            out.push('$');
            pos = dollar + 1;
            continue;
        }
        references += 1;
        if name.is_empty() {
            return Err(ExpandProblem::EmptyName);
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(ExpandProblem::Unset(name.to_string())),
        }
        pos = dollar + 1 + len;
    }
    out.push_str(&value[pos..]);
    if references == 0 {
        return Err(ExpandProblem::NoReference);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka.example".into()),
            "PORT" => Some("9092".into()),
            "EMPTY" => Some(String::new()),
            "SELF" => Some("$HOST".into()),
            "A B" => Some("spaced".into()),
            _ => None,
        }
    }

    #[test]
    fn forms() {
        assert_eq!(expand("$HOST", &env).unwrap(), "kafka.example");
        assert_eq!(expand("${HOST}", &env).unwrap(), "kafka.example");
        assert_eq!(expand("$HOST/rest", &env).unwrap(), "kafka.example/rest");
        assert_eq!(expand("${HOST}rest", &env).unwrap(), "kafka.examplerest");
        assert_eq!(expand("$HOST:$PORT", &env).unwrap(), "kafka.example:9092");
        assert_eq!(expand("$EMPTY", &env).unwrap(), "");
        assert_eq!(expand("${A B}", &env).unwrap(), "spaced");
    }

    #[test]
    fn replaced_text_is_not_rescanned() {
        assert_eq!(expand("$SELF", &env).unwrap(), "$HOST");
    }

    #[test]
    fn dollars_that_start_no_reference_stay() {
        assert_eq!(expand("$$HOST", &env).unwrap(), "$kafka.example");
        assert_eq!(expand("$HOST$", &env).unwrap(), "kafka.example$");
        assert_eq!(expand("$HOST ${x", &env).unwrap(), "kafka.example ${x");
    }

    #[test]
    fn problems() {
        assert_eq!(
            expand("$NOPE", &env),
            Err(ExpandProblem::Unset("NOPE".into()))
        );
        assert_eq!(
            expand("$HOST:$NOPE", &env),
            Err(ExpandProblem::Unset("NOPE".into()))
        );
        assert_eq!(expand("${}", &env), Err(ExpandProblem::EmptyName));
        assert_eq!(expand("$", &env), Err(ExpandProblem::NoReference));
        assert_eq!(expand("$-x", &env), Err(ExpandProblem::NoReference));
        assert_eq!(expand("${unclosed", &env), Err(ExpandProblem::NoReference));
    }
}
