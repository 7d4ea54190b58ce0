//! The typed payload of every opcode, and its encoding.
//!
//! All integers are little-endian. A *name* is a u16 length then that many bytes of UTF-8;
//! the *rest* of a payload is everything after the last fixed field (Arrow IPC bytes).
//!
//! | opcode      | payload                                                               |
//! |-------------|-----------------------------------------------------------------------|
//! | Hello       | magic u32 (`b"LMNR"`), version u16, token: u16 len + bytes            |
//! | Welcome     | version u16, max_payload u32, server: name (may be empty)             |
//! | Ping / Pong | nonce u64                                                             |
//! | Error       | code u16, message: u16 len + UTF-8                                    |
//! | Close       | code u16 (0 = normal, else an error code)                             |
//! | Push        | producer_id u64, seq u64, source: name, Arrow IPC stream (rest)       |
//! | Ack         | producer_id u64, seq u64, applied u8 (0 or 1)                         |
//! | Subscribe   | query: name                                                           |
//! | Subscribed  | query: name, Arrow IPC stream of the result schema, no batches (rest) |
//! | Unsubscribe | query: name                                                           |
//! | Result      | query: name, Arrow IPC stream (rest)                                  |
//!
//! # Invariants
//!
//! * Decoding checks every length against the bytes left ([`NetError::LyingLength`],
//!   [`NetError::ShortPayload`]) and against its cap ([`NetError::FieldTooLong`]), checks
//!   UTF-8, refuses empty source/query names and trailing bytes after fixed layouts.
//! * Encoding refuses what decoding would refuse (over-long names, empty names, flags the
//!   opcode does not allow, payloads over `u32::MAX`), so a frame this module writes always
//!   decodes back to the same message.
//! * A decoded [`Message`] borrows from the payload: no copy of names, tokens or Arrow bytes.

use super::error::{ErrorCode, NetError};
use super::frame::{Flags, FrameHeader, Opcode, HEADER_LEN};

/// The magic number of `Hello`: the bytes `L M N R` on the wire (a u32 LE read of them).
pub const MAGIC: u32 = u32::from_le_bytes(*b"LMNR");

/// The protocol version this implementation speaks (and the only one so far).
pub const PROTOCOL_VERSION: u16 = 1;

/// The longest source, query or server name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 256;

/// The longest authentication token, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// The longest error message, in bytes of UTF-8.
pub const MAX_ERROR_MESSAGE_LEN: usize = 4096;

/// A decoded payload, borrowing its names and bytes from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Client → server, first frame. The magic is checked on decode and written on encode.
    Hello {
        /// The highest protocol version the client speaks.
        version: u16,
        /// The authentication token (may be empty when the server requires none).
        token: &'a [u8],
    },
    /// Server → client: the handshake succeeded.
    Welcome {
        /// The version the connection speaks from now on (at most the client's).
        version: u16,
        /// The largest data-frame payload the server accepts.
        max_payload: u32,
        /// Free-form server identification, e.g. `laminar 0.1.0`.
        server: &'a str,
    },
    /// Liveness probe.
    Ping {
        /// Echoed in the Pong.
        nonce: u64,
    },
    /// Answer to a Ping.
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// An error about the request with the same header seq (or the connection, seq 0).
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail.
        message: &'a str,
    },
    /// The sender closes the connection after this frame.
    Close {
        /// `None`: a normal close; otherwise why.
        code: Option<ErrorCode>,
    },
    /// Arrow data for a source.
    Push {
        /// Identifies the producer across reconnects (chosen by the client, e.g. random).
        producer_id: u64,
        /// Per-producer sequence: a push with a sequence already applied is acknowledged but
        /// not applied again.
        seq: u64,
        /// The source's name.
        source: &'a str,
        /// An Arrow IPC stream (schema, then batches, then the end marker).
        ipc: &'a [u8],
    },
    /// A push was received: applied, or recognised as a duplicate.
    Ack {
        /// The push's producer.
        producer_id: u64,
        /// The push's sequence.
        seq: u64,
        /// True: applied now; false: it had been applied before (a retry).
        applied: bool,
    },
    /// Start receiving a query's results.
    Subscribe {
        /// The query's name.
        query: &'a str,
    },
    /// A subscription started.
    Subscribed {
        /// The query's name.
        query: &'a str,
        /// An Arrow IPC stream with the result schema and no batches.
        schema_ipc: &'a [u8],
    },
    /// Stop receiving a query's results.
    Unsubscribe {
        /// The query's name.
        query: &'a str,
    },
    /// Result batches of a subscribed query.
    Result {
        /// The query's name.
        query: &'a str,
        /// An Arrow IPC stream.
        ipc: &'a [u8],
    },
}

impl<'a> Message<'a> {
    /// The opcode of this message.
    pub const fn opcode(&self) -> Opcode {
        match self {
            Message::Hello { .. } => Opcode::Hello,
            Message::Welcome { .. } => Opcode::Welcome,
            Message::Ping { .. } => Opcode::Ping,
            Message::Pong { .. } => Opcode::Pong,
            Message::Error { .. } => Opcode::Error,
            Message::Close { .. } => Opcode::Close,
            Message::Push { .. } => Opcode::Push,
            Message::Ack { .. } => Opcode::Ack,
            Message::Subscribe { .. } => Opcode::Subscribe,
            Message::Subscribed { .. } => Opcode::Subscribed,
            Message::Unsubscribe { .. } => Opcode::Unsubscribe,
            Message::Result { .. } => Opcode::Result,
        }
    }

    /// Decodes the payload of a frame of `opcode`.
    pub fn decode(opcode: Opcode, payload: &'a [u8]) -> Result<Message<'a>, NetError> {
        let mut r = Reader { buf: payload };
        let msg = match opcode {
            Opcode::Hello => {
                let magic = r.u32("magic")?;
                if magic != MAGIC {
                    return Err(NetError::BadMagic(magic));
                }
                let version = r.u16("version")?;
                let token = r.prefixed("token", MAX_TOKEN_LEN)?;
                Message::Hello { version, token }
            }
            Opcode::Welcome => Message::Welcome {
                version: r.u16("version")?,
                max_payload: r.u32("max_payload")?,
                server: r.text("server", MAX_NAME_LEN)?,
            },
            Opcode::Ping => Message::Ping {
                nonce: r.u64("nonce")?,
            },
            Opcode::Pong => Message::Pong {
                nonce: r.u64("nonce")?,
            },
            Opcode::Error => {
                let code = r.u16("code")?;
                if code == 0 {
                    return Err(NetError::ZeroCode { opcode });
                }
                Message::Error {
                    code: ErrorCode::from_u16(code),
                    message: r.text("message", MAX_ERROR_MESSAGE_LEN)?,
                }
            }
            Opcode::Close => {
                let code = r.u16("code")?;
                Message::Close {
                    code: (code != 0).then(|| ErrorCode::from_u16(code)),
                }
            }
            Opcode::Push => {
                let producer_id = r.u64("producer_id")?;
                let seq = r.u64("seq")?;
                let source = r.name("source")?;
                return Ok(Message::Push {
                    producer_id,
                    seq,
                    source,
                    ipc: r.buf,
                });
            }
            Opcode::Ack => {
                let producer_id = r.u64("producer_id")?;
                let seq = r.u64("seq")?;
                let applied = match r.u8("applied")? {
                    0 => false,
                    1 => true,
                    value => {
                        return Err(NetError::BadBool {
                            field: "applied",
                            value,
                        })
                    }
                };
                Message::Ack {
                    producer_id,
                    seq,
                    applied,
                }
            }
            Opcode::Subscribe => Message::Subscribe {
                query: r.name("query")?,
            },
            Opcode::Unsubscribe => Message::Unsubscribe {
                query: r.name("query")?,
            },
            Opcode::Subscribed => {
                let query = r.name("query")?;
                return Ok(Message::Subscribed {
                    query,
                    schema_ipc: r.buf,
                });
            }
            Opcode::Result => {
                let query = r.name("query")?;
                return Ok(Message::Result { query, ipc: r.buf });
            }
        };
        if !r.buf.is_empty() {
            return Err(NetError::TrailingBytes {
                opcode,
                count: r.buf.len(),
            });
        }
        Ok(msg)
    }

    /// Bytes of the payload (without the header).
    pub fn payload_len(&self) -> usize {
        match self {
            Message::Hello { token, .. } => 4 + 2 + 2 + token.len(),
            Message::Welcome { server, .. } => 2 + 4 + 2 + server.len(),
            Message::Ping { .. } | Message::Pong { .. } => 8,
            Message::Error { message, .. } => 2 + 2 + message.len(),
            Message::Close { .. } => 2,
            Message::Push { source, ipc, .. } => 8 + 8 + 2 + source.len() + ipc.len(),
            Message::Ack { .. } => 8 + 8 + 1,
            Message::Subscribe { query } | Message::Unsubscribe { query } => 2 + query.len(),
            Message::Subscribed {
                query,
                schema_ipc: ipc,
            }
            | Message::Result { query, ipc } => 2 + query.len() + ipc.len(),
        }
    }

    /// Appends the whole frame (header and payload) to `out`.
    pub fn encode(&self, seq: u16, flags: Flags, out: &mut Vec<u8>) -> Result<(), NetError> {
        let tail = self.encode_head(seq, flags, out)?;
        out.extend_from_slice(tail);
        Ok(())
    }

    /// Appends the header and the payload up to its Arrow IPC bytes to `out`, and returns
    /// those bytes (empty for messages without them): a caller can send the two slices with
    /// one vectored write instead of copying the Arrow data.
    ///
    /// Refuses what a receiver would refuse: flags the opcode does not allow, names or tokens
    /// over their caps, empty source/query names, a payload over `u32::MAX` bytes. Nothing
    /// is appended on error.
    pub fn encode_head(
        &self,
        seq: u16,
        flags: Flags,
        out: &mut Vec<u8>,
    ) -> Result<&'a [u8], NetError> {
        let opcode = self.opcode();
        let header_probe = FrameHeader {
            opcode,
            flags,
            seq,
            len: 0,
        };
        // The header check is the decoder's: encode and decode accept the same flags.
        FrameHeader::decode(&header_probe.encode())?;
        self.check_fields()?;
        let len = self.payload_len();
        let len = u32::try_from(len).map_err(|_| NetError::FieldTooLong {
            field: "payload",
            len,
            max: u32::MAX as usize,
        })?;
        let header = FrameHeader {
            opcode,
            flags,
            seq,
            len,
        };
        out.reserve(HEADER_LEN + len as usize);
        out.extend_from_slice(&header.encode());
        let mut tail: &'a [u8] = &[];
        match *self {
            Message::Hello { version, token } => {
                out.extend_from_slice(&MAGIC.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
                put_prefixed(out, token);
            }
            Message::Welcome {
                version,
                max_payload,
                server,
            } => {
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&max_payload.to_le_bytes());
                put_prefixed(out, server.as_bytes());
            }
            Message::Ping { nonce } | Message::Pong { nonce } => {
                out.extend_from_slice(&nonce.to_le_bytes())
            }
            Message::Error { code, message } => {
                out.extend_from_slice(&code.as_u16().to_le_bytes());
                put_prefixed(out, message.as_bytes());
            }
            Message::Close { code } => {
                let c = code.map_or(0, ErrorCode::as_u16);
                out.extend_from_slice(&c.to_le_bytes());
            }
            Message::Push {
                producer_id,
                seq,
                source,
                ipc,
            } => {
                out.extend_from_slice(&producer_id.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                put_prefixed(out, source.as_bytes());
                tail = ipc;
            }
            Message::Ack {
                producer_id,
                seq,
                applied,
            } => {
                out.extend_from_slice(&producer_id.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                out.push(u8::from(applied));
            }
            Message::Subscribe { query } | Message::Unsubscribe { query } => {
                put_prefixed(out, query.as_bytes())
            }
            Message::Subscribed {
                query,
                schema_ipc: ipc,
            }
            | Message::Result { query, ipc } => {
                put_prefixed(out, query.as_bytes());
                tail = ipc;
            }
        }
        Ok(tail)
    }

    /// The caps and non-empty rules decoding applies, checked before encoding.
    fn check_fields(&self) -> Result<(), NetError> {
        fn cap(field: &'static str, len: usize, max: usize) -> Result<(), NetError> {
            if len > max {
                Err(NetError::FieldTooLong { field, len, max })
            } else {
                Ok(())
            }
        }
        fn name(field: &'static str, s: &str) -> Result<(), NetError> {
            if s.is_empty() {
                return Err(NetError::EmptyName { field });
            }
            cap(field, s.len(), MAX_NAME_LEN)
        }
        match self {
            Message::Hello { token, .. } => cap("token", token.len(), MAX_TOKEN_LEN),
            Message::Welcome { server, .. } => cap("server", server.len(), MAX_NAME_LEN),
            Message::Close { code: Some(c) } | Message::Error { code: c, .. }
                if c.as_u16() == 0 =>
            {
                Err(NetError::ZeroCode {
                    opcode: self.opcode(),
                })
            }
            Message::Error { message, .. } => cap("message", message.len(), MAX_ERROR_MESSAGE_LEN),
            Message::Push { source, .. } => name("source", source),
            Message::Subscribe { query }
            | Message::Unsubscribe { query }
            | Message::Subscribed { query, .. }
            | Message::Result { query, .. } => name("query", query),
            _ => Ok(()),
        }
    }
}

/// The version a server speaks with a client that offers `offered` (the highest the client
/// speaks), or [`NetError::UnsupportedVersion`] when there is none in common.
pub fn negotiate_version(offered: u16) -> Result<u16, NetError> {
    if offered == 0 {
        return Err(NetError::UnsupportedVersion {
            got: offered,
            supported: PROTOCOL_VERSION,
        });
    }
    Ok(offered.min(PROTOCOL_VERSION))
}

fn put_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers checked the caps, all far below u16::MAX.
    let len = bytes.len().min(u16::MAX as usize) as u16;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

/// A cursor over a payload that checks every read.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], NetError> {
        match self.buf.split_first_chunk::<N>() {
            Some((head, rest)) => {
                self.buf = rest;
                Ok(*head)
            }
            None => Err(NetError::ShortPayload {
                field,
                needed: N - self.buf.len(),
            }),
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, NetError> {
        Ok(self.take::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, NetError> {
        Ok(u16::from_le_bytes(self.take(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, NetError> {
        Ok(u32::from_le_bytes(self.take(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, NetError> {
        Ok(u64::from_le_bytes(self.take(field)?))
    }

    /// A u16 length, checked against `max` and the bytes left, then that many bytes.
    fn prefixed(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], NetError> {
        let len = self.u16(field)? as usize;
        if len > max {
            return Err(NetError::FieldTooLong { field, len, max });
        }
        if len > self.buf.len() {
            return Err(NetError::LyingLength {
                field,
                len,
                remaining: self.buf.len(),
            });
        }
        let (bytes, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(bytes)
    }

    /// A prefixed UTF-8 string of at most `max` bytes (may be empty).
    fn text(&mut self, field: &'static str, max: usize) -> Result<&'a str, NetError> {
        let b = self.prefixed(field, max)?;
        std::str::from_utf8(b).map_err(|_| NetError::InvalidUtf8 { field })
    }

    /// A source or query name: prefixed UTF-8, 1 to [`MAX_NAME_LEN`] bytes.
    fn name(&mut self, field: &'static str) -> Result<&'a str, NetError> {
        let s = self.text(field, MAX_NAME_LEN)?;
        if s.is_empty() {
            return Err(NetError::EmptyName { field });
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_lmnr_on_the_wire() {
        let mut out = Vec::new();
        Message::Hello {
            version: 1,
            token: b"t",
        }
        .encode(0, Flags::NONE, &mut out)
        .unwrap();
        assert_eq!(&out[8..12], b"LMNR");
    }

    #[test]
    fn push_head_and_tail_split() {
        let mut head = Vec::new();
        let msg = Message::Push {
            producer_id: 1,
            seq: 2,
            source: "s",
            ipc: b"ipc-bytes",
        };
        let tail = msg.encode_head(9, Flags::NONE, &mut head).unwrap();
        assert_eq!(tail, b"ipc-bytes");
        assert_eq!(head.len(), 8 + 8 + 8 + 2 + 1);
        let h = FrameHeader::decode_slice(&head).unwrap();
        assert_eq!(h.len as usize, head.len() - 8 + tail.len());
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate_version(1).unwrap(), 1);
        assert_eq!(negotiate_version(9).unwrap(), PROTOCOL_VERSION);
        assert!(negotiate_version(0).is_err());
    }
}
