//! The errors of the wire protocol: one [`NetError`] variant per way input can be wrong, and
//! the [`ErrorCode`] sent back to the peer in an `Error` or `Close` frame.
//!
//! A server counts hostile input by [`NetError`] variant (each is distinguishable) and tells
//! the peer the coarser [`NetError::code`]. Nothing here allocates on the hot path except the
//! message of an Arrow error.

use thiserror::Error;

use super::frame::Opcode;

/// Error codes of `Error` and `Close` frames (`docs/protocol.md`, "Error codes").
///
/// Codes a receiver does not know (a newer peer) decode as [`ErrorCode::Unknown`] and are
/// kept, so they can be logged and passed on; they are treated like [`ErrorCode::Internal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A malformed frame or payload: bad header, lying or truncated length, trailing bytes,
    /// invalid UTF-8, a name or token over its cap, a bad boolean. Fatal: the connection is
    /// closed.
    BadFrame,
    /// An opcode byte that names no opcode. Fatal.
    UnknownOpcode,
    /// Flag bits that are undefined, contradictory or not allowed on the opcode. Fatal.
    BadFlags,
    /// A request before a successful `Hello`, or a token that was refused. Fatal.
    Unauthenticated,
    /// A `Hello` with the wrong magic or a version the peer does not speak. Fatal.
    UnsupportedVersion,
    /// A frame longer than the receiver's maximum payload. Fatal (the rest of the frame is
    /// not read, so the stream cannot be resynchronised).
    TooLarge,
    /// An Arrow IPC payload that does not decode, or declares more data than allowed.
    BadArrow,
    /// A compression flag or codec the receiver was not built with.
    UnsupportedCompression,
    /// A push to a source the engine does not have.
    UnknownSource,
    /// A subscribe/unsubscribe for a query the engine does not have.
    UnknownQuery,
    /// Pushed data whose schema does not match the source.
    SchemaMismatch,
    /// The peer sends faster than its allowance.
    RateLimited,
    /// The engine cannot take more now (backpressure); retry later.
    Overloaded,
    /// The server is shutting down.
    ShuttingDown,
    /// A failure inside the receiver, not the peer's fault.
    Internal,
    /// A code this implementation does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The code on the wire.
    pub const fn as_u16(self) -> u16 {
        match self {
            ErrorCode::BadFrame => 1,
            ErrorCode::UnknownOpcode => 2,
            ErrorCode::BadFlags => 3,
            ErrorCode::Unauthenticated => 4,
            ErrorCode::UnsupportedVersion => 5,
            ErrorCode::TooLarge => 6,
            ErrorCode::BadArrow => 7,
            ErrorCode::UnsupportedCompression => 8,
            ErrorCode::UnknownSource => 9,
            ErrorCode::UnknownQuery => 10,
            ErrorCode::SchemaMismatch => 11,
            ErrorCode::RateLimited => 12,
            ErrorCode::Overloaded => 13,
            ErrorCode::ShuttingDown => 14,
            ErrorCode::Internal => 15,
            ErrorCode::Unknown(c) => c,
        }
    }

    /// The code read from the wire; 0 is not an error code (it means "normal" in `Close`)
    /// and decodes as `Unknown(0)`.
    pub const fn from_u16(c: u16) -> ErrorCode {
        match c {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::UnknownOpcode,
            3 => ErrorCode::BadFlags,
            4 => ErrorCode::Unauthenticated,
            5 => ErrorCode::UnsupportedVersion,
            6 => ErrorCode::TooLarge,
            7 => ErrorCode::BadArrow,
            8 => ErrorCode::UnsupportedCompression,
            9 => ErrorCode::UnknownSource,
            10 => ErrorCode::UnknownQuery,
            11 => ErrorCode::SchemaMismatch,
            12 => ErrorCode::RateLimited,
            13 => ErrorCode::Overloaded,
            14 => ErrorCode::ShuttingDown,
            15 => ErrorCode::Internal,
            c => ErrorCode::Unknown(c),
        }
    }

    /// Whether the connection must be closed after this error (the stream can no longer be
    /// trusted, or the peer may not continue).
    pub const fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::BadFrame
                | ErrorCode::UnknownOpcode
                | ErrorCode::BadFlags
                | ErrorCode::Unauthenticated
                | ErrorCode::UnsupportedVersion
                | ErrorCode::TooLarge
                | ErrorCode::ShuttingDown
        )
    }
}

/// Everything that can be wrong with bytes received, or with a message to send.
#[derive(Debug, Error)]
pub enum NetError {
    /// The opcode byte names no opcode.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// Flag bits that no version-1 flag uses.
    #[error("undefined flag bits 0x{bits:02x} on opcode 0x{opcode:02x}")]
    UnknownFlags {
        /// The opcode of the frame.
        opcode: u8,
        /// The undefined bits.
        bits: u8,
    },
    /// Defined flags that this opcode does not allow, or both compression flags at once.
    #[error("flags 0x{flags:02x} are not allowed on opcode 0x{opcode:02x}")]
    FlagsNotAllowed {
        /// The opcode of the frame.
        opcode: u8,
        /// The offending flags.
        flags: u8,
    },
    /// A header's length is over the receiver's maximum for this opcode.
    #[error("frame of {len} bytes is over the maximum of {max} for opcode 0x{opcode:02x}")]
    FrameTooLarge {
        /// The opcode of the frame.
        opcode: u8,
        /// The length the header declares.
        len: u32,
        /// The maximum allowed.
        max: u32,
    },
    /// Fewer bytes than a header needs (8), or than a frame's header declares.
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// A length field inside a payload runs past the end of the payload.
    #[error("{field}: length {len} runs past the {remaining} bytes left in the payload")]
    LyingLength {
        /// The field whose length lies.
        field: &'static str,
        /// The length declared.
        len: usize,
        /// Bytes left in the payload.
        remaining: usize,
    },
    /// A payload ends before a fixed-size field.
    #[error("{field}: payload ends {needed} bytes short")]
    ShortPayload {
        /// The field that is cut.
        field: &'static str,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes after the last field of a fixed-layout payload.
    #[error("{count} trailing bytes after a {opcode:?} payload")]
    TrailingBytes {
        /// The opcode of the frame.
        opcode: Opcode,
        /// How many bytes were left.
        count: usize,
    },
    /// A name, token or message longer than its cap (on decode or encode).
    #[error("{field}: {len} bytes is over the cap of {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A name that is empty where a name is required.
    #[error("{field} is empty")]
    EmptyName {
        /// The field.
        field: &'static str,
    },
    /// A text field that is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A boolean byte other than 0 or 1.
    #[error("{field}: {value} is not a boolean (0 or 1)")]
    BadBool {
        /// The field.
        field: &'static str,
        /// The byte read.
        value: u8,
    },
    /// An `Error` frame with code 0, or an attempt to encode `Close` or `Error` with
    /// `ErrorCode::Unknown(0)` (0 means "no error" and is only written as a normal close).
    #[error("error code 0 in a {opcode:?} frame")]
    ZeroCode {
        /// The opcode of the frame.
        opcode: Opcode,
    },
    /// A `Hello` whose magic number is not `LMNR`: not a laminar client.
    #[error("bad magic 0x{0:08x}: not the laminar protocol")]
    BadMagic(u32),
    /// A protocol version this implementation does not speak.
    #[error("protocol version {got} is not supported (this side speaks {supported})")]
    UnsupportedVersion {
        /// The version offered.
        got: u16,
        /// The version spoken here.
        supported: u16,
    },
    /// An Arrow IPC payload that does not decode (framing, metadata, buffers, a panic in
    /// Arrow's decoder), or that could not be encoded.
    #[error("invalid Arrow IPC: {0}")]
    BadArrow(String),
    /// An Arrow IPC payload that declares more decoded bytes than the limit (a decompression
    /// bomb is refused before anything is allocated).
    #[error("Arrow IPC payload declares {declared} decoded bytes, over the limit of {max}")]
    ArrowTooLarge {
        /// Bytes the payload declares once decompressed.
        declared: u64,
        /// The limit.
        max: u64,
    },
    /// The frame's compression flag and the IPC stream's codec disagree.
    #[error("compression flag says {flag}, the Arrow IPC stream uses {stream}")]
    CompressionMismatch {
        /// What the frame's flags say.
        flag: &'static str,
        /// What the IPC stream records.
        stream: &'static str,
    },
    /// The decoder failed earlier; the stream cannot be resynchronised.
    #[error("the decoder failed earlier; the connection must be closed")]
    Poisoned,
}

impl NetError {
    /// The code to send to the peer for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            NetError::UnknownOpcode(_) => ErrorCode::UnknownOpcode,
            NetError::UnknownFlags { .. } | NetError::FlagsNotAllowed { .. } => ErrorCode::BadFlags,
            NetError::FrameTooLarge { .. } => ErrorCode::TooLarge,
            NetError::Truncated { .. }
            | NetError::LyingLength { .. }
            | NetError::ShortPayload { .. }
            | NetError::TrailingBytes { .. }
            | NetError::FieldTooLong { .. }
            | NetError::EmptyName { .. }
            | NetError::InvalidUtf8 { .. }
            | NetError::BadBool { .. }
            | NetError::ZeroCode { .. }
            | NetError::Poisoned => ErrorCode::BadFrame,
            NetError::BadMagic(_) | NetError::UnsupportedVersion { .. } => {
                ErrorCode::UnsupportedVersion
            }
            NetError::BadArrow(_) | NetError::ArrowTooLarge { .. } => ErrorCode::BadArrow,
            NetError::CompressionMismatch { .. } => ErrorCode::BadArrow,
        }
    }
}
