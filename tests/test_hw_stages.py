"""The stage cost model: hand-computed pipe times, validation, and machine provenance."""

from __future__ import annotations

from dataclasses import replace

import pytest

from attnspec.hw_model.machines import (ASCEND_910C, ASCEND_910C_DIE, CALIBRATION, H800_SXM5, provenance)
from attnspec.hw_model.stages import MlaShape, c1_cost, c2_cost, nupdate_cost, positions, task_times, v1_cost, v2_cost
from attnspec.spec.errors import ConventionError, ShapeError

SHAPE = MlaShape(batch=96, s_q=2, s_k=4096)
IDEAL = replace(CALIBRATION, mmad_efficiency=1.0)


def test_cube_stages_by_hand():
    c1 = c1_cost(256, SHAPE, cal=IDEAL)
    assert c1.pipes["mmad"] == 256 * 512 * 576 / 4096 == 18432
    assert c1.pipes["mte2"] == 512 * 576 * 2 / 32 + 256 * 576 * 2 / 110  # K from HBM, Q from L2
    assert c1.pipes["fixpipe"] == 256 * 512 * 4 / 86 and c1.cycles == max(c1.pipes.values()) and c1.bound == "mte2"
    c2 = c2_cost(256, SHAPE, cal=IDEAL)
    assert c2.pipes["mmad"] == 16384 and c2.bound == "mmad"
    assert c2_cost(256, SHAPE).pipes["mmad"] == 16384 / CALIBRATION.mmad_efficiency


def test_vector_stages_by_hand():
    latency = CALIBRATION.gm_latency_cycles
    v1 = v1_cost(256, "amla", SHAPE)  # 128 rows per AIV: 8 chunks of 16 x 512
    load, vector, store = 32768 / 110 + latency, 7 * 128, 16384 / 64 + latency
    assert v1.cycles == pytest.approx(load + vector + store + 7 * max(load, vector, store), rel=1e-12)
    assert v1_cost(256, "fa_gm", SHAPE).pipes["vector"] == 8 * 6 * 128  # no r~ rescale in the baseline
    nu = nupdate_cost(256, "middle", SHAPE)
    assert nu.cycles == pytest.approx(2 * (64 * 128 * 4 / 256 + 4 * 64 * 128 * 4 / 64 + latency), rel=1e-12)
    assert nupdate_cost(256, "first", SHAPE).cycles == 0
    assert v2_cost(256, "amla", "middle", SHAPE).cycles == 0  # AMLA normalises once, at the last block
    mid = v2_cost(256, "fa_gm", "middle", SHAPE)  # serialised: P V and O in; copy, RowMuls, Add, copy; O out
    assert mid.cycles == pytest.approx(8 * (4 * 128 + 2 * (32768 / 110 + latency) + 32768 / 64 + latency), rel=1e-12)


def test_latency_and_rates_move_the_right_stages():
    slow_hbm = replace(ASCEND_910C_DIE, hbm_rate=16)
    assert c1_cost(256, SHAPE, slow_hbm).cycles > c1_cost(256, SHAPE).cycles
    assert c2_cost(256, SHAPE, slow_hbm).cycles == c2_cost(256, SHAPE).cycles
    more_latency = replace(CALIBRATION, gm_latency_cycles=2 * CALIBRATION.gm_latency_cycles)
    assert v2_cost(256, "fa_gm", "middle", SHAPE, cal=more_latency).cycles > v2_cost(256, "fa_gm", "middle", SHAPE).cycles
    fast = replace(ASCEND_910C_DIE, clock_hz=2e9)
    t, u = task_times(256, "amla", "middle", SHAPE), task_times(256, "amla", "middle", SHAPE, fast)
    assert t.cube == u.cube and u.seconds(fast)["C1"] < t.seconds()["C1"]


def test_shape_helpers():
    assert MlaShape(batch=1, s_q=4, s_k=512).row_groups == [256, 256]
    assert MlaShape(batch=1, s_q=1, s_k=1024).row_groups == [128] and MlaShape(batch=1, s_q=1, s_k=1024).blocks == 2
    assert MlaShape(batch=2, s_q=2, s_k=512).flops == 2.0 * 2 * 2 * 128 * 512 * 1088
    assert positions(1) == ["only"] and positions(3) == ["first", "middle", "last"]


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(batch=1, s_q=1, s_k=1000), ShapeError, "s_k: expected a multiple"),
    (dict(batch=0, s_q=1, s_k=512), ShapeError, "batch: expected a positive int"),
    (dict(batch=1, s_q=1, s_k=512, d_v=600), ShapeError, "d_v: expected <= d_k"),
    (dict(batch=1, s_q=1, s_k=512, d_v=384), ShapeError, "d_v: expected a divisor"),
])
def test_bad_shapes(kwargs, error, text):
    with pytest.raises(error, match=text):
        MlaShape(**kwargs)


def test_bad_task_arguments():
    with pytest.raises(ConventionError, match="kernel"):
        v1_cost(256, "flash", SHAPE)
    with pytest.raises(ShapeError, match="rows"):
        task_times(300, "amla", "middle", SHAPE)
    with pytest.raises(ConventionError, match="position"):
        task_times(256, "amla", "centre", SHAPE)


def test_every_number_has_a_source_and_calibrated_ones_say_who_shares_them():
    rows = provenance(ASCEND_910C) + provenance(H800_SXM5) + provenance(CALIBRATION)
    assert rows and all(r["source"] and r["basis"] in ("cited", "derived", "inferred", "calibrated") for r in rows)
    assert {r["name"] for r in rows if r["basis"] == "calibrated"} == {
        "mmad_efficiency", "gm_latency_cycles", "hbm_efficiency", "h800_tensor_efficiency"}
    assert all(r["shared_by"] for r in rows if r["basis"] == "calibrated")


def test_provenance_marks_user_overrides():
    rows = provenance(replace(ASCEND_910C, die=replace(ASCEND_910C_DIE, clock_hz=1.85e9)))
    clock = next(r for r in rows if r["name"] == "die.clock_hz")
    assert clock["basis"] == "override" and clock["value"] == 1.85e9
    with pytest.raises(TypeError, match="dataclass"):
        provenance(42)


def test_peaks_from_first_principles():
    assert ASCEND_910C.peak_bf16 == pytest.approx(707.8e12, rel=1e-4)  # 48 AIC x 8192 FLOP x 1.8 GHz
    assert ASCEND_910C.peak_int8 == 2 * ASCEND_910C.peak_bf16
    assert ASCEND_910C_DIE.hbm_achievable == 24 * 32 * 1.8e9
