"""``attnspec model pipeline``: stage costs, simulated schedules, the proved period, and the kernel predictions.

Change a shape, the clock or the flag cost on the command line and the whole chain (stage
costs -> schedule -> TFLOPS -> predictions) is recomputed; ``--plot FILE`` draws the first
tasks of three schedules as a Gantt chart (needs the optional extra ``plot``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import replace
from fractions import Fraction

from attnspec.hw_model._plot import pyplot, save_png
from attnspec.hw_model.machines import ASCEND_910C, CALIBRATION, H800_SXM5, AscendPackage, provenance
from attnspec.hw_model._published import Published, format_table
from attnspec.hw_model.predictions import durations, max_sync_cycles, predictions, worst_case
from attnspec.hw_model.schedule import Durations, KernelRun, preload_programs, run_kernel, serial_programs, simulate
from attnspec.hw_model.stages import MlaShape, positions, task_times
from attnspec.proofs.preload_pipeline import cube_bound_condition, period
from attnspec.registry import tool
from attnspec.spec.errors import ConventionError, DomainError, ShapeError, require

SCHEDULES = (("preload", "amla", "cann"), ("preload", "amla", "atomic"), ("preload", "fa_gm", "none"),
             ("serial", "amla", "cann"), ("serial", "fa_gm", "none"))
CLOCK_RANGE_GHZ = (1e-3, 1e3)  # 1 MHz to 1 THz: every real chip, and every time the model derives stays finite
STAGE_COLOURS = {"C1": "#1f77b4", "C2": "#17becf", "V1": "#ff7f0e", "NU": "#d62728", "V2": "#2ca02c"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnspec model pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=96, help="sequences per die (default 96)")
    p.add_argument("--s-q", type=int, default=2, help="query tokens per sequence, 1 + MTP drafts (default 2)")
    p.add_argument("--s-k", type=int, default=4096, help="KV length, a multiple of 512 (default 4096)")
    p.add_argument("--clock-ghz", type=float, default=None, help="override the 910C clock (default 1.8)")
    p.add_argument("--sync-us", type=float, default=0.0, help="cost of one cross-core flag in microseconds (default 0)")
    p.add_argument("--gantt-tasks", type=int, default=6, help="tasks drawn per schedule with --plot (default 6)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plot", metavar="FILE", default=None, help="write a Gantt chart PNG (needs matplotlib)")
    return p


def report(shape: MlaShape, machine: AscendPackage = ASCEND_910C, sync_s: float = 0.0) -> dict:
    """Return everything the tool prints, as JSON-able data."""
    die = machine.die
    stages = {}
    for kernel in ("amla", "fa_gm"):
        t = task_times(shape.row_groups[0], kernel, "middle", shape, die, CALIBRATION)
        stages[kernel] = [{"stage": s.name, "cycles": round(s.cycles, 1), "us": s.cycles / die.clock_hz * 1e6,
                           "bound": s.bound, "pipes": {k: round(v, 1) for k, v in s.pipes.items()}}
                          for s in (t.c1, t.v1, t.vn, t.c2, t.v2)]
    runs = []
    for schedule, kernel, dependency in SCHEDULES:
        r = run_kernel(shape, kernel, schedule=schedule, dependency=dependency, sync=sync_s, die=die)
        runs.append(_run_row(r))
    sync_cycles = sync_s * die.clock_hz
    steady = []
    for kernel, variant in (("amla", "cann"), ("amla", "atomic"), ("fa_gm", "none")):
        d = {**durations(task_times(shape.row_groups[0], kernel, "middle", shape, die, CALIBRATION)),
             "s": Fraction(sync_cycles)}
        worst = worst_case(shape, kernel, machine)
        steady.append({"kernel": kernel, "dependency": variant, "period_cycles": float(period(d, variant)),
                       "cube_cycles": float(d["c1"] + d["c2"]), "cube_bound": bool(cube_bound_condition(d, variant)),
                       "worst_case_cube_bound": bool(cube_bound_condition({**worst, "s": d["s"]}, variant)),
                       "sync_margin_us": float(max_sync_cycles(worst, variant)) / die.clock_hz * 1e6})
    return {"shape": vars(shape), "clock_ghz": die.clock_hz / 1e9, "sync_us": sync_s * 1e6,
            "peak_tflops_package": machine.peak_bf16 / 1e12, "stages": stages, "schedules": runs, "steady_state": steady,
            "predictions": [{**vars(p), "ratio": p.ratio, "ok": p.ok} for p in predictions(machine, H800_SXM5, CALIBRATION)],
            "calibrated": [r for r in provenance(CALIBRATION) if r["basis"] in ("calibrated", "override")]}


def _run_row(r: KernelRun) -> dict:
    return {"schedule": r.schedule, "kernel": r.kernel, "dependency": r.dependency, "tasks_per_core": len(r.tasks),
            "makespan_us": r.seconds * 1e6, "cube_busy_us": r.trace.busy("cube") * 1e6,
            "vector_busy_us": r.trace.busy("vector") * 1e6, "cube_utilisation": r.cube_utilisation,
            "tflops": r.tflops, "mac_utilisation": r.mac_utilisation, "cube_bound": r.cube_bound}


def _print(data: dict) -> None:
    s = data["shape"]
    print(f"MLA decode on Ascend 910C: batch {s['batch']}/die, s_q {s['s_q']}, S_k {s['s_k']}, {s['heads']} heads, "
          f"clock {data['clock_ghz']:.3g} GHz (package peak {data['peak_tflops_package']:.1f} TFLOPS), "
          f"flag cost {data['sync_us']:.3g} us\n")
    print("Stage costs of one middle block (one AI core: 1 AIC + 2 AIV)")
    print(f"{'kernel':<6} {'stage':<8} {'cycles':>9} {'us':>7}  bound by")
    for kernel, rows in data["stages"].items():
        for row in rows:
            print(f"{kernel:<6} {row['stage']:<8} {row['cycles']:>9,.0f} {row['us']:>7.2f}  {row['bound']}")
    print("\nSchedules (busiest core of the launch)")
    print(f"{'schedule':<8} {'kernel':<6} {'flags':<7} {'tasks':>5} {'makespan us':>11} {'Cube us':>9} "
          f"{'Vector us':>9} {'Cube util':>9} {'TFLOPS':>7} {'MAC util':>8}  Cube-bound")
    for r in data["schedules"]:
        print(f"{r['schedule']:<8} {r['kernel']:<6} {r['dependency']:<7} {r['tasks_per_core']:>5} {r['makespan_us']:>11.1f} "
              f"{r['cube_busy_us']:>9.1f} {r['vector_busy_us']:>9.1f} {r['cube_utilisation']:>9.1%} {r['tflops']:>7.1f} "
              f"{r['mac_utilisation']:>8.1%}  {'yes' if r['cube_bound'] else 'no'}")
    print("\nSteady state (proofs/preload_pipeline.py: the proved period, evaluated on middle blocks)")
    for r in data["steady_state"]:
        print(f"{r['kernel']:<6} flags {r['dependency']:<7} period {r['period_cycles']:>9,.0f} cycles vs C1+C2 "
              f"{r['cube_cycles']:>9,.0f}: {'Cube-bound' if r['cube_bound'] else 'Vector-bound'}; worst case over "
              f"block positions {'Cube-bound' if r['worst_case_cube_bound'] else 'not Cube-bound'}, flag-cost margin "
              + (f"{r['sync_margin_us']:.2f} us" if r['sync_margin_us'] >= 0 else "none"))
    print("\nPublished numbers (machines.Calibration holds every fitted constant)")
    print(format_table([Published(**{k: v for k, v in p.items() if k not in ("ratio", "ok")})
                        for p in data["predictions"]]))
    print("\nCalibrated constants")
    for c in data["calibrated"]:
        print(f"  {c['name']} = {c['value']} {c['unit']}\n    fitted to: {c['source']}\n    shared by: {c['shared_by']}")


def gantt(shape: MlaShape, path: str, tasks: int, machine: AscendPackage = ASCEND_910C, sync_s: float = 0.0) -> None:
    """Write a Gantt chart of ``tasks`` blocks of one row group under three schedules to ``path``."""
    plt = pyplot()
    die = machine.die
    panels = [("preload, AMLA (as shipped)", "amla", preload_programs, "cann"),
              ("preload, baseline FA (O rescaled via GM)", "fa_gm", preload_programs, "none"),
              ("serial, AMLA", "amla", lambda d, _dep: serial_programs(d), "cann")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.6 * len(panels) + 0.6), sharex=True)
    for ax, (title, kernel, build, dependency) in zip(axes, panels):
        ds = [Durations.of(task_times(shape.row_groups[0], kernel, pos, shape, die, CALIBRATION), die)
              for pos in positions(tasks)]
        trace = simulate(build(ds, dependency), sync=sync_s)
        for iv in trace.intervals:
            if iv.end > iv.start:
                lane = 1 if iv.op.unit == "cube" else 0
                ax.broken_barh([(iv.start * 1e6, (iv.end - iv.start) * 1e6)], (lane - 0.4, 0.8),
                               facecolors=STAGE_COLOURS[iv.op.stage], edgecolor="white", linewidth=0.5)
                if iv.end - iv.start > 0.03 * trace.makespan:  # label only the bars the text fits in
                    ax.text((iv.start + iv.end) / 2 * 1e6, lane, f"{iv.op.stage}({iv.op.task})", ha="center",
                            va="center", fontsize=6, color="white")
        ax.set_yticks([0, 1], ["Vector", "Cube"])
        ax.set_title(f"{title}: {trace.makespan * 1e6:.0f} us, Cube busy {trace.utilisation('cube'):.0%}", fontsize=9)
    axes[-1].set_xlabel("time (us)")
    names = {"C1": "C1 = Q K^T", "C2": "C2 = P~ V", "V1": "V1 softmax", "NU": "nUpdate (AMLA)", "V2": "V2"}
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STAGE_COLOURS.values()]
    fig.legend(handles, [names[k] for k in STAGE_COLOURS], loc="lower center", ncol=5, fontsize=8,
               bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(f"MLA decode, {shape.row_groups[0]} rows x 512 tokens per task, {tasks} tasks, "
                 f"{die.clock_hz / 1e9:.3g} GHz", fontsize=10)
    save_png(fig, path)
    plt.close(fig)


def _check_options(args: argparse.Namespace) -> None:
    """Raise, naming the option, for a value argparse accepts but the model cannot use (before any work)."""
    low, high = CLOCK_RANGE_GHZ
    require(args.clock_ghz is None or low <= args.clock_ghz <= high, DomainError,
            f"clock_ghz: expected a number of GHz in [{low:g}, {high:g}], got {args.clock_ghz!r}")
    require(math.isfinite(args.sync_us) and args.sync_us >= 0, DomainError,
            f"sync_us: expected a finite number of microseconds >= 0, got {args.sync_us!r}")
    require(args.gantt_tasks >= 1, ShapeError, f"gantt_tasks: expected a positive int, got {args.gantt_tasks!r}")
    if args.plot is not None:
        require(args.plot.lower().endswith(".png"), ConventionError, f"--plot: expected a .png path, got {args.plot!r}")
        folder = os.path.dirname(os.path.abspath(args.plot))
        require(os.path.isdir(folder) and not os.path.isdir(args.plot), DomainError,
                f"--plot: expected a file in an existing directory, got {args.plot!r}")


@tool("model", "pipeline", "simulate the AMLA and baseline preload pipelines on a 910C core; predicted vs published")
def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    _check_options(args)
    machine = ASCEND_910C
    if args.clock_ghz is not None:
        machine = replace(machine, die=replace(machine.die, clock_hz=args.clock_ghz * 1e9))
    shape = MlaShape(batch=args.batch, s_q=args.s_q, s_k=args.s_k)
    data = report(shape, machine, args.sync_us * 1e-6)
    if args.plot:
        gantt(shape, args.plot, args.gantt_tasks, machine, args.sync_us * 1e-6)
    if args.json:
        print(json.dumps(data, indent=1, default=str))
    else:
        _print(data)
        if args.plot:
            print(f"\nGantt chart written to {args.plot}")
    return 0 if all(p["ok"] for p in data["predictions"]) else 1
