//! The incremental frame decoder: byte chunks in, whole frames out.
//!
//! A connection feeds whatever the socket returned, split anywhere (inside the header, inside
//! the payload, several frames at once), and takes frames out as they complete:
//!
//! ```
//! use laminar_core::net::{DecoderConfig, Flags, FrameDecoder, Message};
//! let mut wire = Vec::new();
//! Message::Ping { nonce: 1 }.encode(1, Flags::NONE, &mut wire)?;
//! Message::Ping { nonce: 2 }.encode(2, Flags::NONE, &mut wire)?;
//! let mut dec = FrameDecoder::new(DecoderConfig::default());
//! let mut frames = Vec::new();
//! for chunk in wire.chunks(3) {
//!     let mut input = chunk;
//!     while let Some(f) = dec.decode(&mut input)? {
//!         frames.push(f);
//!     }
//! }
//! assert_eq!(frames.len(), 2);
//! dec.finish()?; // no frame left half-read
//! # Ok::<(), laminar_core::net::NetError>(())
//! ```
//!
//! # Invariants
//!
//! * The header is validated ([`FrameHeader::decode`], [`FrameHeader::check_len`]) as soon as
//!   its 8 bytes are in, **before** any payload byte is buffered: an oversized or malformed
//!   frame costs nothing but the error.
//! * Memory held is at most 8 header bytes plus the payload of the frame being read, which is
//!   at most its checked length; the payload buffer grows with the bytes actually received,
//!   not with the length a header claims (a peer that sends a 16 MiB header and stops does
//!   not make the server allocate 16 MiB).
//! * After an error the decoder is poisoned ([`NetError::Poisoned`]): the stream position is
//!   lost and the connection must be closed.
//! * [`FrameDecoder::decode`] returns `Ok(None)` only when it has consumed all of its input.

use super::error::NetError;
use super::frame::{FrameHeader, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use super::ipc::Compression;
use super::message::Message;

/// The first allocation for a payload; larger payloads grow as their bytes arrive.
const FIRST_PAYLOAD_CHUNK: usize = 64 * 1024;

/// Limits of a [`FrameDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// The largest payload of a data frame (Push, Subscribed, Result). Control frames are
    /// capped at [`MAX_CONTROL_PAYLOAD`](super::frame::MAX_CONTROL_PAYLOAD) or this,
    /// whichever is smaller.
    pub max_payload: u32,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// A whole frame: its validated header and its payload (`payload.len() == header.len`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: FrameHeader,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The typed payload, borrowing from [`payload`](Self::payload).
    pub fn message(&self) -> Result<Message<'_>, NetError> {
        Message::decode(self.header.opcode, &self.payload)
    }

    /// The compression the flags announce for the frame's Arrow IPC body.
    pub fn compression(&self) -> Compression {
        Compression::from_flags(self.header.flags)
    }
}

/// Turns a byte stream into [`Frame`]s; see the module documentation.
#[derive(Debug)]
pub struct FrameDecoder {
    config: DecoderConfig,
    head: [u8; HEADER_LEN],
    head_len: usize,
    /// The frame whose payload is being read.
    current: Option<(FrameHeader, Vec<u8>)>,
    poisoned: bool,
}

impl FrameDecoder {
    /// A decoder with these limits.
    pub fn new(config: DecoderConfig) -> Self {
        FrameDecoder {
            config,
            head: [0; HEADER_LEN],
            head_len: 0,
            current: None,
            poisoned: false,
        }
    }

    /// The limits.
    pub fn config(&self) -> DecoderConfig {
        self.config
    }

    /// Consumes bytes from the front of `input` until a frame is complete (returned, with the
    /// rest of `input` left for the next call) or `input` is empty (`Ok(None)`).
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, NetError> {
        if self.poisoned {
            return Err(NetError::Poisoned);
        }
        match self.step(input) {
            Ok(f) => Ok(f),
            Err(e) => {
                self.poisoned = true;
                self.current = None;
                Err(e)
            }
        }
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, NetError> {
        loop {
            if let Some((header, mut payload)) = self.current.take() {
                let total = header.len as usize;
                let n = (total - payload.len()).min(input.len());
                let (now, rest) = input.split_at(n);
                if payload.capacity() - payload.len() < n {
                    // Grow by at least the bytes in hand, doubling, never past the frame's
                    // checked length.
                    let target = (payload.capacity() * 2).clamp(payload.len() + n, total);
                    payload.reserve_exact(target - payload.len());
                }
                payload.extend_from_slice(now);
                *input = rest;
                if payload.len() == total {
                    return Ok(Some(Frame { header, payload }));
                }
                self.current = Some((header, payload));
                return Ok(None);
            }
            if input.is_empty() {
                return Ok(None);
            }
            let n = (HEADER_LEN - self.head_len).min(input.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
            self.head_len += n;
            *input = &input[n..];
            if self.head_len < HEADER_LEN {
                return Ok(None);
            }
            self.head_len = 0;
            let header = FrameHeader::decode(&self.head)?;
            header.check_len(self.config.max_payload)?;
            let payload = Vec::with_capacity((header.len as usize).min(FIRST_PAYLOAD_CHUNK));
            self.current = Some((header, payload));
        }
    }

    /// Whether part of a frame has been read and not returned yet.
    pub fn is_mid_frame(&self) -> bool {
        self.head_len > 0 || self.current.is_some()
    }

    /// Bytes held for the frame being read (header bytes or payload).
    pub fn buffered(&self) -> usize {
        self.head_len + self.current.as_ref().map_or(0, |(_, p)| p.len())
    }

    /// At end of stream: [`NetError::Truncated`] if a frame was cut short.
    pub fn finish(&self) -> Result<(), NetError> {
        if self.poisoned {
            return Err(NetError::Poisoned);
        }
        match &self.current {
            Some((h, p)) => Err(NetError::Truncated {
                needed: HEADER_LEN + h.len as usize,
                available: HEADER_LEN + p.len(),
            }),
            None if self.head_len > 0 => Err(NetError::Truncated {
                needed: HEADER_LEN,
                available: self.head_len,
            }),
            None => Ok(()),
        }
    }
}
