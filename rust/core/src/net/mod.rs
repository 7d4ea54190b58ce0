//! The wire protocol of laminar: how remote producers and consumers talk to a running engine.
//!
//! This module owns the bytes on the wire and nothing else: the 8-byte frame header
//! ([`frame`]), the typed payload of every opcode ([`message`]), the incremental decoder that
//! turns a TCP byte stream into frames ([`decoder`]), and the Arrow IPC payloads of data
//! frames ([`ipc`]). Those codec modules never open a socket. [`server`] is the wire-protocol
//! server built on them and on the I/O reactor (`crate::io`); it never knows an engine either:
//! it serves a [`server::Service`], which the engine implements above this layer
//! (`engine::service`). The client is pure Python (`python/laminar/client.py`).
//! The normative description is `docs/protocol.md`; this code follows it.
//!
//! ```text
//! +--------+-------+-----------+-------------+------------------------+
//! | opcode | flags | seq (u16) | len (u32)   | payload (len bytes)    |
//! |  u8    |  u8   |    LE     |    LE       |                        |
//! +--------+-------+-----------+-------------+------------------------+
//! ```
//!
//! ```
//! use laminar_core::net::{Flags, FrameDecoder, DecoderConfig, Message};
//!
//! let mut wire = Vec::new();
//! Message::Ping { nonce: 7 }.encode(3, Flags::EXPECTS_RESPONSE, &mut wire)?;
//! let mut dec = FrameDecoder::new(DecoderConfig::default());
//! let mut input = &wire[..];
//! let frame = dec.decode(&mut input)?.expect("one whole frame was fed");
//! assert_eq!(frame.header.seq, 3);
//! assert_eq!(frame.message()?, Message::Ping { nonce: 7 });
//! # Ok::<(), laminar_core::net::NetError>(())
//! ```
//!
//! # Invariants
//!
//! * **No input can panic or exhaust memory.** Every length read from the wire is checked
//!   against the bytes that remain and against a cap before it is used; the decoder checks a
//!   frame's length against its maximum from the header alone, before it allocates or buffers
//!   any of the payload; Arrow IPC payloads are pre-scanned (message framing, declared
//!   decompressed sizes) before Arrow decodes them, and Arrow's decoder runs under
//!   `catch_unwind`.
//! * **Every hostile case has its own [`NetError`] variant** (and an [`ErrorCode`] to send
//!   back), so a server can count each kind.
//! * **Opcode lookup is a table index**: [`Opcode::from_u8`] reads a `const` 256-entry table.
//! * **Decoding borrows**: [`Message`] holds `&str` and `&[u8]` views into the frame's
//!   payload; the only copy on the receive path is from the socket into the frame buffer.
//! * Encoding is the exact inverse of decoding: `decode(encode(m)) == m` for every message
//!   (property-tested in `tests_rs/net_frame.rs`), and every byte is either a declared field or
//!   an error (no trailing bytes are accepted in version 1).

pub mod decoder;
pub mod error;
pub mod frame;
pub mod ipc;
pub mod message;
pub mod server;

pub use decoder::{DecoderConfig, Frame, FrameDecoder};
pub use error::{ErrorCode, NetError};
pub use frame::{Flags, FrameHeader, Opcode, DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAX_CONTROL_PAYLOAD};
pub use ipc::{
    decode_ipc, decode_ipc_buffer, encode_ipc, encode_ipc_into, Compression, IpcLimits,
    DEFAULT_MAX_DECODED_BYTES,
};
pub use message::{
    negotiate_version, Message, MAGIC, MAX_ERROR_MESSAGE_LEN, MAX_NAME_LEN, MAX_TOKEN_LEN,
    PROTOCOL_VERSION,
};
