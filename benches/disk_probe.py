"""What one durable WAL group costs on this disk, without the engine: 1,000 commits of 240 KB
(one workload E push each) into a fresh 256 MiB file, grouped 1, 4 or 8 per write, by
each way the log could write them.

    python benches/disk_probe.py [--dir /tmp] [--rounds 2]

- ``buffered, zero-filled``: ``pwrite`` + ``fdatasync`` into a zero-filled file whose pages
  are not in the page cache (what a new preallocated segment looks like to a buffered
  writer: every page of the page cache must be allocated first);
- ``direct, zero-filled``: one ``O_DIRECT | O_DSYNC`` write per group into a zero-filled file
  (also reports how long the fill took, which the log would pay beside its writes);
- ``direct, fallocated``: the same into a file whose blocks are only reserved
  (``posix_fallocate``), which is what the WAL does now.

Prints one line per (way, group, round): total milliseconds and MB/s. Linux only (needs
``O_DIRECT``; tmpfs refuses it).
"""

from __future__ import annotations

import argparse
import mmap
import os
import tempfile
import time

COMMITS = 1000
RECORD = 240_000
FILE = 256 << 20
PAGE = 4096


def prepare(path: str, how: str) -> float:
    """Creates the file, zero-filled (through O_DIRECT, as the WAL's fill did) or fallocated,
    synced, with nothing of it in the page cache; returns the seconds it took."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    t = time.perf_counter()
    if how == "fallocated":
        os.posix_fallocate(fd, 0, FILE)
    else:
        zeros = mmap.mmap(-1, 1 << 20)  # page-aligned, zero
        direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
        for at in range(0, FILE, 1 << 20):
            os.pwrite(direct, zeros, at)
        os.close(direct)
    os.fsync(fd)
    took = time.perf_counter() - t
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    return took


def commits(path: str, way: str, group: int) -> float:
    """Writes COMMITS records of RECORD bytes, `group` per write; returns the seconds."""
    size = -(-RECORD * group // PAGE) * PAGE
    buf = mmap.mmap(-1, size)
    buf.write(os.urandom(size))
    if way == "buffered":
        fd = os.open(path, os.O_WRONLY)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    t = time.perf_counter()
    at = 0
    for _ in range(COMMITS // group):
        os.pwrite(fd, buf, at)
        if way == "buffered":
            os.fdatasync(fd)
        at += size
    took = time.perf_counter() - t
    os.close(fd)
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=tempfile.gettempdir())
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    path = os.path.join(args.dir, f"laminar-disk-probe-{os.getpid()}")
    print(f"{COMMITS} commits of {RECORD // 1000} KB in {args.dir}")
    try:
        for way, how in (("buffered", "zero-filled"), ("direct", "zero-filled"), ("direct", "fallocated")):
            for group in (1, 4, 8):
                for r in range(args.rounds):
                    prep = prepare(path, how)
                    s = commits(path, way, group)
                    print(f"{way:8s} {how:11s} group {group}: {s * 1e3:6.0f} ms, "
                          f"{COMMITS * RECORD / s / 1e6:6.0f} MB/s (preparing the file: {prep * 1e3:.0f} ms)",
                          flush=True)
    finally:
        if os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    main()
