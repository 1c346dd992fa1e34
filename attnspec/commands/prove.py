"""``attnspec prove``: run only the Z3 theorems (and their negative controls)."""

from __future__ import annotations

import fnmatch

from attnspec.commands._table import print_reports
from attnspec.registry import all_checks, exit_code, run_check
from attnspec.spec.errors import ConventionError


def register(sub) -> None:
    p = sub.add_parser("prove", help="run the Z3 theorems",
                       description="Run the theorems whose names match NAME (a glob or a prefix); all when "
                                   "none is given. Exit 0 all as expected, 1 a theorem failed, 3 a solver "
                                   "answered unknown or timed out.")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of a table")
    p.add_argument("--list", action="store_true", help="list the theorem names and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    theorems = all_checks(kinds=("proof",))
    if args.names:
        chosen = [t for t in theorems
                  if any(fnmatch.fnmatchcase(t.name, n) or t.name.startswith(n) for n in args.names)]
        if not chosen:
            raise ConventionError(f"NAME: no theorem matches {args.names}; see 'attnspec prove --list'")
        theorems = chosen
    if args.list:
        for t in theorems:
            print(t.name)
        return 0
    reports = [run_check(t) for t in theorems]
    print_reports(reports, args.json)
    return exit_code(reports)
