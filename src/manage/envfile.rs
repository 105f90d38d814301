//! The environment file of a service: the variables its config reads, one `NAME="value"` per
//! line (`\` and `"` escaped), the format systemd's `EnvironmentFile=` reads and the Windows
//! service host loads itself.

use super::preflight::ServiceEnv;

/// The file's text; refuses values systemd could not read back (line breaks, NUL).
pub fn render(env: &ServiceEnv) -> anyhow::Result<String> {
    let mut text = String::from(
        "# Variables the service's config reads; written by openmsi manage-service install.\n",
    );
    for (name, value) in env {
        if value.contains(['\n', '\r', '\0']) {
            return Err(anyhow::anyhow!(
                "${name} holds a line break; a service's environment file cannot"
            ));
        }
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        text.push_str(&format!("{name}=\"{escaped}\"\n"));
    }
    Ok(text)
}

/// Reads back what [`render`] wrote (comments and malformed lines are skipped).
pub fn parse(text: &str) -> ServiceEnv {
    let mut env = ServiceEnv::new();
    for line in text.lines() {
        let Some((name, quoted)) = line.split_once('=') else {
            continue;
        };
        if name.starts_with('#') || name.trim().is_empty() {
            continue;
        }
        let Some(inner) = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) else {
            continue;
        };
        let mut value = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                value.extend(chars.next());
            } else {
                value.push(c);
            }
        }
        env.insert(name.to_string(), value);
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_quotes_backslashes_and_dollars_round_trip() {
        let mut env = ServiceEnv::new();
        env.insert("A".into(), r#"p@ss "word" \ $HOME"#.into());
        env.insert("B".into(), String::new());
        let text = render(&env).unwrap();
        assert!(text.contains(r#"A="p@ss \"word\" \\ $HOME""#), "{text}");
        assert_eq!(parse(&text), env);
        env.insert("C".into(), "two\nlines".into());
        assert!(render(&env).unwrap_err().to_string().contains("$C"));
    }
}
