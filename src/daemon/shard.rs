//! Sharding: which targets of one shared config this replica watches
//! (`--shard.count`, `--shard.index`).
//!
//! It owns the two flags' rules (a count from 1 to [`MAX_SHARD_COUNT`], an
//! index below it, or the word `hostname` for the trailing `-<n>` of the host
//! name — a StatefulSet pod's ordinal) and the choice of owner: rendezvous
//! (highest-random-weight) hashing of the target's name. Every shard weighs
//! every target, `weight(index, name)`, and the heaviest shard owns it. Going
//! from N to N+1 shards moves only the targets the new shard now outweighs —
//! about 1/(N+1) of them — and none between the old shards.
//!
//! It must never let the owner depend on anything but the target's name and
//! the two numbers — not on the order of the file, the other targets, the
//! build, the platform or the Rust version: replicas built apart, or an old
//! and a new image in one rollout, must agree on every target. Hence SHA-256
//! (FIPS 180-4, from the ring provider the daemon's TLS already compiles),
//! not std's `DefaultHasher`, whose algorithm the standard library may change
//! between releases, nor `RandomState`, which is seeded per process. SHA-256
//! also lets an operator check an owner by hand:
//!
//! ```text
//! $ for i in 0 1 2; do printf '%s ' $i; printf '%s' "$i/plant-a" | sha256sum | cut -c1-16; done
//! 0 a2141a8d2b88622b
//! 1 c422b4ac1b5297a9
//! 2 f8ce75187c13f56e      <- the heaviest: shard 2 of 3 owns plant-a
//! ```

use std::fmt;

/// The most shards `--shard.count` may name. A config holds at most
/// [`MAX_FILE_TARGETS`](crate::config::MAX_FILE_TARGETS) targets, and every target is
/// weighed once per shard at start and at each reload; more shards than this
/// could only be a typo, and a huge count would stall the start.
pub const MAX_SHARD_COUNT: u32 = 256;

/// One replica's place among `count` replicas sharing a config: it watches
/// the targets it [`owns`](Self::owns).
///
/// ```
/// use mqtt_pulse::daemon::Shard;
///
/// let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).unwrap()).collect();
/// // Every target has exactly one owner.
/// for name in ["plant-a", "plant-b", "plant-c"] {
///     assert_eq!(shards.iter().filter(|shard| shard.owns(name)).count(), 1);
/// }
/// assert!(shards[2].owns("plant-a"));
/// assert_eq!(Shard::owner("plant-a", 3), 2);
/// // A fourth shard takes targets only for itself: plant-a stays or moves to 3.
/// assert!(matches!(Shard::owner("plant-a", 4), 2 | 3));
/// assert!(Shard::ALL.owns("plant-a"));
///
/// assert_eq!(
///     Shard::new(3, 3).unwrap_err().to_string(),
///     "--shard.index 3 is not below --shard.count 3: the indexes of 3 shards are 0 to 2"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why the shard flags are unusable. `Display` is one line naming the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardError {
    /// `--shard.count` is not a whole number from 1 to [`MAX_SHARD_COUNT`].
    #[error(
        "--shard.count {0:?} is not a number of replicas from 1 to {MAX_SHARD_COUNT} \
         (MQTT_PULSE_SHARD_COUNT)"
    )]
    Count(String),
    /// `--shard.index` is neither a whole number nor `hostname`.
    #[error(
        "--shard.index {0:?} is neither a whole number nor the word hostname \
         (MQTT_PULSE_SHARD_INDEX)"
    )]
    Index(String),
    /// `--shard.index` is not below `--shard.count`.
    #[error(
        "--shard.index {index} is not below --shard.count {count}: the indexes of {count} \
         shards are 0 to {last}",
        last = count - 1
    )]
    OutOfRange {
        /// The index given.
        index: u32,
        /// The count given.
        count: u32,
    },
    /// `--shard.index hostname`, and the host name does not end in `-<n>`.
    #[error(
        "--shard.index hostname: the host name {0:?} does not end in -<number> (a StatefulSet \
         pod's ordinal, as in mqtt-pulse-2); set HOSTNAME or give the index as a number"
    )]
    NoOrdinal(String),
    /// `--shard.index hostname`, and the host name cannot be told.
    #[error("--shard.index hostname: {0}")]
    Hostname(String),
}

impl Shard {
    /// The only shard of one: owns every target. What the daemon is without
    /// the flags.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count` (indexes from 0).
    ///
    /// # Errors
    /// [`ShardError::Count`] unless `count` is 1 to [`MAX_SHARD_COUNT`],
    /// [`ShardError::OutOfRange`] unless `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if !(1..=MAX_SHARD_COUNT).contains(&count) {
            return Err(ShardError::Count(count.to_string()));
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The shard the flags name: `count` a whole number, `index` a whole
    /// number or `hostname` — the number after the last `-` of `hostname()`
    /// (the host name `{hostname}` stands for in a `client_id`: `HOSTNAME`,
    /// else the kernel's).
    pub(crate) fn from_flags(
        count: &str,
        index: &str,
        hostname: impl FnOnce() -> Result<String, String>,
    ) -> Result<Shard, ShardError> {
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| ShardError::Count(count.to_owned()))?;
        let index = match index.trim() {
            "hostname" => {
                let host = hostname().map_err(ShardError::Hostname)?;
                ordinal(&host).ok_or(ShardError::NoOrdinal(host))?
            }
            written => written
                .parse()
                .map_err(|_| ShardError::Index(index.to_owned()))?,
        };
        Shard::new(index, count)
    }

    /// This shard's index, from 0.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards share the config.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether this shard watches the target called `name`.
    pub fn owns(self, name: &str) -> bool {
        self.count == 1 || Shard::owner(name, self.count) == self.index
    }

    /// The index of the shard, of `count`, that owns the target called
    /// `name`: the one of highest weight — the first 8 bytes, big-endian, of
    /// SHA-256 of `"<index>/<name>"`, which `printf '%s' "2/plant-a" |
    /// sha256sum` shows too. `count` 0 is taken as 1.
    pub fn owner(name: &str, count: u32) -> u32 {
        (0..count.max(1))
            // Ties (equal 64-bit prefixes of two digests) go to the lower index.
            .max_by_key(|&index| (weight(index, name), std::cmp::Reverse(index)))
            .unwrap_or(0)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {} of {} (indexes from 0)", self.index, self.count)
    }
}

/// The number after the last `-` of a host name: a StatefulSet pod's ordinal
/// (`mqtt-pulse-2` → 2).
fn ordinal(host: &str) -> Option<u32> {
    let (_, digits) = host.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Shard `index`'s weight of the target `name`: the first 8 bytes, read
/// big-endian, of SHA-256 of `"<index>/<name>"` (the index in decimal).
fn weight(index: u32, name: &str) -> u64 {
    let digest = sha256(&[index.to_string().as_bytes(), b"/", name.as_bytes()]);
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// SHA-256 of the concatenated `parts`, from rustls's ring provider (compiled
/// for the daemon's TLS already; the `ring` feature is part of `daemon`).
fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let hash = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider;
    let mut context = hash.start();
    for part in parts {
        context.update(part);
    }
    let mut digest = [0; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("plant-{i:05}")).collect()
    }

    #[test]
    fn weights_are_sha256_as_sha256sum_prints_it() {
        // printf '%s' "2/plant-a" | sha256sum | cut -c1-16, and so on.
        assert_eq!(weight(0, "plant-a"), 0xa214_1a8d_2b88_622b);
        assert_eq!(weight(1, "plant-a"), 0xc422_b4ac_1b52_97a9);
        assert_eq!(weight(2, "plant-a"), 0xf8ce_7518_7c13_f56e);
        assert_eq!(weight(0, "plant-b"), 0x77e5_fd5d_d299_0f1e);
        assert_eq!(weight(1, "plant-b"), 0x2c74_6332_63d0_6977);
        assert_eq!(weight(2, "plant-b"), 0x3299_e6a0_55f2_2bf0);
    }

    #[test]
    fn the_heaviest_shard_owns_a_target() {
        assert_eq!(Shard::owner("plant-a", 3), 2);
        assert_eq!(Shard::owner("plant-a", 2), 1);
        assert_eq!(Shard::owner("plant-b", 3), 0);
        assert_eq!(Shard::owner("plant-b", 1), 0);
    }

    #[test]
    fn every_target_has_exactly_one_owner_and_the_shares_are_even() {
        let names = names(10_000);
        for count in 1..=8u32 {
            let mut shares = vec![0usize; count as usize];
            for name in &names {
                let owners: Vec<u32> = (0..count)
                    .filter(|&i| Shard::new(i, count).unwrap().owns(name))
                    .collect();
                assert_eq!(owners.len(), 1, "{name} of {count}: {owners:?}");
                shares[owners[0] as usize] += 1;
            }
            let fair = names.len() / count as usize;
            for share in &shares {
                // Binomial: 4 standard deviations at 10,000 targets is < 5%.
                assert!(share.abs_diff(fair) * 20 < fair, "{count}: {shares:?}");
            }
        }
    }

    #[test]
    fn one_more_shard_moves_about_its_share_and_only_to_itself() {
        let names = names(10_000);
        for count in 1..=8u32 {
            let mut moved = 0usize;
            for name in &names {
                let (before, after) = (Shard::owner(name, count), Shard::owner(name, count + 1));
                if before != after {
                    assert_eq!(
                        after,
                        count,
                        "{name}: {count}->{} moved {before}->{after}",
                        count + 1
                    );
                    moved += 1;
                }
            }
            let fair = names.len() / (count as usize + 1);
            assert!(
                moved.abs_diff(fair) * 20 < fair,
                "{count}+1 moved {moved}, fair {fair}"
            );
        }
    }

    #[test]
    fn the_index_comes_from_a_number_or_the_trailing_ordinal_of_the_host_name() {
        let host = |name: &'static str| move || Ok(name.to_owned());
        let shard = |count, index, name| Shard::from_flags(count, index, host(name));
        assert_eq!(shard("3", "1", "x"), Ok(Shard { index: 1, count: 3 }));
        assert_eq!(shard(" 3 ", " 2 ", "x"), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(
            shard("3", "hostname", "mqtt-pulse-2"),
            Ok(Shard { index: 2, count: 3 })
        );
        assert_eq!(
            shard("3", "hostname", "eu-mqtt-pulse-0"),
            Ok(Shard { index: 0, count: 3 })
        );
        assert_eq!(shard("1", "0", "x"), Ok(Shard::ALL));
        assert_eq!(
            shard("3", "hostname", "mqtt-pulse-7"),
            Err(ShardError::OutOfRange { index: 7, count: 3 })
        );
        for host_name in [
            "web",
            "mqtt-pulse-",
            "mqtt-pulse-x2",
            "pod-1a",
            "a-99999999999",
        ] {
            assert_eq!(
                shard("3", "hostname", host_name),
                Err(ShardError::NoOrdinal(host_name.to_owned())),
                "{host_name}"
            );
        }
        let no_host = Shard::from_flags("3", "hostname", || Err("HOSTNAME is empty".to_owned()));
        assert_eq!(
            no_host,
            Err(ShardError::Hostname("HOSTNAME is empty".to_owned()))
        );
    }

    #[test]
    fn bad_flags_are_one_line_naming_the_flag() {
        let never = || -> Result<String, String> { panic!("the host name is not needed") };
        let error = |count, index| {
            Shard::from_flags(count, index, never)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error("0", "0"),
            "--shard.count \"0\" is not a number of replicas from 1 to 256 (MQTT_PULSE_SHARD_COUNT)"
        );
        assert!(error("257", "0").starts_with("--shard.count \"257\""));
        assert!(error("three", "0").starts_with("--shard.count \"three\""));
        assert!(error("-1", "0").starts_with("--shard.count \"-1\""));
        assert_eq!(
            error("3", "3"),
            "--shard.index 3 is not below --shard.count 3: the indexes of 3 shards are 0 to 2"
        );
        assert_eq!(
            error("3", ""),
            "--shard.index \"\" is neither a whole number nor the word hostname (MQTT_PULSE_SHARD_INDEX)"
        );
        assert!(error("3", "-1").starts_with("--shard.index \"-1\""));
        let no_ordinal = Shard::from_flags("3", "hostname", || Ok("web".to_owned()));
        assert_eq!(
            no_ordinal.unwrap_err().to_string(),
            "--shard.index hostname: the host name \"web\" does not end in -<number> (a StatefulSet \
             pod's ordinal, as in mqtt-pulse-2); set HOSTNAME or give the index as a number"
        );
        for error in [error("0", "0"), error("3", "x"), error("3", "9")] {
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
