//! msgpack as KafkaCrypto uses it (Python's `msgpack` with `use_bin_type=True`): bytes are
//! `bin`, text is `str`, integers in their shortest form. Decoding is strict: the whole input
//! must be one value, nesting is bounded, and accessors say what was expected where.

use rmpv::Value;

/// A malformed KafkaCrypto structure; the text says what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

/// Shorthand for building a [`WireError`].
pub fn malformed(what: impl Into<String>) -> WireError {
    WireError(what.into())
}

/// Nesting deeper than this is refused: KafkaCrypto's structures are at most a few levels deep.
const MAX_DEPTH: usize = 16;

/// Encodes one value.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writing msgpack to a Vec cannot fail");
    out
}

/// Decodes exactly one value from `bytes` (`what` names it in errors).
pub fn decode(bytes: &[u8], what: &str) -> Result<Value, WireError> {
    let mut rest = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH)
        .map_err(|e| malformed(format!("{what}: not valid msgpack ({e})")))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{what}: {} unexpected byte(s) after the msgpack value",
            rest.len()
        )));
    }
    Ok(value)
}

/// `bin` bytes.
pub fn bin(bytes: impl Into<Vec<u8>>) -> Value {
    Value::Binary(bytes.into())
}

/// A `str`.
pub fn text(s: &str) -> Value {
    Value::from(s)
}

/// The array `value`, with exactly `len` elements when given.
pub fn array<'a>(
    value: &'a Value,
    len: Option<usize>,
    what: &str,
) -> Result<&'a [Value], WireError> {
    let items = value
        .as_array()
        .ok_or_else(|| malformed(format!("{what}: expected an array")))?;
    match len {
        Some(n) if items.len() != n => Err(malformed(format!(
            "{what}: expected {n} elements, found {}",
            items.len()
        ))),
        _ => Ok(items),
    }
}

/// The `bin` bytes of `value` (older packers wrote bytes as `str`: refused, KafkaCrypto's
/// current format always uses `bin`).
pub fn bytes<'a>(value: &'a Value, what: &str) -> Result<&'a [u8], WireError> {
    match value {
        Value::Binary(b) => Ok(b),
        _ => Err(malformed(format!("{what}: expected bytes"))),
    }
}

/// Exactly `N` `bin` bytes.
pub fn fixed<const N: usize>(value: &Value, what: &str) -> Result<[u8; N], WireError> {
    let b = bytes(value, what)?;
    b.try_into()
        .map_err(|_| malformed(format!("{what}: expected {N} bytes, found {}", b.len())))
}

/// A `str`.
pub fn string<'a>(value: &'a Value, what: &str) -> Result<&'a str, WireError> {
    value
        .as_str()
        .ok_or_else(|| malformed(format!("{what}: expected text")))
}

/// A non-negative integer.
pub fn uint(value: &Value, what: &str) -> Result<u64, WireError> {
    value
        .as_u64()
        .ok_or_else(|| malformed(format!("{what}: expected a non-negative integer")))
}

/// A number that may be an integer or a float (KafkaCrypto's `max_age`).
pub fn number(value: &Value, what: &str) -> Result<f64, WireError> {
    match value {
        Value::Integer(i) => i
            .as_f64()
            .ok_or_else(|| malformed(format!("{what}: integer out of range"))),
        Value::F64(f) => Ok(*f),
        Value::F32(f) => Ok(f64::from(*f)),
        _ => Err(malformed(format!("{what}: expected a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_is_strict() {
        let v = Value::Array(vec![Value::from(1), bin(vec![1, 2])]);
        let bytes = encode(&v);
        assert_eq!(decode(&bytes, "x").unwrap(), v);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, "x").unwrap_err().0.contains("unexpected"));
        assert!(decode(&bytes[..bytes.len() - 1], "x").is_err());
        // 20 nested arrays: refused, not recursed into.
        let deep = [vec![0x91u8; 20], vec![0x01]].concat();
        assert!(decode(&deep, "x").is_err());
    }

    #[test]
    fn integers_are_shortest_form_like_python() {
        assert_eq!(encode(&Value::from(5u64)), vec![0x05]);
        assert_eq!(encode(&Value::from(300u64)), vec![0xcd, 0x01, 0x2c]);
    }
}
