"""``attnspec check``: run the conformance harness on a kernel (reference/harness.py)."""

from __future__ import annotations

import json

from attnspec.reference.cases import OPS
from attnspec.reference.harness import GOLDS, check
from attnspec.reference.tolerances import RULES


def register(sub) -> None:
    p = sub.add_parser("check", help="check a kernel against attnspec on generated cases",
                       description="Run the kernel MODULE:FUNCTION on the op's edge cases and N hypothesis-drawn "
                                   "cases, judge O (and LSE) against the gold with the tolerance rule, and print "
                                   "the worst case and a reproducer. Exit 0 pass, 1 fail, 2 bad usage or input.")
    p.add_argument("--impl", required=True, metavar="MODULE:FUNCTION",
                   help="the kernel: a function of the op's signature, a @declare-d function or a Kernel")
    p.add_argument("--op", choices=OPS, default="attention", help="which operation and calling signature")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="input format")
    p.add_argument("--examples", type=int, default=50, metavar="N", help="random cases after the edge cases")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="hypothesis seed of the random cases")
    p.add_argument("--rule", choices=RULES, default="flash", help="tolerance rule (reference/tolerances.py)")
    p.add_argument("--gold", choices=GOLDS, default="fp64", help="binary64 definition with its bound, or the oracle")
    p.add_argument("--save", default=None, metavar="DIR", help="where to save the worst failing case as a vector set")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    p.set_defaults(func=run)


def run(args) -> int:
    report = check(args.impl, op=args.op, dtype=args.dtype, examples=args.examples, seed=args.seed, rule=args.rule,
                   gold=args.gold, save_dir=args.save)
    print(json.dumps(report.as_json(), indent=1, default=str) if args.json else report.summary())
    return 0 if report.ok else 1
