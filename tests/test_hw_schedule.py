"""The discrete-event simulator against hand-computed schedules, mutants that drop a dependency, and bad input."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from attnspec.hw_model.schedule import (Durations, Op, preload_programs, run_kernel, serial_programs, simulate)
from attnspec.hw_model.stages import MlaShape
from attnspec.proofs.preload_pipeline import period, step
from attnspec.spec.errors import ConventionError, ShapeError

# Hand-computed by following the program orders and the flags (amla.md §5 table, three tasks):
# c1 = 2, c2 = 3, v1 = 1, v2 = 1, no flag cost.
HAND_NONE = {("C1", 1): (0, 2), ("C1", 2): (2, 4), ("V1", 1): (2, 3), ("C2", 1): (4, 7), ("V1", 2): (4, 5),
             ("V2", 1): (7, 8), ("C1", 3): (7, 9), ("V1", 3): (9, 10), ("C2", 2): (9, 12), ("V2", 2): (12, 13),
             ("C2", 3): (12, 15), ("V2", 3): (15, 16)}
# The same with the shipped AMLA flags and an nUpdate of 1: NU(i) waits for C2(i-1), C2(i) for NU(i).
HAND_CANN = {("C1", 1): (0, 2), ("C1", 2): (2, 4), ("V1", 1): (2, 3), ("NU", 1): (3, 4), ("C2", 1): (4, 7),
             ("V1", 2): (4, 5), ("NU", 2): (7, 8), ("V2", 1): (8, 9), ("C1", 3): (7, 9), ("C2", 2): (9, 12),
             ("V1", 3): (9, 10), ("NU", 3): (12, 13), ("V2", 2): (13, 14), ("C2", 3): (13, 16), ("V2", 3): (16, 17)}
# Serial: C1(1) V1(1) C2(1) V2(1) C1(2) ... with c1 = 2, v1 = 1, c2 = 3, v2 = 1 and a flag cost of 0.5.
HAND_SERIAL = {("C1", 1): (0, 2), ("V1", 1): (2.5, 3.5), ("C2", 1): (4, 7), ("V2", 1): (7.5, 8.5),
               ("C1", 2): (9, 11), ("V1", 2): (11.5, 12.5), ("C2", 2): (13, 16), ("V2", 2): (16.5, 17.5)}


def _intervals(trace) -> dict:
    return {iv.op.key: (iv.start, iv.end) for iv in trace.intervals}


def _drop(programs: dict, stage: str, dep_stage: str) -> dict:
    """Return a mutant: every ``stage`` operation loses its dependencies on ``dep_stage``."""
    return {unit: [Op(op.stage, op.task, op.unit, op.duration,
                      tuple(d for d in op.deps if not (op.stage == stage and d[0] == dep_stage))) for op in program]
            for unit, program in programs.items()}


def test_preload_matches_hand_schedule_baseline():
    trace = simulate(preload_programs([Durations(2, 3, 1, 0, 1)] * 3, "none"))
    assert _intervals(trace) == HAND_NONE
    assert trace.makespan == 16 and trace.busy("cube") == 15 and trace.busy("vector") == 6


def test_preload_matches_hand_schedule_cann():
    assert _intervals(simulate(preload_programs([Durations(2, 3, 1, 1, 1)] * 3, "cann"))) == HAND_CANN


def test_serial_matches_hand_schedule_with_flag_cost():
    assert _intervals(simulate(serial_programs([Durations(2, 3, 1, 0, 1)] * 2), sync=0.5)) == HAND_SERIAL


@pytest.mark.parametrize("stage, dep", [("C2", "NU"), ("NU", "C2"), ("V2", "C2"), ("V1", "C1")])
def test_mutant_dropping_a_flag_is_caught(stage, dep):
    # (V1 -> C2 is not in the list: under the cann flags it is implied by V1 -> NU -> C2.)
    programs = preload_programs([Durations(2, 3, 1, 1, 1)] * 3, "cann")
    assert _intervals(simulate(_drop(programs, stage, dep))) != HAND_CANN


def test_deadlock_is_an_error():
    # The Vector's V1(2) waits for C1(2), which the Cube runs only after C2(1), which waits for V2(1):
    # a cycle through program order.
    programs = {"cube": [Op("C1", 1, "cube", 1), Op("C2", 1, "cube", 1, (("V2", 1),)), Op("C1", 2, "cube", 1)],
                "vector": [Op("V1", 2, "vector", 1, (("C1", 2),)), Op("V2", 1, "vector", 1)]}
    with pytest.raises(ConventionError, match="deadlock"):
        simulate(programs)


def test_missing_dependency_and_bad_values_are_errors():
    with pytest.raises(ShapeError, match=r"V1\(1\): depends on C1\(9\)"):
        simulate({"vector": [Op("V1", 1, "vector", 1, (("C1", 9),))]})
    with pytest.raises(ShapeError, match="duration"):
        simulate({"cube": [Op("C1", 1, "cube", -1)]})
    with pytest.raises(ConventionError, match="sync"):
        simulate({"cube": [Op("C1", 1, "cube", 1)]}, sync=-1)
    with pytest.raises(ConventionError, match="dependency"):
        preload_programs([Durations(1, 1, 1)], "bogus")


stage_times = st.integers(min_value=0, max_value=40)


@st.composite
def uniform_tasks(draw):
    c1, c2, v1, vn, v2, s = (draw(stage_times) for _ in range(6))
    return {"c1": c1, "c2": c2, "v1": v1, "vn": vn, "v2": v2, "s": s}


def _simulated_growth(d: dict, variant: str, programs=None) -> Fraction:
    """Return the average C2 spacing of a long uniform run, loops 40..80 (integer times: exact in binary)."""
    n = 84
    progs = programs or preload_programs([Durations(d["c1"], d["c2"], d["v1"], d["vn"], d["v2"])] * n, variant)
    trace = simulate(progs, sync=d["s"])
    return Fraction(trace.end("C2", 80) - trace.end("C2", 40)) / 40


@given(uniform_tasks(), st.sampled_from(["none", "atomic", "cann"]))
def test_simulated_period_equals_proved_formula(d, variant):
    """The simulator (event-driven) and the theorem's formula are independent; they must agree."""
    assert _simulated_growth(d, variant) == period({k: Fraction(v) for k, v in d.items()}, variant)


@given(uniform_tasks(), st.sampled_from(["none", "atomic", "cann"]))
def test_simulator_state_follows_the_proved_recurrence(d, variant):
    """x(k+1) = F(x(k)) for the state (C1(k), C2(k-1), V2(k-2)) of the simulated run."""
    trace = simulate(preload_programs([Durations(d["c1"], d["c2"], d["v1"], d["vn"], d["v2"])] * 8, variant), sync=d["s"])
    for k in range(3, 7):
        x = (trace.end("C1", k), trace.end("C2", k - 1), trace.end("V2", k - 2))
        assert step(x, d, variant) == (trace.end("C1", k + 1), trace.end("C2", k), trace.end("V2", k - 1))


def test_mutant_without_the_amla_flag_breaks_the_period():
    """Dropping NU(i)'s wait for C2(i-1) gives a schedule whose period differs from the proved one."""
    def differs(d):
        n = 84
        programs = _drop(preload_programs([Durations(d["c1"], d["c2"], d["v1"], d["vn"], d["v2"])] * n, "cann"), "NU", "C2")
        return _simulated_growth(d, "cann", programs) != period({k: Fraction(v) for k, v in d.items()}, "cann")
    found = find(uniform_tasks(), differs)
    assert differs(found)


def test_kernel_amla_is_cube_bound_and_baseline_is_not():
    shape = MlaShape(batch=96, s_q=2, s_k=4096)
    amla, baseline = run_kernel(shape, "amla"), run_kernel(shape, "fa_gm")
    assert amla.cube_bound and amla.cube_stall == 0.0
    assert not baseline.cube_bound and baseline.cube_stall > 0.0
    assert amla.tflops > baseline.tflops
    serial = run_kernel(shape, "amla", schedule="serial")
    assert serial.seconds > amla.seconds  # the preload is what hides the Vector


def test_kernel_rejects_bad_schedule():
    with pytest.raises(ConventionError, match="schedule"):
        run_kernel(MlaShape(batch=1, s_q=1, s_k=512), schedule="parallel")
