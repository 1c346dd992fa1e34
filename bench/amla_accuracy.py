"""AMLA's accuracy at DeepSeek-V3 decode scale: every variant and FA-with-BF16-P against the exact result.

    python bench/amla_accuracy.py                        # 128 heads, s_q 1..4, S_k 4096 .. 16384
    python bench/amla_accuracy.py --lengths 16384 --sq 4 # one shape
    python bench/amla_accuracy.py --json FILE            # also write the full report as JSON

Shapes: the kernel view of DeepSeek-V3 (one latent KV head, 576 / 512 wide, blocks of 512,
DeepSeek's softmax scale, causal MTP), 128 query heads, for each family of
``reference.amla_report.FAMILIES`` asked for (default: random, growing, jumps). The table
is that of ``attnspec report amla``: per variant the largest |out - gold| over rows, ``*``
where the acceptance rule fails, then the relative Frobenius error of the FP32 output before
the final cast, and the inputs where the rule fails.

Gold: ``spec.flash`` in binary64 (blocks of 512), exact in real arithmetic
(``proofs/online_softmax.py``); its rounding error is of order (Dk + Sk/512) 2^-53 relative,
below 1e-12, against measured errors of 1e-4 .. 1e-2, so it cannot move the rule's verdict.
(``reference.bounds`` would materialise (Hq, Sq, Sk, Dv) arrays of up to 4e9 elements here,
so no bound is printed.) Dot products use ``reference.amla_report.blas_policy``, the
documented substitute for the spec's exact-then-round dot products.

Time: a few minutes per input at 16K keys on two cores (each entry's seconds are in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from attnspec.reference.amla_report import FAMILIES, ReportInput, print_table, run_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--sq", type=int, nargs="+", default=[1, 4], help="MTP query counts (1..4)")
    parser.add_argument("--heads", type=int, default=128)
    parser.add_argument("--families", nargs="+", default=["random", "growing", "jumps"], choices=sorted(FAMILIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the report here (atomically)")
    args = parser.parse_args(argv)
    inputs = [ReportInput(family, args.heads, sq, keys, args.seed + i, FAMILIES[family][0])
              for family in args.families for i, (sq, keys) in enumerate((s, k) for s in args.sq for k in args.lengths)]
    start = time.perf_counter()
    report = None
    for spec in inputs:  # one at a time, so that progress shows
        part = run_report(args.seed, False, [spec])
        entry = part["entries"][0]
        print(f"{spec.name}: cann {entry['results']['cann']['rel_fro_fp32']:.3e}, fa "
              f"{entry['results']['fa_bf16p']['rel_fro_fp32']:.3e} ({entry['seconds']:.0f} s)", file=sys.stderr)
        if report is None:
            report = part
        else:
            report["entries"] += part["entries"]
            report["failures"] += part["failures"]
    print_table(report)
    print(f"\n{len(inputs)} inputs in {time.perf_counter() - start:.0f} s")
    if args.json is not None:
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent or ".", delete=False, suffix=".tmp") as tmp:
            json.dump(report, tmp, indent=1)
        os.replace(tmp.name, args.json)
    return int(any(f["in_domain"] and f["variant"] == "cann" for f in report["failures"]))


if __name__ == "__main__":
    sys.exit(main())
