//! The checkpoint form of operator state: typed, plain-data structs archived with rkyv.
//!
//! Each stateful operator copies what it must remember (group tables, accumulators, open
//! windows, counters) into a plain struct of vectors and numbers, and this module turns that
//! struct into bytes ([`encode`]) and back ([`decode`]). Decoding validates the archive
//! (bytecheck) before anything is read, so a damaged snapshot is an error, never undefined
//! behaviour or a panic. Scratch buffers and hash tables are never saved: a restore rebuilds
//! the tables from the saved keys, so the snapshot does not depend on hash seeds.
//!
//! Snapshots are taken between messages (never inside a batch), so operators never save
//! per-batch scratch. This module must never see a `RecordBatch`, a thread or a file: the
//! checkpoint layer decides where the bytes go.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::{Error, Result};

/// Archives `value` (a snapshot struct) into bytes.
pub fn encode<T>(value: &T) -> Result<Vec<u8>>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rancor::Error>(value)
        .map(|v| v.into_vec())
        .map_err(|e| Error::Snapshot(format!("could not encode operator state: {e}")))
}

/// Validates and unpacks bytes made by [`encode`] for a `T`. `what` names the state in the
/// error (e.g. "window_aggregate").
pub fn decode<T>(bytes: &[u8], what: &str) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    // The archive needs its natural alignment; bytes read from a file or sliced out of a
    // larger checkpoint have none, so copy them into an aligned buffer first.
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned)
        .map_err(|e| Error::Snapshot(format!("the saved state of {what} is damaged: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Sample {
        a: Vec<i64>,
        b: Option<i64>,
        c: Vec<(i64, Vec<u32>)>,
    }

    #[test]
    fn round_trip_and_damage_is_an_error() {
        let s = Sample {
            a: vec![1, -2, 3],
            b: Some(7),
            c: vec![(5, vec![1, 2]), (9, vec![])],
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(decode::<Sample>(&bytes, "sample").unwrap(), s);
        // Truncations never decode into something else silently.
        for cut in 0..bytes.len() {
            if let Ok(got) = decode::<Sample>(&bytes[..cut], "sample") {
                assert_eq!(got, s, "a truncated snapshot decoded to different state");
            }
        }
        let err = decode::<Sample>(&[0xff; 3], "sample").unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
