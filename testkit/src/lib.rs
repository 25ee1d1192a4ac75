//! What ftab's tests and benchmarks share: one seeded generator (so a randomized failure
//! replays from its seed), one walk over the files of a directory, and a local S3 server
//! ([`s3`]).

pub mod s3;

use std::path::{Path, PathBuf};

/// splitmix64: small, fast and deterministic. Tests print their seed; the same seed gives
/// the same data on every machine.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Files (not directories) under `dir`, recursively; 0 if it does not exist.
pub fn files_under(dir: &Path) -> usize {
    find_files(dir, "").len()
}

/// Files under `dir` whose names end with `suffix`, recursively, sorted.
pub fn find_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_files(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_and_below_stays_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let first: Vec<u64> = (0..5).map(|_| a.next()).collect();
        assert_eq!(first, (0..5).map(|_| b.next()).collect::<Vec<_>>());
        assert_ne!(first[0], Rng::new(8).next());
        assert!((0..1000).all(|_| a.below(3) < 3));
    }

    #[test]
    fn files_are_found_recursively_and_sorted() {
        let dir = std::env::temp_dir().join(format!("ftab-testkit-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/x.parquet"), "").unwrap();
        std::fs::write(dir.join("a/y.json"), "").unwrap();
        std::fs::write(dir.join("z.parquet"), "").unwrap();
        assert_eq!(files_under(&dir), 3);
        assert_eq!(
            find_files(&dir, ".parquet"),
            [dir.join("a/b/x.parquet"), dir.join("z.parquet")]
        );
        assert_eq!(files_under(&dir.join("missing")), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
