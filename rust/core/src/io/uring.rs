//! The io_uring backend of [`IoReactor`].
//!
//! Each accepted operation gets a slot in `slots` whose index is the entry's `user_data`;
//! the slot owns the operation's buffer until its completion-queue entry arrives. Linked
//! submissions use `IOSQE_IO_LINK`. Waiting uses `io_uring_enter` with `EXT_ARG` (a timeout
//! without a timeout operation); the kernel must have `EXT_ARG` (5.11+) and support every
//! opcode used, otherwise [`UringReactor::new`] fails and [`open_reactor`](super::open_reactor)
//! falls back to epoll.
//!
//! # Invariants
//!
//! * A buffer's heap memory is handed to the kernel only while its `Vec` sits in a slot; the
//!   `Vec` is not touched (no push, no reallocation) until the slot's completion arrives.
//!   Moving the `Vec` value (e.g. when `slots` grows) does not move its heap memory.
//! * At most `max_in_flight` operations (the completion queue's size) are in flight, so the
//!   completion queue cannot overflow.
//! * **Drop**: every in-flight operation is cancelled (`IORING_OP_ASYNC_CANCEL`) and the
//!   reactor waits for all their completions before any buffer is freed; operations the
//!   kernel cannot cancel (a write running in an io-wq worker) are waited for. If some are
//!   still in flight after [`DROP_DRAIN_TIMEOUT`], their buffers are leaked deliberately:
//!   closing the ring does not synchronously stop the kernel, and a leak is better than a
//!   write into freed memory.

use std::io;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::{
    admit, chain_len, check_batch, errno_result, Backend, Completion, IoError, IoReactor, Op,
    OpKind, ReactorConfig, Submission, Token, DROP_DRAIN_TIMEOUT,
};

/// The `user_data` of cancel requests, whose completions are ignored.
const CANCEL_USER_DATA: u64 = u64::MAX;

#[derive(Debug)]
struct InFlight {
    token: Token,
    kind: OpKind,
    buf: Option<Vec<u8>>,
    /// `buf.len()` when a Recv was submitted (bytes are received after it).
    base_len: usize,
}

/// The io_uring reactor; see the module documentation.
pub struct UringReactor {
    ring: IoUring,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    in_flight: usize,
    max_in_flight: usize,
    /// Reused by `reap`: (user_data, result) of the entries taken off the completion queue.
    cqes: Vec<(u64, i32)>,
}

impl std::fmt::Debug for UringReactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReactor")
            .field("in_flight", &self.in_flight)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl UringReactor {
    /// Sets up a ring (`config.entries`, SQPOLL if `config.sqpoll_idle_ms`), and checks the
    /// features and opcodes this backend needs.
    pub fn new(config: &ReactorConfig) -> Result<Self, IoError> {
        let entries = config.entries.max(1).next_power_of_two();
        let mut builder = IoUring::builder();
        builder.setup_cqsize(entries.saturating_mul(2));
        if let Some(idle) = config.sqpoll_idle_ms {
            builder.setup_sqpoll(idle);
        }
        let ring = builder.build(entries).map_err(|source| IoError::Setup {
            backend: "uring",
            source,
        })?;
        if !ring.params().is_feature_ext_arg() {
            return Err(IoError::MissingFeature("EXT_ARG (kernel 5.11+)"));
        }
        if !ring.params().is_feature_nodrop() {
            return Err(IoError::MissingFeature("NODROP"));
        }
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|source| IoError::Setup {
                backend: "uring",
                source,
            })?;
        let needed = [
            (opcode::Accept::CODE, "Accept"),
            (opcode::Recv::CODE, "Recv"),
            (opcode::Send::CODE, "Send"),
            (opcode::Write::CODE, "Write"),
            (opcode::Fsync::CODE, "Fsync"),
            (opcode::AsyncCancel::CODE, "AsyncCancel"),
        ];
        for (code, name) in needed {
            if !probe.is_supported(code) {
                return Err(IoError::MissingFeature(name));
            }
        }
        let max_in_flight = ring.params().cq_entries() as usize;
        Ok(UringReactor {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            max_in_flight: max_in_flight.min(config.max_in_flight()),
            cqes: Vec::new(),
        })
    }

    /// Puts `s` into a slot and builds its submission-queue entry.
    fn prepare(&mut self, s: Submission) -> squeue::Entry {
        let kind = s.op.kind();
        let (fd, buf, offset) = match s.op {
            Op::Accept { fd } | Op::Fdatasync { fd } => (fd, None, 0),
            Op::Recv { fd, buf } | Op::Send { fd, buf } => (fd, Some(buf), 0),
            Op::WriteAt { fd, buf, offset } => (fd, Some(buf), offset),
            Op::Nop => (-1, None, 0),
        };
        let base_len = buf.as_ref().map_or(0, Vec::len);
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let entry = self.slots[slot].insert(InFlight {
            token: s.token,
            kind,
            buf,
            base_len,
        });
        let fd = types::Fd(fd);
        let sqe = match (kind, entry.buf.as_mut()) {
            (OpKind::Accept, _) => {
                opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                    .build()
            }
            (OpKind::Recv, Some(buf)) => {
                let spare = buf.spare_capacity_mut();
                let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
                // The pointer is to the spare capacity of a Vec owned by the slot until the
                // completion arrives (module invariants).
                opcode::Recv::new(fd, spare.as_mut_ptr().cast(), len).build()
            }
            (OpKind::Send, Some(buf)) => {
                let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                opcode::Send::new(fd, buf.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            (OpKind::WriteAt, Some(buf)) => {
                let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                opcode::Write::new(fd, buf.as_ptr(), len)
                    .offset(offset)
                    .build()
            }
            (OpKind::Fdatasync, _) => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            // Nop, and (unreachable) data operations without a buffer: a Nop completes the
            // slot harmlessly.
            _ => opcode::Nop::new().build(),
        };
        let sqe = sqe.user_data(slot as u64);
        if s.link_next {
            sqe.flags(squeue::Flags::IO_LINK)
        } else {
            sqe
        }
    }

    /// Pushes entries, flushing the submission queue to the kernel when it is full.
    fn push_all(&mut self, entries: &[squeue::Entry]) -> Result<(), IoError> {
        for e in entries {
            loop {
                // SAFETY: every pointer in `e` refers to a buffer owned by a slot, which
                // stays valid and untouched until the entry's completion is reaped
                // (module invariants); entries without pointers are trivially valid.
                let pushed = unsafe { self.ring.submission().push(e) };
                if pushed.is_ok() {
                    break;
                }
                self.enter_submit()?;
            }
        }
        Ok(())
    }

    /// `io_uring_enter` to submit what is queued; transient refusals leave the entries queued
    /// for the next enter.
    fn enter_submit(&mut self) -> Result<(), IoError> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(source) => Err(IoError::Sys {
                call: "io_uring_enter",
                source,
            }),
        }
    }

    /// Moves completion-queue entries into `out`.
    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let mut n = 0;
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &cqes {
            if ud == CANCEL_USER_DATA {
                continue;
            }
            let Some(f) = usize::try_from(ud)
                .ok()
                .and_then(|i| self.slots.get_mut(i))
                .and_then(Option::take)
            else {
                continue;
            };
            self.free.push(ud as usize);
            self.in_flight -= 1;
            let result = errno_result(i64::from(res));
            let mut buf = f.buf;
            if let (OpKind::Recv, Ok(got), Some(b)) = (f.kind, &result, buf.as_mut()) {
                let got = (*got).min(b.capacity() - f.base_len);
                // SAFETY: the kernel wrote `got` bytes into the spare capacity that started
                // at `base_len` (it never writes more than the length it was given, the spare
                // capacity at submission; the min is a guard).
                unsafe { b.set_len(f.base_len + got) };
            }
            out.push(Completion {
                token: f.token,
                kind: f.kind,
                result,
                buf,
            });
            n += 1;
        }
        self.cqes = cqes;
        n
    }

    /// Waits up to `timeout` for at least one completion (`io_uring_enter` with EXT_ARG).
    fn enter_wait(&mut self, timeout: Option<Duration>) -> Result<(), IoError> {
        let r = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || transient(&e) => Ok(()),
            Err(source) => Err(IoError::Sys {
                call: "io_uring_enter",
                source,
            }),
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

impl IoReactor for UringReactor {
    fn backend(&self) -> Backend {
        Backend::Uring
    }

    fn fallback_reason(&self) -> Option<&str> {
        None
    }

    fn submit(&mut self, batch: &mut Vec<Submission>) -> Result<(), IoError> {
        check_batch(batch)?;
        let sq_capacity = self.ring.submission().capacity();
        let mut at = 0;
        while at < batch.len() {
            let chain = chain_len(&batch[at..]);
            if chain > sq_capacity {
                return Err(IoError::InvalidOp(
                    "a linked chain longer than the submission queue",
                ));
            }
            at += chain;
        }
        let (taken, result) = admit(batch, &mut self.in_flight, self.max_in_flight);
        let accepted: Vec<Submission> = batch.drain(..taken).collect();
        let mut entries = Vec::with_capacity(sq_capacity.min(accepted.len()));
        let mut iter = accepted.into_iter().peekable();
        while iter.peek().is_some() {
            // One chain (or one unlinked submission); check_batch made sure it ends.
            entries.clear();
            for s in iter.by_ref() {
                let linked = s.link_next;
                entries.push(self.prepare(s));
                if !linked {
                    break;
                }
            }
            // A chain must reach the kernel in one `io_uring_enter`: flush first if the
            // queue cannot hold all of it (check_batch refused chains longer than the queue).
            let room = {
                let sq = self.ring.submission();
                sq.capacity() - sq.len()
            };
            if room < entries.len() {
                self.enter_submit()?;
            }
            let chain = std::mem::take(&mut entries);
            self.push_all(&chain)?;
            entries = chain;
        }
        self.enter_submit()?;
        result
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion>,
    ) -> Result<usize, IoError> {
        if self.in_flight == 0 {
            return Ok(0);
        }
        let mut n = self.reap(out);
        if n > 0 {
            return Ok(n);
        }
        if timeout == Some(Duration::ZERO) {
            self.enter_submit()?;
            return Ok(self.reap(out));
        }
        // Loop over early returns (a signal, a transient refusal) until a completion arrives
        // or the deadline passes.
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(n);
                    }
                    Some(left)
                }
            };
            self.enter_wait(left)?;
            n = self.reap(out);
            if n > 0 {
                return Ok(n);
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl UringReactor {
    /// Cancels every operation in flight and reaps completions until none is in flight or
    /// `timeout` passes. Returns true when all completed; otherwise the buffers of those still
    /// in flight are leaked (never freed, the kernel may still write into them), their slots
    /// emptied, and false is returned. After it, no slot holds an operation.
    fn cancel_and_drain(&mut self, timeout: Duration) -> bool {
        if self.in_flight == 0 {
            return true;
        }
        let cancels: Vec<squeue::Entry> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| {
                opcode::AsyncCancel::new(i as u64)
                    .build()
                    .user_data(CANCEL_USER_DATA)
            })
            .collect();
        // Errors here cannot be reported; the drain below decides what is safe to free.
        let _ = self.push_all(&cancels);
        let _ = self.enter_submit();
        let deadline = Instant::now() + timeout;
        let mut sink = Vec::new();
        while self.in_flight > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let step = (deadline - now).min(Duration::from_millis(100));
            if self.enter_wait(Some(step)).is_err() {
                break;
            }
            self.reap(&mut sink);
            sink.clear();
        }
        if self.in_flight == 0 {
            return true;
        }
        for slot in self.slots.iter_mut() {
            if let Some(f) = slot.take() {
                // The kernel may still write into this buffer: never free it.
                std::mem::forget(f.buf);
            }
        }
        self.in_flight = 0;
        false
    }
}

impl Drop for UringReactor {
    fn drop(&mut self) {
        self.cancel_and_drain(DROP_DRAIN_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn socket_pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: both descriptors are new and owned by nothing else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn reactor_with_pending_recvs(fd: i32) -> Option<UringReactor> {
        let mut r = UringReactor::new(&ReactorConfig::default()).ok()?;
        let mut batch: Vec<Submission> = (0..3)
            .map(|t| {
                Submission::new(
                    t,
                    Op::Recv {
                        fd,
                        buf: Vec::with_capacity(64),
                    },
                )
            })
            .collect();
        r.submit(&mut batch).ok()?;
        assert_eq!(r.in_flight(), 3);
        Some(r)
    }

    #[test]
    fn drop_path_cancels_and_drains_pending_recvs() {
        let (a, _b) = socket_pair();
        let Some(mut r) = reactor_with_pending_recvs(a.as_raw_fd()) else {
            eprintln!("io_uring unavailable: skipped");
            return;
        };
        // The kernel holds three buffers; after the drain it holds none, so freeing them
        // (which Drop then does) is safe.
        assert!(r.cancel_and_drain(Duration::from_secs(5)));
        assert_eq!(r.in_flight(), 0);
        assert!(r.slots.iter().all(Option::is_none));
    }

    #[test]
    fn drain_timeout_leaks_instead_of_freeing() {
        let (a, b) = socket_pair();
        let Some(mut r) = reactor_with_pending_recvs(a.as_raw_fd()) else {
            eprintln!("io_uring unavailable: skipped");
            return;
        };
        // No time to drain: the buffers are leaked, the slots emptied, and completions that
        // arrive later (data sent now) are ignored without touching a slot.
        assert!(!r.cancel_and_drain(Duration::ZERO));
        assert_eq!(r.in_flight(), 0);
        assert!(r.slots.iter().all(Option::is_none));
        // SAFETY: the pointer and length describe a live local array.
        let sent = unsafe { libc::send(b.as_raw_fd(), [1u8; 8].as_ptr().cast(), 8, 0) };
        assert_eq!(sent, 8);
        let mut out = Vec::new();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(r.reap(&mut out), 0);
        drop(r);
    }
}
