//! Micro-benchmarks of two hot paths, each as a ratio to a baseline measured
//! in the same run:
//!
//! - digest verification of a blob stream (georep's `Verifier`, fed in the
//!   16 KiB chunks an HTTP body arrives in) vs SHA-256 of the same bytes
//!   held in memory in one piece — the cost of checking while streaming;
//! - the store's diff of a primary listing (10,000 tags, 3 regions; what a
//!   reconcile does per tag) vs the same lookups in an in-memory map — the
//!   cost of keeping the checkpoint in sled.
//!
//! `cargo bench --bench hot_paths`; `GEOREP_HASH_MIB` (default 256) and
//! `GEOREP_DIFF_TAGS` (default 10000) change the sizes.
// A benchmark: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use georep::digest::{Digest, Verifier};
use georep::store::Store;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

const CHUNK: usize = 16 * 1024;
const REGIONS: usize = 3;
const ROUNDS: usize = 5;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fastest of `ROUNDS` runs of `f`, in seconds.
fn best_of(mut f: impl FnMut()) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    hashing(env_or("GEOREP_HASH_MIB", 256));
    store_diff(env_or("GEOREP_DIFF_TAGS", 10_000));
}

fn hashing(mib: usize) {
    let mut data = vec![0u8; mib << 20];
    Xoshiro256PlusPlus::seed_from_u64(1).fill_bytes(&mut data);
    let digest = Digest::sha256_of(&data);
    let baseline = best_of(|| {
        black_box(Digest::sha256_of(black_box(&data)));
    });
    let streamed = best_of(|| {
        let mut v = Verifier::new(&digest, Some(data.len() as u64));
        for chunk in data.chunks(CHUNK) {
            v.update(black_box(chunk)).unwrap();
        }
        v.finish().unwrap();
    });
    let rate = |secs: f64| mib as f64 / secs;
    println!(
        "digest verification: {:.0} MiB/s streamed in {} KiB chunks vs {:.0} MiB/s in memory: ratio {:.3} ({mib} MiB, best of {ROUNDS})",
        rate(streamed),
        CHUNK / 1024,
        rate(baseline),
        baseline / streamed
    );
}

fn store_diff(tags: usize) {
    let dir = tempfile::tempdir().unwrap();
    let regions: Vec<(String, String)> = (0..REGIONS)
        .map(|i| (format!("r{i}"), format!("http://127.0.0.1:{}", 5001 + i)))
        .collect();
    let store = Store::open(&dir.path().join("store"), &regions).unwrap();
    let digest = |i: usize, v: usize| Digest::sha256_of(format!("{i}/{v}").as_bytes());
    // The listing: repositories of 10 tags. Every region holds every tag,
    // except that one tag in ten moved on the primary since.
    let listing: Vec<(String, String, Digest)> = (0..tags)
        .map(|i| {
            let v = usize::from(i % 10 == 0);
            (
                format!("bench/r{:04}", i / 10),
                format!("t{}", i % 10),
                digest(i, v),
            )
        })
        .collect();
    let mut memory: HashMap<(usize, String, String), Digest> = HashMap::new();
    let t = Instant::now();
    for (i, (repo, tag, _)) in listing.iter().enumerate() {
        for r in 0..REGIONS {
            store.record_manifest(r, repo, tag, &digest(i, 0)).unwrap();
            memory.insert((r, repo.clone(), tag.clone()), digest(i, 0));
        }
    }
    let fill = t.elapsed().as_secs_f64();
    let mut behind_store = 0;
    let in_store = best_of(|| {
        behind_store = listing
            .iter()
            .filter(|(repo, tag, d)| !store.regions_behind(REGIONS, repo, tag, d).is_empty())
            .count();
    });
    let mut behind_memory = 0;
    let in_memory = best_of(|| {
        behind_memory = listing
            .iter()
            .filter(|(repo, tag, d)| {
                (0..REGIONS).any(|r| memory.get(&(r, repo.clone(), tag.clone())) != Some(d))
            })
            .count();
    });
    assert_eq!(behind_store, tags.div_ceil(10));
    assert_eq!(behind_store, behind_memory);
    let rate = |secs: f64| tags as f64 / secs;
    println!(
        "store diff: {tags} tags x {REGIONS} regions in {:.1} ms ({:.0} tags/s) vs {:.1} ms in memory: ratio {:.3}; {behind_store} tags behind; filling the store took {fill:.2} s",
        in_store * 1e3,
        rate(in_store),
        in_memory * 1e3,
        in_memory / in_store,
    );
}
