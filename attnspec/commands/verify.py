"""``attnspec verify``: run every proof, every spec-against-oracle check and every model check."""

from __future__ import annotations

import sys

from attnspec.commands._table import print_reports
from attnspec.registry import all_checks, exit_code, run_check
from attnspec.spec.errors import ConventionError, require


def register(sub) -> None:
    p = sub.add_parser("verify", help="run every proof, oracle check and model check",
                       description="Run every registered check; exit non-zero if any fails or is unknown.")
    p.add_argument("--quick", action="store_true", help="only the quick checks (under 30 s on 2 cores)")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of a table")
    p.add_argument("-k", dest="pattern", default=None, help="only checks whose name contains this text")
    p.set_defaults(func=run)


def run(args) -> int:
    checks = all_checks(quick=args.quick)
    if args.pattern:
        checks = [c for c in checks if args.pattern in c.name]
        # Running nothing would pass vacuously: a typo in -k must not look like a green run.
        require(checks, ConventionError, f"-k: expected text contained in some check's name, got {args.pattern!r} "
                                         "(no check matches)")
    reports = []
    for c in checks:
        reports.append(run_check(c))
        if not args.json:
            print(f"  {reports[-1].status:<7} {c.name}", file=sys.stderr, flush=True)
    print_reports(reports, args.json)
    return exit_code(reports)
