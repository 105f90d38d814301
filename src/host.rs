//! This machine's name: for default program ids, consumer-group ids and the folder lock's
//! "held by" line. One place, with a counterpart for every platform.

/// The machine's name as the operating system reports it (`unknown-host` when it cannot).
pub fn name() -> String {
    raw_name()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// [`name`] reduced to characters that are safe in Kafka ids (letters, digits, `.`, `_`, `-`).
pub fn id_safe_name() -> String {
    name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(unix)]
fn raw_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call; gethostname
    // writes at most `len` bytes into it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

#[cfg(not(unix))]
fn raw_name() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_safe_name_is_never_empty_and_only_safe_characters() {
        let id = id_safe_name();
        assert!(!id.is_empty());
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)));
    }
}
