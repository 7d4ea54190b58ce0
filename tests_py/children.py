"""Running a pipeline in a child process and killing it: shared by the fault-injection tests
(``test_durability.py``, ``test_sinks.py``) and their children (``durable_child.py``,
``sink_child.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Optional


def run_child(script: str, *args: object, kill_after_lines: Optional[int] = None, kill_delay: float = 0.0,
              crash_at: Optional[str] = None) -> tuple[int, list[str], str]:
    """Runs ``python script *args``. With ``kill_after_lines``, SIGKILLs it ``kill_delay`` s
    after it printed that many lines (or when it exits); with ``crash_at``, sets
    ``LAMINAR_CRASH_AT`` so that it aborts itself at that crash point. Returns its exit code,
    the lines it printed and its stderr."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("LAMINAR_CRASH_AT", None)
    if crash_at:
        env["LAMINAR_CRASH_AT"] = crash_at
    p = subprocess.Popen([sys.executable, script, *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    if kill_after_lines is not None:
        while len(lines) < kill_after_lines:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        time.sleep(kill_delay)
        p.send_signal(signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    lines.extend(l for l in out.splitlines() if l)
    return p.returncode, lines, err


def acknowledged(lines: list[str], before: int) -> int:
    """How many pushes are acknowledged after a run that printed ``lines`` (``pushed k`` once
    push ``k`` returned), when ``before`` were before it: the next ``start``."""
    done = [int(l.split()[1]) for l in lines if l.startswith("pushed ")]
    return max([before - 1, *done]) + 1


def resume_from(src, start: int) -> int:
    """In a child: checks that every push acknowledged before (``start - 1``, as the parent
    saw them) survived recovery, exiting with code 3 if not; returns the highest applied
    sequence number (-1 if none)."""
    last = src.position()["last_seq"]
    applied = -1 if last is None else last
    if applied < start - 1:
        print(f"LOST acknowledged pushes: last_seq {last}, acknowledged up to {start - 1}", flush=True)
        sys.exit(3)
    return applied
