//! `core::checkpoint`: the files of checkpoints and the state-directory lock.
//!
//! - `write_atomically` leaves the old or the new content, never a mix; a temporary file left
//!   by a crash is ignored and removed at open;
//! - retention keeps the newest K; `list`, `latest` and an empty directory;
//! - every bit flip and truncation of a checkpoint file or of the MANIFEST is detected;
//! - a missing or damaged latest checkpoint is an error (`Missing` / `Corrupt`) that names the
//!   repair; `fall_back` repairs to the previous one and sets the rejected files aside; a
//!   missing MANIFEST with checkpoint files present is `NoManifest`, repaired the same way;
//! - `StateDirLock`: a second acquire fails (`Locked`, with the holder's pid), drop releases,
//!   and a killed holder process releases it.

#[path = "common/temp_dir.rs"]
mod temp_dir;
use temp_dir::TempDir;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use laminar_core::checkpoint::{write_atomically, CheckpointError, CheckpointStore, StateDirLock};

fn ckpt_file(store: &CheckpointStore, id: u64) -> PathBuf {
    store.dir().join(format!("ckpt-{id:020}.bin"))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn atomic_write_leaves_old_or_new() {
    let d = TempDir::new("atomic");
    write_atomically(d.path(), "f", b"old content").unwrap();
    assert_eq!(fs::read(d.path().join("f")).unwrap(), b"old content");
    // A crash in the middle of the next write leaves a partial temporary file beside the
    // intact old one.
    fs::write(d.path().join("f.tmp"), b"new con").unwrap();
    assert_eq!(fs::read(d.path().join("f")).unwrap(), b"old content");
    // The next write replaces both.
    write_atomically(d.path(), "f", b"new content").unwrap();
    assert_eq!(fs::read(d.path().join("f")).unwrap(), b"new content");
    assert_eq!(names(d.path()), vec!["f"]);
    // A failing write leaves the target untouched and no temporary file.
    let missing = d.path().join("no-such-dir");
    assert!(matches!(
        write_atomically(&missing, "f", b"x"),
        Err(CheckpointError::Io { .. })
    ));
    assert_eq!(fs::read(d.path().join("f")).unwrap(), b"new content");
}

#[test]
fn empty_directory_is_no_checkpoint_yet() {
    let d = TempDir::new("empty");
    let mut s = CheckpointStore::open(d.path(), 3).unwrap();
    assert_eq!(s.dir(), d.path().join("checkpoints"));
    assert!(s.latest().unwrap().is_none());
    assert!(s.list().unwrap().is_empty());
    assert_eq!(s.manifest().unwrap(), None);
    // Nothing to repair either.
    assert_eq!(s.fall_back().unwrap(), None);
    assert!(s.latest().unwrap().is_none());
}

#[test]
fn write_latest_and_retention() {
    let d = TempDir::new("retain");
    for retain in [1usize, 3] {
        let sub = d.path().join(format!("r{retain}"));
        let mut s = CheckpointStore::open(&sub, retain).unwrap();
        for id in 1..=6u64 {
            let payload = vec![id as u8; 1000 * id as usize];
            s.write(id, &payload).unwrap();
            assert_eq!(s.latest().unwrap(), Some((id, payload)));
            let want: Vec<u64> = (id.saturating_sub(retain as u64) + 1..=id).collect();
            assert_eq!(s.list().unwrap(), want, "retain {retain} after {id}");
        }
        // Reopening finds the same.
        let s = CheckpointStore::open(&sub, retain).unwrap();
        assert_eq!(s.latest().unwrap().unwrap().0, 6);
        assert_eq!(s.read(6).unwrap().len(), 6000);
    }
    // An empty payload and a large one.
    let mut s = CheckpointStore::open(&d.path().join("sizes"), 3).unwrap();
    s.write(1, b"").unwrap();
    assert_eq!(s.latest().unwrap(), Some((1, Vec::new())));
    let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i * 7) as u8).collect();
    s.write(2, &big).unwrap();
    assert_eq!(s.latest().unwrap().unwrap().1, big);
}

#[test]
fn stray_files_of_a_crash_are_ignored_and_cleaned() {
    let d = TempDir::new("stray");
    let mut s = CheckpointStore::open(d.path(), 3).unwrap();
    s.write(1, b"one").unwrap();
    // Crash while writing checkpoint 2 (temporary file), and while writing the manifest.
    fs::write(
        s.dir().join("ckpt-00000000000000000002.bin.tmp"),
        b"LMNRCKPT partial",
    )
    .unwrap();
    fs::write(s.dir().join("MANIFEST.tmp"), b"partial").unwrap();
    let s = CheckpointStore::open(d.path(), 3).unwrap();
    assert_eq!(s.latest().unwrap().unwrap(), (1, b"one".to_vec()));
    assert_eq!(
        names(s.dir()),
        vec!["MANIFEST", "ckpt-00000000000000000001.bin"]
    );
    // Crash after checkpoint 2 was renamed into place but before the manifest named it: the
    // manifest still names 1, which is what recovery uses.
    let mut s = s;
    s.write(2, b"two").unwrap();
    let manifest_for_2 = fs::read(s.dir().join("MANIFEST")).unwrap();
    s.write(3, b"three").unwrap();
    let three = fs::read(ckpt_file(&s, 3)).unwrap();
    fs::write(s.dir().join("MANIFEST"), &manifest_for_2).unwrap();
    fs::write(ckpt_file(&s, 3), &three).unwrap();
    let s = CheckpointStore::open(d.path(), 3).unwrap();
    assert_eq!(s.latest().unwrap().unwrap().0, 2);
    assert_eq!(s.list().unwrap(), vec![1, 2, 3]);
}

#[test]
fn every_bit_flip_and_truncation_of_a_checkpoint_is_detected() {
    let d = TempDir::new("flip");
    let mut s = CheckpointStore::open(d.path(), 3).unwrap();
    s.write(1, b"first").unwrap();
    s.write(2, b"the second checkpoint's payload").unwrap();
    let f = ckpt_file(&s, 2);
    let good = fs::read(&f).unwrap();
    for bit in 0..good.len() * 8 {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        fs::write(&f, &b).unwrap();
        match s.latest() {
            Err(CheckpointError::Corrupt { path, .. }) => assert_eq!(path, f),
            other => panic!("bit {bit}: {other:?}"),
        }
    }
    for cut in 0..good.len() {
        fs::write(&f, &good[..cut]).unwrap();
        assert!(
            matches!(s.latest(), Err(CheckpointError::Corrupt { .. })),
            "cut at {cut}"
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    fs::write(&f, &longer).unwrap();
    assert!(matches!(s.latest(), Err(CheckpointError::Corrupt { .. })));
    // A checkpoint file renamed to another id is refused too.
    fs::write(&f, fs::read(ckpt_file(&s, 1)).unwrap()).unwrap();
    let err = s.latest().unwrap_err();
    assert!(err.to_string().contains("fall_back"), "{err}");
    fs::write(&f, &good).unwrap();
    assert_eq!(s.latest().unwrap().unwrap().0, 2);
}

#[test]
fn every_bit_flip_and_truncation_of_the_manifest_is_detected() {
    let d = TempDir::new("manifest");
    let mut s = CheckpointStore::open(d.path(), 3).unwrap();
    s.write(1, b"one").unwrap();
    s.write(2, b"two").unwrap();
    let m = s.dir().join("MANIFEST");
    let good = fs::read(&m).unwrap();
    for bit in 0..good.len() * 8 {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        fs::write(&m, &b).unwrap();
        match s.latest() {
            Err(CheckpointError::Corrupt { path, .. }) => assert_eq!(path, m),
            other => panic!("bit {bit}: {other:?}"),
        }
    }
    for cut in 0..good.len() {
        fs::write(&m, &good[..cut]).unwrap();
        assert!(
            matches!(s.latest(), Err(CheckpointError::Corrupt { .. })),
            "cut {cut}"
        );
    }
    // Repair from a damaged manifest: the newest checkpoint that verifies.
    assert_eq!(s.fall_back().unwrap(), Some(2));
    assert_eq!(s.latest().unwrap().unwrap(), (2, b"two".to_vec()));
}

#[test]
fn missing_latest_is_an_error_and_fall_back_repairs_to_the_previous() {
    let d = TempDir::new("missing");
    let mut s = CheckpointStore::open(d.path(), 3).unwrap();
    for id in 1..=3 {
        s.write(id, format!("payload {id}").as_bytes()).unwrap();
    }
    let f3 = ckpt_file(&s, 3);
    fs::remove_file(&f3).unwrap();
    let err = s.latest().unwrap_err();
    match &err {
        CheckpointError::Missing { id, path } => {
            assert_eq!((*id, path), (3, &f3));
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("fall_back") && msg.contains("missing"),
        "{msg}"
    );
    // Never silently: until the repair is asked for, the error stays.
    let s2 = CheckpointStore::open(d.path(), 3).unwrap();
    assert!(matches!(
        s2.latest(),
        Err(CheckpointError::Missing { id: 3, .. })
    ));

    // Damage 2 as well: the repair skips it and sets it aside (nothing deleted).
    let f2 = ckpt_file(&s, 2);
    let mut b = fs::read(&f2).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    fs::write(&f2, &b).unwrap();
    assert_eq!(s.fall_back().unwrap(), Some(1));
    assert_eq!(s.latest().unwrap().unwrap(), (1, b"payload 1".to_vec()));
    assert_eq!(s.list().unwrap(), vec![1]);
    let aside: Vec<String> = names(s.dir())
        .into_iter()
        .filter(|n| n.contains(".damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].starts_with("ckpt-00000000000000000002.bin.damaged-"));
    // Writing goes on from there.
    s.write(4, b"payload 4").unwrap();
    assert_eq!(s.latest().unwrap().unwrap().0, 4);
    assert_eq!(s.list().unwrap(), vec![1, 4]);
}

#[test]
fn nothing_verifies_fall_back_leaves_no_checkpoint() {
    let d = TempDir::new("none");
    let mut s = CheckpointStore::open(d.path(), 3).unwrap();
    s.write(1, b"one").unwrap();
    s.write(2, b"two").unwrap();
    for id in [1, 2] {
        fs::write(ckpt_file(&s, id), b"garbage").unwrap();
    }
    assert!(matches!(s.latest(), Err(CheckpointError::Corrupt { .. })));
    assert_eq!(s.fall_back().unwrap(), None);
    // The whole log is replayed; the damaged files are kept aside.
    assert_eq!(s.latest().unwrap(), None);
    assert!(s.list().unwrap().is_empty());
    assert_eq!(
        names(s.dir())
            .iter()
            .filter(|n| n.contains(".damaged-"))
            .count(),
        2
    );
}

#[test]
fn missing_manifest_with_checkpoints_is_an_error_with_a_hint() {
    let d = TempDir::new("nomanifest");
    let mut s = CheckpointStore::open(d.path(), 3).unwrap();
    s.write(1, b"one").unwrap();
    s.write(2, b"two").unwrap();
    fs::remove_file(s.dir().join("MANIFEST")).unwrap();
    let err = s.latest().unwrap_err();
    assert!(matches!(err, CheckpointError::NoManifest { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no MANIFEST") && msg.contains("fall_back"),
        "{msg}"
    );
    assert_eq!(s.fall_back().unwrap(), Some(2));
    assert_eq!(s.latest().unwrap().unwrap(), (2, b"two".to_vec()));
}

#[test]
fn lock_double_acquire_fails_and_drop_releases() {
    let d = TempDir::new("lock");
    let state = d.path().join("state");
    let first = StateDirLock::acquire(&state).unwrap();
    assert_eq!(first.path(), state.join("LOCK"));
    for _ in 0..2 {
        match StateDirLock::acquire(&state) {
            Err(e @ CheckpointError::Locked { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("in use by another engine"), "{msg}");
                assert!(msg.contains(&std::process::id().to_string()), "{msg}");
                if let CheckpointError::Locked { owner_pid, path } = e {
                    assert_eq!(owner_pid, Some(std::process::id()));
                    assert_eq!(path, state.join("LOCK"));
                }
            }
            other => panic!("expected Locked, got {other:?}"),
        }
    }
    drop(first);
    let again = StateDirLock::acquire(&state).unwrap();
    drop(again);
    // A LOCK file left behind (released) does not block.
    assert!(state.join("LOCK").exists());
    let _third = StateDirLock::acquire(&state).unwrap();
}

const CHILD_ENV: &str = "LAMINAR_TEST_LOCK_CHILD_DIR";

/// Run by `a_killed_holder_releases_the_lock` in a child process: takes the lock, says so,
/// and waits to be killed. In a normal test run (no environment variable) it does nothing.
#[test]
fn lock_holder_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let _lock = StateDirLock::acquire(Path::new(&dir)).unwrap();
    println!("LOCKED");
    std::thread::sleep(std::time::Duration::from_secs(120));
}

#[test]
fn a_killed_holder_releases_the_lock() {
    let d = TempDir::new("kill");
    let state = d.path().join("state");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let locked = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("LOCKED"));
    assert!(locked, "child did not take the lock");
    match StateDirLock::acquire(&state) {
        Err(CheckpointError::Locked { owner_pid, .. }) => assert_eq!(owner_pid, Some(child.id())),
        other => {
            let _ = child.kill();
            panic!("expected Locked while the child holds it, got {other:?}");
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The OS released the dead process's lock.
    let lock = StateDirLock::acquire(&state).unwrap();
    drop(lock);
}
