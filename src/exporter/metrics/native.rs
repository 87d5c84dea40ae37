//! The sparse (native) bucket counts of one round-trip histogram, kept beside
//! the classic buckets so a protobuf scrape can expose a Prometheus native
//! histogram. Sans-IO and allocation-light: a dense run of counts from the
//! lowest to the highest bucket index seen, and a zero bucket. It owns the
//! bucket arithmetic of [`SCHEMA`] and nothing else; it must never know about
//! labels, families or encodings.
//!
//! # Resolution
//!
//! Schema 3: each power of two is cut into 2³ = 8 buckets, so a bucket's upper
//! bound is 2^(1/8) ≈ 1.0905 times its lower bound, and any quantile Prometheus
//! estimates from it is off by at most ~9% of the value (less after its
//! interpolation). That is client_golang's `NativeHistogramBucketFactor: 1.1`,
//! fine enough to tell a 120 µs loopback round trip from a 130 µs one, where
//! the default classic layout's first bucket spans everything up to 250 µs.
//! Round trips of a monitor sit within a few powers of two of each other, so a
//! histogram typically holds 10–40 buckets; the worst case (1 µs to the longest
//! keep-alive, 65,535 s) is 36 powers of two, 288 buckets, 2.3 KiB.
//!
//! Values at or below [`ZERO_THRESHOLD`] (2⁻¹²⁸ s, client_golang's default)
//! count in the zero bucket: a round trip of exactly zero is possible with a
//! coarse clock.

/// The native histogram schema: 2^-SCHEMA is the log2 width of a bucket.
pub(super) const SCHEMA: i32 = 3;

/// Observations at or below this many seconds count in the zero bucket.
pub(super) const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39; // 2^-128

/// Buckets per power of two.
const BUCKETS_PER_OCTAVE: i32 = 1 << SCHEMA;

/// The sparse buckets of one histogram: `counts[i]` is the count of bucket
/// index `first + i`, whose upper bound is 2^((first + i) / 8) seconds.
///
/// Boxed, so a histogram that never saw a round trip (most probes and paths,
/// and every histogram in a build without the feature) costs one null
/// pointer in its client's row, and the rows the text render walks stay
/// as small as they were before native buckets (the render slowed by a
/// quarter with them inline).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct NativeBuckets(Option<Box<Sparse>>);

#[derive(Clone, Debug, Default, PartialEq)]
struct Sparse {
    first: i32,
    counts: Vec<u64>,
    zero_count: u64,
}

#[cfg_attr(not(feature = "native-histograms"), allow(dead_code))]
impl NativeBuckets {
    /// Counts one observation of `seconds` (finite, non-negative). Without
    /// the `native-histograms` feature nothing reads the buckets, so nothing
    /// is counted (or allocated).
    pub fn observe(&mut self, seconds: f64) {
        if !cfg!(feature = "native-histograms") {
            return;
        }
        self.0.get_or_insert_with(Box::default).observe(seconds);
    }

    /// Observations in the zero bucket.
    pub fn zero_count(&self) -> u64 {
        self.0.as_ref().map_or(0, |sparse| sparse.zero_count)
    }

    /// The non-empty buckets as Prometheus's spans and deltas: each span is
    /// (offset from the end of the previous span, or the first index; length),
    /// and each delta is a bucket's count minus the previous bucket's (the
    /// first against 0). Gaps of up to two empty buckets stay inside a span
    /// (two zero deltas are cheaper than a new span), as client_golang does.
    pub fn spans_and_deltas(&self) -> (Vec<(i32, u32)>, Vec<i64>) {
        self.0
            .as_ref()
            .map_or_else(Default::default, |sparse| sparse.spans_and_deltas())
    }
}

#[cfg_attr(not(feature = "native-histograms"), allow(dead_code))]
impl Sparse {
    fn observe(&mut self, seconds: f64) {
        if seconds <= ZERO_THRESHOLD || !seconds.is_finite() {
            self.zero_count += 1;
            return;
        }
        let index = bucket_index(seconds);
        if self.counts.is_empty() {
            self.first = index;
            self.counts.push(0);
        } else if index < self.first {
            let grow = (self.first - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.first = index;
        } else if index - self.first >= self.counts.len() as i32 {
            self.counts.resize((index - self.first) as usize + 1, 0);
        }
        self.counts[(index - self.first) as usize] += 1;
    }

    fn spans_and_deltas(&self) -> (Vec<(i32, u32)>, Vec<i64>) {
        let mut spans: Vec<(i32, u32)> = Vec::new();
        let mut deltas = Vec::new();
        let mut previous_count = 0i64;
        // The index just past the last bucket written, once one is.
        let mut next_index: Option<i32> = None;
        for (i, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let index = self.first + i as i32;
            match next_index {
                Some(next) if index - next <= 2 => {
                    // Close a small gap with explicit empty buckets.
                    for _ in next..index {
                        deltas.push(-previous_count);
                        previous_count = 0;
                    }
                    spans.last_mut().expect("a span is open").1 += (index - next) as u32 + 1;
                }
                Some(next) => spans.push((index - next, 1)),
                None => spans.push((index, 1)),
            }
            deltas.push(count as i64 - previous_count);
            previous_count = count as i64;
            next_index = Some(index + 1);
        }
        (spans, deltas)
    }
}

/// The index of the bucket `seconds` (> 0, finite) falls in: the `i` with
/// 2^((i-1)/8) < seconds <= 2^(i/8). Exact at powers of two and computed from
/// the float's exponent, as client_golang does, so it agrees with Prometheus
/// on which bucket a boundary value is in.
fn bucket_index(seconds: f64) -> i32 {
    let (fraction, exponent) = frexp(seconds);
    // `fraction` is in [0.5, 1): find the first of the octave's bounds
    // 2^(j/8 - 1), j = 0..8, that is >= it.
    let within = OCTAVE_BOUNDS.partition_point(|&bound| bound < fraction) as i32;
    within + (exponent - 1) * BUCKETS_PER_OCTAVE
}

/// 2^(j/8 - 1) for j in 0..8: the bucket bounds within [0.5, 1).
const OCTAVE_BOUNDS: [f64; 8] = [
    0.5,
    0.545_253_866_332_628_8,
    0.594_603_557_501_360_5,
    0.648_419_777_325_504_8,
    0.707_106_781_186_547_5,
    0.771_105_412_703_970_4,
    0.840_896_415_253_714_5,
    0.917_004_043_204_671_2,
];

/// `value` (positive, normal) as `fraction * 2^exponent` with `fraction` in
/// [0.5, 1), like C's `frexp`; std has no such function. Subnormals never
/// reach here: they are below the zero threshold.
fn frexp(value: f64) -> (f64, i32) {
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let fraction = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (fraction, exponent)
}

#[cfg(all(test, feature = "native-histograms"))]
mod tests {
    use super::*;

    /// The upper bound of bucket `index`.
    fn upper(index: i32) -> f64 {
        2f64.powf(f64::from(index) / f64::from(BUCKETS_PER_OCTAVE))
    }

    /// A value well inside bucket `index`.
    fn inside(index: i32) -> f64 {
        upper(index) * 0.99
    }

    #[test]
    fn the_octave_bounds_are_the_powers_of_the_eighth_root_of_two() {
        for (j, bound) in OCTAVE_BOUNDS.iter().enumerate() {
            let exact = 2f64.powf(j as f64 / 8.0 - 1.0);
            assert!((bound - exact).abs() < 1e-15, "{j}: {bound} vs {exact}");
        }
    }

    #[test]
    fn a_value_lands_in_the_bucket_whose_upper_bound_it_does_not_exceed() {
        for value in [
            1e-7, 0.000_123, 0.001, 0.003_7, 0.25, 1.0, 1.05, 3.0, 65_535.0,
        ] {
            let index = bucket_index(value);
            assert!(
                upper(index - 1) < value,
                "{value} above bucket {}",
                index - 1
            );
            assert!(
                value <= upper(index) * (1.0 + 1e-12),
                "{value} in bucket {index}"
            );
        }
        // Powers of two are upper bounds: they close their bucket.
        assert_eq!(bucket_index(1.0), 0);
        assert_eq!(bucket_index(2.0), 8);
        assert_eq!(bucket_index(0.5), -8);
        assert_eq!(bucket_index(2.0f64.powi(-10)), -80);
        assert_eq!(bucket_index(1.000_001), 1);
    }

    #[test]
    fn zero_and_tiny_values_count_in_the_zero_bucket() {
        let mut buckets = NativeBuckets::default();
        buckets.observe(0.0);
        buckets.observe(ZERO_THRESHOLD);
        assert_eq!(buckets.zero_count(), 2);
        assert_eq!(buckets.spans_and_deltas(), (vec![], vec![]));
    }

    #[test]
    fn spans_and_deltas_encode_the_counts_and_bridge_gaps_of_up_to_two() {
        let mut buckets = NativeBuckets::default();
        // Bucket 0 twice, bucket 1 once, bucket 4 three times (gap of 2:
        // bridged), bucket 10 once (gap of 5: a new span), observed out of order.
        for value in [
            inside(10),
            inside(4),
            1.0,
            inside(1),
            inside(4),
            inside(0),
            inside(4),
        ] {
            buckets.observe(value);
        }
        let (spans, deltas) = buckets.spans_and_deltas();
        assert_eq!(spans, vec![(0, 5), (5, 1)]);
        // Counts 2, 1, 0, 0, 3 | 1.
        assert_eq!(deltas, vec![2, -1, -1, 0, 3, -2]);
    }

    #[test]
    fn a_lower_value_later_grows_the_run_downwards() {
        let mut buckets = NativeBuckets::default();
        buckets.observe(1.0);
        buckets.observe(inside(-20));
        let (spans, deltas) = buckets.spans_and_deltas();
        assert_eq!(spans, vec![(-20, 1), (19, 1)]);
        assert_eq!(deltas, vec![1, 0]);
    }
}
