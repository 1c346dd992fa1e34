"""The CloudMatrix384 serving model: published numbers, the identity, the terms, calibrations, the command."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from attnspec.cli import main as cli
from attnspec.hw_model import serving as S
from attnspec.reference.ep_dispatch import buffer_report

ROWS = S.serving_rows()
REQUIRED = ["decode b96/NPU 4096/256 throughput", "decode b96/NPU 4096/256 TPOT",
            "decode b128/NPU 1024/1024 throughput", "decode b112/NPU 2048/256 throughput",
            "decode b24/NPU 4096/256 throughput", "decode b8/NPU 4096/256 throughput",
            "decode b96 no MTP per-layer", "decode b96 MTP per-layer",
            "prefill 4K prompts, perfect EPLB", "prefill 4K prompts, default"]
STREAM_TERMS = ["mla_prolog", "attention", "o_proj", "gate", "dispatch", "expert_mlp", "combine"]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_every_published_number_within_its_band(row):
    assert row.ok, f"ratio={row.ratio:.3f}, but should be within ±{row.band:.0%} [{row.name}]"


def test_issue_numbers_are_all_reported():
    assert set(REQUIRED) <= {r.name for r in ROWS}
    assert {r.name for r in ROWS if r.kind == "calibration"} == {
        "decode b96/NPU 4096/256 throughput", "decode b96/NPU 4096/256 TPOT", "decode b96 MTP per-layer",
        "decode b96 no MTP per-layer", "decode b96 MTP MoE stream (16/8 split)"}


@pytest.mark.parametrize("row", [r for r in S.table6_rows() if "one node" not in r.name], ids=lambda r: r.name)
def test_table6_multinode_rows_within_band(row):
    assert row.ok, f"ratio={row.ratio:.3f}, but should be within ±{row.band:.0%} [{row.name}]"


def test_table6_single_node_rows_are_the_documented_deviation():
    """EP8/EP16 run faster than the inter-node model (docstring catalogue): 25% and 11-13% over."""
    ratios = {r.name: r.ratio for r in S.table6_rows() if "one node" in r.name}
    assert ratios["dispatch EP8 latency (one node)"] == pytest.approx(145.0 / 116, rel=2e-3)
    assert ratios["combine EP16 latency (one node)"] == pytest.approx(148.66 / 132, rel=2e-3)


def test_operator_model_from_cited_numbers():
    """Per-message time = 2.1 us + message / (64 B x 1.8 GHz); bandwidth = 16 messages per message time."""
    hw = S.Hardware()
    m = S.DEEPSEEK_R1.messages
    assert (m.dispatch_bytes, m.combine_bytes) == (7680, 14336)  # cm384 §4.2.1: 7.5 KB and 14 KB
    rate = 64 * 1.8e9
    assert S.message_seconds(hw, 7680) == pytest.approx(2.1e-6 + 7680 / rate, rel=1e-12)
    assert S.effective_bandwidth(hw, 14336) == pytest.approx(16 * 14336 / (2.1e-6 + 14336 / rate), rel=1e-12)
    assert S.fused_comm_seconds(hw, 1024, 7680) == pytest.approx(3 * 2.1e-6 + 64 * (2.1e-6 + 7680 / rate), rel=1e-12)
    assert S.fused_comm_seconds(hw, 1024, 7680, aiv=8) == pytest.approx(3 * 2.1e-6 + 128 * (2.1e-6 + 7680 / rate))
    assert buffer_report().total == 320 * 96 * (7680 + 14336)  # the same messages size the EP320 buffers


def test_reading_table6_as_48_senders_fails_it():
    """The Decision's alternative (48 AIVs send) predicts Table 6 three times too fast."""
    dep = replace(S.DEPLOYMENT, comm_aiv=48)
    predicted = S.fused_comm_seconds(S.Hardware(), 128 * 8, 7680, dep) * 1e6
    assert predicted / 152 < 0.5


def test_throughput_is_batch_over_tpot():
    decode = S.DecodeModel()
    results = [decode.run(S.DecodePoint(b, 4224, microbatches=mb)) for b in (8, 24, 96, 128) for mb in (True, False)]
    assert S.identity_error(results) <= 1e-12
    assert S.check_identity().status == "pass"


class ForgetsMtp(S.DecodeBreakdown):
    """Mutant: throughput from the step time alone, as if every step emitted one token per sequence."""

    @property
    def throughput(self) -> float:
        return self.point.batch_npu / self.step


def test_identity_mutant_is_caught():
    r = S.DecodeModel().run(S.DecodePoint(96, 4224))
    mutant = ForgetsMtp(r.point, r.moe_layer, r.dense_layer, r.mtp_module, r.lm_head, r.overhead)
    assert S.identity_error([mutant]) == pytest.approx(1 - 1 / 1.7, rel=1e-12)


class DropsStreamTerm(S.DecodeModel):
    """Mutant: one operator of a layer priced at zero."""

    def __init__(self, term: str):
        super().__init__()
        self.term = term

    def attention_stream(self, *args):
        return {k: v for k, v in super().attention_stream(*args).items() if k != self.term}

    def moe_stream(self, *args):
        return {k: v for k, v in super().moe_stream(*args).items() if k != self.term}


class DropsStepTerm(S.DecodeModel):
    """Mutant: one non-layer part of a step priced at zero."""

    def __init__(self, term: str):
        super().__init__()
        self.term = term

    def dense_layer(self, *args):
        return 0.0 if self.term == "dense_layer" else super().dense_layer(*args)

    def mtp_glue(self, sequences):
        return 0.0 if self.term == "mtp_glue" else super().mtp_glue(sequences)

    def lm_head(self, tokens):
        return 0.0 if self.term == "lm_head" else super().lm_head(tokens)

    def run(self, point):
        r = super().run(point)
        return replace(r, overhead=0.0) if self.term == "overhead" else r


def caught(dm: S.DecodeModel) -> list[str]:
    """Return why ``dm`` is rejected: decode rows out of band, or a stored constant its refit disagrees with."""
    reasons = [r.name for r in S.decode_rows(dm) if not r.ok]
    fitted, stored = S.calibrate(dm), S.SERVING_CALIBRATION
    if abs(fitted.expert_peak_load - stored.expert_peak_load) > 0.005:
        reasons.append(f"expert_peak_load refit {fitted.expert_peak_load:.3f}")
    if abs(fitted.step_overhead_s - stored.step_overhead_s) > 5e-6:
        reasons.append(f"step_overhead_s refit {fitted.step_overhead_s * 1e3:.3f} ms")
    return reasons


def test_the_real_model_is_not_caught():
    assert caught(S.DecodeModel()) == []


@pytest.mark.parametrize("mutant", [DropsStreamTerm(t) for t in STREAM_TERMS]
                         + [DropsStepTerm(t) for t in ("dense_layer", "mtp_glue", "lm_head", "overhead")],
                         ids=lambda d: f"{type(d).__name__}-{d.term}")
def test_dropping_a_term_is_caught(mutant):
    assert caught(mutant), f"dropping {mutant.term} went unnoticed"


@pytest.mark.parametrize("term", ["mla_prolog", "attention", "o_proj", "expert_mlp", "combine"])
def test_dropping_a_major_term_breaks_a_published_band(term):
    assert any(not r.ok for r in S.decode_rows(DropsStreamTerm(term)))


def test_small_batch_terms_match_their_rooflines():
    """At batch 8 the GEMMs stream their weights: bytes / (24 cores x 32 B/cycle x 1.8 GHz)."""
    r = S.DecodeModel().run(S.slo_point(8, 4096, 256, 15.0))
    stream = 24 * 32 * 1.8e9
    m = S.DEEPSEEK_R1
    assert r.lm_head == pytest.approx(m.hidden * m.vocab * 2 / stream, rel=1e-12)
    assert r.moe_layer.stream1["expert_mlp"] == pytest.approx(m.expert_macs / stream, rel=1e-12)
    assert r.moe_layer.stream0["o_proj"] == pytest.approx((m.absorb_macs * 2 + m.o_proj_macs) / stream, rel=1e-12)
    assert r.step == pytest.approx(58 * r.moe_layer.seconds + 3 * r.dense_layer + r.mtp_module + r.lm_head
                                   + r.overhead, rel=1e-12)


def test_microbatch_rule():
    """b8 (15 ms SLO) runs one stream; every other Table 3/4 point keeps the pipeline, b96 at the 16/8 split."""
    decode = S.DecodeModel()
    modes = {b: decode.run(S.slo_point(b, p, o, slo)).point.microbatches for b, p, o, slo, _, _ in S.SLO_POINTS}
    assert modes == {96: True, 128: True, 112: True, 24: True, 8: False}
    assert decode.run(S.slo_point(96, 4096, 256, 50.0)).moe_layer.split == (16, 8)
    pipelined = decode.run(S.slo_point(8, 4096, 256, None))
    assert pipelined.point.microbatches and pipelined.tpot > 15e-3  # without an SLO the pipeline stays on


@pytest.mark.parametrize("batch, s_q, kv", [(96, 2, 4224), (24, 2, 4224), (128, 2, 1536), (96, 1, 4224)])
def test_split_search_is_exhaustive(batch, s_q, kv):
    """The pruned search returns the best of all 23 splits, each evaluated in full."""
    dm = S.DecodeModel()
    every = [dm.moe_layer(batch // 2, s_q, kv, True, split=a) for a in range(1, 24)]
    best = dm.moe_layer(batch // 2, s_q, kv, True)
    assert best.seconds == min(layer.seconds for layer in every)
    assert best.split == min(every, key=lambda layer: layer.seconds).split


def test_always_faster_rule_misses_batch_24():
    """The rejected alternative: running b24 on one stream (the faster mode) predicts it out of band."""
    one_stream = S.DecodeModel().run(S.slo_point(24, 4096, 256, 30.0, microbatches=False))
    pipelined = S.DecodeModel().run(S.slo_point(24, 4096, 256, 30.0, microbatches=True))
    assert one_stream.tpot < pipelined.tpot
    assert one_stream.throughput / 974.0 > 1.10


def test_calibrations_reproduce():
    fitted = S.calibrate()
    assert fitted.expert_peak_load == pytest.approx(S.SERVING_CALIBRATION.expert_peak_load, abs=0.005)
    assert fitted.step_overhead_s == pytest.approx(S.SERVING_CALIBRATION.step_overhead_s, abs=5e-6)
    assert S.check_calibration().status == "pass"


def test_without_the_expert_peak_the_moe_stream_is_out_of_band():
    """The calibrated row can fail: with a balanced expert load the MoE stream is far below ~600 us."""
    dm = S.DecodeModel().with_calibration(replace(S.SERVING_CALIBRATION, expert_peak_load=1.0))
    row = next(r for r in S.decode_rows(dm) if r.name == "decode b96 MTP MoE stream (16/8 split)")
    assert not row.ok and row.ratio < 0.8


def test_attention_is_priced_pro_rata_between_blocks():
    hw = S.Hardware()
    at = {kv: S.attention_seconds(hw, 24, 12, 2, kv) for kv in (4096, 4224, 4352, 4608)}
    assert at[4352] == pytest.approx((at[4096] + at[4608]) / 2, rel=1e-12)
    assert at[4096] < at[4224] < at[4352] < at[4608]
    assert S.attention_seconds(hw, 24, 12, 2, 100) == S.attention_seconds(hw, 24, 12, 2, 512)


def test_kv_rule_and_tokens_per_step():
    assert S.kv_length(4096, 256) == 4224 and S.kv_length(1024, 1024) == 1536 and S.kv_length(100, 3) == 101
    assert S.DecodeModel().run(S.DecodePoint(96, 4224)).tokens_per_step == pytest.approx(1.7)


def test_microbatch_layer_rule():
    assert S.microbatch_layer(4.0, 4.0) == 6.0 and S.microbatch_layer(10.0, 2.0) == 11.0


def test_bad_points_are_errors():
    with pytest.raises(S.ShapeError, match="batch_npu"):
        S.DecodePoint(7, 4096)
    with pytest.raises(S.ShapeError, match="kv: expected a positive int"):
        S.DecodePoint(8, 0)
    with pytest.raises(S.ShapeError, match="slo_ms"):
        S.DecodePoint(8, 4096, slo_ms=0.0)
    with pytest.raises(S.ShapeError, match="prompt, output"):
        S.kv_length(0, 256)
    with pytest.raises(S.ShapeError, match="prefill_dies"):
        S.PrefillModel(dep=replace(S.DEPLOYMENT, prefill_dies=48))


def test_serving_command_json(capsys):
    code = cli(["model", "serving", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == (0 if all(r["ok"] for r in data["rows"]) else 1) == 0
    assert {r["name"] for r in data["rows"]} >= set(REQUIRED)
    assert {c["name"] for c in data["calibrated"]} >= {"expert_peak_load", "step_overhead_s", "eplb_throughput_ratio",
                                                       "mmad_efficiency"}
    assert [m["used"] for m in data["modes"]] == ["two microbatches"] * 4 + ["one stream"]
    assert len(data["table6"]) == 14


def test_serving_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the optional extra 'plot' (matplotlib) is not installed")
    path = tmp_path / "sweep.png"
    cli(["model", "serving", "--plot", str(path)])
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert "Throughput vs TPOT written" in capsys.readouterr().out
