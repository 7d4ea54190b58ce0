//! One test suite for every `IoReactor` backend (`core::io`): each test is written once,
//! generic over a constructor, and instantiated per backend by `suite!`. A backend the kernel
//! refuses (io_uring under a seccomp filter) prints that it was skipped, and the
//! `backends_available` test says which ran; `open_reactor` and the `LAMINAR_IO` override are
//! tested at the end.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use laminar_core::io::{
    open_reactor, Backend, BackendChoice, Completion, EpollReactor, IoError, IoReactor, Op, OpKind,
    ReactorConfig, Submission, UringReactor,
};
use temp_dir::TempDir;

type Make = fn() -> Option<Box<dyn IoReactor>>;

fn make_epoll() -> Option<Box<dyn IoReactor>> {
    Some(Box::new(
        EpollReactor::new(&ReactorConfig::default()).expect("epoll"),
    ))
}

fn make_uring() -> Option<Box<dyn IoReactor>> {
    match UringReactor::new(&ReactorConfig::default()) {
        Ok(r) => Some(Box::new(r)),
        Err(e) => {
            eprintln!("io_uring unavailable here, uring tests skipped: {e}");
            None
        }
    }
}

fn make_uring_sqpoll() -> Option<Box<dyn IoReactor>> {
    let config = ReactorConfig {
        sqpoll_idle_ms: Some(10),
        ..ReactorConfig::default()
    };
    match UringReactor::new(&config) {
        Ok(r) => Some(Box::new(r)),
        Err(e) => {
            eprintln!("io_uring SQPOLL unavailable here, skipped: {e}");
            None
        }
    }
}

const LONG: Duration = Duration::from_secs(5);

/// Waits until the completion of `token` arrives (other completions are kept in `seen`).
fn wait_for(r: &mut dyn IoReactor, token: u64, seen: &mut Vec<Completion>) -> Completion {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(i) = seen.iter().position(|c| c.token == token) {
            return seen.remove(i);
        }
        assert!(Instant::now() < deadline, "token {token} did not complete");
        r.wait(Some(Duration::from_millis(200)), seen)
            .expect("wait");
    }
}

fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

/// Accepts a connection through the reactor; returns (server side, client side).
fn accept_pair(r: &mut dyn IoReactor) -> (OwnedFd, TcpStream) {
    let listener = loopback();
    let mut batch = vec![Submission::new(
        1,
        Op::Accept {
            fd: listener.as_raw_fd(),
        },
    )];
    r.submit(&mut batch).expect("submit accept");
    assert!(batch.is_empty());
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut seen = Vec::new();
    let c = wait_for(r, 1, &mut seen);
    assert_eq!(c.kind, OpKind::Accept);
    let fd = c.accepted_fd().expect("accept succeeded");
    // SAFETY: the reactor's Accept hands over a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Accepted sockets are non-blocking on both backends.
    // SAFETY: F_GETFL takes no pointer.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(
        fl & libc::O_NONBLOCK != 0,
        "accepted socket is non-blocking"
    );
    (fd, client)
}

fn recv_op(fd: RawFd, cap: usize) -> Op {
    Op::Recv {
        fd,
        buf: Vec::with_capacity(cap),
    }
}

fn t_tcp_round_trip(make: Make) {
    let Some(mut r) = make() else { return };
    let (server, mut client) = accept_pair(r.as_mut());
    let fd = server.as_raw_fd();
    client.write_all(b"hello reactor").unwrap();
    let mut seen = Vec::new();
    let mut got = Vec::new();
    let mut token = 10;
    while got.len() < 13 {
        r.submit(&mut vec![Submission::new(token, recv_op(fd, 64))])
            .unwrap();
        let c = wait_for(r.as_mut(), token, &mut seen);
        let n = c.result.expect("recv");
        let buf = c.buf.expect("buffer back");
        assert_eq!(buf.len(), n);
        got.extend_from_slice(&buf);
        token += 1;
    }
    assert_eq!(got, b"hello reactor");
    r.submit(&mut vec![Submission::new(
        99,
        Op::Send {
            fd,
            buf: b"and back".to_vec(),
        },
    )])
    .unwrap();
    let c = wait_for(r.as_mut(), 99, &mut seen);
    assert_eq!(c.kind, OpKind::Send);
    assert_eq!(c.result.unwrap(), 8);
    assert_eq!(c.buf.unwrap(), b"and back");
    let mut back = [0u8; 8];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"and back");
    assert_eq!(r.in_flight(), 0);
}

fn t_partial_reads_append(make: Make) {
    let Some(mut r) = make() else { return };
    let (server, mut client) = accept_pair(r.as_mut());
    let fd = server.as_raw_fd();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    client.write_all(&data).unwrap();
    // A 100-byte window, appended to the same buffer: received bytes land after those
    // already in it, and no read returns more than the spare capacity.
    let mut buf = Vec::with_capacity(1000);
    let mut seen = Vec::new();
    let mut token = 100;
    while buf.len() < data.len() {
        let before = buf.len();
        buf.reserve(100);
        let mut window = Vec::with_capacity(before + 100);
        window.extend_from_slice(&buf);
        r.submit(&mut vec![Submission::new(
            token,
            Op::Recv { fd, buf: window },
        )])
        .unwrap();
        let c = wait_for(r.as_mut(), token, &mut seen);
        let n = c.result.unwrap();
        assert!(n > 0 && n <= 100, "read {n} bytes into a 100-byte window");
        buf = c.buf.unwrap();
        assert_eq!(buf.len(), before + n);
        token += 1;
    }
    assert_eq!(buf, data);
}

fn t_peer_close_is_zero_byte_recv(make: Make) {
    let Some(mut r) = make() else { return };
    let (server, client) = accept_pair(r.as_mut());
    // The recv is in flight before the peer closes.
    r.submit(&mut vec![Submission::new(
        5,
        recv_op(server.as_raw_fd(), 16),
    )])
    .unwrap();
    let mut seen = Vec::new();
    assert_eq!(
        r.wait(Some(Duration::from_millis(50)), &mut seen).unwrap(),
        0
    );
    drop(client);
    let c = wait_for(r.as_mut(), 5, &mut seen);
    assert_eq!(c.result.unwrap(), 0);
    assert!(c.buf.unwrap().is_empty());
}

fn t_send_error_on_reset_peer(make: Make) {
    let Some(mut r) = make() else { return };
    let (server, client) = accept_pair(r.as_mut());
    drop(client);
    // Writing to a closed peer fails sooner or later (EPIPE/ECONNRESET), never SIGPIPE.
    let mut seen = Vec::new();
    let mut failed = false;
    for token in 0..50 {
        r.submit(&mut vec![Submission::new(
            token,
            Op::Send {
                fd: server.as_raw_fd(),
                buf: vec![1u8; 64 * 1024],
            },
        )])
        .unwrap();
        let c = wait_for(r.as_mut(), token, &mut seen);
        if c.result.is_err() {
            failed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(failed, "sending to a closed peer never failed");
}

fn t_file_write_at_and_fdatasync(make: Make) {
    let Some(mut r) = make() else { return };
    let dir = TempDir::new("io-reactor");
    let path = dir.file("data");
    let f = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let fd = f.as_raw_fd();
    let mut batch = vec![
        Submission::new(
            1,
            Op::WriteAt {
                fd,
                buf: b"world".to_vec(),
                offset: 6,
            },
        ),
        Submission::new(
            2,
            Op::WriteAt {
                fd,
                buf: b"hello ".to_vec(),
                offset: 0,
            },
        ),
    ];
    r.submit(&mut batch).unwrap();
    let mut seen = Vec::new();
    for t in [1, 2] {
        let c = wait_for(r.as_mut(), t, &mut seen);
        assert_eq!(c.kind, OpKind::WriteAt);
        assert_eq!(c.result.unwrap(), c.buf.unwrap().len());
    }
    // The WAL's commit: a write linked to an fdatasync.
    let mut batch = vec![
        Submission::linked(
            3,
            Op::WriteAt {
                fd,
                buf: b"!".to_vec(),
                offset: 11,
            },
        ),
        Submission::new(4, Op::Fdatasync { fd }),
    ];
    r.submit(&mut batch).unwrap();
    assert_eq!(wait_for(r.as_mut(), 3, &mut seen).result.unwrap(), 1);
    let c = wait_for(r.as_mut(), 4, &mut seen);
    assert_eq!(c.kind, OpKind::Fdatasync);
    assert_eq!(c.result.unwrap(), 0);
    let mut back = String::new();
    File::open(&path)
        .unwrap()
        .read_to_string(&mut back)
        .unwrap();
    assert_eq!(back, "hello world!");
}

fn t_broken_link_cancels_the_rest(make: Make) {
    let Some(mut r) = make() else { return };
    let dir = TempDir::new("io-reactor-link");
    // Read-only: the write fails, so the linked sync must not run.
    File::create(dir.file("ro")).unwrap();
    let f = File::open(dir.file("ro")).unwrap();
    let fd = f.as_raw_fd();
    let mut batch = vec![
        Submission::linked(
            1,
            Op::WriteAt {
                fd,
                buf: b"x".to_vec(),
                offset: 0,
            },
        ),
        Submission::new(2, Op::Fdatasync { fd }),
    ];
    r.submit(&mut batch).unwrap();
    let mut seen = Vec::new();
    let w = wait_for(r.as_mut(), 1, &mut seen);
    assert_eq!(w.result.unwrap_err().raw_os_error(), Some(libc::EBADF));
    let s = wait_for(r.as_mut(), 2, &mut seen);
    assert_eq!(s.result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
}

fn t_invalid_submissions_are_refused(make: Make) {
    let Some(mut r) = make() else { return };
    // A Recv without spare capacity, a link from a socket op, a dangling link.
    let bad = [
        vec![Submission::new(
            1,
            Op::Recv {
                fd: 0,
                buf: Vec::new(),
            },
        )],
        vec![
            Submission::linked(1, Op::Accept { fd: 0 }),
            Submission::new(2, Op::Nop),
        ],
        vec![Submission::linked(1, Op::Nop)],
    ];
    for mut batch in bad {
        let n = batch.len();
        assert!(matches!(r.submit(&mut batch), Err(IoError::InvalidOp(_))));
        assert_eq!(batch.len(), n, "nothing was taken");
    }
    assert_eq!(r.in_flight(), 0);
}

fn t_many_ops_in_one_submit(make: Make) {
    let Some(mut r) = make() else { return };
    let (server, mut client) = accept_pair(r.as_mut());
    let fd = server.as_raw_fd();
    let dir = TempDir::new("io-reactor-many");
    let f = File::create(dir.file("many")).unwrap();
    let mut batch = Vec::new();
    for i in 0..100u64 {
        batch.push(Submission::new(1000 + i, Op::Nop));
        batch.push(Submission::new(
            2000 + i,
            Op::WriteAt {
                fd: f.as_raw_fd(),
                buf: vec![i as u8; 10],
                offset: i * 10,
            },
        ));
    }
    batch.push(Submission::new(
        3000,
        Op::Send {
            fd,
            buf: vec![7u8; 1000],
        },
    ));
    r.submit(&mut batch).unwrap();
    assert!(batch.is_empty());
    let mut seen = Vec::new();
    let deadline = Instant::now() + LONG;
    while seen.len() < 201 {
        assert!(Instant::now() < deadline);
        r.wait(Some(Duration::from_millis(200)), &mut seen).unwrap();
    }
    assert_eq!(seen.len(), 201);
    assert_eq!(r.in_flight(), 0);
    let mut tokens: Vec<u64> = seen.iter().map(|c| c.token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 201, "every token exactly once");
    assert!(seen.iter().all(|c| c.result.is_ok()));
    let mut got = vec![0u8; 1000];
    client.read_exact(&mut got).unwrap();
    assert!(got.iter().all(|&b| b == 7));
    let written = std::fs::read(dir.file("many")).unwrap();
    assert_eq!(written.len(), 1000);
    assert!(written
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i / 10) as u8));
}

fn t_full_leaves_the_rest(make: Make) {
    let config_max = ReactorConfig::default().max_in_flight();
    let Some(mut r) = make() else { return };
    let listener = loopback();
    let fd = listener.as_raw_fd();
    // Accepts that never complete fill the reactor.
    let mut batch: Vec<Submission> = (0..config_max as u64 + 10)
        .map(|t| Submission::new(t, Op::Accept { fd }))
        .collect();
    let e = r.submit(&mut batch);
    assert!(matches!(e, Err(IoError::Full { .. })), "{e:?}");
    assert_eq!(batch.len(), 10);
    assert_eq!(r.in_flight(), config_max);
    // Dropping a reactor full of pending accepts must be safe and prompt.
    let t = Instant::now();
    drop(r);
    assert!(t.elapsed() < Duration::from_secs(5));
}

fn t_wait_timeouts(make: Make) {
    let Some(mut r) = make() else { return };
    let mut seen = Vec::new();
    // Nothing in flight: returns at once whatever the timeout.
    let t = Instant::now();
    assert_eq!(r.wait(None, &mut seen).unwrap(), 0);
    assert_eq!(r.wait(Some(Duration::from_secs(10)), &mut seen).unwrap(), 0);
    assert!(t.elapsed() < Duration::from_millis(100));
    // Something in flight that does not complete: the timeout is honoured.
    let (server, _client) = accept_pair(r.as_mut());
    r.submit(&mut vec![Submission::new(
        1,
        recv_op(server.as_raw_fd(), 8),
    )])
    .unwrap();
    let t = Instant::now();
    assert_eq!(r.wait(Some(Duration::ZERO), &mut seen).unwrap(), 0);
    assert!(t.elapsed() < Duration::from_millis(50));
    let t = Instant::now();
    assert_eq!(
        r.wait(Some(Duration::from_millis(80)), &mut seen).unwrap(),
        0
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(70) && waited < Duration::from_secs(2),
        "waited {waited:?} for an 80 ms timeout"
    );
    assert_eq!(r.in_flight(), 1);
}

/// Capacity of the receive buffers of the drop test: a size no other code here allocates, so
/// the quarantine allocator below keeps exactly those buffers.
const PROBE_CAP: usize = 12_345;
/// Bytes the quarantine fills a freed probe buffer with.
const FREED: u8 = 0x5A;
const QUARANTINE_SLOTS: usize = 4096;

/// A global allocator that never frees a `PROBE_CAP`-byte block: it fills it with `FREED`
/// and remembers it. If the kernel writes into a receive buffer after the reactor freed it,
/// the write lands in quarantined memory (no real use-after-free happens in the test) and
/// [`quarantine_intact`] sees it.
struct Quarantine;

static QUARANTINED: [std::sync::atomic::AtomicUsize; QUARANTINE_SLOTS] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; QUARANTINE_SLOTS];
static QUARANTINE_NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator, except deallocations of
// PROBE_CAP-byte blocks, which are kept (leaked) instead: never freeing memory is sound.
unsafe impl std::alloc::GlobalAlloc for Quarantine {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        use std::sync::atomic::Ordering;
        if layout.size() == PROBE_CAP {
            let i = QUARANTINE_NEXT.fetch_add(1, Ordering::Relaxed);
            if i < QUARANTINE_SLOTS {
                // SAFETY: the block is `PROBE_CAP` bytes, ours now, and never freed.
                unsafe { std::ptr::write_bytes(ptr, FREED, PROBE_CAP) };
                QUARANTINED[i].store(ptr as usize, Ordering::Release);
                return;
            }
        }
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Quarantine = Quarantine;

/// Whether every quarantined block still holds only `FREED`.
fn quarantine_intact() -> bool {
    use std::sync::atomic::Ordering;
    let n = QUARANTINE_NEXT
        .load(Ordering::Acquire)
        .min(QUARANTINE_SLOTS);
    QUARANTINED[..n].iter().all(|p| {
        let p = p.load(Ordering::Acquire);
        // SAFETY: quarantined blocks are never freed; each holds PROBE_CAP bytes.
        p == 0
            || unsafe { std::slice::from_raw_parts(p as *const u8, PROBE_CAP) }
                .iter()
                .all(|&b| b == FREED)
    })
}

fn t_drop_with_pending_recv_is_safe(make: Make) {
    // A reactor dropped while the kernel may still write into receive buffers; then the peer
    // sends at once. A buffer freed before the kernel let go of it would be written after
    // free: the quarantine allocator keeps freed receive buffers and checks them.
    for round in 0..20 {
        let Some(mut r) = make() else { return };
        let (server, mut client) = accept_pair(r.as_mut());
        let mut batch: Vec<Submission> = (0..4)
            .map(|t| Submission::new(t, recv_op(server.as_raw_fd(), PROBE_CAP)))
            .collect();
        r.submit(&mut batch).unwrap();
        let mut seen = Vec::new();
        r.wait(Some(Duration::ZERO), &mut seen).unwrap();
        assert!(seen.is_empty());
        let t = Instant::now();
        drop(r);
        let _ = client.write_all(&[0xAB; 4096]);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "drop took {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            quarantine_intact(),
            "round {round}: the kernel wrote into a buffer the reactor had freed"
        );
        // The socket still works: the bytes are there for a plain read.
        let mut server_std = TcpStream::from(server);
        server_std.set_nonblocking(false).unwrap();
        server_std
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut one = [0u8; 1];
        server_std.read_exact(&mut one).unwrap();
        assert_eq!(one[0], 0xAB);
    }
}

fn t_drop_with_pending_send_and_file_ops(make: Make) {
    let Some(mut r) = make() else { return };
    let (server, _client) = accept_pair(r.as_mut());
    let dir = TempDir::new("io-reactor-drop");
    let f = File::create(dir.file("d")).unwrap();
    // More than the socket buffer: part of the send stays pending.
    let mut batch = vec![
        Submission::new(
            1,
            Op::Send {
                fd: server.as_raw_fd(),
                buf: vec![3u8; 8 << 20],
            },
        ),
        Submission::linked(
            2,
            Op::WriteAt {
                fd: f.as_raw_fd(),
                buf: vec![1u8; 1 << 20],
                offset: 0,
            },
        ),
        Submission::new(3, Op::Fdatasync { fd: f.as_raw_fd() }),
    ];
    r.submit(&mut batch).unwrap();
    drop(r);
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[test]
            fn tcp_round_trip() {
                t_tcp_round_trip($make)
            }
            #[test]
            fn partial_reads_append() {
                t_partial_reads_append($make)
            }
            #[test]
            fn peer_close_is_zero_byte_recv() {
                t_peer_close_is_zero_byte_recv($make)
            }
            #[test]
            fn send_error_on_reset_peer() {
                t_send_error_on_reset_peer($make)
            }
            #[test]
            fn file_write_at_and_fdatasync() {
                t_file_write_at_and_fdatasync($make)
            }
            #[test]
            fn broken_link_cancels_the_rest() {
                t_broken_link_cancels_the_rest($make)
            }
            #[test]
            fn invalid_submissions_are_refused() {
                t_invalid_submissions_are_refused($make)
            }
            #[test]
            fn many_ops_in_one_submit() {
                t_many_ops_in_one_submit($make)
            }
            #[test]
            fn full_leaves_the_rest() {
                t_full_leaves_the_rest($make)
            }
            #[test]
            fn wait_timeouts() {
                t_wait_timeouts($make)
            }
            #[test]
            fn drop_with_pending_recv_is_safe() {
                t_drop_with_pending_recv_is_safe($make)
            }
            #[test]
            fn drop_with_pending_send_and_file_ops() {
                t_drop_with_pending_send_and_file_ops($make)
            }
        }
    };
}

suite!(epoll, make_epoll);
suite!(uring, make_uring);
suite!(uring_sqpoll, make_uring_sqpoll);

/// Serialises the two tests that touch `LAMINAR_IO` (the environment is process-wide).
static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn backends_available() {
    let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let uring = make_uring().is_some();
    eprintln!(
        "io reactor suite backends: epoll=ran uring={}",
        if uring {
            "ran"
        } else {
            "skipped (kernel refused)"
        }
    );
    // Where io_uring_setup works, the default choice must be io_uring, not a silent fallback.
    if uring && std::env::var("LAMINAR_IO").is_err() {
        let r = open_reactor(&ReactorConfig::default()).unwrap();
        assert_eq!(r.backend(), Backend::Uring);
        assert!(r.fallback_reason().is_none());
    }
}

/// The environment override, tested in one test (the environment is process-wide).
#[test]
fn env_override_and_explicit_choice() {
    // No other test reads the environment while the lock is held.
    let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let old = std::env::var("LAMINAR_IO").ok();
    std::env::set_var("LAMINAR_IO", "epoll");
    let r = open_reactor(&ReactorConfig::default()).unwrap();
    assert_eq!(r.backend(), Backend::Epoll);
    assert!(r.fallback_reason().is_none());
    std::env::set_var("LAMINAR_IO", "bogus");
    assert!(matches!(
        open_reactor(&ReactorConfig::default()),
        Err(IoError::BadEnv(_))
    ));
    std::env::set_var("LAMINAR_IO", "uring");
    match open_reactor(&ReactorConfig::default()) {
        Ok(r) => assert_eq!(r.backend(), Backend::Uring),
        Err(e) => assert!(matches!(
            e,
            IoError::Setup { .. } | IoError::MissingFeature(_)
        )),
    }
    match old {
        Some(v) => std::env::set_var("LAMINAR_IO", v),
        None => std::env::remove_var("LAMINAR_IO"),
    }
    let config = ReactorConfig {
        backend: BackendChoice::Epoll,
        ..ReactorConfig::default()
    };
    if std::env::var("LAMINAR_IO").is_err() {
        assert_eq!(open_reactor(&config).unwrap().backend(), Backend::Epoll);
    }
}

/// A small queue: a batch larger than the io_uring submission queue is flushed to the kernel
/// part by part; the in-flight cap (twice the entries) is the same on both backends; a linked
/// chain longer than the submission queue is refused.
#[test]
fn small_queue_flushes_and_caps() {
    let config = ReactorConfig {
        entries: 8,
        ..ReactorConfig::default()
    };
    assert_eq!(config.max_in_flight(), 16);
    let mut backends: Vec<Box<dyn IoReactor>> = vec![Box::new(EpollReactor::new(&config).unwrap())];
    match UringReactor::new(&config) {
        Ok(r) => backends.push(Box::new(r)),
        Err(e) => eprintln!("io_uring unavailable, epoll only: {e}"),
    }
    for mut r in backends {
        let name = r.backend().name();
        let mut batch: Vec<Submission> = (0..17).map(|t| Submission::new(t, Op::Nop)).collect();
        assert!(matches!(
            r.submit(&mut batch),
            Err(IoError::Full { in_flight: 16 })
        ));
        assert_eq!(batch.len(), 1, "{name}");
        let mut seen = Vec::new();
        let deadline = Instant::now() + LONG;
        while seen.len() < 16 {
            assert!(Instant::now() < deadline, "{name}: {} of 16", seen.len());
            r.wait(Some(Duration::from_millis(100)), &mut seen).unwrap();
        }
        assert_eq!(r.in_flight(), 0, "{name}");
        r.submit(&mut batch).unwrap();
        assert_eq!(wait_for(r.as_mut(), 16, &mut seen).result.unwrap(), 0);
        if r.backend() == Backend::Uring {
            let mut chain: Vec<Submission> =
                (0..9).map(|t| Submission::linked(t, Op::Nop)).collect();
            chain.push(Submission::new(9, Op::Nop));
            assert!(matches!(r.submit(&mut chain), Err(IoError::InvalidOp(_))));
            assert_eq!(chain.len(), 10);
        }
    }
}
