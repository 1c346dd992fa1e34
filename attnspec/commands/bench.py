"""``attnspec bench``: run the performance benchmarks of ``bench/run.py`` (a source checkout only)."""

from __future__ import annotations

import importlib.util
import os
import sys

from attnspec.spec.errors import ConventionError

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the performance benchmarks (bench/run.py)",
                       usage="attnspec bench [-- OPTIONS]",
                       description="Run bench/run.py: every figure of issue 8 against its goal, or --scaling. "
                                   "Its options follow '--', e.g. 'attnspec bench -- --only a,b'; "
                                   "'attnspec bench -- --help' lists them.")
    p.add_argument("args", nargs="*", metavar="OPTIONS", help="options of bench/run.py, after '--'")
    p.set_defaults(func=run)


def run(args) -> int:
    script = os.path.join(BENCH_DIR, "run.py")
    if not os.path.exists(script):
        raise ConventionError(f"bench: expected bench/run.py next to the attnspec package (a source checkout), "
                              f"not found at {script}")
    sys.path.insert(0, BENCH_DIR)  # run.py imports its sibling _common
    spec = importlib.util.spec_from_file_location("attnspec_bench_run", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return int(module.main(list(args.args), prog="attnspec bench --"))
