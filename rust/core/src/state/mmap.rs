//! [`MmapStore`]: a state store for large state, a memory-mapped state image plus an in-memory
//! overlay of recent writes.
//!
//! The base is a state image file (see [`super::image`]) mapped read-only, with transparent
//! huge pages asked for and every page faulted in at open (`MADV_HUGEPAGE` then
//! `MADV_POPULATE_READ`: the effect of `MAP_POPULATE`, see `load_pages`), validated once at
//! open (checksum, rkyv bytecheck of the index, record structure, hash table) and then read
//! without re-validation. Point lookups go through the image's hash index: small records are
//! held inline in their slot (one cache miss for a cold key), others are read from the sorted
//! data region (two); ordered scans walk the sorted records from a sparse-index seek. An image written without a hash index (a
//! [`MemStore`](super::MemStore) snapshot) gets one built in memory at open.
//!
//! Writes go to the overlay, an ordered map of puts and tombstones consulted before the base.
//! A hash set of the overlay keys' hashes (the image's key hash, computed once per lookup and
//! reused for the base probe) lets a lookup skip the ordered map for keys the overlay cannot
//! hold, so a large overlay does not slow down reads of the base.
//! [`MmapStore::compact`] writes base + overlay as a new image beside the file, fsyncs it,
//! renames it over the file, fsyncs the directory and maps the new file; the overlay is then
//! empty. Until then the overlay lives only in memory: reopening the file gives the contents
//! of the last `compact`/`restore`/`build`.
//!
//! Invariants: the file is never written in place: every new version is a new file renamed
//! over the old one, so a mapping never sees its bytes change (the old inode lives until it is
//! unmapped); `len` equals the number of live keys of base + overlay; an overlay entry is a
//! tombstone only if the base holds the key; `overlay_hashes` holds the hash of every overlay
//! key (a superset: hashes are not removed until the overlay is cleared). Must never: modify the mapped file, or be used on
//! a file that another process may truncate or rewrite in place (the state directory lock of
//! `checkpoint::lock` guards against a second engine).

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use hashbrown::HashTable;
use memmap2::{Mmap, MmapOptions};

use super::error::StateError;
use super::file::{remove_stale_tmp, replace_file};
use super::hash::hash_key;
use super::image::{self, AlignedBytes, ImageMeta, ImageView, Records};
use super::index::OwnedTable;
use super::store::{range_is_empty, Scan, StateStore};

/// A memory-mapped state store (see the module documentation).
pub struct MmapStore {
    path: PathBuf,
    map: Mmap,
    meta: ImageMeta,
    /// The hash index when the file has none.
    owned_table: Option<OwnedTable>,
    /// Writes since the last compaction: `Some(value)` = put, `None` = tombstone.
    overlay: BTreeMap<Box<[u8]>, Option<Box<[u8]>>>,
    /// Hashes (seeded like the base) of the overlay's keys: a lookup whose hash is absent here
    /// goes straight to the base.
    overlay_hashes: HashTable<u64>,
    len: usize,
    /// A scratch store ([`MmapStore::scratch`]): the file is deleted when the store is dropped.
    scratch: bool,
}

impl std::fmt::Debug for MmapStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapStore")
            .field("path", &self.path)
            .field("base_keys", &self.meta.count)
            .field("overlay_entries", &self.overlay.len())
            .field("len", &self.len)
            .finish()
    }
}

/// The mapped, validated image of a file.
struct Base {
    map: Mmap,
    meta: ImageMeta,
    owned_table: Option<OwnedTable>,
}

fn map_file(path: &Path) -> Result<Base, StateError> {
    let file = File::open(path).map_err(|e| StateError::io(Some(path), "open", e))?;
    let file_len = file
        .metadata()
        .map_err(|e| StateError::io(Some(path), "stat", e))?
        .len();
    if file_len == 0 {
        // Nothing to map (mmap of length 0 fails); report it as what it is.
        return Err(image::validate(&[], Some(path))
            .err()
            .unwrap_or_else(|| StateError::corrupt(Some(path), "the file is empty")));
    }
    // SAFETY: mapping a file is sound only while no one modifies or truncates it. The file
    // belongs to this store: the store writes it once (through a temporary file renamed over
    // it) and never opens it for writing again; replacements are renames, which leave the
    // mapped inode intact. The state directory lock (`checkpoint::lock`) keeps a second engine
    // away; other programs writing into the state directory are outside the contract (module
    // documentation). The mapping is read-only.
    let map = unsafe { MmapOptions::new().map(&file) }
        .map_err(|e| StateError::io(Some(path), "map", e))?;
    load_pages(&map);
    let meta = image::validate(&map, Some(path))?;
    let owned_table = if meta.has_index() {
        None
    } else {
        Some(ImageView::new(&map, &meta, None).build_table()?)
    };
    Ok(Base {
        map,
        meta,
        owned_table,
    })
}

/// Asks for transparent huge pages, then faults every page in (the effect of `MAP_POPULATE`,
/// which cannot be combined with the advice because it populates at `mmap` time). Random
/// lookups over hundreds of MB pay a TLB miss and, in a VM, a two-level page walk per access
/// with 4 KiB pages; with 2 MiB pages (ext4 page cache folios mapped by PMD) most of that
/// goes away. Both calls are hints: a kernel without file THP or `MADV_POPULATE_READ` leaves
/// 4 KiB pages, or faults pages in on first use.
#[cfg(target_os = "linux")]
fn load_pages(map: &Mmap) {
    let _ = map.advise(memmap2::Advice::HugePage);
    if map.advise(memmap2::Advice::PopulateRead).is_err() {
        let _ = map.advise(memmap2::Advice::WillNeed);
    }
}

#[cfg(not(target_os = "linux"))]
fn load_pages(map: &Mmap) {
    let _ = map.advise(memmap2::Advice::WillNeed);
}

impl MmapStore {
    /// Overlay entries below which [`StateStore::maintain`] never compacts.
    pub const COMPACT_AT: usize = 1 << 16;

    /// Opens the state image at `path`, or creates an empty one there if there is no file.
    /// The file is mapped, fully validated (an error, never a panic, for a truncated, damaged
    /// or foreign file: [`StateError::Corrupt`]) and its pages loaded. A temporary file left
    /// by an interrupted [`compact`](Self::compact) is deleted.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path = path.as_ref();
        remove_stale_tmp(path)?;
        let base = match map_file(path) {
            Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let empty: [(&[u8], &[u8]); 0] = [];
                replace_file(path, |w| {
                    image::encode(|| empty.iter().copied(), true, w, None)
                })?;
                map_file(path)?
            }
            other => other?,
        };
        Ok(Self::with_base(path.to_path_buf(), base))
    }

    /// Writes the records that `records()` yields (strictly increasing keys, else
    /// [`StateError::Unsorted`]) as a new image at `path`, replacing any file there, and opens
    /// it: the bulk load for large state. `records` is called three times (sizes, hash index,
    /// bytes) and must yield the same records each time, e.g. `|| mem_store.iter()`.
    pub fn build<'a, I, F>(path: impl AsRef<Path>, records: F) -> Result<Self, StateError>
    where
        F: Fn() -> I,
        I: Iterator<Item = (&'a [u8], &'a [u8])>,
    {
        let path = path.as_ref();
        remove_stale_tmp(path)?;
        replace_file(path, |w| image::encode(&records, true, w, Some(path)))?;
        Ok(Self::with_base(path.to_path_buf(), map_file(path)?))
    }

    fn with_base(path: PathBuf, base: Base) -> Self {
        MmapStore {
            path,
            len: base.meta.count as usize,
            map: base.map,
            meta: base.meta,
            owned_table: base.owned_table,
            overlay: BTreeMap::new(),
            overlay_hashes: HashTable::new(),
            scratch: false,
        }
    }

    /// An empty store in a new file of its own in `dir` (created if missing), deleted when
    /// the store is dropped: for state that checkpoints copy (through
    /// [`StateStore::snapshot_to`]), so the file is never needed again once its process is
    /// gone. A process killed outright leaves its scratch files behind (named
    /// `scratch-<pid>-<n>.state`).
    pub fn scratch(dir: impl AsRef<Path>) -> Result<Self, StateError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StateError::io(Some(dir), "create", e))?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("scratch-{}-{n}.state", std::process::id()));
        let mut store = Self::build(&path, std::iter::empty::<(&[u8], &[u8])>)?;
        store.scratch = true;
        Ok(store)
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keys in the mapped base (live or shadowed by the overlay).
    pub fn base_len(&self) -> u64 {
        self.meta.count
    }

    /// Entries (puts and tombstones) in the overlay, i.e. not yet in the file.
    pub fn overlay_len(&self) -> usize {
        self.overlay.len()
    }

    /// Bytes of the mapped file.
    pub fn file_len(&self) -> usize {
        self.map.len()
    }

    /// Merges the overlay into a new image file that atomically replaces the current one,
    /// then maps it; the overlay is empty afterwards. On error the store is unchanged (if only
    /// the final re-mapping fails, the file already holds the merged contents, which equal
    /// the store's).
    pub fn compact(&mut self) -> Result<(), StateError> {
        let path = self.path.clone();
        replace_file(&path, |w| {
            image::encode(|| self.iter(), true, w, Some(&path))
        })?;
        self.remap()
    }

    fn remap(&mut self) -> Result<(), StateError> {
        let base = map_file(&self.path)?;
        self.overlay.clear();
        self.overlay_hashes.clear();
        self.len = base.meta.count as usize;
        self.map = base.map;
        self.meta = base.meta;
        self.owned_table = base.owned_table;
        Ok(())
    }

    #[inline]
    fn base(&self) -> ImageView<'_> {
        ImageView::new(&self.map, &self.meta, self.owned_table.as_ref())
    }

    #[inline]
    fn meta_seed(&self) -> u64 {
        self.base().seed()
    }

    /// Records that `key` (with hash `h`) is about to enter the overlay.
    fn note_overlay_key(&mut self, h: u64) {
        if self.overlay_hashes.find(h, |&x| x == h).is_none() {
            self.overlay_hashes.insert_unique(h, h, |&x| x);
        }
    }
}

impl Drop for MmapStore {
    fn drop(&mut self) {
        if self.scratch {
            // Best effort: the mapping stays valid until it is unmapped right after.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl StateStore for MmapStore {
    #[inline]
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let base = self.base();
        if self.overlay.is_empty() {
            return base.get(key);
        }
        let h = hash_key(base.seed(), key);
        if self.overlay_hashes.find(h, |&x| x == h).is_some() {
            if let Some(e) = self.overlay.get(key) {
                return e.as_deref();
            }
        }
        base.get_hashed(key, h)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        match self.overlay.get_mut(key) {
            Some(slot) => {
                if slot.is_none() {
                    self.len += 1;
                }
                match slot {
                    Some(v) if v.len() == value.len() => v.copy_from_slice(value),
                    _ => *slot = Some(value.into()),
                }
            }
            None => {
                let h = hash_key(self.meta_seed(), key);
                if self.base().get_hashed(key, h).is_none() {
                    self.len += 1;
                }
                self.note_overlay_key(h);
                self.overlay.insert(key.into(), Some(value.into()));
            }
        }
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        let h = hash_key(self.meta_seed(), key);
        let in_base = self.base().get_hashed(key, h).is_some();
        match self.overlay.get_mut(key) {
            Some(None) => return false,
            Some(slot) if in_base => *slot = None,
            Some(_) => {
                self.overlay.remove(key);
            }
            None if in_base => {
                self.note_overlay_key(h);
                self.overlay.insert(key.into(), None);
            }
            None => return false,
        }
        self.len -= 1;
        true
    }

    fn len(&self) -> usize {
        self.len
    }

    fn scan_range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Scan<'_> {
        if range_is_empty(start, end) {
            return Scan::empty();
        }
        Scan::mmap(MmapScan::new(
            self.base().range(start, end),
            self.overlay.range::<[u8], _>((start, end)),
            None,
        ))
    }

    fn scan_prefix<'a>(&'a self, prefix: &'a [u8]) -> Scan<'a> {
        let start = Bound::Included(prefix);
        Scan::mmap(MmapScan::new(
            self.base().range(start, Bound::Unbounded),
            self.overlay.range::<[u8], _>((start, Bound::Unbounded)),
            Some(prefix),
        ))
    }

    fn snapshot_to(&self, out: &mut dyn Write) -> Result<u64, StateError> {
        image::encode(|| self.iter(), true, out, None)
    }

    /// Validates `bytes`, writes them as the new state file (re-encoded with a hash index if
    /// they have none) through an atomic replacement, and maps it; the overlay is dropped.
    /// Compacts once the overlay (held in memory) reaches [`MmapStore::COMPACT_AT`] entries
    /// and half the base's keys: the file is rewritten in time proportional to the state,
    /// at most once per that many writes, so the cost per write stays constant and the
    /// memory held stays a fraction of the state.
    fn maintain(&mut self) -> Result<(), StateError> {
        let overlay = self.overlay.len() as u64;
        if overlay >= Self::COMPACT_AT as u64 && overlay >= self.base_len() / 2 {
            self.compact()?;
        }
        Ok(())
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let aligned = AlignedBytes::new(bytes);
        let buf = aligned.as_slice();
        let meta = image::validate(buf, None)?;
        let path = self.path.clone();
        if meta.has_index() {
            replace_file(&path, |w| {
                w.write_all(bytes)
                    .map_err(|e| StateError::io(None, "write", e))
                    .map(|()| bytes.len() as u64)
            })?;
        } else {
            let view = ImageView::new(buf, &meta, None);
            replace_file(&path, |w| {
                image::encode(|| view.records(), true, w, Some(&path))
            })?;
        }
        self.remap()
    }
}

/// A scan over an [`MmapStore`]: base records merged with the overlay, overlay first on equal
/// keys, tombstones skipped.
pub(crate) struct MmapScan<'a> {
    base: Records<'a>,
    over: btree_map::Range<'a, Box<[u8]>, Option<Box<[u8]>>>,
    b: Option<(&'a [u8], &'a [u8])>,
    o: Option<(&'a [u8], Option<&'a [u8]>)>,
    /// Stop at the first key without this prefix.
    prefix: Option<&'a [u8]>,
}

type OverlayItem<'a> = (&'a Box<[u8]>, &'a Option<Box<[u8]>>);

fn overlay_entry<'a>((k, v): OverlayItem<'a>) -> (&'a [u8], Option<&'a [u8]>) {
    (k, v.as_deref())
}

impl<'a> MmapScan<'a> {
    fn new(
        mut base: Records<'a>,
        mut over: btree_map::Range<'a, Box<[u8]>, Option<Box<[u8]>>>,
        prefix: Option<&'a [u8]>,
    ) -> Self {
        let b = base.next();
        let o = over.next().map(overlay_entry);
        MmapScan {
            base,
            over,
            b,
            o,
            prefix,
        }
    }

    fn next_merged(&mut self) -> Option<(&'a [u8], Option<&'a [u8]>)> {
        match (self.b, self.o) {
            (None, None) => None,
            (Some(b), None) => {
                self.b = self.base.next();
                Some((b.0, Some(b.1)))
            }
            (None, Some(o)) => {
                self.o = self.over.next().map(overlay_entry);
                Some(o)
            }
            (Some(b), Some(o)) => match b.0.cmp(o.0) {
                std::cmp::Ordering::Less => {
                    self.b = self.base.next();
                    Some((b.0, Some(b.1)))
                }
                std::cmp::Ordering::Greater => {
                    self.o = self.over.next().map(overlay_entry);
                    Some(o)
                }
                std::cmp::Ordering::Equal => {
                    self.b = self.base.next();
                    self.o = self.over.next().map(overlay_entry);
                    Some(o)
                }
            },
        }
    }
}

impl<'a> Iterator for MmapScan<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (k, v) = self.next_merged()?;
            if let Some(p) = self.prefix {
                if !k.starts_with(p) {
                    self.b = None;
                    self.o = None;
                    return None;
                }
            }
            if let Some(v) = v {
                return Some((k, v));
            }
        }
    }
}
