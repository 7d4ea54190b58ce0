//! Fuzz target: arbitrary bytes through the whole receive path of the wire protocol.
//!
//! The first byte picks the chunk size the stream is fed in (so that frame boundaries fall
//! anywhere) and the data-frame limit; the rest is the byte stream. Every complete frame is
//! decoded as a message, and data frames' Arrow IPC payloads are decoded too (with a small
//! decoded-size limit). Errors are expected; a panic, an abort or a sanitizer report is a bug.
//!
//! One exception: Arrow's IPC reader still panics on some malformed metadata (e.g. an Int
//! field of bit width 7 in `arrow_ipc::convert::get_data_type`), and `decode_ipc` catches
//! those panics by design and returns `NetError::BadArrow`. libfuzzer-sys installs a panic
//! hook that aborts on *every* panic, caught or not, so `init` replaces it with one that is
//! silent while `decode_ipc` runs and aborts (after printing) everywhere else. A panic that
//! escapes `decode_ipc` still aborts: libfuzzer-sys aborts when the target unwinds.
#![no_main]

use std::cell::Cell;

use laminar_core::net::{decode_ipc, DecoderConfig, FrameDecoder, IpcLimits, Message};
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// True while `decode_ipc` (which catches Arrow's panics) runs.
    static IN_DECODE_IPC: Cell<bool> = const { Cell::new(false) };
}

fuzz_target!(
    init: {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_DECODE_IPC.with(Cell::get) {
                abort_hook(info);
            }
        }));
    },
    |data: &[u8]| {
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(knob % 16) + 1;
    let max_payload = 64u32 << (knob >> 4);
    let limits = IpcLimits {
        max_decoded_bytes: 1 << 22,
    };
    let mut dec = FrameDecoder::new(DecoderConfig { max_payload });
    for piece in stream.chunks(chunk) {
        let mut input = piece;
        loop {
            match dec.decode(&mut input) {
                Ok(Some(frame)) => {
                    assert_eq!(frame.payload.len(), frame.header.len as usize);
                    if let Ok(
                        Message::Push { ipc, .. }
                        | Message::Result { ipc, .. }
                        | Message::Subscribed {
                            schema_ipc: ipc, ..
                        },
                    ) = frame.message()
                    {
                        IN_DECODE_IPC.with(|c| c.set(true));
                        let _ = decode_ipc(ipc, frame.compression(), &limits);
                        IN_DECODE_IPC.with(|c| c.set(false));
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish();
    }
);
