//! The I/O reactor: submit batches of socket and file operations, wait for their completions.
//!
//! This is the bottom layer of laminar's networking and the WAL's optional asynchronous
//! writer. It owns file descriptors' *operations*, never the descriptors themselves, and knows
//! nothing of frames, engines or queries. Two backends implement [`IoReactor`]:
//!
//! * [`UringReactor`] (Linux io_uring, crate `io-uring`): operations go to the kernel as
//!   submission-queue entries; SQPOLL is optional and off by default (measured slower on
//!   2 cores, `notes/io-and-storage-limits.md`).
//! * [`EpollReactor`]: readiness (level-triggered epoll) plus non-blocking syscalls for
//!   sockets; regular-file writes and syncs (which epoll cannot wait for) are performed
//!   synchronously when submitted and completed at the next [`IoReactor::wait`].
//!
//! [`open_reactor`] picks one at run time: io_uring when the kernel allows it, epoll when it
//! refuses (ENOSYS, EPERM from seccomp in containers, `io_uring_disabled`), and the
//! environment variable `LAMINAR_IO=uring|epoll` forces either.
//!
//! ```
//! use laminar_core::io::{open_reactor, Op, ReactorConfig, Submission};
//! let mut r = open_reactor(&ReactorConfig::default())?;
//! let mut batch = vec![Submission::new(7, Op::Nop)];
//! r.submit(&mut batch)?;
//! let mut done = Vec::new();
//! while done.is_empty() {
//!     r.wait(Some(std::time::Duration::from_secs(1)), &mut done)?;
//! }
//! assert_eq!(done[0].token, 7);
//! # Ok::<(), laminar_core::io::IoError>(())
//! ```
//!
//! The WAL's commit is a write linked to an `fdatasync`: the sync starts only once the write
//! has completed in full, and completes with `ECANCELED` if the write failed or was short.
//!
//! ```
//! use std::os::fd::AsRawFd;
//! use laminar_core::io::{open_reactor, Op, ReactorConfig, Submission};
//! # let path = std::env::temp_dir().join(format!("laminar-io-doc-{}", std::process::id()));
//! let file = std::fs::File::create(&path)?;
//! let fd = file.as_raw_fd();
//! let mut r = open_reactor(&ReactorConfig::default())?;
//! r.submit(&mut vec![
//!     Submission::linked(1, Op::WriteAt { fd, buf: b"record".to_vec(), offset: 0 }),
//!     Submission::new(2, Op::Fdatasync { fd }),
//! ])?;
//! let mut done = Vec::new();
//! while done.len() < 2 {
//!     r.wait(None, &mut done)?;
//! }
//! assert!(done.iter().all(|c| c.result.is_ok()));
//! assert_eq!(std::fs::read(&path)?, b"record");
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Invariants
//!
//! * **Buffers are owned by the operation while it is in flight.** An [`Op`] takes its
//!   `Vec<u8>` by value; the reactor keeps it until the operation completes and hands it back
//!   in the [`Completion`]. No caller can free or reuse memory the kernel may still write.
//! * **Dropping a reactor with operations in flight is safe.** The io_uring backend cancels
//!   every in-flight operation and waits for each completion before it frees a buffer; if
//!   the kernel does not finish within [`DROP_DRAIN_TIMEOUT`], the remaining buffers are
//!   leaked on purpose (never freed) rather than risk a write into freed memory. The epoll
//!   backend holds no kernel reference to any buffer.
//! * Every submitted operation completes exactly once (its token comes back in exactly one
//!   [`Completion`]), unless the reactor is dropped first.
//! * Both backends give the same results for the same operations (the shared suite in
//!   `tests_rs/io_reactor.rs`): accepted sockets are non-blocking and close-on-exec; a
//!   receive of 0 bytes means the peer closed; results are byte counts or `io::Error`s.
//! * The reactor never closes a descriptor it was given; the caller must not close one while
//!   operations on it are in flight.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use thiserror::Error;

#[cfg(target_os = "linux")]
pub mod epoll;
#[cfg(target_os = "linux")]
pub mod uring;

#[cfg(target_os = "linux")]
pub use epoll::EpollReactor;
#[cfg(target_os = "linux")]
pub use uring::UringReactor;

/// How long a dropped io_uring reactor waits for cancelled operations to complete before it
/// leaks their buffers.
pub const DROP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that forces a backend: `uring` or `epoll`.
pub const ENV_BACKEND: &str = "LAMINAR_IO";

/// The caller's tag of an operation, returned in its completion.
pub type Token = u64;

/// One operation. Operations that move data own their buffer.
#[derive(Debug)]
pub enum Op {
    /// Accept a connection on a listening socket. The result is the new descriptor
    /// (non-blocking, close-on-exec), owned by the caller from then on.
    Accept {
        /// The listening socket.
        fd: RawFd,
    },
    /// Receive into the spare capacity of `buf` (`buf.capacity() - buf.len()` bytes, which
    /// must be at least 1); on success the received bytes are appended (`buf.len()` grows by
    /// the result). A result of 0 means the peer closed the connection.
    Recv {
        /// The connected socket.
        fd: RawFd,
        /// Where the bytes go; returned in the completion.
        buf: Vec<u8>,
    },
    /// Send `buf[..]` on a socket (without `SIGPIPE`). The result is the number of bytes
    /// sent, which may be fewer than `buf.len()`: the caller sends the rest.
    Send {
        /// The connected socket.
        fd: RawFd,
        /// The bytes to send; returned in the completion.
        buf: Vec<u8>,
    },
    /// Write `buf[..]` at `offset` of a file (`pwrite`). The result may be short.
    WriteAt {
        /// The file.
        fd: RawFd,
        /// The bytes to write; returned in the completion.
        buf: Vec<u8>,
        /// The file offset.
        offset: u64,
    },
    /// `fdatasync` a file.
    Fdatasync {
        /// The file.
        fd: RawFd,
    },
    /// Nothing: completes with result 0 (wakes a waiter, tests the path).
    Nop,
}

impl Op {
    /// The kind of this operation.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Accept { .. } => OpKind::Accept,
            Op::Recv { .. } => OpKind::Recv,
            Op::Send { .. } => OpKind::Send,
            Op::WriteAt { .. } => OpKind::WriteAt,
            Op::Fdatasync { .. } => OpKind::Fdatasync,
            Op::Nop => OpKind::Nop,
        }
    }

    /// File operations (and Nop) may be linked; socket operations may not.
    fn linkable(&self) -> bool {
        matches!(self, Op::WriteAt { .. } | Op::Fdatasync { .. } | Op::Nop)
    }

    /// Checks what the kernel would otherwise be asked to do with a bad argument.
    fn check(&self) -> Result<(), IoError> {
        match self {
            Op::Recv { buf, .. } if buf.capacity() == buf.len() => Err(IoError::InvalidOp(
                "Recv needs spare capacity in its buffer (a 0-byte read would look like EOF)",
            )),
            _ => Ok(()),
        }
    }
}

/// What kind of operation a completion is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// [`Op::Accept`].
    Accept,
    /// [`Op::Recv`].
    Recv,
    /// [`Op::Send`].
    Send,
    /// [`Op::WriteAt`].
    WriteAt,
    /// [`Op::Fdatasync`].
    Fdatasync,
    /// [`Op::Nop`].
    Nop,
}

/// An operation with its token.
#[derive(Debug)]
pub struct Submission {
    /// Returned in the completion.
    pub token: Token,
    /// What to do.
    pub op: Op,
    /// Start the *next* submission of the same batch only after this one succeeds in full;
    /// if this one fails or is short, the next completes with `ECANCELED` (and so on down the
    /// chain). Only file operations and Nop may be linked, to each other: a write linked to
    /// an `Fdatasync` is the WAL's commit.
    pub link_next: bool,
}

impl Submission {
    /// An unlinked submission.
    pub fn new(token: Token, op: Op) -> Self {
        Submission {
            token,
            op,
            link_next: false,
        }
    }

    /// A submission linked to the next one of its batch.
    pub fn linked(token: Token, op: Op) -> Self {
        Submission {
            token,
            op,
            link_next: true,
        }
    }
}

/// A finished operation.
#[derive(Debug)]
pub struct Completion {
    /// The submission's token.
    pub token: Token,
    /// The submission's kind.
    pub kind: OpKind,
    /// Bytes transferred (Recv/Send/WriteAt), the new descriptor (Accept), 0 (Fdatasync, Nop),
    /// or the error.
    pub result: io::Result<usize>,
    /// The operation's buffer, given back (Recv, Send, WriteAt).
    pub buf: Option<Vec<u8>>,
}

impl Completion {
    /// The accepted descriptor of a successful Accept.
    pub fn accepted_fd(&self) -> Option<RawFd> {
        match (&self.kind, &self.result) {
            (OpKind::Accept, Ok(fd)) => RawFd::try_from(*fd).ok(),
            _ => None,
        }
    }
}

/// The backend of a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring.
    Uring,
    /// epoll + non-blocking syscalls.
    Epoll,
}

impl Backend {
    /// `"uring"` or `"epoll"` (the values of `LAMINAR_IO`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// Which backend [`open_reactor`] should use (the environment variable overrides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendChoice {
    /// io_uring when the kernel allows it, otherwise epoll.
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// epoll.
    Epoll,
}

/// Settings of a reactor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorConfig {
    /// io_uring submission-queue entries (a power of two is used); the completion queue has
    /// twice as many, and at most that many operations may be in flight (both backends).
    pub entries: u32,
    /// io_uring kernel submission polling (`IORING_SETUP_SQPOLL`), with this idle time in
    /// milliseconds. Off by default: on 2 cores it takes a core and was slower in every test.
    pub sqpoll_idle_ms: Option<u32>,
    /// Which backend; `LAMINAR_IO` overrides it.
    pub backend: BackendChoice,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            entries: 256,
            sqpoll_idle_ms: None,
            backend: BackendChoice::Auto,
        }
    }
}

impl ReactorConfig {
    /// The most operations in flight at once.
    pub fn max_in_flight(&self) -> usize {
        (self.entries.max(1).next_power_of_two() as usize).saturating_mul(2)
    }
}

/// Errors of the reactor itself (an operation's own failure is its completion's `result`).
#[derive(Debug, Error)]
pub enum IoError {
    /// Creating the backend failed (for io_uring: the kernel refused `io_uring_setup`).
    #[error("cannot set up the {backend} reactor: {source}")]
    Setup {
        /// `"uring"` or `"epoll"`.
        backend: &'static str,
        /// The system error.
        source: io::Error,
    },
    /// The kernel's io_uring lacks a feature this backend needs.
    #[error("io_uring lacks {0}")]
    MissingFeature(&'static str),
    /// `LAMINAR_IO` has a value other than `uring` or `epoll`.
    #[error("{ENV_BACKEND}={0:?}: expected \"uring\" or \"epoll\"")]
    BadEnv(String),
    /// The backend was asked for but is not built on this platform.
    #[error("the {0} backend is not available on this platform")]
    Unavailable(&'static str),
    /// An operation that cannot be submitted as it is.
    #[error("invalid operation: {0}")]
    InvalidOp(&'static str),
    /// As many operations are in flight as the reactor allows; the rest of the batch was
    /// left in the caller's vector.
    #[error("{in_flight} operations in flight, the maximum")]
    Full {
        /// Operations in flight.
        in_flight: usize,
    },
    /// A system call of the reactor failed (`io_uring_enter`, `epoll_wait`, `epoll_ctl`).
    #[error("{call} failed: {source}")]
    Sys {
        /// Which call.
        call: &'static str,
        /// The system error.
        source: io::Error,
    },
}

/// Submit operations, wait for their completions. See the module documentation.
pub trait IoReactor: Send {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Why [`open_reactor`] fell back to this backend, if it did.
    fn fallback_reason(&self) -> Option<&str>;

    /// Starts the submissions at the front of `batch`, removing each one that was accepted.
    /// On error the rejected submission and those after it stay in `batch` (those before it
    /// were submitted and will complete). A linked chain is accepted whole or not at all.
    fn submit(&mut self, batch: &mut Vec<Submission>) -> Result<(), IoError>;

    /// Appends completed operations to `out` and returns how many. Waits until at least one
    /// completes, or `timeout` passes (`None`: no limit, `Some(ZERO)`: do not wait). With
    /// nothing in flight it returns 0 at once, whatever the timeout.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion>,
    ) -> Result<usize, IoError>;

    /// Operations submitted and not yet returned by `wait`.
    fn in_flight(&self) -> usize;
}

/// Checks a batch before anything is submitted: each operation's arguments, and links only
/// between file operations and Nop, never from the last submission of the batch.
fn check_batch(batch: &[Submission]) -> Result<(), IoError> {
    for (i, s) in batch.iter().enumerate() {
        s.op.check()?;
        if s.link_next {
            let next_ok = batch.get(i + 1).is_some_and(|n| n.op.linkable());
            if !s.op.linkable() || !next_ok {
                return Err(IoError::InvalidOp(
                    "link_next needs a file operation (or Nop) followed by another in the same batch",
                ));
            }
        }
    }
    Ok(())
}

/// The length of the chain starting at `batch[0]` (1 for an unlinked submission).
fn chain_len(batch: &[Submission]) -> usize {
    batch.iter().take_while(|s| s.link_next).count() + 1
}

/// How many submissions at the front of `batch` fit under `max_in_flight` (whole linked
/// chains only), counted into `in_flight`; `Full` when some did not fit.
fn admit(
    batch: &[Submission],
    in_flight: &mut usize,
    max_in_flight: usize,
) -> (usize, Result<(), IoError>) {
    let mut taken = 0;
    while taken < batch.len() {
        let chain = chain_len(&batch[taken..]);
        if *in_flight + chain > max_in_flight {
            return (
                taken,
                Err(IoError::Full {
                    in_flight: *in_flight,
                }),
            );
        }
        *in_flight += chain;
        taken += chain;
    }
    (taken, Ok(()))
}

/// Opens a reactor as `config` and `LAMINAR_IO` ask: see the module documentation. With
/// `Auto`, an io_uring that cannot be set up becomes an epoll reactor whose
/// [`IoReactor::fallback_reason`] says why.
pub fn open_reactor(config: &ReactorConfig) -> Result<Box<dyn IoReactor>, IoError> {
    let choice = match std::env::var(ENV_BACKEND) {
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "uring" | "io_uring" => BackendChoice::Uring,
            "epoll" => BackendChoice::Epoll,
            "" | "auto" => config.backend,
            _ => return Err(IoError::BadEnv(v)),
        },
        Err(_) => config.backend,
    };
    open_choice(choice, config)
}

#[cfg(target_os = "linux")]
fn open_choice(
    choice: BackendChoice,
    config: &ReactorConfig,
) -> Result<Box<dyn IoReactor>, IoError> {
    match choice {
        BackendChoice::Epoll => Ok(Box::new(EpollReactor::new(config)?)),
        BackendChoice::Uring => Ok(Box::new(UringReactor::new(config)?)),
        BackendChoice::Auto => match UringReactor::new(config) {
            Ok(r) => Ok(Box::new(r)),
            Err(e) => {
                let mut r = EpollReactor::new(config)?;
                r.set_fallback_reason(e.to_string());
                Ok(Box::new(r))
            }
        },
    }
}

#[cfg(not(target_os = "linux"))]
fn open_choice(
    choice: BackendChoice,
    _config: &ReactorConfig,
) -> Result<Box<dyn IoReactor>, IoError> {
    Err(IoError::Unavailable(match choice {
        BackendChoice::Epoll => "epoll",
        _ => "uring",
    }))
}

/// The `io::Error` of a negative syscall-style result.
fn errno_result(res: i64) -> io::Result<usize> {
    if res < 0 {
        let code = i32::try_from(-res).unwrap_or(libc::EIO);
        Err(io::Error::from_raw_os_error(code))
    } else {
        usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
    }
}
