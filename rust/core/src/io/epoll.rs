//! The epoll backend of [`IoReactor`]: readiness plus non-blocking syscalls.
//!
//! Socket operations wait in a per-descriptor queue (reads: Accept/Recv; writes: Send), in
//! submission order. At [`wait`](IoReactor::wait), queues with new operations are tried at
//! once, then the reactor sleeps in `epoll_wait` and retries the queues of descriptors that
//! became ready. Interest is level-triggered and always equals the queues' needs (`EPOLLIN`
//! while reads wait, `EPOLLOUT` while writes wait, deregistered when both are empty), so no
//! wake-up can be lost. Regular files cannot be waited for with epoll: WriteAt and Fdatasync
//! (and Nop) run synchronously inside [`submit`](IoReactor::submit) and complete at the next
//! `wait`.
//!
//! # Invariants
//!
//! * No syscall here blocks except `epoll_wait`: Recv/Send use `MSG_DONTWAIT`, and Accept
//!   polls the listener (0 timeout) before `accept4`, so a blocking listener is fine too.
//! * The kernel never holds a pointer into a buffer past the syscall that uses it, so
//!   dropping the reactor simply drops the queued operations and their buffers.
//! * `in_flight` counts every queued operation and every completion not yet returned.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::{
    admit, check_batch, Backend, Completion, IoError, IoReactor, Op, ReactorConfig, Submission,
    Token,
};

/// Events fetched per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 64;

#[derive(Debug)]
struct Pending {
    token: Token,
    op: Op,
}

#[derive(Debug, Default)]
struct FdQueue {
    reads: VecDeque<Pending>,
    writes: VecDeque<Pending>,
    /// The events registered with epoll for this descriptor; 0: not registered.
    registered: u32,
}

/// What trying an operation gave.
enum Attempt {
    Done(io::Result<usize>),
    WouldBlock,
}

/// The epoll reactor; see the module documentation.
#[derive(Debug)]
pub struct EpollReactor {
    epfd: OwnedFd,
    fds: HashMap<RawFd, FdQueue>,
    /// Descriptors with operations not tried since they were submitted.
    dirty: Vec<RawFd>,
    /// Completed at submit (file operations, Nop), returned at the next wait.
    ready: Vec<Completion>,
    in_flight: usize,
    max_in_flight: usize,
    events: Vec<libc::epoll_event>,
    /// Reused by `wait`: the descriptors of the events of one `epoll_wait`.
    ready_fds: Vec<RawFd>,
    fallback: Option<String>,
}

impl EpollReactor {
    /// A new epoll reactor.
    pub fn new(config: &ReactorConfig) -> Result<Self, IoError> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(IoError::Setup {
                backend: "epoll",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EpollReactor {
            epfd,
            fds: HashMap::new(),
            dirty: Vec::new(),
            ready: Vec::new(),
            in_flight: 0,
            max_in_flight: config.max_in_flight(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT],
            ready_fds: Vec::with_capacity(EVENTS_PER_WAIT),
            fallback: None,
        })
    }

    pub(super) fn set_fallback_reason(&mut self, reason: String) {
        self.fallback = Some(reason);
    }

    /// Runs a linked chain (or a single operation) of file operations now.
    fn run_sync_chain(&mut self, chain: impl Iterator<Item = Submission>) {
        let mut broken = false;
        for s in chain {
            let kind = s.op.kind();
            let (result, buf) = if broken {
                let buf = match s.op {
                    Op::WriteAt { buf, .. } => Some(buf),
                    _ => None,
                };
                (Err(io::Error::from_raw_os_error(libc::ECANCELED)), buf)
            } else {
                run_file_op(s.op)
            };
            if s.link_next {
                let full = match (&result, &buf) {
                    (Ok(n), Some(b)) => *n == b.len(),
                    (Ok(_), None) => true,
                    (Err(_), _) => false,
                };
                broken |= !full;
            }
            self.ready.push(Completion {
                token: s.token,
                kind,
                result,
                buf,
            });
        }
    }

    /// Tries the queued operations of `fd` in order until one would block, then makes the
    /// epoll interest match what is still queued.
    fn progress(&mut self, fd: RawFd, out: &mut Vec<Completion>) {
        let Some(q) = self.fds.get_mut(&fd) else {
            return;
        };
        let mut done = 0;
        for queue in [&mut q.reads, &mut q.writes] {
            while let Some(p) = queue.front_mut() {
                match attempt(fd, &mut p.op) {
                    Attempt::WouldBlock => break,
                    Attempt::Done(result) => {
                        if let Some(p) = queue.pop_front() {
                            out.push(finish(p, result));
                            done += 1;
                        }
                    }
                }
            }
        }
        self.in_flight -= done;
        let want = interest(q);
        if want == q.registered {
            return;
        }
        let (ctl, events) = match (q.registered, want) {
            (_, 0) => (libc::EPOLL_CTL_DEL, 0),
            (0, w) => (libc::EPOLL_CTL_ADD, w),
            (_, w) => (libc::EPOLL_CTL_MOD, w),
        };
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call; the kernel copies
        // it and keeps no pointer.
        let rc = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), ctl, fd, &mut ev) };
        if rc == 0 {
            q.registered = want;
            if want == 0 {
                self.fds.remove(&fd);
            }
            return;
        }
        // The descriptor cannot be waited for (closed, or not pollable): every operation
        // queued on it fails with that error rather than waiting forever.
        let err = io::Error::last_os_error();
        if let Some(q) = self.fds.remove(&fd) {
            for p in q.reads.into_iter().chain(q.writes) {
                let e = io::Error::new(err.kind(), format!("epoll_ctl: {err}"));
                out.push(finish(p, Err(e)));
                self.in_flight -= 1;
            }
            if q.registered != 0 {
                let mut ev = libc::epoll_event { events: 0, u64: 0 };
                // SAFETY: as above; a failure (already gone) leaves nothing to undo.
                unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
            }
        }
    }
}

/// The epoll events the queues of `q` need.
fn interest(q: &FdQueue) -> u32 {
    let mut ev = 0;
    if !q.reads.is_empty() {
        ev |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    }
    if !q.writes.is_empty() {
        ev |= libc::EPOLLOUT as u32;
    }
    ev
}

fn finish(p: Pending, result: io::Result<usize>) -> Completion {
    let kind = p.op.kind();
    let buf = match p.op {
        Op::Recv { buf, .. } | Op::Send { buf, .. } | Op::WriteAt { buf, .. } => Some(buf),
        _ => None,
    };
    Completion {
        token: p.token,
        kind,
        result,
        buf,
    }
}

fn last_result(rc: isize) -> Option<io::Result<usize>> {
    if rc >= 0 {
        return Some(Ok(rc as usize));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINTR) => None,
        _ => Some(Err(e)),
    }
}

/// One non-blocking try of a socket operation.
fn attempt(fd: RawFd, op: &mut Op) -> Attempt {
    loop {
        let r = match op {
            Op::Accept { .. } => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, timeout 0; the kernel keeps no pointer.
                let n = unsafe { libc::poll(&mut pfd, 1, 0) };
                if n == 0 {
                    return Attempt::WouldBlock;
                }
                // SAFETY: null address pointers are allowed by accept4 (no peer address).
                let rc = unsafe {
                    libc::accept4(
                        fd,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    )
                };
                last_result(rc as isize)
            }
            Op::Recv { buf, .. } => {
                let len = buf.len();
                let spare = buf.spare_capacity_mut();
                // SAFETY: the pointer and length describe `buf`'s spare capacity, which is
                // writable memory owned by `buf`; recv writes at most `spare.len()` bytes.
                let rc = unsafe {
                    libc::recv(
                        fd,
                        spare.as_mut_ptr().cast(),
                        spare.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if rc > 0 {
                    // SAFETY: recv initialised `rc` bytes (at most the spare capacity) right
                    // after the first `len` bytes.
                    unsafe { buf.set_len(len + rc as usize) };
                }
                last_result(rc)
            }
            Op::Send { buf, .. } => {
                // SAFETY: the pointer and length describe `buf`'s initialised bytes.
                let rc = unsafe {
                    libc::send(
                        fd,
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                last_result(rc)
            }
            // File operations and Nop never reach a queue.
            _ => Some(Err(io::Error::from_raw_os_error(libc::EINVAL))),
        };
        match r {
            None => continue,
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return Attempt::WouldBlock,
            Some(r) => return Attempt::Done(r),
        }
    }
}

/// Runs a file operation (or Nop) now; returns its result and buffer.
fn run_file_op(op: Op) -> (io::Result<usize>, Option<Vec<u8>>) {
    loop {
        let r = match &op {
            Op::WriteAt { fd, buf, offset } => {
                let Ok(off) = libc::off_t::try_from(*offset) else {
                    return (
                        Err(io::Error::from_raw_os_error(libc::EINVAL)),
                        Some(take_buf(op)),
                    );
                };
                // SAFETY: the pointer and length describe `buf`'s initialised bytes.
                let rc = unsafe { libc::pwrite(*fd, buf.as_ptr().cast(), buf.len(), off) };
                last_result(rc)
            }
            Op::Fdatasync { fd } => {
                // SAFETY: fdatasync takes no pointers.
                let rc = unsafe { libc::fdatasync(*fd) };
                last_result(rc as isize)
            }
            Op::Nop => Some(Ok(0)),
            _ => Some(Err(io::Error::from_raw_os_error(libc::EINVAL))),
        };
        if let Some(r) = r {
            let buf = matches!(op, Op::WriteAt { .. }).then(|| take_buf(op));
            return (r, buf);
        }
    }
}

fn take_buf(op: Op) -> Vec<u8> {
    match op {
        Op::Recv { buf, .. } | Op::Send { buf, .. } | Op::WriteAt { buf, .. } => buf,
        _ => Vec::new(),
    }
}

impl IoReactor for EpollReactor {
    fn backend(&self) -> Backend {
        Backend::Epoll
    }

    fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn submit(&mut self, batch: &mut Vec<Submission>) -> Result<(), IoError> {
        check_batch(batch)?;
        let (taken, result) = admit(batch, &mut self.in_flight, self.max_in_flight);
        let mut accepted = batch.drain(..taken).peekable();
        while let Some(s) = accepted.next() {
            match s.op {
                Op::WriteAt { .. } | Op::Fdatasync { .. } | Op::Nop => {
                    let mut chain = vec![s];
                    while chain.last().is_some_and(|s| s.link_next) {
                        match accepted.next() {
                            Some(n) => chain.push(n),
                            None => break,
                        }
                    }
                    self.run_sync_chain(chain.into_iter());
                }
                Op::Accept { fd } | Op::Recv { fd, .. } | Op::Send { fd, .. } => {
                    let q = self.fds.entry(fd).or_default();
                    let p = Pending {
                        token: s.token,
                        op: s.op,
                    };
                    if matches!(p.op, Op::Send { .. }) {
                        q.writes.push_back(p);
                    } else {
                        q.reads.push_back(p);
                    }
                    if !self.dirty.contains(&fd) {
                        self.dirty.push(fd);
                    }
                }
            }
        }
        result
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion>,
    ) -> Result<usize, IoError> {
        let start = out.len();
        if self.in_flight == 0 {
            return Ok(0);
        }
        let ready = self.ready.len();
        out.append(&mut self.ready);
        self.in_flight -= ready;
        for fd in std::mem::take(&mut self.dirty) {
            self.progress(fd, out);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        while self.in_flight > 0 {
            let ms: i32 = if out.len() > start {
                0
            } else {
                match deadline {
                    None => -1,
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        // Round up so that a sub-millisecond timeout still waits.
                        let ms = left.as_nanos().div_ceil(1_000_000);
                        i32::try_from(ms).unwrap_or(i32::MAX)
                    }
                }
            };
            // SAFETY: `events` is a valid buffer of `len` epoll_events for the kernel to fill.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    self.events.len() as i32,
                    ms,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(IoError::Sys {
                    call: "epoll_wait",
                    source: e,
                });
            }
            let mut ready_fds = std::mem::take(&mut self.ready_fds);
            ready_fds.clear();
            ready_fds.extend(self.events[..n as usize].iter().map(|e| e.u64 as RawFd));
            for &fd in &ready_fds {
                self.progress(fd, out);
            }
            self.ready_fds = ready_fds;
            if out.len() > start || ms == 0 {
                break;
            }
        }
        Ok(out.len() - start)
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }
}
