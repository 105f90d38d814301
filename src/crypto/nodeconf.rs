//! A KafkaCrypto node's `.config` file, read with the one INI reader (`config::ini`, in
//! KafkaCrypto's dialect: `:` the only delimiter, `;` comments) and written the way Python's
//! `configparser` writes it, so a node folder can be shared by openmsi and the Python package:
//! `[section]` headers, `key : value` lines (keys lower-cased), indented continuation lines,
//! and `[DEFAULT]` values visible in every section. Byte values are written `base64#…`, files
//! `file#NAME` (relative to the config's folder).

use std::path::Path;

use base64::Engine;

use crate::config::ini::{self, Dialect};
use crate::config::ConfigError;

/// One `[section]` and its entries, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// The name between the brackets.
    pub name: String,
    /// `(key, value)` pairs; keys lower-case.
    pub entries: Vec<(String, String)>,
}

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeConf {
    /// Sections in file order (`DEFAULT` included, when present).
    pub sections: Vec<Section>,
}

impl NodeConf {
    /// Parses the text of a node config file (`path` names it in errors) with the one INI
    /// reader (`config::ini`), in KafkaCrypto's dialect: `:` the only delimiter, `;` comments.
    pub fn parse(path: &Path, text: &str) -> Result<NodeConf, ConfigError> {
        let ini = ini::parse_dialect(path, text, Dialect::KAFKACRYPTO)?;
        let section = |s: &ini::RawSection| Section {
            name: s.name().to_owned(),
            entries: s
                .entries()
                .iter()
                .map(|e| (e.key().to_owned(), e.value().to_owned()))
                .collect(),
        };
        // configparser writes [DEFAULT] first, whatever the order it was read in.
        let defaults = ini.has_default_section().then(|| section(ini.defaults()));
        Ok(NodeConf {
            sections: defaults
                .into_iter()
                .chain(ini.sections().iter().map(section))
                .collect(),
        })
    }

    /// The text form, as configparser writes it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            out.push_str(&format!("[{}]\n", section.name));
            for (key, value) in &section.entries {
                out.push_str(&format!("{key} : {}\n", value.replace('\n', "\n\t")));
            }
            out.push('\n');
        }
        out
    }

    /// The section named `name`, if any.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A value of `section`, falling back to `[DEFAULT]`.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        fn find<'a>(s: &'a Section, key: &str) -> Option<&'a str> {
            s.entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
        self.section(section)
            .and_then(|s| find(s, key))
            .or_else(|| self.section("DEFAULT").and_then(|s| find(s, key)))
    }

    /// Every entry of `section` (without `[DEFAULT]`'s).
    pub fn entries(&self, section: &str) -> &[(String, String)] {
        self.section(section).map_or(&[], |s| s.entries.as_slice())
    }

    /// Sets `key` in `section`, creating the section at the end when missing.
    pub fn set(&mut self, section: &str, key: &str, value: impl Into<String>) {
        let value = value.into();
        let s = match self.sections.iter().position(|s| s.name == section) {
            Some(s) => s,
            None => {
                self.sections.push(Section {
                    name: section.to_owned(),
                    entries: Vec::new(),
                });
                self.sections.len() - 1
            }
        };
        let entries = &mut self.sections[s].entries;
        let key = key.to_lowercase();
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key, value)),
        }
    }

    /// Adds an empty section (no-op when it exists).
    pub fn ensure_section(&mut self, section: &str) {
        if self.section(section).is_none() {
            self.sections.push(Section {
                name: section.to_owned(),
                entries: Vec::new(),
            });
        }
    }
}

/// `base64#…` for bytes.
pub fn encode_bytes(bytes: &[u8]) -> String {
    format!(
        "base64#{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The bytes of a `base64#…` value; `None` for any other value.
pub fn decode_bytes(value: &str) -> Option<Vec<u8>> {
    let b64 = value.strip_prefix("base64#")?;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
}

/// The file a `file#NAME` value names, relative to `dir`.
pub fn file_value(value: &str, dir: &Path) -> Option<std::path::PathBuf> {
    let name = value.strip_prefix("file#")?;
    Some(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON: &str = "[DEFAULT]\nnode_id : nodeA\n\n[nodeA]\nmgmt_long_keyindex : True\ncryptokey : file#nodeA.crypto\n\n[nodeA-denylist]\n\n[nodeA-kafka]\nbootstrap_servers : \nsecurity_protocol : SSL\n\n";

    #[test]
    fn python_output_round_trips() {
        let conf = NodeConf::parse(Path::new("n.config"), PYTHON).unwrap();
        assert_eq!(conf.get("nodeA", "cryptokey"), Some("file#nodeA.crypto"));
        assert_eq!(conf.get("nodeA-kafka", "node_id"), Some("nodeA"));
        assert_eq!(conf.get("nodeA-kafka", "bootstrap_servers"), Some(""));
        // configparser writes "key : " for an empty value; we write the same.
        assert_eq!(conf.to_text(), PYTHON);
    }

    #[test]
    fn comments_continuations_and_errors() {
        let path = Path::new("n.config");
        let conf =
            NodeConf::parse(path, "; c\n[a]\n; c\nKey : one\n  two\nb64 : base64#AA==\n").unwrap();
        assert_eq!(conf.get("a", "key"), Some("one\ntwo"));
        // `=` is no delimiter in KafkaCrypto's files: base64 padding stays in the value.
        assert_eq!(conf.get("a", "b64"), Some("base64#AA=="));
        let err = NodeConf::parse(path, "[a]\nno delimiter\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(NodeConf::parse(path, "k : v\n").is_err());
    }

    #[test]
    fn bytes_values() {
        assert_eq!(decode_bytes(&encode_bytes(b"\x00\xff")), Some(vec![0, 255]));
        assert_eq!(decode_bytes("plain"), None);
    }
}
