"""The ``attnspec`` command line.

Each subcommand is a module in :mod:`attnspec.commands` with a ``register(subparsers)``
function; they are discovered, so adding a command touches no shared file.

Exit codes: 0 success; 1 a check failed (a false claim, a failing comparison, a crash);
2 usage error or bad input; 3 nothing failed but a solver answered ``unknown`` or timed out.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import attnspec
from attnspec import commands
from attnspec.spec.errors import AttnSpecError


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(prog="attnspec", description=__doc__.splitlines()[0].strip('. '))
    parser.add_argument("--version", action="version", version=f"attnspec {attnspec.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AttnSpecError as exc:
        print(f"attnspec: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
