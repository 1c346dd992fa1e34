"""``attnspec vectors``: export the conformance vector set, verify one, or check a kernel on one."""

from __future__ import annotations

import json
import time

from attnspec.reference.cases import OPS
from attnspec.reference.tolerances import RULES
from attnspec.reference.vectors import (check_vectors, export_rows, require_export_target, verify_vector_set,
                                        write_vector_set)


def register(sub) -> None:
    p = sub.add_parser("vectors", help="export, verify or check conformance vectors",
                       description="Conformance vectors (reference/vectors.py, docs/conformance.md): .npy bit "
                                   "patterns + JSON, SHA-256 manifest, deterministic.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    e = actions.add_parser("export", help="write the vector set to DIR (atomically; byte-identical on re-export)")
    e.add_argument("dir", metavar="DIR")
    e.add_argument("--level", type=int, choices=(1, 2), default=1, help="1: the quick set; 2: more seeds")
    e.add_argument("--op", action="append", choices=OPS, help="only these ops (repeatable)")
    e.add_argument("--fmt", action="append", choices=("fp32", "bf16", "fp16"), help="only these formats (repeatable)")
    e.set_defaults(func=run_export)
    v = actions.add_parser("verify", help="check DIR's manifest, sizes and SHA-256 sums")
    v.add_argument("dir", metavar="DIR")
    v.add_argument("--digest", default=None, help="the expected set_sha256")
    v.set_defaults(func=run_verify)
    c = actions.add_parser("check", help="run a kernel on DIR's cases")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--impl", required=True, metavar="MODULE:FUNCTION")
    c.add_argument("--op", choices=OPS, default=None, help="only this op's cases (default: every op the kernel fits)")
    c.add_argument("--rule", choices=RULES, default="flash")
    c.add_argument("--digest", default=None, help="the expected set_sha256")
    c.add_argument("--json", action="store_true", help="print JSON instead of the summaries")
    c.set_defaults(func=run_check)


def run_export(args) -> int:
    start = time.perf_counter()
    require_export_target(args.dir)  # before minutes of oracle work, not after
    rows = export_rows(args.level, ops=args.op, formats=args.fmt)
    digest = write_vector_set(args.dir, rows, level=args.level)
    print(f"wrote {len(rows)} cases to {args.dir} in {time.perf_counter() - start:.1f} s; set_sha256 {digest}")
    return 0


def run_verify(args) -> int:
    manifest = verify_vector_set(args.dir, digest=args.digest)
    print(f"{args.dir}: {len(manifest['cases'])} cases, {len(manifest['files'])} files intact; "
          f"set_sha256 {manifest['set_sha256']}")
    return 0


def run_check(args) -> int:
    reports = check_vectors(args.dir, args.impl, op=args.op, rule=args.rule, digest=args.digest)
    if args.json:
        print(json.dumps([r.as_json() for r in reports], indent=1, default=str))
    else:
        for r in reports:
            print(r.summary())
        if not reports:
            print(f"{args.dir}: no case fits {args.impl} (its signature and formats)")
    return 0 if reports and all(r.ok for r in reports) else 1
