"""An analytical model of DeepSeek-R1 serving on CloudMatrix384: decode and prefill per NPU.

Normative source: Zuo et al., "Serving Large Language Models on Huawei CloudMatrix384",
arXiv:2506.12708 (cm384): §4.2 decode (EP320, two-stream microbatches, MTP), §4.3 prefill
(EP32, SP-TP-SP MLA, microbatches), §5.2-§5.5 results; model dimensions from
deepseek-ai/DeepSeek-V3 ``inference/configs/config_671B.json`` (dsv3). Hardware comes from
:mod:`attnspec.hw_model.machines`; the attention operator is the MLA kernel model of
:mod:`attnspec.hw_model.stages` and :mod:`attnspec.hw_model.schedule`, run on the cores of
its stream.

Decode, per die (DP320: each die serves B_npu / 2 sequences), per MoE layer (cm384 §4.2.3):

- stream 0 on 16 AIC + 32 AIV: MLAProlog (INT8 W_dq, W_uq_qr, W_dkv_kr; BF16 W_UK absorption),
  FusedAttention (the MLA kernel model, baseline FA variant, on 16 AIC), O_proj (BF16 W_UV,
  INT8 W_o);
- stream 1 on 8 AIC + 16 AIV: gate, the calibrated per-token MoE work, FusedDispatch, the
  expert MLP (INT8, on the busiest rank), FusedCombine;
- with two microbatches the streams alternate and a layer takes 2 max(stream 0, stream 1)
  (cm384 §8.3); without, the whole die runs stream 0 then stream 1. The engine re-tunes the
  split at run time (§4.2.3), so a point uses whichever mode is faster.

A GEMM costs max(MACs / (AIC x MAC/cycle x clock x mmad_efficiency), weight bytes / (AIC x
32 B/cycle x clock)): a roofline on the stream's own cores. Dispatch and combine cost
t0 + tokens x destinations x message / 135 GB/s (cm384 v2 Table 1, measured UB write per
die), with 9 destinations (8 routed experts and one shared-expert rank) and message sizes
derived from the hidden size: 7,168 INT8 + the per-token scale padded to 512 B = 7,680 B;
7,168 BF16 = 14,336 B. A step runs 58 MoE layers, 3 dense layers, the MTP module (one MoE
layer on one token per sequence, cm384 §4.2.4) and two LM-head passes; TPOT =
step / (1 + k a) with k = 1 draft token accepted with a = 0.7; throughput = batch / TPOT.

Prefill, per die, per layer (cm384 §4.3): SP down-projections on its own tokens, All-Gather
of the low-rank activations, TP over 4 of the 128 heads for all tokens of the 32-die
instance (up-projections, causal attention without absorption, priced by the stage model
with q/k 192 and v 128), All-to-All back, SP o_proj, EP32 MoE over SDMA. Collectives run at
the achieved all-to-all bandwidth of cm384 Table 6 (103 GB/s); compute and communication of
two microbatches overlap as a two-stage flow shop (:func:`microbatch_layer`).

Decision (2026-11-28): CloudMatrix's FusedAttention (June 2025) is modelled as the baseline
FA kernel, the one whose 65.4% calibrated ``gm_latency_cycles``; ``--attention amla`` shows
the AMLA what-if.

Decision (2026-11-28): the decode KV length is prompt + output / 2 (the mean over the
output), rounded to a multiple of 512 (the MLA kernel's block).

Decision (2026-11-28): the expert load of a decode step is set by the shared-expert ranks,
which receive 320 x t / 32 = 10 t tokens, more than the 320 x 8 t / 288 = 8.9 t of a routed
rank under EPLB; routed-rank imbalance is not modelled in decode.

Known deviations (catalogue):

- Batch 8 per NPU (the 15 ms SLO row of cm384 Table 4) is predicted 14% slow (462 vs 538
  tok/s): at that batch the model's fixed per-layer costs (weight streams at 32 B/cycle per
  core, about 180 us, and the dispatch/combine t0 of 134 us extrapolated from Table 6) already
  exceed the ~0.36 ms per layer the published TPOT allows. Table 6 gives one batch size only,
  so t0 and bandwidth cannot be separated from it; see docs/serving.md.
- The dense layers are not microbatched (they run on the whole die, one after another); the
  MTP module's attention is priced like a main layer's; LM-head weights are BF16 (cm384 §4.5
  keeps sensitive parts out of INT8; not stated for the head); launch bubbles are taken as
  removed by the paper's MTP fixes (§4.2.4).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from math import ceil

from attnspec.hw_model._plot import pyplot, save_png
from attnspec.hw_model._published import Published, format_table
from attnspec.hw_model.machines import (ASCEND_910C, CALIBRATION, AscendDie, AscendPackage, Calibration, calibrated,
                                        cited, provenance)
from attnspec.hw_model.predictions import durations
from attnspec.hw_model.schedule import run_kernel
from attnspec.hw_model.stages import Kernel, MlaShape, task_times
from attnspec.proofs.preload_pipeline import period
from attnspec.registry import Outcome, check, tool
from attnspec.spec.errors import ShapeError, require

INT8 = 1
BF16 = 2


@dataclass(frozen=True)
class ModelConfig:
    """DeepSeek-R1 (= V3 architecture) dimensions, from dsv3 ``config_671B.json``."""

    hidden: int = cited(7168, "dsv3 config_671B.json dim")
    layers: int = cited(61, "dsv3 n_layers")
    dense_layers: int = cited(3, "dsv3 n_dense_layers")
    heads: int = cited(128, "dsv3 n_heads")
    q_lora: int = cited(1536, "dsv3 q_lora_rank")
    kv_lora: int = cited(512, "dsv3 kv_lora_rank")
    qk_nope: int = cited(128, "dsv3 qk_nope_head_dim")
    qk_rope: int = cited(64, "dsv3 qk_rope_head_dim")
    v_head: int = cited(128, "dsv3 v_head_dim")
    routed_experts: int = cited(256, "dsv3 n_routed_experts")
    active_experts: int = cited(8, "dsv3 n_activated_experts")
    moe_inter: int = cited(2048, "dsv3 moe_inter_dim")
    dense_inter: int = cited(18432, "dsv3 inter_dim")
    vocab: int = cited(129280, "dsv3 vocab_size")

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers

    @property
    def qk_head(self) -> int:
        return self.qk_nope + self.qk_rope

    @property
    def expert_macs(self) -> int:
        """Return MACs per token of one expert: gate, up and down projections (SwiGLU)."""
        return 3 * self.hidden * self.moe_inter

    @property
    def prolog_int8_macs(self) -> int:
        """Return MACs per token of the INT8 part of MLAProlog: W_dq, W_uq_qr, W_dkv_kr (cm384 §4.2.2, MLAP)."""
        return self.hidden * self.q_lora + self.q_lora * self.heads * self.qk_head + self.hidden * (self.kv_lora + self.qk_rope)

    @property
    def absorb_macs(self) -> int:
        """Return MACs per token of one absorbed per-head matrix (W_UK or W_UV): heads x 128 x 512, BF16."""
        return self.heads * self.qk_nope * self.kv_lora

    @property
    def o_proj_macs(self) -> int:
        return self.heads * self.v_head * self.hidden

    @property
    def head_macs(self) -> int:
        return self.hidden * self.vocab

    @property
    def dispatch_bytes(self) -> int:
        """Return the dispatch message per token and destination: INT8 hidden + scale padded to 512 B (cm384 §4.2.1)."""
        return self.hidden * INT8 + 512

    @property
    def combine_bytes(self) -> int:
        """Return the combine message per token and destination: BF16 hidden (cm384 §4.2.1)."""
        return self.hidden * BF16


@dataclass(frozen=True)
class Deployment:
    """The CloudMatrix-Infer deployment (cm384 §4.1, §5.1) and its per-die core split."""

    decode_dies: int = cited(320, "cm384 §5.1: 160 NPUs for decode, EP320 / DP320")
    shared_ranks: int = cited(32, "cm384 §4.1: 32 shared-expert replicas, one expert per die")
    routed_ranks: int = cited(288, "cm384 §4.1: 256 routed + 32 redundant routed experts")
    stream0_aic: int = cited(16, "cm384 §4.2.3: attention stream, 16 AIC + 32 AIV")
    stream1_aic: int = cited(8, "cm384 §4.2.3: MoE stream, 8 AIC + 16 AIV")
    mtp_drafts: int = cited(1, "cm384 §5.2: MTP with 1 draft token")
    mtp_acceptance: float = cited(0.7, "cm384 §5.2: 70% acceptance")
    prefill_dies: int = cited(32, "cm384 §4.1: prefill instances of 16 NPUs = 32 dies, EP32")
    prefill_tokens_per_npu: int = cited(16384, "cm384 §5.2 Table 2: 16K tokens per NPU per batch")
    prefill_prompt: int = cited(4096, "cm384 §5.2 Table 2: 4K-token prompts")


@dataclass(frozen=True)
class ServingCalibration:
    """The serving model's calibrated constants; none is fitted to a headline throughput."""

    dispatch_t0_s: float = calibrated(
        93.7e-6, unit="s", against="cm384 Table 6 (v3): FusedDispatch at EP256, 128 tokens/rank, 152 us",
        shared_by="every decode dispatch", how="152 us - 128 x 8 x 7,680 B / 135 GB/s")
    combine_t0_s: float = calibrated(
        40.3e-6, unit="s", against="cm384 Table 6 (v3): FusedCombine at EP256, 128 tokens/rank, 149 us",
        shared_by="every decode combine", how="149 us - 128 x 8 x 14,336 B / 135 GB/s")
    moe_token_s: float = calibrated(
        4.12e-6, unit="s per token per layer on the MoE path",
        against="cm384 §5.4.2 decode per-layer latency 874 us (no MTP) and 1,260 us (MTP), and §4.2.3 "
                "'~600 us' for the MoE stream (MTP), all at batch 96 per NPU, 4K KV; least squares in relative error",
        shared_by="every decode MoE stream (all decode predictions): per-token work the model does not price "
                  "(routing and top-k, token reorder, per-token quantisation, combine accumulation); prefill "
                  "does this work on AIV and SDMA beside the Cube (cm384 §4.3.2) and does not carry it",
        how="see fit_moe_token_cost")
    eplb_throughput_ratio: float = calibrated(
        6288 / 7417, unit="default / perfect-EPLB prefill throughput",
        against="cm384 Table 2 (v3): SGLang on H100, DeepSeek-R1, 4K prompts, 16K tokens: 6,288 vs 7,417 tok/s",
        shared_by="the CloudMatrix default-prefill prediction (same model, same workload)",
        how="the imbalance cost of EPLB's default placement, measured on another system, carried over")


DEEPSEEK_R1 = ModelConfig()
DEPLOYMENT = Deployment()
SERVING_CALIBRATION = ServingCalibration()


@dataclass(frozen=True)
class Hardware:
    """What the serving model needs from the machine models."""

    package: AscendPackage = field(default_factory=lambda: ASCEND_910C)
    kernel: Calibration = field(default_factory=lambda: CALIBRATION)
    serving: ServingCalibration = field(default_factory=lambda: SERVING_CALIBRATION)
    attention: Kernel = "fa_gm"

    @property
    def die(self) -> AscendDie:
        return self.package.die


def gemm_seconds(hw: Hardware, aic: int, tokens: float, macs_per_token: float, weight_bytes: float,
                 dtype_bytes: int) -> float:
    """Return a GEMM's time on ``aic`` Cube cores: the slower of its MACs and its weight stream."""
    die = hw.die
    mac_per_cycle = die.cube_mac_int8 if dtype_bytes == INT8 else die.cube_mac_bf16
    compute = tokens * macs_per_token / (aic * mac_per_cycle * die.clock_hz * hw.kernel.mmad_efficiency)
    stream = weight_bytes / (aic * die.hbm_rate * die.clock_hz)
    return max(compute, stream)


def attention_seconds(hw: Hardware, aic: int, sequences: int, s_q: int, s_k: int) -> float:
    """Return the MLA kernel's time for ``sequences`` sequences on ``aic`` AIC (and 2 x aic AIV)."""
    if sequences == 0:
        return 0.0
    die = replace(hw.die, aic=aic)
    return run_kernel(MlaShape(batch=sequences, s_q=s_q, s_k=s_k), hw.attention, die=die, cal=hw.kernel).seconds


def kv_length(prompt: int, output: int, block: int = 512) -> int:
    """Return the mean KV length of decoding, prompt + output / 2, rounded to a multiple of ``block``."""
    require(prompt >= 1 and output >= 1, ShapeError, f"prompt, output: expected >= 1, got {prompt}, {output}")
    return max(block, round((prompt + output / 2) / block) * block)


@dataclass(frozen=True)
class DecodePoint:
    """One decode operating point: batch per NPU, KV length, MTP on or off."""

    batch_npu: int
    kv: int
    mtp: bool = True
    microbatches: bool | None = None  # None: whichever is faster, as the engine re-tunes it (cm384 §4.2.3)

    def __post_init__(self) -> None:
        require(self.batch_npu >= 2 and self.batch_npu % 2 == 0, ShapeError,
                f"batch_npu: expected an even batch >= 2 (two dies), got {self.batch_npu}")
        require(self.kv >= 512 and self.kv % 512 == 0, ShapeError, f"kv: expected a multiple of 512, got {self.kv}")


@dataclass(frozen=True)
class DecodeBreakdown:
    """The decode terms of one point, in seconds."""

    point: DecodePoint
    stream0: dict[str, float]
    stream1: dict[str, float]
    moe_layer: float
    dense_layer: float
    mtp_module: float
    lm_heads: float

    @property
    def step(self) -> float:
        m = DEEPSEEK_R1
        return m.moe_layers * self.moe_layer + m.dense_layers * self.dense_layer + self.mtp_module + self.lm_heads

    @property
    def tokens_per_step(self) -> float:
        """Return tokens emitted per sequence per step: 1 + k a with MTP (cm384 §8.2), else 1."""
        d = DEPLOYMENT
        return 1 + d.mtp_drafts * d.mtp_acceptance if self.point.mtp else 1.0

    @property
    def tpot(self) -> float:
        return self.step / self.tokens_per_step

    @property
    def throughput(self) -> float:
        """Return tokens/s per NPU: batch / TPOT (the identity of cm384 §8.1, by construction)."""
        return self.point.batch_npu / self.tpot


class DecodeModel:
    """Decode time of one step on one die, term by term."""

    def __init__(self, hw: Hardware = Hardware(), model: ModelConfig = DEEPSEEK_R1, dep: Deployment = DEPLOYMENT):
        self.hw, self.m, self.dep = hw, model, dep

    def streams(self, sequences: int, s_q: int, kv: int, aic0: int, aic1: int) -> tuple[dict, dict]:
        """Return the stream-0 and stream-1 terms for one microbatch of ``sequences`` sequences."""
        hw, m, dep = self.hw, self.m, self.dep
        tokens = sequences * s_q
        ub = hw.die.ub_write_bw  # the die's UB link, not its AIVs, bounds AIV-Direct writes
        s0 = {
            "mla_prolog": gemm_seconds(hw, aic0, tokens, m.prolog_int8_macs, m.prolog_int8_macs * INT8, INT8)
            + gemm_seconds(hw, aic0, tokens, m.absorb_macs, m.absorb_macs * BF16, BF16),
            "attention": attention_seconds(hw, aic0, sequences, s_q, kv),
            "o_proj": gemm_seconds(hw, aic0, tokens, m.absorb_macs, m.absorb_macs * BF16, BF16)
            + gemm_seconds(hw, aic0, tokens, m.o_proj_macs, m.o_proj_macs * INT8, INT8),
        }
        destinations = m.active_experts + 1  # the routed experts and one shared-expert rank (cm384 §4.2.1, MDD)
        received = tokens * dep.decode_dies / dep.shared_ranks  # the shared-expert rank is the busiest
        s1 = {
            "gate": gemm_seconds(hw, aic1, tokens, m.hidden * m.routed_experts, m.hidden * m.routed_experts * BF16, BF16),
            "token_work": tokens * hw.serving.moe_token_s,
            "dispatch": hw.serving.dispatch_t0_s + tokens * destinations * m.dispatch_bytes / ub,
            "expert_mlp": gemm_seconds(hw, aic1, received, m.expert_macs, m.expert_macs * INT8, INT8),
            "combine": hw.serving.combine_t0_s + tokens * destinations * m.combine_bytes / ub,
        }
        return s0, s1

    def moe_layer(self, point: DecodePoint, s_q: int, sequences: int) -> tuple[float, dict, dict]:
        """Return (layer seconds, stream-0 terms, stream-1 terms) of one MoE layer."""
        die = self.hw.die
        if point.microbatches:
            half = ceil(sequences / 2)
            s0, s1 = self.streams(half, s_q, point.kv, self.dep.stream0_aic, self.dep.stream1_aic)
            layer = 2 * max(sum(s0.values()), sum(s1.values()))
        else:
            s0, s1 = self.streams(sequences, s_q, point.kv, die.aic, die.aic)
            layer = sum(s0.values()) + sum(s1.values())
        return layer, s0, s1

    def dense_layer(self, point: DecodePoint, s_q: int, sequences: int) -> float:
        """Return one dense layer: the attention path and the dense FFN on the whole die, one after the other."""
        hw, m = self.hw, self.m
        s0, _ = self.streams(sequences, s_q, point.kv, hw.die.aic, hw.die.aic)
        ffn_macs = 3 * m.hidden * m.dense_inter
        return sum(s0.values()) + gemm_seconds(hw, hw.die.aic, sequences * s_q, ffn_macs, ffn_macs * INT8, INT8)

    def lm_head(self, tokens: float) -> float:
        return gemm_seconds(self.hw, self.hw.die.aic, tokens, self.m.head_macs, self.m.head_macs * BF16, BF16)

    def run(self, point: DecodePoint) -> DecodeBreakdown:
        """Return the decode breakdown of ``point`` (the faster of the two modes when microbatches is None)."""
        if point.microbatches is None:
            both = [self.run(replace(point, microbatches=mode)) for mode in (True, False)]
            return min(both, key=lambda r: r.tpot)
        sequences = point.batch_npu // 2
        s_q = 1 + self.dep.mtp_drafts if point.mtp else 1
        layer, s0, s1 = self.moe_layer(point, s_q, sequences)
        dense = self.dense_layer(point, s_q, sequences)
        mtp = self.moe_layer(point, 1, sequences)[0] + self.lm_head(sequences) if point.mtp else 0.0
        return DecodeBreakdown(point, s0, s1, layer, dense, mtp, self.lm_head(sequences * s_q))


LAYER_TARGETS = ((DecodePoint(96, 4096, mtp=False, microbatches=True), "layer", 874e-6),
                 (DecodePoint(96, 4096, microbatches=True), "layer", 1260e-6),
                 (DecodePoint(96, 4096, microbatches=True), "moe_stream", 600e-6))


def fit_moe_token_cost(hw: Hardware = Hardware(), model: ModelConfig = DEEPSEEK_R1,
                       dep: Deployment = DEPLOYMENT) -> float:
    """Return the per-token MoE-path cost minimising the squared relative error over :data:`LAYER_TARGETS`.

    Each target is piecewise linear in the cost (the layer is twice the longer stream), so the
    minimum is found by golden-section search on [0, 10] us to 1e-12 s.
    """
    def loss(cost: float) -> float:
        dm = DecodeModel(replace(hw, serving=replace(hw.serving, moe_token_s=cost)), model, dep)
        total = 0.0
        for point, what, target in LAYER_TARGETS:
            s_q = 1 + dep.mtp_drafts if point.mtp else 1
            layer, _, s1 = dm.moe_layer(point, s_q, point.batch_npu // 2)
            total += ((layer if what == "layer" else sum(s1.values())) / target - 1.0) ** 2
        return total

    lo, hi = 0.0, 10e-6
    ratio = (5 ** 0.5 - 1) / 2
    while hi - lo > 1e-12:
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        lo, hi = (lo, b) if loss(a) <= loss(b) else (a, hi)
    return (lo + hi) / 2


# ----------------------------------------------------------------------------------------------
# Prefill
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrefillBreakdown:
    """The prefill terms of one die and one layer of each kind, in seconds."""

    moe_compute: dict[str, float]
    moe_comm: dict[str, float]
    dense_compute: dict[str, float]
    dense_comm: dict[str, float]
    moe_layer: float
    dense_layer: float
    tokens_per_npu: int

    @property
    def batch_seconds(self) -> float:
        m = DEEPSEEK_R1
        return m.moe_layers * self.moe_layer + m.dense_layers * self.dense_layer

    @property
    def throughput(self) -> float:
        """Return tokens/s per NPU with every expert equally loaded ('perfect EPLB')."""
        return self.tokens_per_npu / self.batch_seconds


def microbatch_layer(compute: float, comm: float) -> float:
    """Return a layer of two microbatches whose compute overlaps the other's communication.

    Two jobs through two stages (compute, then communication) take max + min / 2 of the
    full-batch times: the first microbatch's compute and the last one's communication cannot
    overlap anything. The saving over compute + comm is at most a quarter, reached when the two
    are equal (cm384 §5.4.1 measured 24% at 4K prompts).
    """
    return max(compute, comm) + min(compute, comm) / 2


class PrefillModel:
    """Prefill time of one batch on one die: SP-TP-SP MLA and EP32 MoE (cm384 §4.3)."""

    def __init__(self, hw: Hardware = Hardware(), model: ModelConfig = DEEPSEEK_R1, dep: Deployment = DEPLOYMENT):
        require(model.heads % dep.prefill_dies == 0, ShapeError,
                f"prefill_dies: expected a divisor of {model.heads} heads, got {dep.prefill_dies}")
        self.hw, self.m, self.dep = hw, model, dep

    def attention_seconds(self, prompts: int, heads: int) -> float:
        """Return causal attention without absorption (q/k 192, v 128) for ``heads`` heads of ``prompts`` prompts.

        Tasks are 128 query rows x 512 keys of one head; a row group sees the blocks up to its
        diagonal. The baseline FA kernel's proved steady-state period prices each task.
        """
        m, die, L = self.m, self.hw.die, self.dep.prefill_prompt
        shape = MlaShape(batch=1, s_q=1, s_k=512, heads=128, d_k=m.qk_head, d_v=m.v_head, m_base=128)
        d = durations(task_times(128, "fa_gm", "middle", shape, die, self.hw.kernel))
        per_task = float(period(d, "none")) / die.clock_hz
        tasks = prompts * heads * sum(ceil((r + 1) * 128 / 512) for r in range(ceil(L / 128)))
        return ceil(tasks / die.aic) * per_task

    def layer(self, moe: bool) -> tuple[float, dict, dict]:
        """Return (seconds, compute terms, communication terms) of one layer on one die."""
        hw, m, dep = self.hw, self.m, self.dep
        aic = hw.die.aic
        n = dep.prefill_tokens_per_npu // hw.package.dies
        heads = m.heads // dep.prefill_dies
        others = (dep.prefill_dies - 1) * n  # tokens of the other dies of the instance
        low_rank = m.q_lora + m.kv_lora + m.qk_rope
        up_macs = heads * (m.q_lora * m.qk_head + m.kv_lora * (m.qk_nope + m.v_head))
        compute = {
            "down_proj": gemm_seconds(hw, aic, n, m.hidden * low_rank, m.hidden * low_rank * INT8, INT8),
            "up_proj": gemm_seconds(hw, aic, n + others, up_macs, up_macs * INT8, INT8),
            "attention": self.attention_seconds((n + others) // dep.prefill_prompt, heads),
            "o_proj": gemm_seconds(hw, aic, n, m.o_proj_macs, m.o_proj_macs * INT8, INT8),
        }
        comm = {"all_gather": others * low_rank * BF16, "all_to_all": others * heads * m.v_head * BF16}
        if moe:
            experts_here = ceil((m.routed_experts + 32) / dep.prefill_dies) + 1  # 8 routed + 1 redundant + 1 shared
            compute["experts"] = gemm_seconds(hw, aic, n * (m.active_experts + 1), m.expert_macs,
                                              experts_here * m.expert_macs * INT8, INT8)
            remote = (dep.prefill_dies - 1) / dep.prefill_dies
            comm["dispatch"] = n * m.active_experts * m.dispatch_bytes * remote
            comm["combine"] = n * m.active_experts * m.combine_bytes * remote
        else:
            ffn_macs = 3 * m.hidden * m.dense_inter
            compute["dense_ffn"] = gemm_seconds(hw, aic, n, ffn_macs, ffn_macs * INT8, INT8)
        comm = {k: v / hw.die.collective_bw for k, v in comm.items()}
        return microbatch_layer(sum(compute.values()), sum(comm.values())), compute, comm

    def run(self) -> PrefillBreakdown:
        """Return the perfect-EPLB prefill breakdown; the default is this times ``eplb_throughput_ratio``."""
        moe, mc, mm = self.layer(True)
        dense, dc, dm = self.layer(False)
        return PrefillBreakdown(mc, mm, dc, dm, moe, dense, self.dep.prefill_tokens_per_npu)


# ----------------------------------------------------------------------------------------------
# Published numbers, checks and the command
# ----------------------------------------------------------------------------------------------

SLO_POINTS = ((96, 4096, 256, 1943.0, 49.4), (128, 1024, 1024, 2733.0, 46.8), (112, 2048, 256, 2360.0, 47.4),
              (24, 4096, 256, 974.0, 24.6), (8, 4096, 256, 538.0, 14.9))  # cm384 Table 3 and Table 4 (v3)
SERVING_BAND = 0.10


def serving_rows(hw: Hardware = Hardware()) -> list[Published]:
    """Return every published serving number with the model's prediction of it."""
    decode = DecodeModel(hw)
    rows = []
    for batch, prompt, output, tput, tpot in SLO_POINTS:
        r = decode.run(DecodePoint(batch, kv_length(prompt, output)))
        label = f"decode b{batch}/NPU {prompt}/{output}"
        rows.append(_row(f"{label} throughput", r.throughput, tput, "tok/s/NPU", "prediction", "cm384 Table 3/4"))
        rows.append(_row(f"{label} TPOT", r.tpot * 1e3, tpot, "ms", "prediction", "cm384 Table 3/4"))
    for point, what, target in LAYER_TARGETS:
        s_q = 1 + DEPLOYMENT.mtp_drafts if point.mtp else 1
        layer, _, s1 = decode.moe_layer(point, s_q, point.batch_npu // 2)
        name = f"decode b96 {'MTP' if point.mtp else 'no MTP'} {'per-layer' if what == 'layer' else 'MoE stream'}"
        rows.append(_row(name, (layer if what == "layer" else sum(s1.values())) * 1e6, target * 1e6, "us",
                               "calibration", "cm384 §5.4.2, §4.2.3 (moe_token_s)"))
    with_mb = decode.run(DecodePoint(96, 4096, microbatches=True)).throughput
    without = decode.run(DecodePoint(96, 4096, microbatches=False)).throughput
    rows.append(_row("decode b96 microbatch speed-up", with_mb / without, 1.094, "x", "prediction", "cm384 §5.4.1"))
    prefill = PrefillModel(hw).run()
    rows.append(_row("prefill 4K prompts, perfect EPLB", prefill.throughput, 6688.0, "tok/s/NPU", "prediction",
                           "cm384 Table 2"))
    rows.append(_row("prefill 4K prompts, default", prefill.throughput * hw.serving.eplb_throughput_ratio, 5655.0,
                           "tok/s/NPU", "prediction", "cm384 Table 2 (eplb_throughput_ratio from SGLang's pair)"))
    return rows


def _row(name: str, predicted: float, published: float, unit: str, kind: str, source: str) -> Published:
    return Published(name, predicted, published, unit, kind, source, SERVING_BAND)


def _row_outcome(prefix: str) -> Outcome:
    return next(r for r in serving_rows() if r.name.startswith(prefix)).outcome()


@check("serving_decode_b96_throughput", "model")
def check_decode_b96() -> Outcome:
    return _row_outcome("decode b96/NPU 4096/256 throughput")


@check("serving_decode_b96_tpot", "model")
def check_decode_b96_tpot() -> Outcome:
    return _row_outcome("decode b96/NPU 4096/256 TPOT")


@check("serving_slo_b128_throughput", "model")
def check_slo_b128() -> Outcome:
    return _row_outcome("decode b128/NPU 1024/1024 throughput")


@check("serving_slo_b24_throughput", "model")
def check_slo_b24() -> Outcome:
    return _row_outcome("decode b24/NPU 4096/256 throughput")


@check("serving_slo_b8_throughput", "model")
def check_slo_b8() -> Outcome:
    return _row_outcome("decode b8/NPU 4096/256 throughput")


@check("serving_layer_no_mtp", "model")
def check_layer_no_mtp() -> Outcome:
    return _row_outcome("decode b96 no MTP per-layer")


@check("serving_layer_mtp", "model")
def check_layer_mtp() -> Outcome:
    return _row_outcome("decode b96 MTP per-layer")


@check("serving_prefill_perfect_eplb", "model")
def check_prefill_perfect() -> Outcome:
    return _row_outcome("prefill 4K prompts, perfect EPLB")


@check("serving_prefill_default", "model")
def check_prefill_default() -> Outcome:
    return _row_outcome("prefill 4K prompts, default")


@check("serving_identity_throughput_is_batch_over_tpot", "model")
def check_identity() -> Outcome:
    """Every decode point satisfies throughput x TPOT = batch per NPU (cm384 §8.1), to 1e-12 relative."""
    decode = DecodeModel()
    worst = 0.0
    for batch, prompt, output, _, _ in SLO_POINTS:
        r = decode.run(DecodePoint(batch, kv_length(prompt, output)))
        worst = max(worst, abs(r.throughput * r.tpot / batch - 1.0))
    return Outcome.from_bool(worst <= 1e-12, f"max |throughput x TPOT / batch - 1| = {worst:.2e} (tolerance 1e-12)")


@check("serving_calibration_moe_token_reproduces", "model")
def check_token_calibration() -> Outcome:
    solved = fit_moe_token_cost()
    stored = SERVING_CALIBRATION.moe_token_s
    ok = abs(stored - solved) <= 0.01e-6
    return Outcome.from_bool(ok, f"stored {stored * 1e6:.3f} us, re-fitted {solved * 1e6:.4f} us (tolerance 0.01 us)",
                             {"stored": stored, "solved": solved})


@check("serving_calibration_dispatch_combine_t0", "model")
def check_t0_calibration() -> Outcome:
    """The t0 constants reproduce cm384 Table 6 at EP256 with the cited 135 GB/s, to 0.5 us."""
    m, sv, bw = DEEPSEEK_R1, SERVING_CALIBRATION, ASCEND_910C.die.ub_write_bw
    dispatch = sv.dispatch_t0_s + 128 * 8 * m.dispatch_bytes / bw
    combine = sv.combine_t0_s + 128 * 8 * m.combine_bytes / bw
    ok = abs(dispatch - 152e-6) <= 0.5e-6 and abs(combine - 149e-6) <= 0.5e-6
    return Outcome.from_bool(ok, f"dispatch {dispatch * 1e6:.1f} us (published 152), combine {combine * 1e6:.1f} us "
                             "(published 149)")


def sweep(hw: Hardware = Hardware(), batches: tuple[int, ...] = tuple(range(8, 161, 8)), prompt: int = 4096,
          output: int = 256) -> list[dict]:
    """Return throughput and TPOT of decode over ``batches`` (per NPU), with and without MTP."""
    decode = DecodeModel(hw)
    out = []
    for mtp in (True, False):
        for b in batches:
            r = decode.run(DecodePoint(b, kv_length(prompt, output), mtp=mtp))
            out.append({"batch": b, "mtp": mtp, "tpot_ms": r.tpot * 1e3, "throughput": r.throughput,
                        "microbatches": r.point.microbatches})
    return out


def plot_sweep(path: str, hw: Hardware = Hardware()) -> None:
    """Write throughput per NPU against TPOT (4K prompts, 256 output) with the published points to ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = sweep(hw)
    for mtp, style in ((True, "-o"), (False, "--s")):
        sel = [p for p in points if p["mtp"] == mtp]
        ax.plot([p["tpot_ms"] for p in sel], [p["throughput"] for p in sel], style, markersize=3,
                label=f"model, {'MTP (1 draft, 70%)' if mtp else 'no MTP'}")
    for batch, prompt, output, tput, tpot in SLO_POINTS:
        ax.plot([tpot], [tput], "k*", markersize=9)
        ax.annotate(f"b{batch} {prompt}/{output}", (tpot, tput), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.plot([], [], "k*", label="published (cm384 Tables 3-4)")
    ax.set_xlabel("TPOT (ms)")
    ax.set_ylabel("decode throughput (tokens/s per NPU)")
    ax.set_title("DeepSeek-R1 decode on CloudMatrix384 (model sweep: batch 8..160 per NPU, 4K/256)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)
    plt.close(fig)


def _terms(d: dict) -> dict:
    return {k: round(v * 1e6, 1) for k, v in d.items()}


@tool("model", "serving", "DeepSeek-R1 decode and prefill on CloudMatrix384: predicted vs published")
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="attnspec model serving", description=__doc__.splitlines()[0])
    p.add_argument("--attention", choices=("fa_gm", "amla"), default="fa_gm",
                   help="MLA kernel of the attention stream (default fa_gm, the kernel cm384 measured)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plot", metavar="FILE", default=None, help="write throughput vs TPOT as PNG (needs matplotlib)")
    args = p.parse_args(argv)
    hw = Hardware(attention=args.attention)
    rows = serving_rows(hw)
    decode = DecodeModel(hw).run(DecodePoint(96, 4096))
    prefill = PrefillModel(hw).run()
    data = {"rows": [{**vars(r), "ratio": r.ratio, "ok": r.ok} for r in rows],
            "decode_b96_us": {"stream0": _terms(decode.stream0), "stream1": _terms(decode.stream1),
                              "moe_layer": decode.moe_layer * 1e6, "dense_layer": decode.dense_layer * 1e6,
                              "mtp_module": decode.mtp_module * 1e6, "lm_heads": decode.lm_heads * 1e6,
                              "step": decode.step * 1e6, "microbatches": decode.point.microbatches},
            "prefill_us": {"moe_compute": _terms(prefill.moe_compute), "moe_comm": _terms(prefill.moe_comm),
                           "moe_layer": prefill.moe_layer * 1e6, "dense_layer": prefill.dense_layer * 1e6},
            "calibrated": [r for r in provenance(hw.serving) + provenance(hw.kernel) if r["basis"] == "calibrated"]}
    if args.plot:
        plot_sweep(args.plot, hw)
    if args.json:
        print(json.dumps(data, indent=1, default=str))
        return 0 if all(r.ok for r in rows) else 1
    print("DeepSeek-R1 on CloudMatrix384 (arXiv:2506.12708): published numbers and the model's predictions\n")
    print(format_table(rows))
    b = data["decode_b96_us"]
    print(f"\nDecode, batch 96/NPU, 4K KV, MTP, per microbatch (us): stream 0 {b['stream0']}\n"
          f"  stream 1 {b['stream1']}\n  MoE layer {b['moe_layer']:.0f}, dense layer {b['dense_layer']:.0f}, "
          f"MTP module {b['mtp_module']:.0f}, LM heads {b['lm_heads']:.0f}, step {b['step']:.0f}")
    q = data["prefill_us"]
    print(f"\nPrefill, 16K tokens/NPU, 4K prompts, one MoE layer (us): compute {q['moe_compute']}\n"
          f"  communication {q['moe_comm']}\n  MoE layer {q['moe_layer']:.0f}, dense layer {q['dense_layer']:.0f}")
    print("\nCalibrated constants")
    for c in data["calibrated"]:
        print(f"  {c['name']} = {c['value']:.4g} {c['unit']}\n    fitted to: {c['source']}")
    if args.plot:
        print(f"\nThroughput vs TPOT written to {args.plot}")
    return 0 if all(r.ok for r in rows) else 1
