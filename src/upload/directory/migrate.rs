//! Switching from OpenMSIStream without re-sending terabytes: its `DataFileUploadDirectory`
//! keeps `DIR/LOGS/uploaded_to_<topic>.csv` (plus not yet consolidated
//! `uploaded_to_<topic>_*.csv`), a `;`-separated table whose fields are Python `repr()`s:
//! `filename;rel_filepath;n_chunks;started;completed`. The files it lists as completed count as
//! uploaded at the first start of openmsi.

use std::io;
use std::path::Path;

/// OpenMSIStream's state folder inside the watched folder.
pub const REFERENCE_LOG_DIR: &str = "LOGS";

/// True when `root/LOGS` holds OpenMSIStream upload registries (then that folder is the
/// reference's state, not data, and is not uploaded).
pub fn has_reference_state(root: &Path) -> bool {
    std::fs::read_dir(root.join(REFERENCE_LOG_DIR)).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            (name.starts_with("uploaded_to_") || name.starts_with("upload_to_"))
                && name.ends_with(".csv")
        })
    })
}

/// Relative `/`-paths OpenMSIStream recorded as completely uploaded to `topic` (empty when it
/// never ran here). Unparsable lines are skipped: those files are simply sent again.
pub fn reference_completed(root: &Path, topic: &str) -> io::Result<Vec<String>> {
    let dir = root.join(REFERENCE_LOG_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let exact = format!("uploaded_to_{topic}.csv");
    let numbered = format!("uploaded_to_{topic}_");
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != exact && !(name.starts_with(&numbered) && name.ends_with(".csv")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        out.extend(parse_completed(&text));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The `rel_filepath` column of a completed-files table.
fn parse_completed(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with("sep=") && !l.starts_with("filename;") && !l.trim().is_empty())
        .filter_map(|line| {
            let fields = split_csv(line.trim_end_matches('\r'));
            let path = unrepr(fields.get(1)?)?;
            // Windows writes backslash-separated relative paths.
            let path = if cfg!(windows) {
                path.replace('\\', "/")
            } else {
                path
            };
            (!path.is_empty()).then_some(path)
        })
        .collect()
}

/// Splits one line as Python's `csv` module writes it with `;` and minimal `"` quoting.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if field.is_empty() => quoted = true,
            ';' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The string a Python `repr()` of a `str` stands for.
fn unrepr(repr: &str) -> Option<String> {
    let quote = repr.chars().next()?;
    if !(quote == '\'' || quote == '"') || repr.len() < 2 || !repr.ends_with(quote) {
        return None;
    }
    let inner = &repr[1..repr.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'x' => out.push(hex_char(&mut chars, 2)?),
            'u' => out.push(hex_char(&mut chars, 4)?),
            'U' => out.push(hex_char(&mut chars, 8)?),
            other => out.push(other),
        }
    }
    Some(out)
}

fn hex_char(chars: &mut std::str::Chars<'_>, digits: usize) -> Option<char> {
    let hex: String = chars.take(digits).collect();
    char::from_u32(u32::from_str_radix(&hex, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_reference_table() {
        let text = "filename;rel_filepath;n_chunks;started;completed\n\
                    'a.dat';'a.dat';1;'Sun Nov 22, 2026 at 14:00:00';'Sun Nov 22, 2026 at 14:00:01'\n\
                    \"'x;y.bin'\";\"'sub dir/x;y.bin'\";3;'t';'t'\n\
                    \"it's\";\"\"\"sub/it's\"\"\";1;'t';'t'\n\
                    'caf\\xe9';'n/caf\\xe9';1;'t';'t'\n";
        assert_eq!(
            parse_completed(text),
            ["a.dat", "sub dir/x;y.bin", "sub/it's", "n/café"]
        );
    }
}
