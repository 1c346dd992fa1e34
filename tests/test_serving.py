"""The CloudMatrix384 serving model: published numbers, the throughput identity, calibrations, the command."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from attnspec.cli import main as cli
from attnspec.hw_model import serving as S

ROWS = S.serving_rows()
REQUIRED = ["decode b96/NPU 4096/256 throughput", "decode b96/NPU 4096/256 TPOT", "decode b128/NPU 1024/1024 throughput",
            "decode b24/NPU 4096/256 throughput", "decode b8/NPU 4096/256 throughput", "decode b96 no MTP per-layer",
            "decode b96 MTP per-layer", "prefill 4K prompts, perfect EPLB", "prefill 4K prompts, default"]


KNOWN_DEVIATION = pytest.mark.xfail(strict=True, reason=(
    "known deviation (docs/serving.md): at batch 8/NPU the model's per-layer fixed costs (weight streams at "
    "32 B/cycle/core and the Table-6 dispatch/combine t0) leave it 14% slower than the published 538 tok/s"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=KNOWN_DEVIATION) if "b8/" in n else n for n in REQUIRED])
def test_published_number_within_ten_percent(name):
    row = next(r for r in ROWS if r.name == name)
    assert row.ok, f"ratio={row.ratio:.3f}, but should be within ±{row.band:.0%} [{row.name}]"


def test_throughput_is_batch_over_tpot():
    decode = S.DecodeModel()
    for batch in (8, 24, 96, 128):
        r = decode.run(S.DecodePoint(batch, 4096))
        assert r.throughput * r.tpot == pytest.approx(batch, rel=1e-12)


def test_message_sizes_from_dimensions():
    m = S.DEEPSEEK_R1
    assert m.dispatch_bytes == 7680 and m.combine_bytes == 14336  # 7.5 KB INT8 + scale, 14 KB BF16


def test_mtp_tokens_per_step_and_kv_rule():
    r = S.DecodeModel().run(S.DecodePoint(96, 4096))
    assert r.tokens_per_step == pytest.approx(1.7)
    assert S.kv_length(4096, 256) == 4096 and S.kv_length(1024, 1024) == 1536 and S.kv_length(100, 2) == 512


def test_microbatch_choice_is_the_faster_mode():
    decode = S.DecodeModel()
    for batch in (8, 96):
        best = decode.run(S.DecodePoint(batch, 4096))
        forced = [decode.run(S.DecodePoint(batch, 4096, microbatches=m)).tpot for m in (True, False)]
        assert best.tpot == min(forced)


def test_microbatch_layer_rule():
    assert S.microbatch_layer(4.0, 4.0) == 6.0 and S.microbatch_layer(10.0, 2.0) == 11.0


def test_calibrations_reproduce():
    assert abs(S.fit_moe_token_cost() - S.SERVING_CALIBRATION.moe_token_s) <= 0.01e-6
    assert S.check_t0_calibration().status == "pass"


def test_mutant_without_token_cost_misses_the_mtp_layer():
    """The per-layer check can fail: without the calibrated per-token cost the MTP layer is off."""
    hw = S.Hardware(serving=replace(S.SERVING_CALIBRATION, moe_token_s=0.0))
    row = next(r for r in S.serving_rows(hw) if r.name == "decode b96 MTP MoE stream")
    assert not row.ok


def test_bad_points_are_errors():
    with pytest.raises(S.ShapeError, match="batch_npu"):
        S.DecodePoint(7, 4096)
    with pytest.raises(S.ShapeError, match="kv: expected a multiple of 512"):
        S.DecodePoint(8, 1000)
    with pytest.raises(S.ShapeError, match="prefill_dies"):
        S.PrefillModel(dep=replace(S.DEPLOYMENT, prefill_dies=48))


def test_serving_command_json(capsys):
    code = cli(["model", "serving", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == (0 if all(r["ok"] for r in data["rows"]) else 1)
    assert {r["name"] for r in data["rows"]} >= set(REQUIRED)
    assert {c["name"] for c in data["calibrated"]} >= {"dispatch_t0_s", "combine_t0_s", "moe_token_s",
                                                       "eplb_throughput_ratio", "mmad_efficiency"}


def test_serving_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the optional extra 'plot' (matplotlib) is not installed")
    path = tmp_path / "sweep.png"
    cli(["model", "serving", "--plot", str(path)])
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert "Throughput vs TPOT written" in capsys.readouterr().out
