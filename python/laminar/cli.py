"""The ``laminar`` command: ``laminar demo`` runs the built-in demo; ``laminar version``."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="laminar", description="laminar streaming engine")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a windowed pipeline on built-in data and print it")
    demo.add_argument("--events", type=int, default=1_000_000, help="number of events (default 1,000,000)")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        from . import __version__

        print(__version__)
        return 0
    from .demo import main as run_demo

    return run_demo(args.events)


if __name__ == "__main__":
    sys.exit(main())
