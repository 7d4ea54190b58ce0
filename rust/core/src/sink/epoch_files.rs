//! `EpochFiles`: the directory protocol that makes file-based sinks exactly-once.
//!
//! A sink directory holds committed files, visible to readers, and a `_staging/`
//! subdirectory (ignored by Arrow/Parquet dataset readers, which skip names starting with `_`)
//! holding files that are not committed yet. A file's name says which engine lineage wrote it
//! and for which epoch: `part-<lineage>-<epoch>-<part>.<ext>`. Its life:
//!
//! 1. **open** — written as `_staging/<name>.inprogress`; a crash leaves garbage that the next
//!    open removes (an in-progress file was never part of a checkpoint);
//! 2. **staged** (phase one of the two-phase commit, before the checkpoint is written) — the
//!    file is fsynced, renamed to `_staging/<name>`, and `_staging/` fsynced;
//! 3. **committed** (phase two, after the checkpoint of that epoch is complete) — renamed into
//!    the sink directory, which is then fsynced. Committing is idempotent: it moves whatever is
//!    staged for the epochs up to the one named.
//!
//! Recovery from checkpoint `c` commits every staged file of this lineage with epoch `<= c`
//! (the crash came between the checkpoint and the rename) and deletes those with epoch `> c`
//! (the log replay produces their rows again). A committed file of this lineage with epoch
//! `> c` means recovery starts from an older checkpoint than one that already committed: that
//! is refused, because the rows would be written twice.
//!
//! The lineage is a random tag fixed for the life of a state directory (or of one engine
//! without one), so engines on different state directories never overwrite each other's files.
//! One engine at a time may use a sink directory (an OS lock on `_staging/LOCK`). This module
//! never looks inside the files.

use std::collections::hash_map::RandomState;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use super::error::SinkError;
use crate::checkpoint::{CheckpointError, StateDirLock};

/// The staging subdirectory of a sink directory.
pub const STAGING_DIR: &str = "_staging";
const IN_PROGRESS: &str = ".inprogress";

/// A new random lineage tag (16 hex digits).
pub fn new_lineage() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("{:016x}", h.finish())
}

/// Whether `tag` can be a lineage (what [`new_lineage`] makes).
pub fn is_lineage(tag: &str) -> bool {
    tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The name of one file of a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartName {
    /// Epoch whose rows it holds.
    pub epoch: u64,
    /// Part number (several files may hold one epoch).
    pub part: u64,
    file: String,
}

impl PartName {
    /// The file name.
    pub fn file(&self) -> &str {
        &self.file
    }
}

/// What [`EpochFiles::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochRecovery {
    /// Staged files committed (their checkpoint was complete).
    pub committed: usize,
    /// Staged or in-progress files deleted (their rows are produced again).
    pub discarded: usize,
}

/// One sink directory (see the module docs).
#[derive(Debug)]
pub struct EpochFiles {
    dir: PathBuf,
    staging: PathBuf,
    lineage: String,
    ext: &'static str,
    next_part: u64,
    /// Held from open until [`release`](Self::release) (or drop).
    lock: Option<StateDirLock>,
}

impl EpochFiles {
    /// Opens (creating) sink directory `dir` for files ending in `.ext`, locks it and removes
    /// in-progress files a crash left behind.
    pub fn open(dir: &Path, lineage: &str, ext: &'static str) -> Result<Self, SinkError> {
        if !is_lineage(lineage) {
            return Err(SinkError::Protocol(format!("bad lineage tag {lineage:?}")));
        }
        let staging = dir.join(STAGING_DIR);
        let lock = StateDirLock::acquire(&staging).map_err(|e| match e {
            CheckpointError::Locked { path, owner_pid } => SinkError::Locked { path, owner_pid },
            CheckpointError::Io { path, op, source } => SinkError::io(path, op, source),
            CheckpointError::DiskFull { path } => SinkError::DiskFull { path },
            other => SinkError::Protocol(other.to_string()),
        })?;
        let files = EpochFiles {
            dir: dir.to_path_buf(),
            staging,
            lineage: lineage.to_string(),
            ext,
            next_part: 0,
            lock: Some(lock),
        };
        for name in files.names(&files.staging)? {
            if name.ends_with(IN_PROGRESS) {
                let path = files.staging.join(&name);
                fs::remove_file(&path).map_err(|e| SinkError::io(&path, "remove", e))?;
            }
        }
        Ok(files)
    }

    /// The sink directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lineage tag in this sink's file names.
    pub fn lineage(&self) -> &str {
        &self.lineage
    }

    /// Lets another engine open the directory; only committed files may be read and removed
    /// afterwards.
    pub fn release(&mut self) {
        self.lock = None;
    }

    /// Starts a new file for `epoch`: returns it (open for writing, in progress) and its name.
    pub fn create(&mut self, epoch: u64) -> Result<(File, PartName), SinkError> {
        if self.lock.is_none() {
            return Err(SinkError::Protocol(format!(
                "{} was released: its engine is closed",
                self.dir.display()
            )));
        }
        let part = self.next_part;
        self.next_part += 1;
        let name = PartName {
            epoch,
            part,
            file: format!("part-{}-{epoch:010}-{part:06}.{}", self.lineage, self.ext),
        };
        let path = self.in_progress(&name);
        let file = File::create(&path).map_err(|e| SinkError::io(&path, "create", e))?;
        Ok((file, name))
    }

    /// Phase one for one file: makes `file` (written as `name`) durable and stages it.
    pub fn stage(&self, file: File, name: &PartName) -> Result<(), SinkError> {
        let from = self.in_progress(name);
        file.sync_all()
            .map_err(|e| SinkError::io(&from, "fsync", e))?;
        drop(file);
        let to = self.staging.join(name.file());
        fs::rename(&from, &to).map_err(|e| SinkError::io(&to, "rename", e))?;
        sync_dir(&self.staging)
    }

    /// Phase two: moves every staged file of this lineage with an epoch up to `epoch` into
    /// the sink directory. Returns the names committed, oldest epoch first.
    pub fn commit(&self, epoch: u64) -> Result<Vec<PartName>, SinkError> {
        let staged = self.parts(&self.staging, |e| e <= epoch)?;
        for name in &staged {
            let to = self.dir.join(name.file());
            fs::rename(self.staging.join(name.file()), &to)
                .map_err(|e| SinkError::io(&to, "rename", e))?;
        }
        if !staged.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(staged)
    }

    /// Recovery from checkpoint `checkpoint` (`None`: none; the whole log is replayed): see
    /// the module docs.
    pub fn recover(&self, checkpoint: Option<u64>) -> Result<EpochRecovery, SinkError> {
        let c = checkpoint.unwrap_or(0);
        if let Some(ahead) = self.parts(&self.dir, |e| e > c)?.last() {
            return Err(SinkError::AheadOfCheckpoint {
                dir: self.dir.clone(),
                committed: ahead.epoch,
                recovered: c,
            });
        }
        let discard = self.parts(&self.staging, |e| e > c)?;
        for name in &discard {
            let path = self.staging.join(name.file());
            fs::remove_file(&path).map_err(|e| SinkError::io(&path, "remove", e))?;
        }
        if !discard.is_empty() {
            sync_dir(&self.staging)?;
        }
        let committed = self.commit(c)?.len();
        Ok(EpochRecovery {
            committed,
            discarded: discard.len(),
        })
    }

    /// Committed files of this lineage, oldest epoch (then part) first.
    pub fn committed(&self) -> Result<Vec<(PartName, PathBuf)>, SinkError> {
        Ok(self
            .parts(&self.dir, |_| true)?
            .into_iter()
            .map(|n| {
                let path = self.dir.join(n.file());
                (n, path)
            })
            .collect())
    }

    /// Deletes the committed files of this lineage up to `epoch` (delivered to their reader).
    pub fn remove_committed(&self, epoch: u64) -> Result<(), SinkError> {
        for name in self.parts(&self.dir, |e| e <= epoch)? {
            let path = self.dir.join(name.file());
            fs::remove_file(&path).map_err(|e| SinkError::io(&path, "remove", e))?;
        }
        Ok(())
    }

    fn in_progress(&self, name: &PartName) -> PathBuf {
        self.staging.join(format!("{}{IN_PROGRESS}", name.file()))
    }

    fn names(&self, dir: &Path) -> Result<Vec<String>, SinkError> {
        let entries = fs::read_dir(dir).map_err(|e| SinkError::io(dir, "list", e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SinkError::io(dir, "list", e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// This lineage's files in `dir` whose epoch passes `keep`, sorted by (epoch, part).
    fn parts(&self, dir: &Path, keep: impl Fn(u64) -> bool) -> Result<Vec<PartName>, SinkError> {
        let mut parts: Vec<PartName> = self
            .names(dir)?
            .into_iter()
            .filter_map(|file| self.parse(file))
            .filter(|p| keep(p.epoch))
            .collect();
        parts.sort_unstable_by_key(|p| (p.epoch, p.part));
        Ok(parts)
    }

    fn parse(&self, file: String) -> Option<PartName> {
        let rest = file
            .strip_prefix("part-")?
            .strip_prefix(self.lineage.as_str())?;
        let rest = rest
            .strip_prefix('-')?
            .strip_suffix(self.ext)?
            .strip_suffix('.')?;
        let (epoch, part) = rest.split_once('-')?;
        Some(PartName {
            epoch: epoch.parse().ok()?,
            part: part.parse().ok()?,
            file,
        })
    }
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SinkError::io(dir, "fsync directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("laminar-epochs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("part-"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stage_commit_and_recover_follow_the_protocol() {
        let dir = temp("protocol");
        let lineage = new_lineage();
        let mut f = EpochFiles::open(&dir, &lineage, "bin").unwrap();
        for epoch in [1, 2, 3] {
            let (file, name) = f.create(epoch).unwrap();
            f.stage(file, &name).unwrap();
        }
        // An unstaged file of epoch 4 (crash while writing it).
        let _open = f.create(4).unwrap();
        assert_eq!(f.commit(1).unwrap().len(), 1);
        assert_eq!(files_in(&dir).len(), 1);
        drop(f);

        // Restart: checkpoint 2 was complete, epoch 3 was staged but not checkpointed.
        let f = EpochFiles::open(&dir, &lineage, "bin").unwrap();
        let r = f.recover(Some(2)).unwrap();
        assert_eq!(
            r,
            EpochRecovery {
                committed: 1,
                discarded: 1
            }
        );
        let committed: Vec<u64> = f
            .committed()
            .unwrap()
            .iter()
            .map(|(n, _)| n.epoch)
            .collect();
        assert_eq!(committed, vec![1, 2]);
        assert!(
            files_in(&dir.join(STAGING_DIR)).is_empty(),
            "in-progress and later staged files are gone"
        );

        // Recovery from an older checkpoint than one that committed: refused.
        let err = f.recover(Some(1)).unwrap_err();
        assert!(
            matches!(
                err,
                SinkError::AheadOfCheckpoint {
                    committed: 2,
                    recovered: 1,
                    ..
                }
            ),
            "{err}"
        );
        // Another lineage's files are not this engine's business.
        drop(f);
        let other = EpochFiles::open(&dir, &new_lineage(), "bin").unwrap();
        assert_eq!(other.recover(None).unwrap(), EpochRecovery::default());
        assert!(other.committed().unwrap().is_empty());
        other.remove_committed(u64::MAX).unwrap();
        assert_eq!(files_in(&dir).len(), 2);
        drop(other);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sink_directory_has_one_writer() {
        let dir = temp("lock");
        let first = EpochFiles::open(&dir, &new_lineage(), "bin").unwrap();
        let err = EpochFiles::open(&dir, &new_lineage(), "bin").unwrap_err();
        assert!(matches!(err, SinkError::Locked { .. }), "{err}");
        assert!(
            err.to_string().contains("in use by another engine"),
            "{err}"
        );
        drop(first);
        EpochFiles::open(&dir, &new_lineage(), "bin").unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lineage_tags_are_distinct_hex() {
        let a = new_lineage();
        assert!(is_lineage(&a), "{a}");
        assert_ne!(a, new_lineage());
        assert!(!is_lineage("../../etc"));
    }
}
