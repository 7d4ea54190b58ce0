"""The ``laminar`` command: ``laminar demo`` runs the built-in demo; ``laminar version``;
``laminar serve pipeline.py --port 7878 --token-file tok`` serves a pipeline to remote clients."""

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
    serve = sub.add_parser("serve", help="run a pipeline file and serve its engine to remote clients (lm.connect)")
    serve.add_argument("pipeline", help="a Python file that defines an lm.Engine named `engine` or `eng`")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7878, help="port (default 7878; 0 picks a free one)")
    serve.add_argument("--token-file", default=None, help="file holding the token clients must present")
    serve.add_argument("--max-connections", type=int, default=256)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "version":
        from . import __version__

        print(__version__)
        return 0
    from .demo import main as run_demo

    return run_demo(args.events)


def _serve(args: argparse.Namespace) -> int:
    import os
    import runpy

    from .engine import Engine
    from .errors import LaminarError

    if not os.path.isfile(args.pipeline):
        print(f"laminar serve: no such file: {args.pipeline}", file=sys.stderr)
        return 2
    ns = runpy.run_path(args.pipeline, run_name="__laminar_serve__")
    engine = next((ns[n] for n in ("engine", "eng") if isinstance(ns.get(n), Engine)), None)
    if engine is None:
        print(f"laminar serve: {args.pipeline} defines no lm.Engine named `engine` or `eng`", file=sys.stderr)
        return 2
    try:
        server = engine.serve(args.host, args.port, token_file=args.token_file,
                              max_connections=args.max_connections)
    except LaminarError as e:
        print(f"laminar serve: {e}", file=sys.stderr)
        return 1
    if args.token_file is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"laminar serve: warning: serving on {args.host} without a token: anyone who can reach "
              "the port can push and subscribe (use --token-file)", file=sys.stderr)
    print(f"laminar: serving {args.pipeline} on {server.address} (io backend {server.backend}, "
          f"{'token required' if args.token_file else 'no token'}); Ctrl-C to stop", flush=True)
    server.serve_forever()
    print("laminar: server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
