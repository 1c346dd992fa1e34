"""Kernel predictions against the published numbers, the calibrations, and the ``model pipeline`` command."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest

from attnspec.cli import main as cli
from attnspec.hw_model import predictions as P
from attnspec.hw_model.machines import ASCEND_910C, CALIBRATION

ROWS = P.predictions()


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_prediction_within_band(row):
    assert row.ok, f"ratio={row.ratio:.3f}, but should be within ±{row.band:.0%} [{row.name}]"


def test_out_of_band_is_detected():
    """The band check itself fails a bad model: a slower Cube drops AMLA out of the band."""
    slow = replace(CALIBRATION, mmad_efficiency=0.7)
    amla = next(r for r in P.predictions(cal=slow) if r.name.startswith("AMLA on 910C, TFLOPS"))
    assert not amla.ok and amla.ratio < 0.95


def test_calibrated_latency_reproduces_its_target():
    assert abs(P.calibrate_gm_latency() - CALIBRATION.gm_latency_cycles) <= 0.5
    baseline = next(r for r in ROWS if r.name.startswith("baseline MLA"))
    assert baseline.kind == "calibration" and abs(baseline.ratio - 1) < 1e-3


def test_steady_state_is_the_limit_of_the_simulation():
    """Longer KV sequences approach the proved steady state from below."""
    from attnspec.hw_model.schedule import run_kernel
    from attnspec.hw_model.stages import MlaShape
    steady = P.steady_tflops(P.AMLA_SHAPE, "amla", "cann")
    rates = [run_kernel(MlaShape(batch=96, s_q=2, s_k=s_k), "amla").tflops for s_k in (1024, 4096, 16384)]
    assert rates == sorted(rates) and rates[-1] <= steady and rates[-1] > 0.99 * steady


def test_sync_margin_of_the_two_amla_models():
    w = P.worst_case(P.AMLA_SHAPE, "amla")
    assert P.max_sync_cycles(w, "cann") > P.max_sync_cycles(w, "atomic") > 0
    assert P.max_sync_cycles(P.worst_case(P.AMLA_SHAPE, "fa_gm"), "none") < 0


def test_pipeline_command_json(capsys):
    assert cli(["model", "pipeline", "--json", "--s-k", "2048"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["kernel"] for r in data["schedules"]} == {"amla", "fa_gm"}
    assert all(p["ok"] for p in data["predictions"])
    assert [c["name"] for c in data["calibrated"]] == ["mmad_efficiency", "gm_latency_cycles", "hbm_efficiency",
                                                        "h800_tensor_efficiency"]


def test_pipeline_command_table(capsys):
    assert cli(["model", "pipeline", "--sync-us", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "AMLA on 910C, TFLOPS (up to)" in out and "flag cost 0.5 us" in out and "Cube-bound" in out


def test_pipeline_command_reports_out_of_band(capsys):
    """At the 1.85 GHz SKU the 86.8%-of-peak row no longer matches: exit code 1 and the row is flagged."""
    assert cli(["model", "pipeline", "--clock-ghz", "1.85"]) == 1
    out = capsys.readouterr().out
    assert "1.85 GHz" in out and "OUT OF BAND" in out


def test_pipeline_command_rejects_bad_shape(capsys):
    assert cli(["model", "pipeline", "--s-k", "1000"]) == 2
    assert "s_k: expected a multiple" in capsys.readouterr().err


def test_pipeline_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the optional extra 'plot' (matplotlib) is not installed")
    path = tmp_path / "gantt.png"
    assert cli(["model", "pipeline", "--plot", str(path), "--gantt-tasks", "4"]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "gantt.png"]  # no temporary file left behind


def test_pipeline_plot_without_matplotlib_fails_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes 'import matplotlib' raise ImportError
    assert cli(["model", "pipeline", "--plot", str(tmp_path / "g.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_pipeline_plot_needs_png_suffix(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the optional extra 'plot' (matplotlib) is not installed")
    assert cli(["model", "pipeline", "--plot", str(tmp_path / "g.svg")]) == 2
    assert "expected a .png path" in capsys.readouterr().err


def test_machine_override_changes_the_prediction():
    faster = replace(ASCEND_910C, die=replace(ASCEND_910C.die, clock_hz=1.85e9))
    base = P.steady_tflops(P.AMLA_SHAPE, "amla", "cann")
    assert P.steady_tflops(P.AMLA_SHAPE, "amla", "cann", faster) == pytest.approx(base * 1.85 / 1.8, rel=1e-9)
