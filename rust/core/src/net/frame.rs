//! The frame header: 8 bytes, little-endian, in front of every payload.
//!
//! | offset | size | field  | meaning                                                  |
//! |--------|------|--------|----------------------------------------------------------|
//! | 0      | 1    | opcode | what the payload is ([`Opcode`])                         |
//! | 1      | 1    | flags  | [`Flags`]: compression, expects-response, final          |
//! | 2      | 2    | seq    | u16 LE: correlates a response with its request           |
//! | 4      | 4    | len    | u32 LE: payload bytes that follow the header             |
//!
//! # Invariants
//!
//! * [`FrameHeader::decode`] accepts exactly the headers [`FrameHeader::encode`] can produce
//!   from a valid header: a known opcode, only defined flag bits, at most one compression
//!   flag, and only flags the opcode allows ([`Opcode::allowed_flags`]). Anything else is a
//!   distinct [`NetError`].
//! * Opcode lookup is one index into a `const` 256-entry table, never a search; unknown
//!   bytes are `None` in the table, never a panic.
//! * The length is checked against a maximum by the decoder ([`FrameHeader::check_len`])
//!   before any payload byte is buffered: control frames are capped at
//!   [`MAX_CONTROL_PAYLOAD`], data frames (Push, Subscribed, Result) at the configured maximum.

use std::fmt;
use std::ops::BitOr;

use super::error::NetError;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;

/// The largest payload of a control frame (every opcode but Push, Subscribed and Result),
/// whatever the configured maximum: control payloads are a few small fields.
pub const MAX_CONTROL_PAYLOAD: u32 = 8 * 1024;

/// The default maximum payload of a data frame: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

/// What a frame's payload is. The numbers are the wire bytes (`docs/protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Client → server, first frame: magic, version, token.
    Hello = 0x01,
    /// Server → client: the handshake succeeded; chosen version, limits, server info.
    Welcome = 0x02,
    /// Either way: liveness probe with a nonce.
    Ping = 0x03,
    /// The answer to a Ping, same nonce.
    Pong = 0x04,
    /// Either way: an error code and message, about the request with the same seq (or the
    /// connection, seq 0).
    Error = 0x05,
    /// Either way: the sender is closing the connection, with a code.
    Close = 0x06,
    /// Client → server: Arrow data for a source, with producer id and sequence.
    Push = 0x10,
    /// Server → client: a push was applied (or was a duplicate).
    Ack = 0x11,
    /// Client → server: start receiving a query's results.
    Subscribe = 0x20,
    /// Server → client: a subscription started; carries the result schema.
    Subscribed = 0x21,
    /// Client → server: stop receiving a query's results.
    Unsubscribe = 0x22,
    /// Server → client: result batches of a subscribed query.
    Result = 0x23,
}

/// Byte → opcode, `None` for bytes that name no opcode.
const OPCODE_TABLE: [Option<Opcode>; 256] = {
    let mut t: [Option<Opcode>; 256] = [None; 256];
    let mut i = 0;
    while i < Opcode::ALL.len() {
        let op = Opcode::ALL[i];
        t[op as usize] = Some(op);
        i += 1;
    }
    t
};

impl Opcode {
    /// Every opcode, in wire order.
    pub const ALL: [Opcode; 12] = [
        Opcode::Hello,
        Opcode::Welcome,
        Opcode::Ping,
        Opcode::Pong,
        Opcode::Error,
        Opcode::Close,
        Opcode::Push,
        Opcode::Ack,
        Opcode::Subscribe,
        Opcode::Subscribed,
        Opcode::Unsubscribe,
        Opcode::Result,
    ];

    /// The opcode of a wire byte: one table index.
    #[inline]
    pub const fn from_u8(b: u8) -> Option<Opcode> {
        OPCODE_TABLE[b as usize]
    }

    /// The flags a frame of this opcode may carry; any other defined flag is
    /// [`NetError::FlagsNotAllowed`].
    pub const fn allowed_flags(self) -> Flags {
        let compression = Flags::COMPRESSED_LZ4.0 | Flags::COMPRESSED_ZSTD.0;
        Flags(match self {
            Opcode::Hello | Opcode::Ping | Opcode::Subscribe | Opcode::Unsubscribe => {
                Flags::EXPECTS_RESPONSE.0
            }
            Opcode::Push => compression | Flags::EXPECTS_RESPONSE.0,
            Opcode::Result => compression | Flags::FINAL.0,
            Opcode::Error => Flags::FINAL.0,
            Opcode::Welcome | Opcode::Pong | Opcode::Close | Opcode::Ack | Opcode::Subscribed => 0,
        })
    }

    /// Whether frames of this opcode carry Arrow data and are bounded by the configured
    /// maximum payload rather than [`MAX_CONTROL_PAYLOAD`].
    pub const fn is_data(self) -> bool {
        matches!(self, Opcode::Push | Opcode::Subscribed | Opcode::Result)
    }

    /// The largest payload allowed for this opcode when data frames may be `max_payload`.
    pub const fn max_payload(self, max_payload: u32) -> u32 {
        if self.is_data() || max_payload < MAX_CONTROL_PAYLOAD {
            max_payload
        } else {
            MAX_CONTROL_PAYLOAD
        }
    }
}

/// The flag byte of a frame header. Bits 4-7 are undefined in version 1 and rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// Bit 0: the Arrow IPC body buffers are LZ4-frame compressed.
    pub const COMPRESSED_LZ4: Flags = Flags(0x01);
    /// Bit 1: the Arrow IPC body buffers are zstd compressed.
    pub const COMPRESSED_ZSTD: Flags = Flags(0x02);
    /// Bit 2: the sender wants a response (Ack, Pong, Welcome, Subscribed) to this request.
    pub const EXPECTS_RESPONSE: Flags = Flags(0x04);
    /// Bit 3: the last frame of a response stream (a subscription's last Result or Error).
    pub const FINAL: Flags = Flags(0x08);
    /// Every defined bit.
    pub const DEFINED: Flags = Flags(0x0f);

    /// The flags of a byte, or `None` if it has undefined bits.
    pub const fn from_bits(bits: u8) -> Option<Flags> {
        if bits & !Flags::DEFINED.0 == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// The byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// These flags without the bits of `other`.
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Flags::COMPRESSED_LZ4, "LZ4"),
            (Flags::COMPRESSED_ZSTD, "ZSTD"),
            (Flags::EXPECTS_RESPONSE, "EXPECTS_RESPONSE"),
            (Flags::FINAL, "FINAL"),
        ];
        write!(f, "Flags(")?;
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    write!(f, "|")?;
                }
                write!(f, "{name}")?;
                first = false;
            }
        }
        write!(f, ")")
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// What the payload is.
    pub opcode: Opcode,
    /// The flags; valid for the opcode.
    pub flags: Flags,
    /// Correlates a response with its request (`docs/protocol.md`, "Sequence numbers").
    pub seq: u16,
    /// Payload bytes after the header.
    pub len: u32,
}

impl FrameHeader {
    /// The 8 wire bytes of this header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.opcode as u8;
        b[1] = self.flags.0;
        b[2..4].copy_from_slice(&self.seq.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes and validates 8 header bytes: the opcode must be known and the flags defined,
    /// allowed on the opcode, with at most one compression flag. The length is not checked
    /// here (see [`check_len`](Self::check_len)).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<FrameHeader, NetError> {
        let opcode = Opcode::from_u8(b[0]).ok_or(NetError::UnknownOpcode(b[0]))?;
        let flags = Flags::from_bits(b[1]).ok_or(NetError::UnknownFlags {
            opcode: b[0],
            bits: b[1] & !Flags::DEFINED.0,
        })?;
        let both = Flags::COMPRESSED_LZ4 | Flags::COMPRESSED_ZSTD;
        let not_allowed = flags.without(opcode.allowed_flags());
        if !not_allowed.is_empty() || flags.contains(both) {
            return Err(NetError::FlagsNotAllowed {
                opcode: b[0],
                flags: b[1],
            });
        }
        Ok(FrameHeader {
            opcode,
            flags,
            seq: u16::from_le_bytes([b[2], b[3]]),
            len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    /// [`decode`](Self::decode) of the first 8 bytes of `b`; [`NetError::Truncated`] when
    /// there are fewer.
    pub fn decode_slice(b: &[u8]) -> Result<FrameHeader, NetError> {
        match b.first_chunk::<HEADER_LEN>() {
            Some(h) => FrameHeader::decode(h),
            None => Err(NetError::Truncated {
                needed: HEADER_LEN,
                available: b.len(),
            }),
        }
    }

    /// Checks the length against the maximum for this opcode when data frames may be
    /// `max_payload` bytes ([`Opcode::max_payload`]).
    pub fn check_len(&self, max_payload: u32) -> Result<(), NetError> {
        let max = self.opcode.max_payload(max_payload);
        if self.len > max {
            return Err(NetError::FrameTooLarge {
                opcode: self.opcode as u8,
                len: self.len,
                max,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_maps_every_opcode_and_nothing_else() {
        let mut known = 0;
        for b in 0..=255u8 {
            if let Some(op) = Opcode::from_u8(b) {
                assert_eq!(op as u8, b);
                known += 1;
            }
        }
        assert_eq!(known, Opcode::ALL.len());
    }

    #[test]
    fn header_round_trip_and_layout() {
        let h = FrameHeader {
            opcode: Opcode::Push,
            flags: Flags::COMPRESSED_ZSTD | Flags::EXPECTS_RESPONSE,
            seq: 0x0102,
            len: 0x0a0b0c0d,
        };
        let b = h.encode();
        assert_eq!(b, [0x10, 0x06, 0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(FrameHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn both_compression_flags_are_refused() {
        let b = [0x10, 0x03, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            FrameHeader::decode(&b),
            Err(NetError::FlagsNotAllowed { .. })
        ));
    }
}
