//! The Kafka message key of a chunk (`docs/WIRE_FORMAT.md`).
//!
//! The reference builds it in `DataFileChunk.msg_key` from
//! `get_message_prepend(subdir_str, filename)`: `"_".join(subdir_str.split("/")) + "_" +
//! filename + "_chunk"`, then `f"{prepend}_{chunk_i}_of_{n_total_chunks}"`, and its producers
//! encode it with confluent-kafka's `StringSerializer` (UTF-8). A top-level file has subdir `""`,
//! so its key starts with `_`. Consumers (theirs and ours) never parse the key; it only has to
//! look the same so that tools and people reading the topic see what they expect.

/// The key string for chunk `chunk_i` (1-based) of `n_total_chunks` of `subdir/filename`.
///
/// `subdir` is `/`-separated and `""` at the top level. The key is not unique in general
/// (`a/b_c` and `a_b/c` collide); nothing relies on it being unique.
///
/// ```
/// use openmsi::chunk::key::message_key;
/// assert_eq!(message_key("", "scan.tif", 1, 3), "_scan.tif_chunk_1_of_3");
/// assert_eq!(message_key("a/b", "x.dat", 2, 3), "a_b_x.dat_chunk_2_of_3");
/// ```
pub fn message_key(subdir: &str, filename: &str, chunk_i: u64, n_total_chunks: u64) -> String {
    use std::fmt::Write as _;
    let mut key = message_prepend(subdir, filename);
    // Writing to a String cannot fail; the Result only exists for the fmt::Write trait.
    let _ = write!(key, "_{chunk_i}_of_{n_total_chunks}");
    key
}

/// The key of the processing result of the file at `relative` (`/`-separated): the reference's
/// `ReproducerMessage.msg_key`, `f"{get_message_prepend(subdir_str, filename)}_processing_result"`.
///
/// ```
/// use openmsi::chunk::key::result_key;
/// assert_eq!(result_key("scan.tif"), "_scan.tif_chunk_processing_result");
/// assert_eq!(result_key("a/b/x.dat"), "a_b_x.dat_chunk_processing_result");
/// ```
pub fn result_key(relative: &str) -> String {
    let (subdir, filename) = relative.rsplit_once('/').unwrap_or(("", relative));
    message_prepend(subdir, filename) + "_processing_result"
}

/// The reference's `get_message_prepend(subdir_str, filename)`: `"_".join(subdir.split("/")) +
/// "_" + filename + "_chunk"`.
fn message_prepend(subdir: &str, filename: &str) -> String {
    let mut key = String::with_capacity(subdir.len() + filename.len() + 32);
    // Same as the reference's "_".join(subdir.split("/")): every "/" becomes "_".
    for (i, part) in subdir.split('/').enumerate() {
        if i > 0 {
            key.push('_');
        }
        key.push_str(part);
    }
    key.push('_');
    key.push_str(filename);
    key.push_str("_chunk");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_key_examples_from_design() {
        assert_eq!(message_key("", "scan.tif", 1, 3), "_scan.tif_chunk_1_of_3");
        assert_eq!(message_key("a/b", "x.dat", 2, 3), "a_b_x.dat_chunk_2_of_3");
    }

    #[test]
    fn chunk_key_keeps_spaces_unicode_and_underscores() {
        assert_eq!(
            message_key("sub dir/é", "ünï cödé.bin", 10, 12),
            "sub dir_é_ünï cödé.bin_chunk_10_of_12"
        );
        // A leading or doubled "/" is kept as "_" like the reference's split/join.
        assert_eq!(message_key("a//b", "f", 1, 1), "a__b_f_chunk_1_of_1");
    }
}
