//! The handlers of the server's routing table (one per opcode a client may send) and the
//! encoding of results into frames that fit the frame limit.
//!
//! Each handler serves one decoded frame of one connection: it may answer on that connection,
//! change the connection's or the loop's state, or return a [`Reject`] (an `Error` frame, and
//! a closed connection when fatal). Handlers never block and never touch a socket: output
//! goes to the connection's bounded queue, which the loop sends.

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_schema::{Schema, SchemaRef};

use std::sync::Arc;

use super::{Conn, QuerySubs, Shared};
use crate::net::decoder::Frame;
use crate::net::error::{ErrorCode, NetError};
use crate::net::frame::{Flags, FrameHeader};
use crate::net::ipc::{decode_ipc_buffer, encode_ipc, Compression};
use crate::net::message::{negotiate_version, Message};
use crate::net::server::{
    constant_time_eq, Counter, Middleware, Reject, ServerMetrics, ServiceError,
};

pub(super) fn on_ignore(_: &mut Shared, _: u64, _: &mut Conn, f: Frame) -> Result<(), Reject> {
    f.message().map(|_| ()).map_err(|e| bad_frame(&e))
}

pub(super) fn bad_frame(e: &NetError) -> Reject {
    let counter = match e {
        NetError::BadMagic(_) | NetError::UnsupportedVersion { .. } => Counter::BadVersion,
        NetError::BadArrow(_)
        | NetError::ArrowTooLarge { .. }
        | NetError::CompressionMismatch { .. } => Counter::BadArrow,
        _ => Counter::BadFrame,
    };
    Reject::new(e.code(), e.to_string(), counter)
}

pub(super) fn on_hello(sh: &mut Shared, _: u64, conn: &mut Conn, f: Frame) -> Result<(), Reject> {
    if conn.ctx.authenticated {
        return Err(Reject::new(
            ErrorCode::BadFrame,
            "a second Hello after the handshake",
            Counter::BadFrame,
        ));
    }
    let Message::Hello { version, token } = f.message().map_err(|e| bad_frame(&e))? else {
        return Err(bad_frame(&NetError::Poisoned));
    };
    let version = negotiate_version(version).map_err(|e| bad_frame(&e))?;
    if let Some(expected) = &sh.config.token {
        if !constant_time_eq(token, expected) {
            return Err(Reject::new(
                ErrorCode::Unauthenticated,
                "the token was refused",
                Counter::Unauthenticated,
            ));
        }
    }
    conn.ctx.authenticated = true;
    conn.send_msg(
        &Message::Welcome {
            version,
            max_payload: sh.config.max_payload,
            server: &sh.config.server_info,
        },
        f.header.seq,
        Flags::NONE,
        &sh.metrics,
    );
    Ok(())
}

pub(super) fn on_ping(sh: &mut Shared, _: u64, conn: &mut Conn, f: Frame) -> Result<(), Reject> {
    let Message::Ping { nonce } = f.message().map_err(|e| bad_frame(&e))? else {
        return Err(bad_frame(&NetError::Poisoned));
    };
    conn.send_msg(
        &Message::Pong { nonce },
        f.header.seq,
        Flags::NONE,
        &sh.metrics,
    );
    Ok(())
}

pub(super) fn on_close(sh: &mut Shared, _: u64, conn: &mut Conn, f: Frame) -> Result<(), Reject> {
    f.message().map_err(|e| bad_frame(&e))?;
    conn.close_with(None, &sh.metrics, sh.config.shutdown_grace);
    Ok(())
}

pub(super) fn on_push(sh: &mut Shared, _: u64, conn: &mut Conn, f: Frame) -> Result<(), Reject> {
    let header: FrameHeader = f.header;
    let (producer_id, seq, source, offset) = match f.message().map_err(|e| bad_frame(&e))? {
        Message::Push {
            producer_id,
            seq,
            source,
            ipc,
        } => (
            producer_id,
            seq,
            source.to_string(),
            f.payload.len() - ipc.len(),
        ),
        _ => return Err(bad_frame(&NetError::Poisoned)),
    };
    let key = (producer_id, source);
    let duplicate = seq != 0 && sh.dedup.get(&key).is_some_and(|&last| seq <= last);
    let applied = if duplicate {
        sh.metrics.inc(Counter::DuplicatePushes);
        false
    } else {
        let compression = f.compression();
        let len = f.payload.len();
        let buffer = Buffer::from_vec(f.payload).slice_with_length(offset, len - offset);
        let (_, batches) =
            decode_ipc_buffer(buffer, compression, &sh.limits).map_err(|e| bad_frame(&e))?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        sh.chain.check_push(&mut conn.ctx, rows)?;
        sh.service
            .push(&key.1, batches)
            .map_err(|e| Reject::new(e.code, e.message, Counter::ServiceErrors))?;
        if seq != 0 {
            sh.dedup.insert(key.clone(), seq);
        }
        sh.metrics.inc(Counter::Pushes);
        sh.metrics.add(Counter::RowsIn, rows as u64);
        sh.dirty = true;
        true
    };
    if header.flags.contains(Flags::EXPECTS_RESPONSE) {
        conn.send_msg(
            &Message::Ack {
                producer_id,
                seq,
                applied,
            },
            header.seq,
            Flags::NONE,
            &sh.metrics,
        );
    }
    Ok(())
}

/// An IPC stream of `schema` (or of no columns) without batches.
pub(super) fn schema_ipc(schema: Option<&SchemaRef>) -> Vec<u8> {
    let empty: SchemaRef = Arc::new(Schema::empty());
    encode_ipc(schema.unwrap_or(&empty), &[], Compression::None).unwrap_or_default()
}

/// Ends a subscription: its last (empty) Result, with FINAL.
pub(super) fn final_result(
    conn: &mut Conn,
    query: &str,
    seq: u16,
    schema: Option<&SchemaRef>,
    m: &ServerMetrics,
) {
    let ipc = schema_ipc(schema);
    conn.send_msg(&Message::Result { query, ipc: &ipc }, seq, Flags::FINAL, m);
}

pub(super) fn on_subscribe(
    sh: &mut Shared,
    id: u64,
    conn: &mut Conn,
    f: Frame,
) -> Result<(), Reject> {
    let Message::Subscribe { query } = f.message().map_err(|e| bad_frame(&e))? else {
        return Err(bad_frame(&NetError::Poisoned));
    };
    let schema = sh
        .service
        .subscribe(query)
        .map_err(|e| Reject::new(e.code, e.message, Counter::ServiceErrors))?;
    let qs = sh
        .subs
        .entry(query.to_string())
        .or_insert_with(|| QuerySubs {
            schema: None,
            subscribers: Vec::new(),
            stalled: false,
        });
    if qs.schema.is_none() {
        qs.schema = schema;
    }
    if let Some(old) = conn.subs.insert(query.to_string(), f.header.seq) {
        final_result(conn, query, old, qs.schema.as_ref(), &sh.metrics);
        qs.subscribers.retain(|&(c, _)| c != id);
    }
    qs.subscribers.push((id, f.header.seq));
    let ipc = schema_ipc(qs.schema.as_ref());
    conn.send_msg(
        &Message::Subscribed {
            query,
            schema_ipc: &ipc,
        },
        f.header.seq,
        Flags::NONE,
        &sh.metrics,
    );
    Ok(())
}

pub(super) fn on_unsubscribe(
    sh: &mut Shared,
    id: u64,
    conn: &mut Conn,
    f: Frame,
) -> Result<(), Reject> {
    let Message::Unsubscribe { query } = f.message().map_err(|e| bad_frame(&e))? else {
        return Err(bad_frame(&NetError::Poisoned));
    };
    let Some(seq) = conn.subs.remove(query) else {
        return Err(Reject::new(
            ErrorCode::UnknownQuery,
            format!("query '{query}' is not subscribed on this connection"),
            Counter::ServiceErrors,
        ));
    };
    let schema = sh.subs.get_mut(query).and_then(|qs| {
        qs.subscribers.retain(|&(c, _)| c != id);
        qs.schema.clone()
    });
    final_result(conn, query, seq, schema.as_ref(), &sh.metrics);
    Ok(())
}

/// `msg` cut (at a character boundary) to the longest error message the protocol allows.
/// Room for a Result frame's fixed fields besides the query name and the IPC bytes.
pub(super) const RESULT_HEAD_ROOM: usize = 64;

/// Appends the rows of `batches` to `out` as Arrow IPC streams (with their row counts) of at
/// most `limit` bytes each: a run of batches that does not fit is halved (by batches, then by
/// rows) until it does. A single row larger than `limit` is an error.
pub(super) fn encode_results(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    limit: usize,
    out: &mut Vec<(Vec<u8>, usize)>,
) -> Result<(), ServiceError> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows == 0 {
        return Ok(());
    }
    let ipc = encode_ipc(schema, batches, Compression::None).map_err(|e| ServiceError {
        code: ErrorCode::Internal,
        message: format!("cannot encode results: {e}"),
    })?;
    if ipc.len() <= limit {
        out.push((ipc, rows));
        return Ok(());
    }
    match batches {
        [one] if one.num_rows() <= 1 => Err(ServiceError {
            code: ErrorCode::TooLarge,
            message: format!(
                "a result row takes {} bytes, more than the frame limit of {limit}",
                ipc.len()
            ),
        }),
        [one] => {
            let half = one.num_rows() / 2;
            encode_results(schema, &[one.slice(0, half)], limit, out)?;
            encode_results(
                schema,
                &[one.slice(half, one.num_rows() - half)],
                limit,
                out,
            )
        }
        many => {
            let (a, b) = many.split_at(many.len() / 2);
            encode_results(schema, a, limit, out)?;
            encode_results(schema, b, limit, out)
        }
    }
}

pub(super) fn truncate_message(msg: &str) -> &str {
    let mut end = msg.len().min(crate::net::message::MAX_ERROR_MESSAGE_LEN);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    &msg[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    fn batch(from: i64, rows: usize, text: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + rows as i64)),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|_| "x".repeat(text)),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn results_are_split_to_fit_the_frame_limit_and_none_is_lost() {
        let batches = vec![
            batch(0, 1000, 40),
            batch(1000, 3, 40),
            batch(1003, 2000, 40),
        ];
        let schema = batches[0].schema();
        let limit = 20_000;
        let mut chunks = Vec::new();
        encode_results(&schema, &batches, limit, &mut chunks).unwrap();
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let mut ids = Vec::new();
        for (ipc, rows) in &chunks {
            assert!(ipc.len() <= limit, "chunk of {} bytes", ipc.len());
            let (_, got) = crate::net::ipc::decode_ipc(
                ipc,
                Compression::None,
                &crate::net::ipc::IpcLimits::default(),
            )
            .unwrap();
            assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), *rows);
            for b in got {
                let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                ids.extend(col.values().iter().copied());
            }
        }
        assert_eq!(
            ids,
            (0..3003).collect::<Vec<i64>>(),
            "every row once, in order"
        );
    }

    #[test]
    fn a_row_larger_than_the_limit_is_an_error_not_a_silent_drop() {
        let b = batch(0, 1, 50_000);
        let mut chunks = Vec::new();
        let err = encode_results(&b.schema(), &[b], 20_000, &mut chunks).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        assert!(chunks.is_empty());
    }
}
