"""Shared dispatcher for command groups whose members register themselves (report, model)."""

from __future__ import annotations

import argparse
import sys

from attnspec.registry import tools


def register_group(sub, group: str, help: str) -> None:
    p = sub.add_parser(group, help=help, description=f"{help}. 'attnspec {group} NAME --help' shows a tool's options.")
    p.add_argument("name", metavar="NAME", help=f"the {group} to run ('list' to list them)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of that tool")
    p.set_defaults(func=lambda args: _dispatch(group, args))


def _dispatch(group: str, args) -> int:
    available = tools(group)
    if args.name == "list":
        for name, (text, _) in available.items():
            print(f"{name:<20} {text}")
        return 0
    if args.name not in available:
        print(f"attnspec {group}: unknown {group} {args.name!r}; available: {', '.join(available) or 'none'}",
              file=sys.stderr)
        return 2
    return int(available[args.name][1](list(args.args)) or 0)
