//! Kernels compiled for the CPU they run on: each is one plain loop, built three times
//! (AVX-512, AVX2, and the baseline x86-64 / other-architecture build) and chosen per call
//! from the CPU's features (detected once, then a cached atomic load).
//!
//! Why: the wheel targets baseline x86-64 (SSE2), which has no 64-bit integer min/max or
//! multiply in vector registers, so loops over `i64` stay scalar there. The same loop built
//! with `avx512f`/`avx512dq` (or `avx2`) is vectorised by the compiler. Both kernels here run
//! on every pushed batch (the event-time range check and the key router's hash), on the
//! pushing thread.
//!
//! Invariants: every build of a kernel computes exactly the same result (the variants differ
//! only in the instructions the compiler may use; tests compare every variant the machine
//! supports with the scalar loop). This module must never hold state, allocate beyond the
//! output it is given, or depend on which variant ran.

use crate::hash::fmix64;

/// Minimum and maximum of `values` (`(i64::MAX, i64::MIN)` when empty), in one pass.
pub fn min_max_i64(values: &[i64]) -> (i64, i64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above), the only requirement
            // of a `target_feature(enable = "avx512f")` function; it reads only `values`.
            return unsafe { x86::min_max_avx512(values) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { x86::min_max_avx2(values) };
        }
    }
    min_max_loop(values)
}

/// Sets `out` to the murmur3 finaliser of each value (`out[i] = fmix64(values[i] as u64)`).
pub fn fmix64_i64(values: &[i64], out: &mut Vec<u64>) {
    // Every element is overwritten below: only a change of length costs a fill.
    out.resize(values.len(), 0);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the CPU supports AVX-512DQ (and so AVX-512F, which it implies), checked
            // just above; the kernel writes only `out`, whose length equals `values`'.
            unsafe { x86::fmix64_avx512(values, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { x86::fmix64_avx2(values, out) };
            return;
        }
    }
    fmix64_loop(values, out);
}

#[inline(always)]
fn min_max_loop(values: &[i64]) -> (i64, i64) {
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

#[inline(always)]
fn fmix64_loop(values: &[i64], out: &mut [u64]) {
    for (o, &v) in out.iter_mut().zip(values) {
        *o = fmix64(v as u64);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f")]
    pub(super) fn min_max_avx512(values: &[i64]) -> (i64, i64) {
        super::min_max_loop(values)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn min_max_avx2(values: &[i64]) -> (i64, i64) {
        super::min_max_loop(values)
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) fn fmix64_avx512(values: &[i64], out: &mut [u64]) {
        super::fmix64_loop(values, out)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn fmix64_avx2(values: &[i64], out: &mut [u64]) {
        super::fmix64_loop(values, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Vec<i64>> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as i64
        };
        let mut out = vec![vec![], vec![7], vec![i64::MIN, i64::MAX], vec![-1, 0, 1]];
        for n in [3usize, 8, 15, 16, 17, 63, 64, 65, 1000, 10_001] {
            out.push((0..n).map(|_| next()).collect());
            out.push(
                (0..n)
                    .map(|i| 1_700_000_000_000 + i as i64 / 10 - next().rem_euclid(100))
                    .collect(),
            );
        }
        out
    }

    #[test]
    fn every_variant_agrees_with_the_scalar_loop() {
        for v in samples() {
            let want = (
                v.iter().copied().min().unwrap_or(i64::MAX),
                v.iter().copied().max().unwrap_or(i64::MIN),
            );
            assert_eq!(min_max_loop(&v), want);
            assert_eq!(min_max_i64(&v), want, "{} values", v.len());
            let want_h: Vec<u64> = v.iter().map(|&x| fmix64(x as u64)).collect();
            let mut h = vec![1, 2, 3];
            fmix64_i64(&v, &mut h);
            assert_eq!(h, want_h);
            #[cfg(target_arch = "x86_64")]
            {
                let mut h2 = vec![0u64; v.len()];
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is supported (checked).
                    assert_eq!(unsafe { x86::min_max_avx2(&v) }, want);
                    // SAFETY: AVX2 is supported (checked); `h2` has `v`'s length.
                    unsafe { x86::fmix64_avx2(&v, &mut h2) };
                    assert_eq!(h2, want_h);
                }
                if std::arch::is_x86_feature_detected!("avx512dq") {
                    // SAFETY: AVX-512F/DQ are supported (checked).
                    assert_eq!(unsafe { x86::min_max_avx512(&v) }, want);
                    h2.fill(0);
                    // SAFETY: as above; `h2` has `v`'s length.
                    unsafe { x86::fmix64_avx512(&v, &mut h2) };
                    assert_eq!(h2, want_h);
                }
            }
        }
    }
}
