"""Executes every notebook of a folder and fails loudly if any cell raises.

    python tests_py/run_notebooks.py notebooks

Runs each ``*.ipynb`` (sorted by name) top to bottom with nbclient, in a fresh kernel started
from the interpreter running this script (``sys.executable``, so the project's virtualenv),
with the notebook's folder as working directory and matplotlib on the non-interactive Agg
backend. Prints one line per notebook (PASS/FAIL and duration) and, for a failure, the cell
and its error. Exits 1 if any notebook fails and 2 if there is nothing to run: an empty
folder never passes. Outputs are not written back; the notebooks stay as committed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from traitlets import default

KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 600
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _write_kernelspec(root: Path) -> Path:
    """A kernelspec named ``python3`` that runs ipykernel on this very interpreter.

    Nothing installed on the machine (user or system kernelspecs, ``python`` on PATH) can
    change which Python the notebooks run on.
    """
    kernels = root / "kernels"
    spec_dir = kernels / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        # log level ERROR: ipykernel's start-up notices (TCP transport on localhost) are noise here
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor} ({sys.prefix})",
        "language": "python",
        "env": {"MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return kernels


def _kernel_manager_class(kernel_dirs: Path) -> type[AsyncKernelManager]:
    class ThisInterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _only_our_kernelspec(self) -> KernelSpecManager:
            return KernelSpecManager(kernel_dirs=[str(kernel_dirs)], ensure_native_kernel=False)

    return ThisInterpreterKernelManager


def run_notebook(path: Path, kernel_manager_class: type[AsyncKernelManager],
                 save_dir: Path | None = None) -> str | None:
    """Executes one notebook; returns None on success or a description of the failure.

    With ``save_dir``, the executed notebook (with its outputs) is written there as well.
    """
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL_NAME,
        kernel_manager_class=kernel_manager_class,
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as e:  # a cell raised: str(e) has the cell source and traceback
        return str(e)
    except (CellTimeoutError, DeadKernelError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, save_dir / path.name)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder holding the *.ipynb to execute")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="also write the executed notebooks, with outputs, into DIR")
    args = parser.parse_args(argv)

    folder: Path = args.folder.resolve()
    if not folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    notebooks = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not notebooks:
        print(f"error: no *.ipynb in {args.folder}; nothing was executed", file=sys.stderr)
        return 2

    print(f"executing {len(notebooks)} notebook(s) from {args.folder} with {sys.executable}", flush=True)
    failures: list[tuple[Path, str]] = []
    total_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="laminar-kernels-") as tmp:
        km_class = _kernel_manager_class(_write_kernelspec(Path(tmp)))
        for path in notebooks:
            start = time.perf_counter()
            try:
                error = run_notebook(path, km_class, args.save)
            except Exception as e:  # the kernel did not start, the file is not a notebook, ...
                error = f"{type(e).__name__}: {e}"
            elapsed = time.perf_counter() - start
            print(f"{'FAIL' if error else 'PASS'}  {path.name}  {elapsed:.1f} s", flush=True)
            if error:
                failures.append((path, error))

    for path, error in failures:
        if not sys.stdout.isatty():  # IPython colours its tracebacks; keep CI logs readable
            error = _ANSI.sub("", error)
        print(f"\n===== {path.name} failed =====\n{error}")
    print(f"\n{len(notebooks) - len(failures)} passed, {len(failures)} failed "
          f"in {time.perf_counter() - total_start:.1f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
