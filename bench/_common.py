"""Shared machinery of the benchmarks: same-process timing, peak memory, and the result table.

Timing: every comparison runs its contenders in the same process, interleaved (a, b, a, b, ...)
so that a change in machine load hits both, and keeps the fastest of ``repeat`` runs of each
(the run least disturbed by other processes). A ratio is t(contender) / t(baseline). Two clocks
are kept: wall time (``time.perf_counter``, what the goals are stated in) and this process's
CPU time (``time.process_time``, summed over its threads), which other processes' load
disturbs far less; on a busy machine the CPU-time ratio is the more reproducible of the two.

Memory: the peak of the bytes allocated *during* one call, measured with ``tracemalloc``
(numpy reports its array buffers to it), so arrays that exist before the call, such as the
inputs, are not counted. ``resource.getrusage`` is not used per call: its ru_maxrss is the
process's high-water mark, which earlier work in the same process already set.
"""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Row:
    """One line of the benchmark table: a measured figure against its goal."""

    key: str  # "a", "b", ... as in the issue
    name: str
    measured: float
    goal: float
    unit: str  # "x" (a ratio), "s", "MB"
    higher_is_better: bool = False
    note: str = ""
    data: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if math.isnan(self.measured):
            return "error"
        met = self.measured >= self.goal if self.higher_is_better else self.measured <= self.goal
        return "pass" if met else "miss"


@dataclass(frozen=True)
class Timing:
    """The fastest wall and CPU seconds of one contender."""

    wall: float
    cpu: float


def interleaved(contenders: dict[str, Callable[[], object]], repeat: int) -> dict[str, Timing]:
    """Return the fastest wall and CPU times (seconds) of each contender over ``repeat`` interleaved rounds."""
    wall = {name: math.inf for name in contenders}
    cpu = dict(wall)
    for _ in range(repeat):
        for name, fn in contenders.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
            wall[name] = min(wall[name], time.perf_counter() - start)
    return {name: Timing(wall[name], cpu[name]) for name in contenders}


def wall(fn: Callable[[], object]) -> tuple[float, object]:
    """Return (seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_bytes(fn: Callable[[], object]) -> int:
    """Return the peak of the bytes allocated during one call of ``fn`` (tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def nbytes(*arrays) -> int:
    """Return the total size in bytes of ``arrays`` (None entries count 0)."""
    return sum(np.asarray(a).nbytes for a in arrays if a is not None)


def loglog_slope(xs, ys) -> float:
    """Return the least-squares slope of log(ys) against log(xs)."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def format_table(rows: list[Row]) -> str:
    """Return the rows as an aligned text table: measured against goal, with pass/miss."""
    header = ("", "benchmark", "measured", "goal", "status", "note")
    lines = [header]
    for r in rows:
        sign = ">=" if r.higher_is_better else "<="
        measured = "n/a" if math.isnan(r.measured) else f"{r.measured:.3g} {r.unit}".strip()
        lines.append((r.key, r.name, measured, f"{sign} {r.goal:g} {r.unit}".strip(), r.status, r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for line in lines:
        cells = [cell.ljust(w) for cell, w in zip(line, widths)] + [line[-1]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` atomically (temp file in the same directory + replace)."""
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".bench-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, default=float)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def rows_json(rows: list[Row]) -> list[dict]:
    """Return the rows as JSON-able dicts, with their status."""
    return [dict(asdict(r), status=r.status) for r in rows]
