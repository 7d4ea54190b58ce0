//! `CheckpointStore`: the files of checkpoints in `<state_dir>/checkpoints/`.
//!
//! A checkpoint is one file `ckpt-<id, 20 digits>.bin`:
//! `[magic 8][version u32][id u64][len u64][masked crc32c u32][payload]`, the CRC covering
//! the id, the length and the payload. A checkpoint is complete only once the `MANIFEST`
//! (`[magic 8][version u32][id u64][masked crc32c u32]`) names it. Both are written with
//! [`write_atomically`]: a temporary file, `fsync`, rename over, `fsync` of the directory,
//! so a crash leaves the old file or the new one, never a mix.
//!
//! Order of a write: checkpoint file, then the MANIFEST, then the deletion of checkpoints
//! older than the newest `retain`. A crash between the first two leaves an extra file the
//! manifest does not name: ignored, and removed by the next write.
//!
//! Reading never guesses: a manifest naming a missing or damaged file is an error
//! ([`CheckpointError::Missing`] / [`CheckpointError::Corrupt`]); the documented repair is
//! [`CheckpointStore::fall_back`], which points the manifest at the newest older checkpoint
//! that verifies. The store never deletes the checkpoint the manifest names, and the repair
//! deletes nothing: the checkpoint files it rejects are renamed `<name>.damaged-<unix secs>`
//! (kept for inspection, ignored by [`CheckpointStore::list`]).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::CheckpointError;

const CKPT_MAGIC: &[u8; 8] = b"LMNRCKPT";
const MANIFEST_MAGIC: &[u8; 8] = b"LMNRMNFT";
const VERSION: u32 = 1;
const CKPT_HEADER: usize = 8 + 4 + 8 + 8 + 4;
const MANIFEST_LEN: usize = 8 + 4 + 8 + 4;
const MANIFEST: &str = "MANIFEST";

/// RocksDB-style CRC mask: a CRC stored next to data that may itself hold CRCs.
fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Writes `bytes` to `dir/name` atomically and durably: a temporary file in `dir`, `fsync`,
/// rename over `name`, `fsync` of `dir`.
/// On error the target is untouched (the temporary file is removed, best effort; one left by
/// a crash is removed by [`CheckpointStore::open`]).
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let written = (|| {
        let mut f = File::create(&tmp).map_err(|e| CheckpointError::io(&tmp, "create", e))?;
        f.write_all(bytes)
            .map_err(|e| CheckpointError::io(&tmp, "write", e))?;
        f.sync_all()
            .map_err(|e| CheckpointError::io(&tmp, "fsync", e))?;
        drop(f);
        fs::rename(&tmp, &target).map_err(|e| CheckpointError::io(&target, "rename", e))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CheckpointError::io(dir, "fsync directory", e))
}

fn file_name(id: u64) -> String {
    format!("ckpt-{id:020}.bin")
}

fn parse_name(name: &str) -> Option<u64> {
    name.strip_prefix("ckpt-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()
}

/// The checkpoints of one state directory.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    retain: usize,
}

impl CheckpointStore {
    /// Opens (creating) `<state_dir>/checkpoints`, keeping the newest `retain` (at least 1)
    /// complete checkpoints. Stray temporary files of an interrupted write are removed.
    pub fn open(state_dir: &Path, retain: usize) -> Result<Self, CheckpointError> {
        let dir = state_dir.join("checkpoints");
        fs::create_dir_all(&dir).map_err(|e| CheckpointError::io(&dir, "create directory", e))?;
        let store = CheckpointStore {
            dir,
            retain: retain.max(1),
        };
        for entry in store.entries()? {
            if entry.ends_with(".tmp") {
                let p = store.dir.join(&entry);
                fs::remove_file(&p).map_err(|e| CheckpointError::io(&p, "remove", e))?;
            }
        }
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entries(&self) -> Result<Vec<String>, CheckpointError> {
        let rd = fs::read_dir(&self.dir).map_err(|e| CheckpointError::io(&self.dir, "list", e))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| CheckpointError::io(&self.dir, "list", e))?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }

    /// Ids of the checkpoint files present, ascending (complete or not: the manifest decides).
    pub fn list(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut ids: Vec<u64> = self
            .entries()?
            .iter()
            .filter_map(|n| parse_name(n))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Writes checkpoint `id` with `payload`, makes it the latest (manifest), then deletes
    /// all but the newest `retain` checkpoints.
    pub fn write(&mut self, id: u64, payload: &[u8]) -> Result<(), CheckpointError> {
        let mut bytes = Vec::with_capacity(CKPT_HEADER + payload.len());
        bytes.extend_from_slice(CKPT_MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&id.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[12..28]), payload);
        bytes.extend_from_slice(&mask(crc).to_le_bytes());
        bytes.extend_from_slice(payload);
        write_atomically(&self.dir, &file_name(id), &bytes)?;
        self.write_manifest(id)?;
        let ids = self.list()?;
        let keep_from = ids.len().saturating_sub(self.retain);
        for &old in &ids[..keep_from] {
            if old != id {
                let p = self.dir.join(file_name(old));
                fs::remove_file(&p).map_err(|e| CheckpointError::io(&p, "remove", e))?;
            }
        }
        Ok(())
    }

    fn write_manifest(&self, id: u64) -> Result<(), CheckpointError> {
        let mut m = Vec::with_capacity(MANIFEST_LEN);
        m.extend_from_slice(MANIFEST_MAGIC);
        m.extend_from_slice(&VERSION.to_le_bytes());
        m.extend_from_slice(&id.to_le_bytes());
        m.extend_from_slice(&mask(crc32c::crc32c(&m[8..20])).to_le_bytes());
        write_atomically(&self.dir, MANIFEST, &m)
    }

    /// The id the manifest names (`None`: no manifest and no checkpoint file: nothing yet).
    pub fn manifest(&self) -> Result<Option<u64>, CheckpointError> {
        let path = self.dir.join(MANIFEST);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.list()?.is_empty() {
                    return Ok(None);
                }
                return Err(CheckpointError::NoManifest {
                    dir: self.dir.clone(),
                    hint: "laminar.repair_state_dir(state_dir) (Rust: CheckpointStore::fall_back) rewrites it from the newest checkpoint that verifies".into(),
                });
            }
            Err(e) => return Err(CheckpointError::io(&path, "read", e)),
        };
        let corrupt = |reason: &str| CheckpointError::Corrupt {
            path: path.clone(),
            reason: reason.into(),
        };
        if bytes.len() != MANIFEST_LEN || &bytes[..8] != MANIFEST_MAGIC {
            return Err(corrupt("not a manifest (length or magic)"));
        }
        let stored = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        if mask(crc32c::crc32c(&bytes[8..20])) != stored {
            return Err(corrupt("checksum mismatch"));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(corrupt(&format!(
                "format version {version}, expected {VERSION}"
            )));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[12..20]);
        Ok(Some(u64::from_le_bytes(id)))
    }

    /// Reads and verifies checkpoint `id`; returns its payload.
    pub fn read(&self, id: u64) -> Result<Vec<u8>, CheckpointError> {
        let path = self.dir.join(file_name(id));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CheckpointError::Missing { id, path })
            }
            Err(e) => return Err(CheckpointError::io(&path, "read", e)),
        };
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() < CKPT_HEADER || &bytes[..8] != CKPT_MAGIC {
            return Err(corrupt("not a checkpoint file (length or magic)".into()));
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(corrupt(format!(
                "format version {version}, expected {VERSION}"
            )));
        }
        if word(12) != id {
            return Err(corrupt(format!("holds checkpoint {}, not {id}", word(12))));
        }
        let len = word(20);
        if len != (bytes.len() - CKPT_HEADER) as u64 {
            return Err(corrupt(format!(
                "length {len} does not match the file ({} payload bytes): truncated?",
                bytes.len() - CKPT_HEADER
            )));
        }
        let stored = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[12..28]), &bytes[CKPT_HEADER..]);
        if mask(crc) != stored {
            return Err(corrupt("checksum mismatch".into()));
        }
        Ok(bytes[CKPT_HEADER..].to_vec())
    }

    /// The latest complete checkpoint and its payload (`None`: none yet).
    pub fn latest(&self) -> Result<Option<(u64, Vec<u8>)>, CheckpointError> {
        match self.manifest()? {
            None => Ok(None),
            Some(id) => self.read(id).map(|p| Some((id, p))),
        }
    }

    /// Repair: points the manifest at the newest checkpoint that verifies (older than the
    /// one named now, if the manifest is readable) and returns its id. The newer checkpoint
    /// files it passes over (missing, damaged) are renamed `<name>.damaged-<unix secs>`, so
    /// that they no longer count as checkpoints; nothing is deleted. When no checkpoint
    /// verifies, every checkpoint file is renamed so, the manifest is removed and `None` is
    /// returned: [`latest`](Self::latest) then reports no checkpoint and recovery replays the
    /// whole remaining log. Never called implicitly.
    pub fn fall_back(&mut self) -> Result<Option<u64>, CheckpointError> {
        let named = self.manifest().ok().flatten();
        let mut rejected = Vec::new();
        let mut chosen = None;
        for id in self.list()?.into_iter().rev() {
            if named.is_some_and(|n| id >= n) || self.read(id).is_err() {
                rejected.push(id);
                continue;
            }
            chosen = Some(id);
            break;
        }
        match chosen {
            Some(id) => self.write_manifest(id)?,
            None => {
                let path = self.dir.join(MANIFEST);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(CheckpointError::io(&path, "remove", e)),
                }
            }
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for id in rejected {
            let from = self.dir.join(file_name(id));
            let to = self.dir.join(format!("{}.damaged-{stamp}", file_name(id)));
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CheckpointError::io(&from, "rename aside", e)),
            }
        }
        sync_dir(&self.dir)?;
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("laminar-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn write_read_retain_and_empty() {
        let d = temp("basic");
        let mut s = CheckpointStore::open(&d, 2).unwrap();
        assert!(s.latest().unwrap().is_none());
        for id in 1..=4u64 {
            s.write(id, &vec![id as u8; 100 + id as usize]).unwrap();
        }
        assert_eq!(s.list().unwrap(), vec![3, 4]);
        let (id, p) = s.latest().unwrap().unwrap();
        assert_eq!((id, p.len()), (4, 104));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damage_missing_and_fall_back() {
        let d = temp("damage");
        let mut s = CheckpointStore::open(&d, 3).unwrap();
        s.write(1, b"one").unwrap();
        s.write(2, b"two!").unwrap();
        let f2 = s.dir().join(file_name(2));
        let good = fs::read(&f2).unwrap();
        // Every single-bit flip and every truncation of the file is detected.
        for i in 0..good.len() * 8 {
            let mut b = good.clone();
            b[i / 8] ^= 1 << (i % 8);
            fs::write(&f2, &b).unwrap();
            assert!(s.latest().is_err(), "flip of bit {i} not detected");
        }
        for cut in 0..good.len() {
            fs::write(&f2, &good[..cut]).unwrap();
            assert!(matches!(s.latest(), Err(CheckpointError::Corrupt { .. })));
        }
        fs::remove_file(&f2).unwrap();
        let err = s.latest().unwrap_err();
        assert!(
            matches!(err, CheckpointError::Missing { id: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("fall_back"), "{err}");
        assert_eq!(s.fall_back().unwrap(), Some(1));
        assert_eq!(s.latest().unwrap().unwrap(), (1, b"one".to_vec()));
        // A damaged manifest is an error too; with no verifying checkpoint, fall_back
        // removes the manifest (recovery then replays the whole log).
        let m = s.dir().join(MANIFEST);
        let mut mb = fs::read(&m).unwrap();
        mb[13] ^= 4;
        fs::write(&m, &mb).unwrap();
        assert!(matches!(s.latest(), Err(CheckpointError::Corrupt { .. })));
        fs::write(s.dir().join(file_name(1)), b"junk").unwrap();
        assert_eq!(s.fall_back().unwrap(), None);
        assert!(matches!(s.latest(), Ok(None)));
        assert!(s.list().unwrap().is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stray_temporary_files_are_ignored_and_removed() {
        let d = temp("tmp");
        let mut s = CheckpointStore::open(&d, 3).unwrap();
        s.write(7, b"seven").unwrap();
        fs::write(s.dir().join("ckpt-00000000000000000008.bin.tmp"), b"half").unwrap();
        fs::write(s.dir().join("MANIFEST.tmp"), b"half").unwrap();
        let s = CheckpointStore::open(&d, 3).unwrap();
        assert_eq!(s.latest().unwrap().unwrap().0, 7);
        assert!(!s.dir().join("MANIFEST.tmp").exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
