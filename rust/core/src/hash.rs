//! Fixed hash mixing shared by every hash that must never change: the key router's (a
//! checkpoint holds each core's keys, so routing must be the same in every process and
//! release) and the state image's hash index (part of the file format). Nothing here may
//! depend on a seed chosen at run time or on a library whose algorithm may change.

/// murmur3's 64-bit finaliser: every input bit affects every output bit.
#[inline(always)]
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_pinned() {
        // Routing and state files depend on these exact values.
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
        assert_eq!(fmix64(u64::MAX), 0x64b5_720b_4b82_5f21);
    }
}
