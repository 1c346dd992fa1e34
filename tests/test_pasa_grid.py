"""``attnspec report pasa-grid``: the command, its files, and the overflow claims it checks.

The claims checker is itself tested on tampered reports (a known-bad input per claim): a
report whose FP16 FA misses a forced overflow, whose PASA overflows or leaves its certified
bounds, or whose gold is too coarse must be flagged.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import sys

import pytest

from attnspec.reference import pasa_grid
from attnspec.registry import all_checks, tools

TINY = ["--q-heads", "1", "--kv-heads", "1", "--head-dim", "128", "--seq-q", "2", "--seq-k", "129",
        "--beta", "0.9375", "--no-hybrid", "--biases", "0", "30", "--amplitudes", "0.5", "20"]


HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """Run the tiny grid once; the PNG is requested only where the optional matplotlib is installed."""
    folder = tmp_path_factory.mktemp("grid")
    paths = {ext: folder / f"grid.{ext}" for ext in ("json", "csv", "png")}
    wanted = ("json", "csv", "png") if HAVE_MATPLOTLIB else ("json", "csv")
    rc = pasa_grid.main(TINY + [f"--{ext}={paths[ext]}" for ext in wanted])
    return rc, paths


def test_the_command_writes_every_file(tiny_report):
    rc, paths = tiny_report
    assert rc == 0
    report = json.loads(paths["json"].read_text())
    assert len(report["rows"]) == 4 and report["failed_claims"] == []
    assert report["columns"] == ["fa_fp32", "fa_fp16", "fa_fp16_scale_q", "fa_bf16", "pasa_b0.9375", "pasa_author"]
    lines = list(csv.reader(paths["csv"].read_text().splitlines()))
    assert len(lines) == 1 + 4 * 6 and lines[0][:4] == ["distribution", "bias", "amplitude", "column"]
    if HAVE_MATPLOTLIB:
        assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cell = {r["name"]: r for r in report["rows"]}["uniform(b=30, A=0.5)"]
    assert cell["columns"]["fa_fp16"]["overflow"] and cell["predictions"]["naive_certain"]
    assert not cell["columns"]["pasa_b0.9375"]["overflow"] and cell["columns"]["pasa_b0.9375"]["rel_rmse"] < 0.05
    one_hot = {r["name"]: r for r in report["rows"]}["uniform(b=0, A=20)"]  # 2 queries, peaked: every FA is exact
    assert not one_hot["columns"]["fa_fp32"]["resolved"] and one_hot["columns"]["fa_fp32"]["rel_rmse"] < \
        pasa_grid.GOLD_MARGIN * one_hot["gold_rel_bound"]


def _report(tiny_report) -> dict:
    return json.loads(tiny_report[1]["json"].read_text())


@pytest.mark.parametrize("tamper, message", [
    (lambda r: r["rows"][2]["columns"]["fa_fp16"].update(overflow=False), "did not overflow where the box forces"),
    (lambda r: r["rows"][0]["columns"]["fa_fp16"].update(overflow=True), "cannot"),
    (lambda r: r["rows"][1]["columns"]["pasa_b0.9375"].update(overflow=True), "pasa_b0.9375 overflowed"),
    (lambda r: r["rows"][1]["columns"]["pasa_b0.9375"]["trace"]["peaks"].update(scores=1e9), "exceeded its certified"),
], ids=["missed-forced-overflow", "impossible-overflow", "pasa-overflow", "beyond-bound"])
def test_claims_flag_tampered_reports(tiny_report, tamper, message):
    report = copy.deepcopy(_report(tiny_report))
    assert pasa_grid.claims(report["rows"]) == []
    tamper(report)
    assert any(message in failure for failure in pasa_grid.claims(report["rows"]))


def test_png_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert pasa_grid.main(TINY + ["--png", str(tmp_path / "x.png")]) == 2
    assert "attnspec[plot]" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_registered_tool_and_check():
    assert "pasa-grid" in tools("report")
    assert pasa_grid.check_pasa_grid_overflow_map in {c.run for c in all_checks(quick=True)}
    assert pasa_grid.check_pasa_grid_overflow_map().status == "pass"


def test_default_betas_are_the_fixed_points():
    assert pasa_grid.DEFAULT_BETAS == (0.9375, 0.968994140625, 0.9844970703125)


def test_bad_arguments_fail_before_any_work(tmp_path):
    from attnspec.spec.errors import DomainError
    with pytest.raises(DomainError, match="--json"):
        pasa_grid.main(TINY + ["--json", str(tmp_path / "missing" / "g.json")])
    with pytest.raises(DomainError, match="kv heads"):
        pasa_grid.main(["--q-heads", "3", "--kv-heads", "2"])
