//! The record codec: how one record is framed on disk, and how a frame is checked.
//!
//! ```text
//! +------------+------------+----------------------+
//! | len u32 LE | crc u32 LE | payload (len bytes)  |
//! +------------+------------+----------------------+
//! crc = mask(crc32c(len as 4 bytes LE ‖ segment number as 8 bytes LE ‖ payload))
//! mask(c) = c.rotate_right(15) + 0xa282ead8        (RocksDB's crc32c::Mask)
//! ```
//!
//! # Invariants
//!
//! * **`len == 0` is the end of the log**, never a record. The end-of-log marker is 8 zero
//!   bytes; the writer puts one after every group it writes, and a preallocated segment is
//!   zero-filled, so its unused tail reads as a marker. A header with `len == 0` and a nonzero
//!   checksum is damage ([`Damage::BadLength`]), not an end. Empty payloads therefore cannot
//!   be appended. (Without this rule a zero-filled tail would parse as an endless run of valid
//!   empty records: crc32c of nothing is 0.)
//! * **The checksum covers the length and the segment number**, so a length bit flip is
//!   caught by the checksum (not only by luck of the following bytes), and a record left over
//!   in a recycled file fails the check under the file's new segment number. When the file
//!   records the number it was recycled from, such a record is told apart as
//!   [`Damage::StaleRecord`].
//! * **A length above the maximum record size is damage** ([`Damage::BadLength`]): garbage
//!   lengths are rejected before anything is read or allocated for them.
//! * The checksum is stored masked, as RocksDB does, because the checksum of data that itself
//!   contains checksums (a WAL record holding a record) is otherwise weak.
//!
//! Nothing here panics on any input bytes: decoding returns a [`Decoded`] for every slice.

use super::error::Damage;

/// Bytes of the frame before the payload: length and checksum.
pub const RECORD_HEADER_LEN: usize = 8;

/// The end-of-log marker: a record header with length 0 and checksum 0.
pub const END_MARKER: [u8; RECORD_HEADER_LEN] = [0; RECORD_HEADER_LEN];

const MASK_DELTA: u32 = 0xa282_ead8;

/// RocksDB's checksum mask: rotate right by 15 bits and add a constant.
#[inline]
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// The inverse of [`mask`].
#[inline]
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// crc32c of the 12 bytes that precede the payload in the checksum: length ‖ segment number.
#[inline]
fn prefix_crc(len: u32, segment: u64) -> u32 {
    let mut prefix = [0u8; 12];
    prefix[..4].copy_from_slice(&len.to_le_bytes());
    prefix[4..].copy_from_slice(&segment.to_le_bytes());
    crc32c::crc32c(&prefix)
}

/// The masked checksum of a record with this payload in segment `segment`.
#[inline]
pub fn record_crc(segment: u64, payload: &[u8]) -> u32 {
    // A payload that does not fit u32 cannot be framed; callers check the size first, and
    // u32::MAX here would only make the checksum fail.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    mask(crc32c::crc32c_append(prefix_crc(len, segment), payload))
}

/// The masked checksum from the payload's own crc32c (computed before the segment is known,
/// outside any lock), combined with the length and segment number.
#[inline]
pub(crate) fn record_crc_from_payload_crc(segment: u64, len: u32, payload_crc: u32) -> u32 {
    mask(super::crc_combine::crc32c_combine(
        prefix_crc(len, segment),
        payload_crc,
        u64::from(len),
    ))
}

/// Appends the frame of `payload` for segment `segment` to `out`.
///
/// The payload must be non-empty and shorter than 4 GiB (the writer checks both, with a
/// clear error, before framing).
pub fn encode_record(out: &mut Vec<u8>, segment: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(segment, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// A record header as read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The end-of-log marker (8 zero bytes).
    End,
    /// A record of `len` payload bytes with stored checksum `crc` follows.
    Record {
        /// Payload length.
        len: u32,
        /// Stored (masked) checksum.
        crc: u32,
    },
}

/// Parses and sanity-checks an 8-byte record header. Lengths above `max_len` and a zero
/// length with a nonzero checksum are damage.
pub fn parse_header(bytes: [u8; RECORD_HEADER_LEN], max_len: u32) -> Result<Header, Damage> {
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len == 0 {
        return if crc == 0 {
            Ok(Header::End)
        } else {
            Err(Damage::BadLength { len, max: max_len })
        };
    }
    if len > max_len {
        return Err(Damage::BadLength { len, max: max_len });
    }
    Ok(Header::Record { len, crc })
}

/// Checks a record's payload against its stored checksum in segment `segment`. On mismatch,
/// `previous_segment` (the number the file had before it was recycled, if any) tells a stale
/// leftover record ([`Damage::StaleRecord`]) from plain damage ([`Damage::BadChecksum`]).
pub fn verify(
    segment: u64,
    stored_crc: u32,
    payload: &[u8],
    previous_segment: Option<u64>,
) -> Result<(), Damage> {
    if record_crc(segment, payload) == stored_crc {
        return Ok(());
    }
    match previous_segment {
        Some(prev) if prev != segment && record_crc(prev, payload) == stored_crc => {
            Err(Damage::StaleRecord {
                previous_segment: prev,
            })
        }
        _ => Err(Damage::BadChecksum),
    }
}

/// The result of decoding the bytes at one offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record: its payload and the number of bytes its frame takes.
    Record {
        /// The payload.
        payload: &'a [u8],
        /// Header plus payload.
        frame_len: usize,
    },
    /// A clean end of the log: the end-of-log marker, or no bytes at all (end of file exactly
    /// at a record boundary).
    End,
    /// Damage at this offset.
    Invalid(Damage),
}

/// Decodes the frame at the start of `bytes` (everything from the offset to the end of the
/// segment file) for segment `segment`.
pub fn decode_record(
    bytes: &[u8],
    segment: u64,
    max_len: u32,
    previous_segment: Option<u64>,
) -> Decoded<'_> {
    if bytes.is_empty() {
        return Decoded::End;
    }
    let Some(head) = bytes.first_chunk::<RECORD_HEADER_LEN>() else {
        return Decoded::Invalid(Damage::Truncated {
            needed: RECORD_HEADER_LEN as u64,
            available: bytes.len() as u64,
        });
    };
    let (len, crc) = match parse_header(*head, max_len) {
        Ok(Header::End) => return Decoded::End,
        Ok(Header::Record { len, crc }) => (len, crc),
        Err(d) => return Decoded::Invalid(d),
    };
    let frame_len = RECORD_HEADER_LEN + len as usize;
    let Some(payload) = bytes.get(RECORD_HEADER_LEN..frame_len) else {
        return Decoded::Invalid(Damage::Truncated {
            needed: frame_len as u64,
            available: bytes.len() as u64,
        });
    };
    match verify(segment, crc, payload, previous_segment) {
        Ok(()) => Decoded::Record { payload, frame_len },
        Err(d) => Decoded::Invalid(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mask_round_trips_and_changes_value() {
        for c in [0u32, 1, 0xdead_beef, u32::MAX, MASK_DELTA] {
            assert_eq!(unmask(mask(c)), c);
        }
        assert_ne!(mask(0), 0);
    }

    #[test]
    fn zero_bytes_are_end_of_log_not_a_record() {
        // The trap: crc32c of nothing is 0, so [len=0][crc=0] would be a valid empty record.
        assert_eq!(crc32c::crc32c(&[]), 0);
        let zeros = [0u8; 64];
        assert_eq!(decode_record(&zeros, 7, 1 << 20, None), Decoded::End);
        assert_eq!(decode_record(&[], 7, 1 << 20, None), Decoded::End);
        // len 0 with a nonzero crc is damage, not an end.
        let mut h = [0u8; 8];
        h[5] = 1;
        assert!(matches!(
            decode_record(&h, 7, 1 << 20, None),
            Decoded::Invalid(Damage::BadLength { len: 0, .. })
        ));
    }

    #[test]
    fn combined_crc_equals_direct_crc() {
        let p = b"hello, write-ahead log";
        let direct = record_crc(42, p);
        let combined = record_crc_from_payload_crc(42, p.len() as u32, crc32c::crc32c(p));
        assert_eq!(direct, combined);
    }

    #[test]
    fn garbage_length_rejected_before_reading() {
        let mut b = vec![0xffu8; 16];
        b[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            decode_record(&b, 1, 1024, None),
            Decoded::Invalid(Damage::BadLength {
                len: u32::MAX,
                max: 1024
            })
        ));
    }

    #[test]
    fn stale_record_from_previous_segment_is_told_apart() {
        let mut b = Vec::new();
        encode_record(&mut b, 3, b"old data");
        assert!(matches!(
            decode_record(&b, 9, 1024, Some(3)),
            Decoded::Invalid(Damage::StaleRecord {
                previous_segment: 3
            })
        ));
        assert!(matches!(
            decode_record(&b, 9, 1024, None),
            Decoded::Invalid(Damage::BadChecksum)
        ));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            seg in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 1..2048),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut b = Vec::new();
            encode_record(&mut b, seg, &payload);
            prop_assert_eq!(b.len(), RECORD_HEADER_LEN + payload.len());
            b.extend_from_slice(&tail);
            match decode_record(&b, seg, 4096, None) {
                Decoded::Record { payload: p, frame_len } => {
                    prop_assert_eq!(p, &payload[..]);
                    prop_assert_eq!(frame_len, RECORD_HEADER_LEN + payload.len());
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
            // The same bytes in another segment never decode.
            let other = seg.wrapping_add(1);
            prop_assert!(matches!(decode_record(&b, other, 4096, None), Decoded::Invalid(_)));
        }

        #[test]
        fn any_truncation_is_detected(
            seg in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 1..512),
            cut_frac in 0.0f64..1.0,
        ) {
            let mut b = Vec::new();
            encode_record(&mut b, seg, &payload);
            // A cut strictly inside the frame (a cut at 0 is an empty file: the end).
            let cut = 1 + ((b.len() - 1) as f64 * cut_frac) as usize;
            let cut = cut.min(b.len() - 1);
            let d = decode_record(&b[..cut], seg, 4096, None);
            prop_assert!(
                matches!(d, Decoded::Invalid(Damage::Truncated { .. })),
                "cut at {} of {} decoded {:?}", cut, b.len(), d
            );
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            seg in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 1..512),
            bit in any::<proptest::sample::Index>(),
        ) {
            let mut b = Vec::new();
            encode_record(&mut b, seg, &payload);
            let i = bit.index(b.len() * 8);
            b[i / 8] ^= 1 << (i % 8);
            match decode_record(&b, seg, 4096, None) {
                Decoded::Invalid(_) => {}
                // A flip that zeroes a one-bit length leaves [0][crc]: damage unless crc == 0,
                // which the mask makes a 2^-32 event; anything else must be invalid.
                Decoded::End => prop_assert!(b[..8] == END_MARKER),
                Decoded::Record { .. } => prop_assert!(false, "bit flip {} not detected", i),
            }
        }
    }
}
