//! How fast the two SHA-512 paths hash 512 KiB chunks on this machine: the batch hash
//! (`openmsi::chunk::batch_hash::sha512_each`, four chunks side by side with AVX2) against
//! hashing them one by one (`openmsi::chunk::sha512`, OpenSSL). Best of 8 passes over 32 MiB.
//!
//! ```sh
//! cargo run --release --example hash_speed
//! ```

use std::time::Instant;

use openmsi::chunk::batch_hash::sha512_each;
use openmsi::chunk::sha512;

fn main() {
    const MIB: usize = 1 << 20;
    let data: Vec<u8> = (0..32 * MIB).map(|i| (i * 7 + (i >> 13)) as u8).collect();
    let chunks: Vec<&[u8]> = data.chunks(512 << 10).collect();
    let (mut batch, mut one_by_one) = (f64::MAX, f64::MAX);
    for _ in 0..8 {
        let start = Instant::now();
        let together = sha512_each(&chunks);
        batch = batch.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let alone: Vec<_> = chunks.iter().map(|c| sha512(c)).collect();
        one_by_one = one_by_one.min(start.elapsed().as_secs_f64());
        assert_eq!(together, alone, "the two paths disagree");
    }
    let mb = data.len() as f64 / 1e6;
    println!(
        "512 KiB chunks: batch {:.0} MB/s, one by one {:.0} MB/s ({:.2}x)",
        mb / batch,
        mb / one_by_one,
        one_by_one / batch
    );
}
