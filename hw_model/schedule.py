"""A discrete-event simulator of the Cube/Vector schedules of an MLA decode kernel on one AI core.

Each unit (the Cube core; the Vector cores, whose two AIVs work in lockstep on halves of the
rows) runs its operations in a fixed program order, as the kernel's instruction stream does.
An operation starts when its unit is free and every operation it depends on has finished;
a dependency across units is a cross-core flag and costs ``sync`` seconds on top.

Three schedules (``Schedule``):

- ``preload``: the kernel's ``PreloadPipeline`` (cann-fia ``fia_kernel_nonquant_mla.h``,
  PRELOAD_NUM = 2, a 3-entry task ring). Loop k issues Cube: C1(k) then C2(k-1); Vector:
  V1(k-1) then V2(k-2); two extra loops drain the ring.
- ``serial``: no preload; each task runs C1 -> V1 -> C2 -> V2 before the next task's C1.
- the baseline kernel ``fa_gm`` under ``preload`` is "baseline FA with the GM rescale".

Dependencies (amla.md §5 [D], and the flags of the shipped code) for the preload schedule,
per ``Dependency``:

- all: C1(i) -> V1(i) (``syncC1V1``), V1(i) -> C2(i) (``syncV1C2``), C2(i) -> V2(i) (``syncC2V2``).
- ``cann`` (AMLA as shipped): the nUpdate atomic add NU(i) is its own Vector operation
  after V1(i); it waits for C2(i-1) (``syncC2V1``), and C2(i) waits for it
  (``syncV1NupdateC2``). Only the nUpdate, not the softmax, waits for C2(i-1)::

      CrossCoreSetFlag<..., PIPE_MTE3>(constInfo.syncV1C2);
      CrossCoreWaitFlag(constInfo.syncC2V1);
      ProcessAmlaNupdate(info, mSplitInfo);

- ``atomic``: the coarser model of amla.md §5: the whole V1(i) (softmax and nUpdate) waits
  for C2(i-1).
- ``none``: no C2(i-1) -> V1(i) edge (baseline FA, whose rescale is in V2).

The Cube sets ``syncC2V1`` once before its first loop, so task 1 never waits for a C2(0).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterable, Literal

from attnspec.hw_model.machines import ASCEND_910C_DIE, CALIBRATION, AscendDie, Calibration
from attnspec.hw_model.stages import Kernel, MlaShape, TaskTimes, positions, task_times
from attnspec.spec.errors import ConventionError, ShapeError, require

Schedule = Literal["preload", "serial"]
Dependency = Literal["cann", "atomic", "none"]


@dataclass(frozen=True)
class Op:
    """One operation: a stage of one task on one unit, and the operations it waits for."""

    stage: str
    task: int
    unit: str
    duration: float
    deps: tuple[tuple[str, int], ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return (self.stage, self.task)


@dataclass(frozen=True)
class Interval:
    """When one operation ran."""

    op: Op
    start: float
    end: float


@dataclass(frozen=True)
class Trace:
    """The simulated run: every operation's interval, in issue order per unit."""

    intervals: tuple[Interval, ...]

    @property
    def makespan(self) -> float:
        """Return the time the last operation ends (the run starts at 0)."""
        return max((iv.end for iv in self.intervals), default=0.0)

    def busy(self, unit: str) -> float:
        """Return the time ``unit`` spends executing operations."""
        return sum(iv.end - iv.start for iv in self.intervals if iv.op.unit == unit)

    def utilisation(self, unit: str) -> float:
        """Return busy / makespan for ``unit`` (0 for an empty run)."""
        return self.busy(unit) / self.makespan if self.makespan > 0 else 0.0

    def end(self, stage: str, task: int) -> float:
        """Return when operation (stage, task) ended."""
        for iv in self.intervals:
            if iv.op.key == (stage, task):
                return iv.end
        raise KeyError(f"no operation {stage}({task}) in the trace")


def simulate(programs: dict[str, list[Op]], *, sync: float = 0.0) -> Trace:
    """Return the trace of running each unit's program in order, every operation as soon as it may start.

    Raises ShapeError when an operation depends on one that no program contains, and
    ConventionError when the programs deadlock (each unit waits for another).
    """
    require(sync >= 0, ConventionError, f"sync: expected >= 0 seconds, got {sync}")
    ops = {op.key: op for program in programs.values() for op in program}
    for op in ops.values():
        require(op.duration >= 0, ShapeError, f"{op.stage}({op.task}).duration: expected >= 0, got {op.duration}")
        for dep in op.deps:
            require(dep in ops, ShapeError, f"{op.stage}({op.task}): depends on {dep[0]}({dep[1]}), which no unit runs")
    done: dict[tuple[str, int], float] = {}
    free = {unit: 0.0 for unit in programs}
    cursor = {unit: 0 for unit in programs}
    running: list[tuple[float, str]] = []  # (end time, unit) of the operation each unit is executing
    busy = set()
    intervals: list[Interval] = []
    now = 0.0
    while True:
        for unit, program in programs.items():  # start every operation whose unit is idle and whose inputs are done
            if unit in busy or cursor[unit] == len(program):
                continue
            op = program[cursor[unit]]
            if any(dep not in done for dep in op.deps):
                continue
            ready = max([free[unit]] + [done[d] + (sync if ops[d].unit != unit else 0.0) for d in op.deps])
            start = max(ready, now)
            intervals.append(Interval(op, start, start + op.duration))
            heapq.heappush(running, (start + op.duration, unit))
            busy.add(unit)
        if not running:
            break
        now, unit = heapq.heappop(running)  # the next completion
        op = programs[unit][cursor[unit]]
        done[op.key] = now
        free[unit] = now
        cursor[unit] += 1
        busy.discard(unit)
    stuck = [f"{unit}: {programs[unit][cursor[unit]].stage}({programs[unit][cursor[unit]].task})"
             for unit in programs if cursor[unit] < len(programs[unit])]
    require(not stuck, ConventionError, f"programs: expected a schedule that completes, got a deadlock at {stuck}")
    return Trace(tuple(intervals))


@dataclass(frozen=True)
class Durations:
    """Stage durations of one task in seconds (the unit the simulator works in)."""

    c1: float
    c2: float
    v1: float
    vn: float = 0.0
    v2: float = 0.0

    @classmethod
    def of(cls, t: TaskTimes, die: AscendDie = ASCEND_910C_DIE) -> "Durations":
        s = t.seconds(die)
        return cls(s["C1"], s["C2"], s["V1"], s["nUpdate"], s["V2"])


def preload_programs(tasks: Iterable[Durations], dependency: Dependency) -> dict[str, list[Op]]:
    """Return the Cube and Vector programs of the preload pipeline over ``tasks`` (numbered from 1)."""
    require(dependency in ("cann", "atomic", "none"), ConventionError,
            f"dependency: expected cann, atomic or none, got {dependency!r}")
    tasks = list(tasks)
    n = len(tasks)
    cube: list[Op] = []
    vector: list[Op] = []
    for k in range(1, n + 3):  # cann-fia ProcessBalance: one loop per task, then 2 extra loops
        if k <= n:
            cube.append(Op("C1", k, "cube", tasks[k - 1].c1))
        i = k - 1
        if 1 <= i <= n:
            d = tasks[i - 1]
            prev_c2 = (("C2", i - 1),) if i > 1 else ()
            if dependency == "cann":
                vector.append(Op("V1", i, "vector", d.v1, (("C1", i),)))
                vector.append(Op("NU", i, "vector", d.vn, prev_c2))
                cube.append(Op("C2", i, "cube", d.c2, (("V1", i), ("NU", i))))
            else:
                wait = prev_c2 if dependency == "atomic" else ()
                vector.append(Op("V1", i, "vector", d.v1 + d.vn, (("C1", i),) + wait))
                cube.append(Op("C2", i, "cube", d.c2, (("V1", i),)))
        j = k - 2
        if 1 <= j <= n:
            vector.append(Op("V2", j, "vector", tasks[j - 1].v2, (("C2", j),)))
    return {"cube": cube, "vector": vector}


def serial_programs(tasks: Iterable[Durations]) -> dict[str, list[Op]]:
    """Return the programs of the serial baseline: C1(i), V1(i), C2(i), V2(i), then task i+1."""
    cube: list[Op] = []
    vector: list[Op] = []
    for i, d in enumerate(tasks, start=1):
        previous = (("V2", i - 1),) if i > 1 else ()
        cube.append(Op("C1", i, "cube", d.c1, previous))
        vector.append(Op("V1", i, "vector", d.v1 + d.vn, (("C1", i),)))
        cube.append(Op("C2", i, "cube", d.c2, (("V1", i),)))
        vector.append(Op("V2", i, "vector", d.v2, (("C2", i),)))
    return {"cube": cube, "vector": vector}


# ----------------------------------------------------------------------------------------------
# One kernel launch on one die: the tasks of the busiest core
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KernelRun:
    """A simulated launch: the trace of the busiest core and the die- and package-level rates."""

    shape: MlaShape
    kernel: Kernel
    schedule: Schedule
    dependency: Dependency
    trace: Trace
    tasks: tuple[TaskTimes, ...]
    die: AscendDie = field(repr=False, default=ASCEND_910C_DIE)
    dies: int = 2

    @property
    def seconds(self) -> float:
        """Return the launch time: the busiest core's makespan (every core starts at 0)."""
        return self.trace.makespan

    @property
    def tflops(self) -> float:
        """Return achieved TFLOPS of the package: every die runs this launch on its own batch."""
        return self.dies * self.shape.flops / self.seconds / 1e12

    @property
    def mac_utilisation(self) -> float:
        """Return achieved FLOP/s over the package peak (the FlashMLA/AMLA 'utilisation')."""
        return self.shape.flops / self.seconds / self.die.peak_bf16

    @property
    def cube_utilisation(self) -> float:
        """Return the fraction of the run the busiest core's Cube is executing C1 or C2."""
        return self.trace.utilisation("cube")

    @property
    def cube_stall(self) -> float:
        """Return the time the Cube waits for the Vector outside the pipeline's fill and drain.

        Fill and drain are the waits before C2(1) (no C1 to preload yet) and before C2(n)
        (nothing left to preload); every other wait is a stall of the steady state.
        """
        cube = [iv for iv in self.trace.intervals if iv.op.unit == "cube"]
        last = max(iv.op.task for iv in cube)
        return sum(iv.start - prev.end for prev, iv in zip(cube, cube[1:])
                   if iv.op.key not in (("C2", 1), ("C2", last)))

    @property
    def cube_bound(self) -> bool:
        """Return True when the Cube never stalls outside fill and drain (relative tolerance 1e-9)."""
        return self.cube_stall <= 1e-9 * self.seconds


def core_tasks(shape: MlaShape, kernel: Kernel, die: AscendDie = ASCEND_910C_DIE,
               cal: Calibration = CALIBRATION) -> list[TaskTimes]:
    """Return the task list of the busiest AI core.

    Work units are (sequence, row group, KV block); the tiler (cann-fia
    ``fia_tiling_nonquant_mla.cpp``) deals contiguous runs of them to the ``die.aic`` cores,
    splitting a row group's blocks across cores where needed (flash decoding). The first
    ``total % aic`` cores get one extra block. A row group's slice on a core starts with a
    'first' block and ends with a 'last' one (its partial O is normalised there).
    """
    units = [(seq, g, rows, b) for seq in range(shape.batch) for g, rows in enumerate(shape.row_groups)
             for b in range(shape.blocks)]
    per_core, extra = divmod(len(units), die.aic)
    mine = units[:per_core + (1 if extra else 0)]
    require(len(mine) >= 1, ShapeError, f"shape: expected at least one block per core, got {len(units)} for {die.aic} cores")
    slices: list[list[tuple[int, int, int, int]]] = []
    for u in mine:
        if slices and slices[-1][-1][:2] == u[:2]:
            slices[-1].append(u)
        else:
            slices.append([u])
    out = []
    for piece in slices:
        for (_, _, rows, _), pos in zip(piece, positions(len(piece))):
            out.append(task_times(rows, kernel, pos, shape, die, cal))
    return out


def run_kernel(shape: MlaShape, kernel: Kernel = "amla", *, schedule: Schedule = "preload",
               dependency: Dependency | None = None, sync: float = 0.0, die: AscendDie = ASCEND_910C_DIE,
               cal: Calibration = CALIBRATION) -> KernelRun:
    """Return the simulated launch of ``shape`` with ``kernel`` under ``schedule``.

    ``dependency`` defaults to the kernel's own: ``cann`` for AMLA, ``none`` for the baseline.
    """
    require(schedule in ("preload", "serial"), ConventionError, f"schedule: expected preload or serial, got {schedule!r}")
    dependency = dependency or ("cann" if kernel == "amla" else "none")
    tasks = core_tasks(shape, kernel, die, cal)
    durations = [Durations.of(t, die) for t in tasks]
    programs = preload_programs(durations, dependency) if schedule == "preload" else serial_programs(durations)
    return KernelRun(shape, kernel, schedule, dependency, simulate(programs, sync=sync), tuple(tasks), die)
