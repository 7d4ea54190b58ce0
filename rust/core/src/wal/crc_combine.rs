//! Joining crc32c checksums: the crc32c of `a ‖ b` from the crc32c of `a`, the crc32c of `b`
//! and the length of `b`, without reading either. The WAL computes a record's payload
//! checksum before it takes its lock (the segment number, which the checksum also covers,
//! is only known under it) and joins it to the checksum of the length and segment number
//! there, once per record.
//!
//! # Design
//!
//! A CRC is the remainder of a polynomial over GF(2) modulo the generator `P`. Appending
//! `n` bytes to `a` multiplies `a`'s remainder by `x^(8n)` before `b`'s remainder is added
//! (the initial and final inversions of crc32c cancel out in that sum), so
//! `crc(a ‖ b) = crc(a) · x^(8n) mod P  ⊕  crc(b)`. `x^(8n) mod P` is a product of the
//! precomputed powers `x^(2^k) mod P`, one per set bit of `8n`, and each product is a 32-step
//! shift-and-add: about 20 multiplications for a 256 KiB record, well under a microsecond.
//! The `crc32c` crate's own `crc32c_combine` squares 32×32 bit matrices for every bit of
//! the length instead, tens of microseconds per record, which showed up in profiles of the
//! durable push path.
//!
//! Representation: bit-reflected, as crc32c computes, so bit 31 holds the coefficient of
//! `x^0` and bit 0 that of `x^31`.
//!
//! Must never touch data: this is arithmetic on checksums only.

/// The Castagnoli generator polynomial, bit-reflected, without its `x^32` term.
const POLY: u32 = 0x82F6_3B78;

/// The polynomial `1` (`x^0`).
const ONE: u32 = 1 << 31;

/// `a · b mod P`.
const fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut bit = ONE;
    while bit != 0 {
        if a & bit != 0 {
            product ^= b;
        }
        // b := b · x mod P: a shift toward x^31, folding an x^32 back through P.
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        bit >>= 1;
    }
    product
}

/// Powers kept: `x^(2^k)` for `k < POWERS` covers any byte length below `2^(POWERS - 3)`.
const POWERS: usize = 67;

/// `X_POW_2K[k] = x^(2^k) mod P`.
const X_POW_2K: [u32; POWERS] = {
    let mut t = [0u32; POWERS];
    t[0] = ONE >> 1; // x^1
    let mut k = 1;
    while k < POWERS {
        t[k] = mul_mod(t[k - 1], t[k - 1]);
        k += 1;
    }
    t
};

/// `x^(8 · bytes) mod P`: the factor that appending `bytes` bytes applies to a checksum.
fn shift_factor(bytes: u64) -> u32 {
    let mut factor = ONE;
    let mut rest = bytes;
    // Bit i of `bytes` is bit i + 3 of the exponent 8 · bytes.
    let mut k = 3;
    while rest != 0 {
        if rest & 1 != 0 {
            factor = mul_mod(factor, X_POW_2K[k]);
        }
        rest >>= 1;
        k += 1;
    }
    factor
}

/// The crc32c of `a ‖ b`, given `crc_a = crc32c(a)`, `crc_b = crc32c(b)` and `len_b = b.len()`.
pub(crate) fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    mul_mod(shift_factor(len_b), crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_powers_are_repeated_squares_of_x() {
        // x^2 and x^4 are plain shifts while below degree 32.
        assert_eq!(X_POW_2K[1], ONE >> 2);
        assert_eq!(X_POW_2K[2], ONE >> 4);
        assert_eq!(X_POW_2K[4], ONE >> 16);
        // x^32 = P's lower terms: the first power that folds.
        assert_eq!(X_POW_2K[5], POLY);
        assert_eq!(mul_mod(ONE, 0xdead_beef), 0xdead_beef);
    }

    #[test]
    fn joins_like_appending() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for split in [0, 1, 7, 12, 4096, 65_535, 262_144, 299_999, 300_000] {
            let (a, b) = data.split_at(split);
            assert_eq!(
                crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64),
                crc32c::crc32c(&data),
                "split at {split}"
            );
        }
    }

    #[test]
    fn agrees_with_the_crate_on_lengths_up_to_four_gib() {
        for len in [1u64, 255, 1 << 20, (1 << 32) - 1, 1 << 32] {
            for (a, b) in [(0u32, 0u32), (0x1234_5678, 0x9abc_def0), (u32::MAX, 1)] {
                assert_eq!(
                    crc32c_combine(a, b, len),
                    crc32c::crc32c_combine(a, b, len as usize),
                    "len {len}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn any_split_of_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048), at in any::<prop::sample::Index>()) {
            let split = at.index(data.len() + 1);
            let (a, b) = data.split_at(split);
            prop_assert_eq!(
                crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64),
                crc32c::crc32c(&data)
            );
        }
    }
}
