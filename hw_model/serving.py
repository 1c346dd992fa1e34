"""An analytical model of DeepSeek-R1 serving on CloudMatrix384: decode and prefill per NPU.

Normative source: Zuo et al., "Serving Large Language Models on Huawei CloudMatrix384",
arXiv:2506.12708 (cm384; v3 for results, v2 Table 1 for the UB measurements): §4.2 decode
(EP320, FusedDispatch/FusedCombine, two-stream microbatches, MTP), §4.3 prefill (EP32, SP-TP-SP
MLA, microbatches), §5.2-§5.5 results. Model dimensions from deepseek-ai/DeepSeek-V3
``inference/configs/config_671B.json`` (dsv3); message sizes from
:class:`attnspec.reference.ep_dispatch.MessageFormat`. Hardware comes from
:mod:`attnspec.hw_model.machines`; the attention operator is the MLA kernel model of
:mod:`attnspec.hw_model.stages` and :mod:`attnspec.hw_model.schedule`, run on its stream's cores.

Decode, per die (DP320: a die serves B_npu / 2 sequences, t tokens with MTP), per MoE layer:

- stream 0, MLAProlog (INT8 W_dq, W_uq_qr, W_dkv_kr; BF16 W_UK), FusedAttention (the MLA kernel
  model, baseline FA variant) and O_proj (BF16 W_UV, INT8 W_o), cm384 §4.2.2;
- stream 1, the gate, FusedDispatch, the expert MLP on the busiest expert rank and FusedCombine
  (cm384 §4.2.1);
- a GEMM costs max(MACs / (AIC x MAC/cycle x clock x mmad_efficiency), weight bytes / (AIC x
  32 B/cycle x clock)) on its stream's cores, rows padded to the Cube's 16-row fractal.

FusedDispatch and FusedCombine (cm384 §4.2.1) are priced as t0 + ceil(N / 16) x (lambda +
message / r): each of 16 AIV cores (the MoE stream's, §4.2.3) sends its messages one after
another, a message costing one UB write latency lambda = 2.1 us (cm384 v2 Table 1, inter-node
NPU-NPU write) plus its serialisation at the AIV's UB->GM rate r = 64 B/cycle (platform-ini);
t0 = 3 lambda is the barrier on the last data write, the flag-and-count write, and the peer's
poll seeing it. The implied per-die bandwidth 16 x message / (lambda + message / r) is
56.7 GB/s for the 7,680 B dispatch message and 103.1 GB/s for the 14,336 B combine message;
cm384 Table 6 measured 54-58 and 103 GB/s at EP64-EP256, and latencies within 10% at EP32-EP256
(:data:`TABLE6`, :func:`table6_rows`). The operators are latency-bound, not link-bound (135 GB/s
measured per die): that is why dispatch and combine take the same time although combine moves
1.9x the bytes. Dispatch sends t x 9 messages (8 routed experts and one shared-expert rank);
combine waits for the busiest expert rank's messages.

A layer with microbatches takes 2 max(stream 0, stream 1) on a split of the die's 24 AIC (AIV
in proportion, 2 per AIC), chosen per point to balance the streams (cm384 §4.2.3: "the
allocation of compute resources to the two streams can be adjusted adaptively"); without
microbatches the die runs stream 0 then stream 1 on all its cores. A step runs 58 MoE layers,
3 dense layers (whole die), the MTP module (one MoE layer on one token per sequence, eh_proj,
the shared LM head; cm384 §4.2.4), the main LM head and a per-step overhead;
TPOT = step / (1 + k a) with k = 1 draft accepted at a = 0.7; throughput = batch / TPOT.

Prefill, per die, per layer (cm384 §4.3): SP down-projections on its own tokens, All-Gather of
the low-rank activations, TP over 4 of the 128 heads for all tokens of the 32-die instance
(up-projections, causal attention without absorption, priced by the stage model with q/k 192
and v 128), All-to-All back, SP o_proj, EP32 MoE over SDMA. Collectives run at the achieved
all-to-all bandwidth of cm384 Table 6 (103 GB/s); compute and communication of two
microbatches overlap as a two-stage flow shop (:func:`microbatch_layer`).

Decision (2026-11-28): CloudMatrix's FusedAttention (June 2025) is modelled as the baseline FA
kernel, the one whose 65.4% calibrated ``gm_latency_cycles``; ``--attention amla`` shows the
AMLA what-if.

Decision (2026-11-28): the decode KV length of a point is prompt + output / 2 (the mean over the
output); the attention kernel, which works in 512-token blocks, is priced pro rata between the
two neighbouring multiples of 512 (positions are spread uniformly over the output).

Decision (2026-11-29): FusedDispatch and FusedCombine are launched on 16 AIV cores in both
modes (the MoE stream's allotment in Fig. 14); when an adapted split leaves the MoE stream
fewer, they send with those. cm384 Table 6 is read as measured with the same 16: then the
per-message time it implies at EP256 (2.2 us) is one UB write latency plus the message's
serialisation, whereas 48 senders would need three write latencies per message, for which
§4.2.1's algorithm gives no reason. EP320 spans 20 nodes (95% of peers remote), so every
message pays the inter-node latency.

Decision (2026-11-29): microbatches. The deployed pipeline microbatches (cm384 §4.2.3, Fig. 14);
a point of Table 4 keeps it unless it misses the point's TPOT SLO with it, in which case the
faster of the two modes runs. Evidence from the published numbers: the steps (1.7 x TPOT) of
b24 and b96 at 4K, 41.8 and 84.0 ms, put b8 at 32.4 ms on their line; it measured 25.3 ms, about
115 us per layer faster, which a single stream reaches and a microbatched layer cannot (each
microbatch streams the layer's weights again, on part of the die). The rule "always the faster
mode" runs b24 on a single stream and predicts it 16% too fast (``attnspec model serving``
prints both modes of every point).

Decision (2026-11-29): the expert load. Every origin waits in FusedCombine for the busiest
expert rank; it serves max(the shared-expert rank's 320 t / 32 = 10 t tokens, peak x the
routed ranks' mean 320 x 8 t / 288 = 8.9 t). ``expert_peak_load`` (calibrated) lumps per-step
load imbalance left by EPLB and per-token MoE work the component models do not price.

Known deviations (catalogue):

- Table 6 at EP8 and EP16 (one node) is over-predicted by 25% and 11%: the model prices every
  message at the inter-node latency; the measured single-node operators are faster, but not as
  fast as Table 1's 1.3 us intra-node latency would make them, and cm384 §5.5.1 itself calls the
  growth with EP a scalability bottleneck of the implementation.
- Per-core work inside the fused operators (token counts, core syncs, the receive-side gather,
  the origin's weighted sum) is not priced; nor are launch bubbles (removed by §4.2.4's
  pipelined MTP) or the MTP causal mask.
- The dense layers run on the whole die without microbatches; LM-head and eh_proj weights are
  BF16 (cm384 §4.5 keeps sensitive parts out of INT8; not stated for them); embedding lookups
  are free; sampling and host work are the calibrated per-step overhead, taken as fixed.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from math import ceil

from attnspec.hw_model._plot import pyplot, save_png
from attnspec.hw_model._published import Published, format_table
from attnspec.hw_model.machines import (ASCEND_910C, CALIBRATION, AscendDie, AscendPackage, Calibration, calibrated,
                                        cited, provenance)
from attnspec.hw_model.predictions import durations
from attnspec.hw_model.schedule import run_kernel
from attnspec.hw_model.stages import Kernel, MlaShape, task_times
from attnspec.proofs.preload_pipeline import period
from attnspec.reference.ep_dispatch import MessageFormat
from attnspec.registry import Outcome, check, tool
from attnspec.spec.errors import ShapeError, require

INT8 = 1
BF16 = 2
KV_BLOCK = 512  # cann-fia: s2 base of the MLA kernel


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
        return (self.hidden * self.q_lora + self.q_lora * self.heads * self.qk_head
                + self.hidden * (self.kv_lora + self.qk_rope))

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
    def eh_proj_macs(self) -> int:
        """Return MACs per token of the MTP module's eh_proj: [h; e] (2 x hidden) -> hidden (dsv3 MTP)."""
        return 2 * self.hidden * self.hidden

    @property
    def dense_ffn_macs(self) -> int:
        return 3 * self.hidden * self.dense_inter

    @property
    def messages(self) -> MessageFormat:
        """Return the dispatch (INT8 + 512-B scale region, 7,680 B) and combine (BF16, 14,336 B) messages."""
        return MessageFormat(hidden=self.hidden)


@dataclass(frozen=True)
class Deployment:
    """The CloudMatrix-Infer deployment (cm384 §4.1, §5.1) and its per-die core split."""

    decode_dies: int = cited(320, "cm384 §5.1: 160 NPUs for decode, EP320 / DP320")
    shared_ranks: int = cited(32, "cm384 §4.1: 32 shared-expert replicas, one expert per die")
    routed_ranks: int = cited(288, "cm384 §4.1: 256 routed + 32 redundant routed experts")
    stream0_aic: int = cited(16, "cm384 §4.2.3: attention stream, 16 AIC + 32 AIV (batch 96, 4K, MTP)")
    comm_aiv: int = cited(16, "cm384 §4.2.3 Fig. 14: the MoE stream (Gate, Dispatch, MLP, Combine) has 16 AIV")
    comm_round_trips: int = cited(3, "cm384 §4.2.1 FusedDispatch: barrier on the data writes, flag and count "
                                  "write, the peer's poll", basis="derived", note="each one UB write latency")
    mtp_drafts: int = cited(1, "cm384 §5.2: MTP with 1 draft token")
    mtp_acceptance: float = cited(0.7, "cm384 §5.2: 70% acceptance")
    prefill_dies: int = cited(32, "cm384 §4.1: prefill instances of 16 NPUs = 32 dies, EP32")
    prefill_tokens_per_npu: int = cited(16384, "cm384 §5.2 Table 2: 16K tokens per NPU per batch")
    prefill_prompt: int = cited(4096, "cm384 §5.2 Table 2: 4K-token prompts")

    @property
    def tokens_per_step(self) -> float:
        """Return tokens emitted per sequence per MTP step: 1 + k a (cm384 §5.4.2: 1.7)."""
        return 1 + self.mtp_drafts * self.mtp_acceptance


@dataclass(frozen=True)
class ServingCalibration:
    """The serving model's calibrated constants; :func:`calibrate` re-derives the decode ones."""

    expert_peak_load: float = calibrated(
        2.194, unit="busiest routed-expert rank / mean routed load",
        against="cm384 §5.4.2 per-layer decode latency 874 us (no MTP) and 1,260 us (MTP), and §4.2.3 '~600 us' "
                "for the MoE stream (MTP, 16/8 split), all at batch 96 per NPU, 4K KV; least squares in relative error",
        shared_by="every decode point: the expert MLP and FusedCombine of the busiest rank, which every origin "
                  "waits for; stands for EPLB's residual per-step imbalance and unpriced per-token MoE work",
        how="see fit_expert_peak_load")
    step_overhead_s: float = calibrated(
        4.498e-3, unit="s per decode step",
        against="cm384 Table 3 TPOT 49.4 ms at batch 96 (x 1.7 = 84.0 ms per step) minus its published layers: "
                "58 x 1,260 us (§5.4.2) and the MTP module's layer at 874 us (one token per sequence, as the "
                "no-MTP layer), less the model's dense layers, eh_proj and LM heads",
        shared_by="every decode point: sampling, host work and whatever else a step costs outside its layers, "
                  "taken as independent of the batch",
        how="see fit_step_overhead")
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
    """Return a GEMM's time on ``aic`` Cube cores: the slower of its MACs and its weight stream.

    Rows are padded to the Cube's 16-row fractal (platform-ini cube_m_size=16): a decode GEMM of
    8 tokens costs the MACs of 16.
    """
    die = hw.die
    mac_per_cycle = die.cube_mac_int8 if dtype_bytes == INT8 else die.cube_mac_bf16
    rows = ceil(tokens / 16) * 16
    compute = rows * macs_per_token / (aic * mac_per_cycle * die.clock_hz * hw.kernel.mmad_efficiency)
    stream = weight_bytes / (aic * die.hbm_rate * die.clock_hz)
    return max(compute, stream)


@lru_cache(maxsize=4096)
def _kernel_seconds(die: AscendDie, cal: Calibration, kernel: Kernel, sequences: int, s_q: int, s_k: int) -> float:
    return run_kernel(MlaShape(batch=sequences, s_q=s_q, s_k=s_k), kernel, die=die, cal=cal).seconds


def attention_seconds(hw: Hardware, aic: int, sequences: int, s_q: int, kv: int) -> float:
    """Return the MLA kernel's time for ``sequences`` sequences of mean KV length ``kv`` on ``aic`` AIC.

    The kernel model needs a multiple of the 512-token block; a mean in between is priced pro
    rata between the two neighbouring multiples (at least one block).
    """
    if sequences == 0:
        return 0.0
    die = replace(hw.die, aic=aic)
    low = max(KV_BLOCK, kv // KV_BLOCK * KV_BLOCK)
    frac = max(0.0, (kv - low) / KV_BLOCK)
    at_low = _kernel_seconds(die, hw.kernel, hw.attention, sequences, s_q, low)
    if frac == 0.0:
        return at_low
    return (1 - frac) * at_low + frac * _kernel_seconds(die, hw.kernel, hw.attention, sequences, s_q, low + KV_BLOCK)


def kv_length(prompt: int, output: int) -> int:
    """Return the mean KV length of decoding, prompt + output / 2 (rounded down)."""
    require(prompt >= 1 and output >= 1, ShapeError, f"prompt, output: expected >= 1, got {prompt}, {output}")
    return prompt + output // 2


# ----------------------------------------------------------------------------------------------
# FusedDispatch / FusedCombine over the UB plane (cm384 §4.2.1, v2 Table 1, Table 6)
# ----------------------------------------------------------------------------------------------

def message_seconds(hw: Hardware, message_bytes: int) -> float:
    """Return one AIV's time per AIV-Direct message: a UB write latency plus the message's serialisation."""
    die = hw.die
    return die.ub_write_latency_s + message_bytes / (die.ub_to_gm_rate * die.clock_hz)


def fused_comm_seconds(hw: Hardware, messages: float, message_bytes: int, dep: Deployment = DEPLOYMENT,
                       aiv: int | None = None) -> float:
    """Return a FusedDispatch or FusedCombine that sends ``messages`` messages from one die.

    t0 = round trips x write latency, then min(``aiv``, ``comm_aiv``) AIV cores send one message
    each per message time (cm384 §4.2.1 step 1: each dispatch AIV loops over its tokens);
    ``aiv`` is the AIV count of the stream the operator runs in (None: not limited by it).
    """
    t0 = dep.comm_round_trips * hw.die.ub_write_latency_s
    senders = dep.comm_aiv if aiv is None else min(aiv, dep.comm_aiv)
    return t0 + ceil(messages / senders) * message_seconds(hw, message_bytes)


def effective_bandwidth(hw: Hardware, message_bytes: int, dep: Deployment = DEPLOYMENT) -> float:
    """Return the per-die bandwidth the operator sustains: comm_aiv messages in flight per message time."""
    return dep.comm_aiv * message_bytes / message_seconds(hw, message_bytes)


# cm384 Table 6 (v3), CANN EP on CM384, 128 tokens per rank, top-8: (EP, latency us, bandwidth GB/s)
TABLE6 = {"dispatch": ((8, 116, 71), (16, 131, 63), (32, 133, 62), (64, 141, 58), (128, 152, 54), (256, 152, 54)),
          "combine": ((8, 118, 131), (16, 132, 117), (32, 146, 105), (64, 150, 103), (128, 150, 103), (256, 149, 103))}
TABLE6_TOKENS = 128
NODE_DIES = 16  # cm384 §3.3.2: 8 NPUs x 2 dies per node


def table6_rows(hw: Hardware = Hardware(), model: ModelConfig = DEEPSEEK_R1) -> list[Published]:
    """Return cm384 Table 6 next to the operator model: latency at every EP, bandwidth at EP256."""
    rows = []
    for op, table in TABLE6.items():
        msg = model.messages.dispatch_bytes if op == "dispatch" else model.messages.combine_bytes
        predicted = fused_comm_seconds(hw, TABLE6_TOKENS * model.active_experts, msg) * 1e6
        for ep, latency, _ in table:
            scope = "one node" if ep <= NODE_DIES else "multi-node"
            rows.append(_row(f"{op} EP{ep} latency ({scope})", predicted, latency, "us", "prediction", "cm384 Table 6"))
        rows.append(_row(f"{op} EP256 bandwidth per rank", effective_bandwidth(hw, msg) / 1e9, table[-1][2], "GB/s",
                         "prediction", "cm384 Table 6"))
    return rows


# ----------------------------------------------------------------------------------------------
# Decode
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodePoint:
    """One decode operating point: batch per NPU, mean KV length, MTP, microbatch mode, TPOT SLO."""

    batch_npu: int
    kv: int
    mtp: bool = True
    microbatches: bool | None = None  # None: the deployed pipeline, unless it misses ``slo_ms`` (module docstring)
    slo_ms: float | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.batch_npu, int) and self.batch_npu >= 2 and self.batch_npu % 2 == 0, ShapeError,
                f"batch_npu: expected an even batch >= 2 (two dies), got {self.batch_npu!r}")
        require(isinstance(self.kv, int) and self.kv >= 1, ShapeError, f"kv: expected a positive int, got {self.kv!r}")
        require(self.slo_ms is None or self.slo_ms > 0, ShapeError,
                f"slo_ms: expected > 0 or None, got {self.slo_ms!r}")


@dataclass(frozen=True)
class Layer:
    """One MoE layer: its time, the stream terms of one microbatch (or of the whole batch), the AIC split."""

    seconds: float
    stream0: dict[str, float]
    stream1: dict[str, float]
    split: tuple[int, int]


@dataclass(frozen=True)
class DecodeBreakdown:
    """The decode terms of one point, in seconds; ``point.microbatches`` is the mode that ran."""

    point: DecodePoint
    moe_layer: Layer
    dense_layer: float
    mtp_module: float
    lm_head: float
    overhead: float

    @property
    def step(self) -> float:
        m = DEEPSEEK_R1
        return (m.moe_layers * self.moe_layer.seconds + m.dense_layers * self.dense_layer + self.mtp_module
                + self.lm_head + self.overhead)

    @property
    def tokens_per_step(self) -> float:
        """Return tokens emitted per sequence per step: 1 + k a with MTP (cm384 §5.4.2), else 1."""
        return DEPLOYMENT.tokens_per_step if self.point.mtp else 1.0

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

    def busiest_rank_tokens(self, tokens: float) -> float:
        """Return the tokens the busiest expert rank serves when every die sends ``tokens`` (module docstring)."""
        m, dep = self.m, self.dep
        shared = tokens * dep.decode_dies / dep.shared_ranks
        routed = tokens * dep.decode_dies * m.active_experts / dep.routed_ranks
        return max(shared, self.hw.serving.expert_peak_load * routed)

    def attention_stream(self, sequences: int, s_q: int, kv: int, aic0: int) -> dict[str, float]:
        """Return the stream-0 terms (MLAProlog, FusedAttention, O_proj) for ``sequences`` sequences on ``aic0`` AIC."""
        hw, m = self.hw, self.m
        tokens = sequences * s_q
        return {
            "mla_prolog": gemm_seconds(hw, aic0, tokens, m.prolog_int8_macs, m.prolog_int8_macs * INT8, INT8)
            + gemm_seconds(hw, aic0, tokens, m.absorb_macs, m.absorb_macs * BF16, BF16),
            "attention": attention_seconds(hw, aic0, sequences, s_q, kv),
            "o_proj": gemm_seconds(hw, aic0, tokens, m.absorb_macs, m.absorb_macs * BF16, BF16)
            + gemm_seconds(hw, aic0, tokens, m.o_proj_macs, m.o_proj_macs * INT8, INT8),
        }

    def moe_stream(self, tokens: int, aic1: int) -> dict[str, float]:
        """Return the stream-1 terms (gate, FusedDispatch, expert MLP, FusedCombine) for ``tokens`` tokens per die."""
        hw, m = self.hw, self.m
        busiest = self.busiest_rank_tokens(tokens)
        destinations = m.active_experts + 1  # the routed experts and one shared-expert rank (cm384 §4.2.1, MDD)
        gate_macs = m.hidden * m.routed_experts
        return {
            "gate": gemm_seconds(hw, aic1, tokens, gate_macs, gate_macs * BF16, BF16),
            "dispatch": fused_comm_seconds(hw, tokens * destinations, m.messages.dispatch_bytes, self.dep, 2 * aic1),
            "expert_mlp": gemm_seconds(hw, aic1, busiest, m.expert_macs, m.expert_macs * INT8, INT8),
            "combine": fused_comm_seconds(hw, busiest, m.messages.combine_bytes, self.dep, 2 * aic1),
        }

    def moe_layer(self, sequences: int, s_q: int, kv: int, microbatches: bool, split: int | None = None) -> Layer:
        """Return one MoE layer; with microbatches, at AIC split ``split`` (stream 0) or the best split.

        The best split is found exactly but without simulating attention where it cannot win:
        splits are visited in increasing stream-1 time, and once 2 x stream 1 alone reaches the
        best layer so far, no later split can beat it.
        """
        aic = self.hw.die.aic
        if not microbatches:
            s0, s1 = self.attention_stream(sequences, s_q, kv, aic), self.moe_stream(sequences * s_q, aic)
            return Layer(sum(s0.values()) + sum(s1.values()), s0, s1, (aic, aic))
        half = ceil(sequences / 2)
        moe = {aic0: self.moe_stream(half * s_q, aic - aic0)
               for aic0 in ([split] if split is not None else range(1, aic))}
        best = None
        for aic0 in sorted(moe, key=lambda a: (sum(moe[a].values()), a)):
            s1 = moe[aic0]
            if best is not None and 2 * sum(s1.values()) >= best.seconds:
                break
            s0 = self.attention_stream(half, s_q, kv, aic0)
            layer = Layer(2 * max(sum(s0.values()), sum(s1.values())), s0, s1, (aic0, aic - aic0))
            if best is None or layer.seconds < best.seconds:
                best = layer
        return best

    def dense_layer(self, sequences: int, s_q: int, kv: int) -> float:
        """Return one dense layer: the attention path and the dense FFN on the whole die, one after the other."""
        hw, m = self.hw, self.m
        s0 = self.attention_stream(sequences, s_q, kv, hw.die.aic)
        ffn = gemm_seconds(hw, hw.die.aic, sequences * s_q, m.dense_ffn_macs, m.dense_ffn_macs * INT8, INT8)
        return sum(s0.values()) + ffn

    def lm_head(self, tokens: int) -> float:
        return gemm_seconds(self.hw, self.hw.die.aic, tokens, self.m.head_macs, self.m.head_macs * BF16, BF16)

    def mtp_glue(self, sequences: int) -> float:
        """Return the MTP module's parts outside its layer: eh_proj and the shared LM head, one token per sequence."""
        hw, m = self.hw, self.m
        eh_proj = gemm_seconds(hw, hw.die.aic, sequences, m.eh_proj_macs, m.eh_proj_macs * BF16, BF16)
        return eh_proj + self.lm_head(sequences)

    def with_calibration(self, serving: ServingCalibration) -> DecodeModel:
        """Return a copy of this model (same class) with another serving calibration."""
        clone = copy.copy(self)
        clone.hw = replace(self.hw, serving=serving)
        return clone

    def run(self, point: DecodePoint) -> DecodeBreakdown:
        """Return the decode breakdown of ``point``; an unset mode follows the microbatch rule (module docstring)."""
        if point.microbatches is None:
            pipelined = self.run(replace(point, microbatches=True))
            if point.slo_ms is None or pipelined.tpot * 1e3 <= point.slo_ms:
                return pipelined
            single = self.run(replace(point, microbatches=False))
            return min((pipelined, single), key=lambda r: r.tpot)
        n = point.batch_npu // 2
        s_q = 1 + self.dep.mtp_drafts if point.mtp else 1
        layer = self.moe_layer(n, s_q, point.kv, point.microbatches)
        mtp = 0.0
        if point.mtp:  # the MTP module: one MoE layer on one token per sequence, eh_proj, the shared head
            mtp = self.moe_layer(n, 1, point.kv, point.microbatches).seconds + self.mtp_glue(n)
        return DecodeBreakdown(point, layer, self.dense_layer(n, s_q, point.kv), mtp, self.lm_head(n * s_q),
                               self.hw.serving.step_overhead_s)


# ----------------------------------------------------------------------------------------------
# Decode calibration: cm384's batch-96 measurements
# ----------------------------------------------------------------------------------------------

B96 = 96
B96_KV = kv_length(4096, 256)  # cm384 §5.4.1-§5.4.2: 4K inputs, Table 4's 256-token outputs
LAYER_MTP_S = 1260e-6  # cm384 §5.4.2
LAYER_NO_MTP_S = 874e-6  # cm384 §5.4.2
MOE_STREAM_S = 600e-6  # cm384 §4.2.3 Fig. 14, 16 AIC + 32 AIV / 8 AIC + 16 AIV
B96_STEP_S = 49.4e-3 * DEPLOYMENT.tokens_per_step  # cm384 Table 3


def b96_layer_targets(dm: DecodeModel) -> list[tuple[str, float, float]]:
    """Return (name, model seconds, published seconds) of the three batch-96 layer measurements."""
    n = B96 // 2
    stream1 = sum(dm.moe_layer(n, 2, B96_KV, True, split=dm.dep.stream0_aic).stream1.values())
    return [("decode b96 MTP per-layer", dm.moe_layer(n, 2, B96_KV, True).seconds, LAYER_MTP_S),
            ("decode b96 no MTP per-layer", dm.moe_layer(n, 1, B96_KV, True).seconds, LAYER_NO_MTP_S),
            ("decode b96 MTP MoE stream (16/8 split)", stream1, MOE_STREAM_S)]


def fit_expert_peak_load(dm: DecodeModel) -> float:
    """Return the expert peak load minimising the squared relative error over :func:`b96_layer_targets`.

    Each target is piecewise smooth in the load; golden-section search on [1, 4] to 1e-6.
    """
    def loss(peak: float) -> float:
        trial = dm.with_calibration(replace(dm.hw.serving, expert_peak_load=peak))
        return sum((got / want - 1.0) ** 2 for _, got, want in b96_layer_targets(trial))

    lo, hi = 1.0, 4.0
    ratio = (5 ** 0.5 - 1) / 2
    while hi - lo > 1e-6:
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        lo, hi = (lo, b) if loss(a) <= loss(b) else (a, hi)
    return (lo + hi) / 2


def fit_step_overhead(dm: DecodeModel) -> float:
    """Return the per-step overhead: the published batch-96 step less its published layers and the priced rest.

    The published layers are the 58 MoE layers at 1,260 us and the MTP module's layer, which
    runs one token per sequence like the no-MTP layer, at 874 us; the priced rest is the three
    dense layers, the MTP module's eh_proj and LM head, and the main LM head.
    """
    m, n = dm.m, B96 // 2
    priced = m.dense_layers * dm.dense_layer(n, 2, B96_KV) + dm.mtp_glue(n) + dm.lm_head(2 * n)
    return B96_STEP_S - m.moe_layers * LAYER_MTP_S - LAYER_NO_MTP_S - priced


def calibrate(dm: DecodeModel | None = None) -> ServingCalibration:
    """Return the serving calibration re-derived from the published measurements (the stored one should match)."""
    if dm is None:
        dm = DecodeModel()
    return replace(dm.hw.serving, expert_peak_load=fit_expert_peak_load(dm), step_overhead_s=fit_step_overhead(dm))


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
        shape = MlaShape(batch=1, s_q=1, s_k=KV_BLOCK, heads=128, d_k=m.qk_head, d_v=m.v_head, m_base=128)
        d = durations(task_times(128, "fa_gm", "middle", shape, die, self.hw.kernel))
        per_task = float(period(d, "none")) / die.clock_hz
        tasks = prompts * heads * sum(ceil((r + 1) * 128 / KV_BLOCK) for r in range(ceil(L / 128)))
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
            comm["dispatch"] = n * m.active_experts * m.messages.dispatch_bytes * remote
            comm["combine"] = n * m.active_experts * m.messages.combine_bytes * remote
        else:
            compute["dense_ffn"] = gemm_seconds(hw, aic, n, m.dense_ffn_macs, m.dense_ffn_macs * INT8, INT8)
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

# cm384 Table 3 and Table 4 (v3): (batch/NPU, prompt, output, TPOT SLO ms, tok/s/NPU, TPOT ms)
SLO_POINTS = ((96, 4096, 256, 50.0, 1943.0, 49.4), (128, 1024, 1024, 50.0, 2733.0, 46.8),
              (112, 2048, 256, 50.0, 2360.0, 47.4), (24, 4096, 256, 30.0, 974.0, 24.6),
              (8, 4096, 256, 15.0, 538.0, 14.9))
SERVING_BAND = 0.10


def slo_point(batch: int, prompt: int, output: int, slo_ms: float, microbatches: bool | None = None) -> DecodePoint:
    return DecodePoint(batch, kv_length(prompt, output), slo_ms=slo_ms, microbatches=microbatches)


def decode_rows(decode: DecodeModel) -> list[Published]:
    """Return the published decode numbers (Tables 3-4, §5.4) with ``decode``'s predictions of them."""
    rows = []
    for batch, prompt, output, slo, tput, tpot in SLO_POINTS:
        r = decode.run(slo_point(batch, prompt, output, slo))
        label = f"decode b{batch}/NPU {prompt}/{output}"
        kind = "calibration" if batch == B96 else "prediction"  # step_overhead_s uses the b96 step
        rows.append(_row(f"{label} throughput", r.throughput, tput, "tok/s/NPU", kind, "cm384 Table 3/4"))
        rows.append(_row(f"{label} TPOT", r.tpot * 1e3, tpot, "ms", kind, "cm384 Table 3/4"))
    for name, got, want in b96_layer_targets(decode):
        rows.append(_row(name, got * 1e6, want * 1e6, "us", "calibration", "cm384 §5.4.2, §4.2.3 (expert_peak_load)"))
    b96 = slo_point(B96, 4096, 256, None)
    with_mb, without = (decode.run(replace(b96, microbatches=mb)).throughput for mb in (True, False))
    speedup = with_mb / without
    rows.append(_row("decode b96 microbatch speed-up", speedup, 1.094, "x", "prediction", "cm384 §5.4.1"))
    return rows


@lru_cache(maxsize=16)
def serving_rows(hw: Hardware = Hardware()) -> tuple[Published, ...]:
    """Return every published serving number with the model's prediction of it."""
    rows = decode_rows(DecodeModel(hw))
    rows.extend(r for r in table6_rows(hw) if r.name.startswith(("dispatch EP256", "combine EP256")))
    prefill = PrefillModel(hw).run()
    rows.append(_row("prefill 4K prompts, perfect EPLB", prefill.throughput, 6688.0, "tok/s/NPU", "prediction",
                     "cm384 Table 2"))
    rows.append(_row("prefill 4K prompts, default", prefill.throughput * hw.serving.eplb_throughput_ratio, 5655.0,
                     "tok/s/NPU", "prediction", "cm384 Table 2 (eplb_throughput_ratio from SGLang's pair)"))
    return tuple(rows)


def _row(name: str, predicted: float, published: float, unit: str, kind: str, source: str) -> Published:
    return Published(name, predicted, published, unit, kind, source, SERVING_BAND)


def _row_outcome(name: str) -> Outcome:
    return next(r for r in serving_rows() if r.name == name).outcome()


@check("serving_decode_b96_throughput", "model")
def check_decode_b96() -> Outcome:
    return _row_outcome("decode b96/NPU 4096/256 throughput")


@check("serving_decode_b96_tpot", "model")
def check_decode_b96_tpot() -> Outcome:
    return _row_outcome("decode b96/NPU 4096/256 TPOT")


@check("serving_slo_b128_throughput", "model")
def check_slo_b128() -> Outcome:
    return _row_outcome("decode b128/NPU 1024/1024 throughput")


@check("serving_slo_b112_throughput", "model")
def check_slo_b112() -> Outcome:
    return _row_outcome("decode b112/NPU 2048/256 throughput")


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


@check("serving_microbatch_speedup", "model")
def check_microbatch_speedup() -> Outcome:
    return _row_outcome("decode b96 microbatch speed-up")


@check("serving_prefill_perfect_eplb", "model")
def check_prefill_perfect() -> Outcome:
    return _row_outcome("prefill 4K prompts, perfect EPLB")


@check("serving_prefill_default", "model")
def check_prefill_default() -> Outcome:
    return _row_outcome("prefill 4K prompts, default")


@check("serving_comm_table6_multinode", "model")
def check_table6() -> Outcome:
    """The FusedDispatch/FusedCombine model is within ±10% of cm384 Table 6 wherever EP spans nodes (EP32-EP256)."""
    rows = [r for r in table6_rows() if "multi-node" in r.name or "bandwidth" in r.name]
    bad = [f"{r.name} ratio {r.ratio:.3f}" for r in rows if not r.ok]
    worst = max(rows, key=lambda r: abs(r.ratio - 1))
    return Outcome.from_bool(not bad, f"{len(rows)} rows, worst {worst.name} ratio {worst.ratio:.3f}"
                             + (f"; out of band: {', '.join(bad)}" if bad else ""))


def identity_error(results: list[DecodeBreakdown]) -> float:
    """Return max |throughput x TPOT / batch - 1| over ``results`` (cm384 §8.1: throughput = batch / TPOT)."""
    return max(abs(r.throughput * r.tpot / r.point.batch_npu - 1.0) for r in results)


@check("serving_identity_throughput_is_batch_over_tpot", "model")
def check_identity() -> Outcome:
    """Every Table 3/4 point, in both modes, satisfies throughput x TPOT = batch per NPU to 1e-12 relative."""
    decode = DecodeModel()
    results = [decode.run(slo_point(b, p, o, slo, mb))
               for b, p, o, slo, _, _ in SLO_POINTS for mb in (None, True, False)]
    worst = identity_error(results)
    return Outcome.from_bool(worst <= 1e-12, f"max |throughput x TPOT / batch - 1| = {worst:.2e} over {len(results)} "
                             "points (tolerance 1e-12)")


@check("serving_calibration_reproduces", "model")
def check_calibration() -> Outcome:
    """The stored decode constants are the fits of :func:`calibrate` (to 0.005 in load, 5 us in overhead)."""
    fitted, stored = calibrate(), SERVING_CALIBRATION
    ok = (abs(fitted.expert_peak_load - stored.expert_peak_load) <= 0.005
          and abs(fitted.step_overhead_s - stored.step_overhead_s) <= 5e-6)
    return Outcome.from_bool(ok, f"expert_peak_load stored {stored.expert_peak_load:.3f}, fitted "
                             f"{fitted.expert_peak_load:.4f}; step_overhead_s stored "
                             f"{stored.step_overhead_s * 1e3:.3f} ms, fitted {fitted.step_overhead_s * 1e3:.4f} ms",
                             {"expert_peak_load": fitted.expert_peak_load, "step_overhead_s": fitted.step_overhead_s})


def sweep(hw: Hardware = Hardware(), batches: tuple[int, ...] = tuple(range(8, 161, 16)), prompt: int = 4096,
          output: int = 256) -> list[dict]:
    """Return throughput and TPOT of decode over ``batches`` (per NPU) in each mode, with and without MTP."""
    decode = DecodeModel(hw)
    out = []
    for mtp, microbatches in ((True, True), (True, False), (False, True), (False, False)):
        for b in batches:
            r = decode.run(DecodePoint(b, kv_length(prompt, output), mtp=mtp, microbatches=microbatches))
            out.append({"batch": b, "mtp": mtp, "microbatches": microbatches, "tpot_ms": r.tpot * 1e3,
                        "throughput": r.throughput})
    return out


def plot_sweep(path: str, hw: Hardware = Hardware()) -> None:
    """Write throughput per NPU against TPOT (4K prompts, 256 output) with the published points to ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = sweep(hw)
    batches = sorted({p["batch"] for p in points})
    styles = {(True, True): "-o", (True, False): "--s", (False, True): ":^", (False, False): ":v"}
    for (mtp, microbatches), style in styles.items():
        sel = [p for p in points if p["mtp"] == mtp and p["microbatches"] == microbatches]
        ax.plot([p["tpot_ms"] for p in sel], [p["throughput"] for p in sel], style, markersize=3,
                label=f"model, {'MTP (1 draft, 70%)' if mtp else 'no MTP'}, "
                      f"{'two microbatches' if microbatches else 'one stream'}")
    for batch, prompt, output, _, tput, tpot in SLO_POINTS:
        ax.plot([tpot], [tput], "k*", markersize=9)
        ax.annotate(f"b{batch} {prompt}/{output}", (tpot, tput), textcoords="offset points", xytext=(4, -10),
                    fontsize=7)
    ax.plot([], [], "k*", label="published (cm384 Tables 3-4)")
    ax.set_xlabel("TPOT (ms)")
    ax.set_ylabel("decode throughput (tokens/s per NPU)")
    ax.set_title(f"DeepSeek-R1 decode on CloudMatrix384 (model sweep: batch {batches[0]}..{batches[-1]} per NPU, "
                 "4K/256)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_png(fig, path)
    plt.close(fig)


def _us(d: dict) -> dict:
    return {k: round(v * 1e6, 1) for k, v in d.items()}


def mode_table(hw: Hardware = Hardware()) -> list[dict]:
    """Return every Table 3/4 point in both modes: throughput ratio to the published value, and the mode used."""
    decode = DecodeModel(hw)
    out = []
    for batch, prompt, output, slo, tput, _ in SLO_POINTS:
        used = decode.run(slo_point(batch, prompt, output, slo)).point.microbatches
        runs = {mb: decode.run(slo_point(batch, prompt, output, slo, mb)) for mb in (True, False)}
        out.append({"point": f"b{batch} {prompt}/{output} SLO {slo:g} ms",
                    "used": "two microbatches" if used else "one stream",
                    "ratio_microbatches": runs[True].throughput / tput,
                    "ratio_one_stream": runs[False].throughput / tput,
                    "layer_us_microbatches": runs[True].moe_layer.seconds * 1e6, "split": runs[True].moe_layer.split,
                    "layer_us_one_stream": runs[False].moe_layer.seconds * 1e6})
    return out


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
    decode = DecodeModel(hw).run(slo_point(B96, 4096, 256, 50.0))
    small = DecodeModel(hw).run(slo_point(8, 4096, 256, 15.0))
    prefill = PrefillModel(hw).run()
    data = {"rows": [{**vars(r), "ratio": r.ratio, "ok": r.ok} for r in rows],
            "modes": mode_table(hw),
            "table6": [{**vars(r), "ratio": r.ratio, "ok": r.ok} for r in table6_rows(hw)],
            "decode_us": {f"b{r.point.batch_npu}": {
                "microbatches": r.point.microbatches, "split": r.moe_layer.split,
                "stream0": _us(r.moe_layer.stream0), "stream1": _us(r.moe_layer.stream1),
                "moe_layer": r.moe_layer.seconds * 1e6, "dense_layer": r.dense_layer * 1e6,
                "mtp_module": r.mtp_module * 1e6, "lm_head": r.lm_head * 1e6, "overhead": r.overhead * 1e6,
                "step": r.step * 1e6} for r in (decode, small)},
            "prefill_us": {"moe_compute": _us(prefill.moe_compute), "moe_comm": _us(prefill.moe_comm),
                           "moe_layer": prefill.moe_layer * 1e6, "dense_layer": prefill.dense_layer * 1e6},
            "calibrated": [r for r in provenance(hw.serving) + provenance(hw.kernel) if r["basis"] == "calibrated"]}
    if args.plot:
        plot_sweep(args.plot, hw)
    ok = all(r.ok for r in rows)
    if args.json:
        print(json.dumps(data, indent=1, default=str))
        return 0 if ok else 1
    print("DeepSeek-R1 on CloudMatrix384 (arXiv:2506.12708): published numbers and the model's predictions\n")
    print(format_table(list(rows)))
    print("\nMicrobatch mode of each Table 3/4 point (throughput / published in each mode)")
    for r in data["modes"]:
        print(f"  {r['point']:<24} runs {r['used']:<16}  two microbatches {r['ratio_microbatches']:.3f} "
              f"(layer {r['layer_us_microbatches']:.0f} us, AIC split {r['split'][0]}/{r['split'][1]})  "
              f"one stream {r['ratio_one_stream']:.3f} (layer {r['layer_us_one_stream']:.0f} us)")
    print("\nFusedDispatch / FusedCombine against cm384 Table 6 (128 tokens per rank, top-8)")
    print(format_table(table6_rows(hw)))
    for key, b in data["decode_us"].items():
        mode = f"two microbatches, AIC split {b['split'][0]}/{b['split'][1]}, per microbatch" if b["microbatches"] \
            else "one stream, whole die"
        print(f"\nDecode {key}/NPU, 4K KV, MTP ({mode}), us:\n  stream 0 {b['stream0']}\n  stream 1 {b['stream1']}\n"
              f"  MoE layer {b['moe_layer']:.0f}, dense layer {b['dense_layer']:.0f}, "
              f"MTP module {b['mtp_module']:.0f}, "
              f"LM head {b['lm_head']:.0f}, step overhead {b['overhead']:.0f}, step {b['step']:.0f}")
    q = data["prefill_us"]
    print(f"\nPrefill, 16K tokens/NPU, 4K prompts, one MoE layer (us): compute {q['moe_compute']}\n"
          f"  communication {q['moe_comm']}\n  MoE layer {q['moe_layer']:.0f}, dense layer {q['dense_layer']:.0f}")
    print("\nCalibrated constants")
    for c in data["calibrated"]:
        print(f"  {c['name']} = {c['value']:.4g} {c['unit']}\n    fitted to: {c['source']}")
    if args.plot:
        print(f"\nThroughput vs TPOT written to {args.plot}")
    return 0 if ok else 1
