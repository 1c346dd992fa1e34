"""Expert-parallel dispatch and combine of CloudMatrix-Infer (FusedDispatch / FusedCombine): the reference.

Normative sources:
- Zuo et al., "Serving Large Language Models on Huawei CloudMatrix384", arXiv:2506.12708v3,
  §4.2.1 (Fig. 10-12: early INT8 quantisation, 7.5 KB dispatch and 14 KB combine messages,
  static buffers rank_num x max_tokens x msg_size, completion flags), §4.1 and §5.1 (EP320:
  32 shared-expert ranks, 256 routed experts, 32 redundant replicas, one expert per die).
- Routing: deepseek-ai/DeepSeek-V3 @ 9b4e978 ``inference/model.py`` ``Gate.forward`` and
  ``inference/configs/config_671B.json`` (256 experts, 8 groups, 4 groups kept, top 8,
  route_scale 2.5, sigmoid scores, an FP32 selection bias since 4592be4).
- Shared-expert ranks and message layout as shipped: hicann/ops-transformer @ c29bc10
  ``mc2/moe_distribute_dispatch`` (``docs/aclnnMoeDistributeDispatch.md``: shared-expert
  ranks first, ``expertShardType`` 0; ``op_kernel/moe_distribute_dispatch.h``) and
  ``mc2/moe_distribute_combine/op_kernel/moe_distribute_combine.h`` (``LocalWindowCopy``:
  FP32 weighted sum in top-k order, then the shared expert).
- Redundant experts: deepseek-ai/EPLB ``eplb.py`` ``replicate_experts`` (each extra replica
  goes to the expert with the largest load per replica).

The algorithm, as §4.2.1 and the kernels lay it out:

    Gate      s = sigmoid(logits);  b = s + bias                    (bias for selection only)
              g_j = top-2 sum of b in group j;  G = top-4 groups      (8 groups of 32)
              E = top-8 of b inside G;  w = s[E] / sum s[E] * 2.5
    Dispatch  per source rank r, token t (§4.2.1, Fig. 11-12):
              (xq, scale) = per-token INT8 of x_t                    early quantisation
              for k in 0..K (k = K: the shared expert):
                  slot = replica of E[t, k];  dst = rank of slot
                  row  = next free row of the region dst reserves for r (capacity max_tokens)
                  write {xq, scale, r, t, k, local expert} at (dst, r, row)
              counts[dst, r] = rows written (sent with the completion flag)
    Combine   per expert rank: y = expert(xq, scale) as BF16, written back to (r, dst, row)
              of the origin's combine buffer; one atomic increment of the token's counter
              origin: wait until counter = K + 1 - dropped, then
              out = fl32 sum_k fl32(w_k y_k) in k order, + y_shared, rounded to BF16

Buffers (§4.2.1): max_tokens = local_batch x min(top_k, experts_per_rank), and each rank
holds rank_num x max_tokens x msg bytes for dispatch and again for combine (double
buffering). At EP320 with 96 tokens per die: 320 x 96 x 7,680 B = 225 MiB and
320 x 96 x 14,336 B = 420 MiB, 645 MiB per die (:func:`ep320_buffer_report`; the paper's
"MB" and "KB" are binary units).

Decision (2026-11-28): a dispatch message is H INT8 values, then a 512-byte region that
holds the FP32 scale and four little-endian int32 metadata words (source rank, batch slot,
k, local expert): 7,168 + 512 = 7,680 B = 7.5 KiB (§4.2.1 pads the 4-byte scale to 512 B).
The CANN kernel reserves 128 B and keeps the metadata implicit in the slot position
(``scale_region=128`` models its size). The paper names {source rank, batch slot, key
offset}; the local expert index is added so that a rank hosting several experts can sort.

Decision (2026-11-28): ties in every top-k (groups and experts) go to the lower index, and
the selected experts are listed by decreasing biased score (torch.topk's order; its tie
order is unspecified). Scores, the bias sum, the top-2 sums and the weight normalisation
round into ``score_format`` (FP32; DeepSeek-V3 computes the sigmoid in the BF16 activation
dtype, ``score_format=Format.BF16``); the normalising sum runs in k order.

Decision (2026-11-28): replica choice is static: replica index = source rank mod the
number of replicas (``replica_policy="source_rank"``), or (source rank x local_batch +
token) mod replicas (``"token"``). The shared-expert rank of token t of rank r is
(r x local_batch + t) mod shared_ranks: every shared rank receives exactly
local_batch x rank_num / shared_ranks tokens when that divides, as the CANN formula
A = BS x epWorldSize / sharedExpertRankNum assumes (its kernel spreads each source's
tokens in contiguous runs instead; the counts agree when shared_ranks divides the batch).

Decision (2026-11-28): capacity overflow (only possible when ``max_tokens`` is set below
the worst case above) raises DomainError by default; ``overflow="drop"`` drops the message,
records (source, token, k, destination) in ``DispatchResult.dropped``, lowers that token's
expected completion count, and the combine leaves the contribution out and returns the same
list: nothing is lost silently.

Decision (2026-11-30): routing zero tokens (logits of shape (0, E)) is defined, not an
error: every array of the :class:`Routing` has 0 rows, as attention's empty batch gives empty
outputs. A dispatch needs at least one token per source rank (ShapeError): its buffers are
sized by the batch. Buffer sizes take positive ints only (``capacity``, ``buffer_bytes``):
a rank, a batch, a top-k or an expert count of 0 or less is a ShapeError, never a size.

Known deviations:
- DeepSeek-V3 @ 4c2fdb8 (the release) masked the unselected groups by multiplying with a 0/1
  mask, so a negative biased score lost to the masked zeros and experts outside the kept
  groups could be chosen; fixed in 1398800 (-inf fill). ``group_mask="multiply"`` reproduces it.
- The CANN kernel quantises once per (token, expert) with per-expert smooth scales; without
  smooth scales that is the same INT8 message for every expert, which is what is sent here.
- Zero-filled rows, flags and the barrier are modelled by the counts; timing is not modelled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from attnspec.reference.int8 import QuantizedActivation, Variant, activation_error_bound, quantize_per_token
from attnspec.registry import Outcome, check, tool
from attnspec.spec.errors import ConventionError, DomainError, ImplementationError, ShapeError, require
from attnspec.spec.formats import Format, as_float64, from_bits, require_finite, require_representable, round_to, \
    to_bits, ulp
from attnspec.spec.policy import sum_rounded

SHARED = -1  # the logical id the shared expert is called with
MIB = 2**20


# ----------------------------------------------------------------------------------------------
# Gate: DeepSeek-V3 group-limited routing
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GateConfig:
    """The routing hyper-parameters; the defaults are DeepSeek-V3 671B (config_671B.json)."""

    n_experts: int = 256
    n_groups: int = 8
    topk_groups: int = 4
    top_k: int = 8
    route_scale: float = 2.5
    score_format: Format = Format.FP32
    group_mask: Literal["neg_inf", "multiply"] = "neg_inf"

    def __post_init__(self) -> None:
        for name in ("n_experts", "n_groups", "topk_groups", "top_k"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, ShapeError,
                    f"{name}: expected a positive int, got {value!r}")
        require(self.n_experts % self.n_groups == 0 and self.n_experts // self.n_groups >= 2, ShapeError,
                f"n_experts: expected a multiple of n_groups={self.n_groups} with >= 2 experts per group, "
                f"got {self.n_experts}")
        require(self.topk_groups <= self.n_groups, ShapeError,
                f"topk_groups: expected <= n_groups={self.n_groups}, got {self.topk_groups}")
        require(self.top_k <= self.topk_groups * (self.n_experts // self.n_groups), ShapeError,
                f"top_k: expected <= the experts of the kept groups, got {self.top_k}")
        require(math.isfinite(self.route_scale) and self.route_scale > 0, DomainError,
                f"route_scale: expected a finite positive number, got {self.route_scale!r}")
        require(self.group_mask in ("neg_inf", "multiply"), ConventionError,
                f"group_mask: expected 'neg_inf' or 'multiply', got {self.group_mask!r}")


DEEPSEEK_V3_GATE = GateConfig()


@dataclass(frozen=True)
class Routing:
    """The gate's decision for T tokens: expert_ids (T, K) and weights (T, K) in score_format, plus the kept groups."""

    expert_ids: np.ndarray
    weights: np.ndarray
    groups: np.ndarray  # (T, topk_groups)
    scores: np.ndarray  # (T, E) sigmoid scores
    biased: np.ndarray  # (T, E) scores + bias


def top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Return the indices of the k largest values along the last axis, largest first, ties to the lower index."""
    return np.argsort(-values, axis=-1, kind="stable")[..., :k]


def route(logits, bias, config: GateConfig = DEEPSEEK_V3_GATE) -> Routing:
    """Return DeepSeek-V3's group-limited top-k routing of gate logits (T, E) with selection bias (E,).

    T = 0 gives the empty routing (every array with 0 rows).
    """
    c = config
    fmt = c.score_format
    logits = as_float64(logits, "logits")
    require(logits.ndim == 2 and logits.shape[1] == c.n_experts, ShapeError,
            f"logits: expected (T, n_experts={c.n_experts}), got {logits.shape}")
    require_finite(logits, "logits")
    bias = as_float64(bias, "bias")
    require(bias.shape == (c.n_experts,), ShapeError, f"bias: expected ({c.n_experts},), got {bias.shape}")
    require_finite(bias, "bias")
    require_representable(bias, Format.FP32, "bias")  # an FP32 parameter since DeepSeek-V3 4592be4
    t = logits.shape[0]
    with np.errstate(over="ignore"):
        scores = round_to(1.0 / (1.0 + np.exp(-logits)), fmt)  # scores.sigmoid()
    biased = round_to(scores + bias, fmt)  # scores = scores + self.bias (selection only)
    per_group = np.sort(biased.reshape(t, c.n_groups, c.n_experts // c.n_groups), axis=-1)  # (T, G, E/G) ascending
    group_scores = round_to(per_group[..., -1] + per_group[..., -2], fmt)  # scores.topk(2)[0].sum(-1)
    groups = top_indices(group_scores, c.topk_groups)  # group_scores.topk(topk_groups)
    kept = np.zeros((t, c.n_groups), dtype=bool)
    np.put_along_axis(kept, groups, True, axis=-1)
    kept = np.repeat(kept, c.n_experts // c.n_groups, axis=-1)  # (T, E)
    if c.group_mask == "neg_inf":
        masked = np.where(kept, biased, -np.inf)  # masked_fill_(mask, -inf)  (1398800)
    else:
        masked = biased * kept  # [variant: dsv3@4c2fdb8] scores * mask
    ids = top_indices(masked, c.top_k)  # torch.topk(scores, topk)
    chosen = np.take_along_axis(scores, ids, axis=-1)  # original_scores.gather(1, indices)
    total = sum_rounded(chosen, -1, fmt, "sequential")  # weights.sum(dim=-1, keepdim=True)
    weights = round_to(round_to(chosen / total, fmt) * c.route_scale, fmt)  # /= sum; *= route_scale
    return Routing(expert_ids=ids.astype(np.int64), weights=weights, groups=groups, scores=scores, biased=biased)


# ----------------------------------------------------------------------------------------------
# Placement: shared-expert ranks first, then routed slots with EPLB replicas
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EPLayout:
    """Ranks [0, shared_ranks) hold the shared expert; routed slot p is on rank shared_ranks + p // experts_per_rank.

    ``phy2log[p]`` is the logical expert of routed slot p; every expert has at least one slot.
    """

    shared_ranks: int
    phy2log: tuple[int, ...]
    experts_per_rank: int = 1
    n_experts: int = 256

    def __post_init__(self) -> None:
        require(isinstance(self.shared_ranks, int) and self.shared_ranks >= 1, ShapeError,
                f"shared_ranks: expected a positive int, got {self.shared_ranks!r}")
        require(isinstance(self.experts_per_rank, int) and self.experts_per_rank >= 1
                and len(self.phy2log) % self.experts_per_rank == 0, ShapeError,
                f"phy2log: expected a multiple of experts_per_rank={self.experts_per_rank} slots, "
                f"got {len(self.phy2log)}")
        slots = np.asarray(self.phy2log)
        require(slots.size > 0 and np.all((slots >= 0) & (slots < self.n_experts)), DomainError,
                f"phy2log: expected expert ids in [0, {self.n_experts}), got {self.phy2log[:8]}...")
        missing = sorted(set(range(self.n_experts)) - set(self.phy2log))
        require(not missing, DomainError, f"phy2log: expected every expert to have a slot, missing {missing[:8]}")

    @property
    def world_size(self) -> int:
        """Return the number of EP ranks: shared ranks plus routed ranks."""
        return self.shared_ranks + len(self.phy2log) // self.experts_per_rank

    def replicas(self, expert: int) -> tuple[int, ...]:
        """Return the routed slots holding ``expert``, in slot order."""
        return tuple(p for p, e in enumerate(self.phy2log) if e == expert)

    def rank_of_slot(self, slot: int) -> tuple[int, int]:
        """Return (rank, local expert index) of routed slot ``slot``."""
        return self.shared_ranks + slot // self.experts_per_rank, slot % self.experts_per_rank

    def expert_at(self, rank: int, local: int) -> int:
        """Return the logical expert at (rank, local), SHARED on a shared-expert rank."""
        if rank < self.shared_ranks:
            return SHARED
        return self.phy2log[(rank - self.shared_ranks) * self.experts_per_rank + local]


def replicate_experts(load, n_slots: int) -> tuple[int, ...]:
    """Return phy2log: slot e holds expert e, then each extra slot the expert with the largest load / replicas.

    deepseek-ai/EPLB ``replicate_experts``; ties go to the lower expert id.
    """
    load = as_float64(load, "load")
    require(load.ndim == 1 and load.size >= 1, ShapeError, f"load: expected (n_experts,), got {load.shape}")
    require_finite(load, "load")
    require(np.all(load >= 0), DomainError, "load: expected non-negative token counts")
    require(isinstance(n_slots, int) and n_slots >= load.size, ShapeError,
            f"n_slots: expected an int >= n_experts={load.size}, got {n_slots!r}")
    phy2log = list(range(load.size))
    count = np.ones(load.size)
    for _ in range(n_slots - load.size):
        e = int(np.argmax(load / count))  # (weight / logcnt).max(dim=-1).indices
        phy2log.append(e)
        count[e] += 1
    return tuple(phy2log)


def ep320_layout(load=None) -> EPLayout:
    """Return CloudMatrix-Infer's decode layout: 32 shared ranks, 256 experts + 32 replicas, one per die (§5.1)."""
    load = np.ones(256) if load is None else load
    return EPLayout(shared_ranks=32, phy2log=replicate_experts(load, 288), experts_per_rank=1, n_experts=256)


def choose_replica(replicas: tuple[int, ...], src: int, token: int, local_batch: int,
                   policy: Literal["source_rank", "token"]) -> int:
    """Return the routed slot a token of rank ``src`` uses among an expert's replicas (static policy)."""
    index = src if policy == "source_rank" else src * local_batch + token
    return replicas[index % len(replicas)]


def shared_rank_of(src: int, token: int, local_batch: int, shared_ranks: int) -> int:
    """Return the shared-expert rank serving token ``token`` of rank ``src``: round robin on the global slot."""
    return (src * local_batch + token) % shared_ranks


# ----------------------------------------------------------------------------------------------
# Messages and buffers
# ----------------------------------------------------------------------------------------------

META_WORDS = 4  # source rank, batch slot, k, local expert


@dataclass(frozen=True)
class MessageFormat:
    """Byte sizes of one token's messages: dispatch = H INT8 + scale region, combine = H BF16."""

    hidden: int = 7168
    scale_region: int = 512  # §4.2.1; [variant: cann] 128 at c29bc10
    combine_itemsize: int = 2  # BF16

    def __post_init__(self) -> None:
        require(isinstance(self.hidden, int) and self.hidden >= 1, ShapeError,
                f"hidden: expected a positive int, got {self.hidden!r}")
        require(isinstance(self.scale_region, int) and self.scale_region >= 4 * (1 + META_WORDS), ShapeError,
                f"scale_region: expected an int >= {4 * (1 + META_WORDS)} bytes (FP32 scale + 4 int32), "
                f"got {self.scale_region!r}")

    @property
    def dispatch_bytes(self) -> int:
        return self.hidden + self.scale_region

    @property
    def combine_bytes(self) -> int:
        return self.hidden * self.combine_itemsize


def _require_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        require(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1, ShapeError,
                f"{name}: expected a positive int, got {value!r}")


def capacity(local_batch: int, top_k: int, experts_per_rank: int) -> int:
    """Return max_tokens = local_batch x min(top_k, experts_per_rank): the rows one source can need on one rank."""
    _require_sizes(local_batch=local_batch, top_k=top_k, experts_per_rank=experts_per_rank)
    return int(local_batch) * min(int(top_k), int(experts_per_rank))


def buffer_bytes(rank_num: int, max_tokens: int, msg_bytes: int) -> int:
    """Return the static buffer size rank_num x max_tokens x msg_size (§4.2.1)."""
    _require_sizes(rank_num=rank_num, max_tokens=max_tokens, msg_bytes=msg_bytes)
    return int(rank_num) * int(max_tokens) * int(msg_bytes)


def pack_dispatch_message(xq: np.ndarray, scale: float, meta: tuple[int, int, int, int],
                          fmt: MessageFormat) -> np.ndarray:
    """Return one dispatch message (fmt.dispatch_bytes,) uint8: INT8 payload, FP32 scale, int32 metadata, zeros."""
    msg = np.zeros(fmt.dispatch_bytes, dtype=np.uint8)
    msg[:fmt.hidden] = xq.astype(np.int8).view(np.uint8)
    msg[fmt.hidden:fmt.hidden + 4] = np.array([scale], dtype="<f4").view(np.uint8)  # exact: scale is FP32
    msg[fmt.hidden + 4:fmt.hidden + 4 * (1 + META_WORDS)] = np.array(meta, dtype="<i4").view(np.uint8)
    return msg


def unpack_dispatch_message(msg: np.ndarray, fmt: MessageFormat) -> tuple[np.ndarray, float, tuple[int, ...]]:
    """Return (xq (H,) int8, scale, (source rank, batch slot, k, local expert)) of one dispatch message."""
    xq = msg[:fmt.hidden].view(np.int8)
    scale = float(msg[fmt.hidden:fmt.hidden + 4].view("<f4")[0])
    meta = tuple(int(v) for v in msg[fmt.hidden + 4:fmt.hidden + 4 * (1 + META_WORDS)].view("<i4"))
    return xq, scale, meta


@dataclass(frozen=True)
class BufferReport:
    """The static buffer arithmetic of §4.2.1 for one configuration."""

    rank_num: int
    local_batch: int
    max_tokens: int
    dispatch_msg: int
    combine_msg: int
    dispatch_buffer: int
    combine_buffer: int

    @property
    def total(self) -> int:
        return self.dispatch_buffer + self.combine_buffer

    def lines(self) -> list[str]:
        """Return the arithmetic, one line per quantity."""
        kib = 1024
        return [f"max_tokens = {self.local_batch} x min(top_k, experts_per_rank) = {self.max_tokens}",
                f"dispatch msg = hidden INT8 + scale region = {self.dispatch_msg} B = {self.dispatch_msg / kib} KiB",
                f"combine msg = hidden x 2 B (BF16) = {self.combine_msg} B = {self.combine_msg / kib} KiB",
                f"dispatch buffer = {self.rank_num} x {self.max_tokens} x {self.dispatch_msg} = "
                f"{self.dispatch_buffer} B"
                f" = {self.dispatch_buffer / MIB} MiB",
                f"combine buffer = {self.rank_num} x {self.max_tokens} x {self.combine_msg} = {self.combine_buffer} B"
                f" = {self.combine_buffer / MIB} MiB",
                f"total per die = {self.total} B = {self.total / MIB} MiB"]


def buffer_report(rank_num: int = 320, local_batch: int = 96, top_k: int = 8, experts_per_rank: int = 1,
                  fmt: MessageFormat = MessageFormat()) -> BufferReport:
    """Return the buffer arithmetic; the defaults are EP320 decode at 96 tokens per die (§4.2.1)."""
    max_tokens = capacity(local_batch, top_k, experts_per_rank)
    return BufferReport(rank_num, local_batch, max_tokens, fmt.dispatch_bytes, fmt.combine_bytes,
                        buffer_bytes(rank_num, max_tokens, fmt.dispatch_bytes),
                        buffer_bytes(rank_num, max_tokens, fmt.combine_bytes))


# ----------------------------------------------------------------------------------------------
# FusedDispatch
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DispatchResult:
    """Every rank's dispatch receive buffer after the dispatch, with the bookkeeping the combine needs."""

    buffers: np.ndarray  # (R_dst, R_src, max_tokens, dispatch_bytes) uint8
    counts: np.ndarray  # (R_dst, R_src) rows written: the counts sent with the completion flags
    placed: np.ndarray  # (R_src, BS, K + 1, 2) (dst, row) of each contribution; (-1, -1) when dropped
    dropped: tuple[tuple[int, int, int, int], ...]  # (src, token, k, dst) of every message that did not fit
    activations: tuple[QuantizedActivation, ...]  # per source rank, what was sent
    fmt: MessageFormat
    max_tokens: int


def claim_row(counts: np.ndarray, dst: int, src: int, max_tokens: int,
              overflow: Literal["raise", "drop"], where: str) -> int | None:
    """Return the next free row of the region ``dst`` reserves for ``src`` (and take it), or None to drop."""
    row = int(counts[dst, src])
    if row >= max_tokens:
        require(overflow == "drop", DomainError,
                f"max_tokens: expected room for {where} in the region rank {dst} reserves for rank {src}, "
                f"but all {max_tokens} rows are taken; pass overflow='drop' to drop and report it")
        return None
    counts[dst, src] = row + 1
    return row


def _check_expert_ids(expert_ids, shape: tuple[int, int], n_experts: int) -> np.ndarray:
    """Return expert_ids (R, BS, K) as int64 after checking range and distinctness per token."""
    ids = np.asarray(expert_ids)
    require(np.issubdtype(ids.dtype, np.integer) and ids.ndim == 3 and ids.shape[:2] == shape and ids.size > 0,
            ShapeError, f"expert_ids: expected integers of shape {shape + ('K >= 1',)}, got {ids.dtype} {ids.shape}")
    require(np.all((ids >= 0) & (ids < n_experts)), DomainError,
            f"expert_ids: expected ids in [0, {n_experts}), got {ids.min()}..{ids.max()}")
    ordered = np.sort(ids, axis=-1)
    dup = np.any(ordered[..., 1:] == ordered[..., :-1], axis=-1)  # (R, BS)
    if np.any(dup):
        raise DomainError(f"expert_ids: expected distinct experts per token, token "
                          f"{tuple(int(i) for i in np.argwhere(dup)[0])} repeats one")
    return ids.astype(np.int64)


def dispatch(x, expert_ids, layout: EPLayout, *, fmt: MessageFormat | None = None, max_tokens: int | None = None,
             overflow: Literal["raise", "drop"] = "raise",
             replica_policy: Literal["source_rank", "token"] = "source_rank",
             variant: Variant = "ideal", zero_rows: Literal["raise", "unit_scale"] = "raise") -> DispatchResult:
    """Return the state after FusedDispatch of every rank's tokens x (R, BS, H) (BF16 values) to their experts.

    ``expert_ids`` (R, BS, K) are each token's routed experts; every token also goes to one
    shared-expert rank (k = K). ``max_tokens`` defaults to the worst case
    local_batch x min(K, experts_per_rank), for which no region can overflow.
    """
    require(overflow in ("raise", "drop"), ConventionError, f"overflow: expected 'raise' or 'drop', got {overflow!r}")
    require(replica_policy in ("source_rank", "token"), ConventionError,
            f"replica_policy: expected 'source_rank' or 'token', got {replica_policy!r}")
    x = as_float64(x, "x")
    require(x.ndim == 3 and x.shape[0] == layout.world_size, ShapeError,
            f"x: expected (R={layout.world_size}, local_batch, hidden), got {x.shape}")
    r_num, batch, hidden = x.shape
    fmt = MessageFormat(hidden=hidden) if fmt is None else fmt
    require(fmt.hidden == hidden, ShapeError, f"fmt: expected hidden = {hidden} (x's last axis), got {fmt.hidden}")
    ids = _check_expert_ids(expert_ids, (r_num, batch), layout.n_experts)
    top_k = ids.shape[2]
    max_tokens = capacity(batch, top_k, layout.experts_per_rank) if max_tokens is None else max_tokens
    require(isinstance(max_tokens, int) and max_tokens >= 1, ShapeError,
            f"max_tokens: expected a positive int, got {max_tokens!r}")
    buffers = np.zeros((r_num, r_num, max_tokens, fmt.dispatch_bytes), dtype=np.uint8)  # static, pre-allocated
    counts = np.zeros((r_num, r_num), dtype=np.int64)
    placed = np.full((r_num, batch, top_k + 1, 2), -1, dtype=np.int64)
    dropped = []
    activations = []
    for src in range(r_num):
        tokens = quantize_per_token(x[src], x_format=Format.BF16, variant=variant, zero_rows=zero_rows)  # §4.2.1 (2)
        activations.append(tokens)
        for t in range(batch):
            for k in range(top_k + 1):
                if k < top_k:
                    slot = choose_replica(layout.replicas(int(ids[src, t, k])), src, t, batch, replica_policy)
                    dst, local = layout.rank_of_slot(slot)
                else:  # the shared expert (expertShardType 0: shared ranks come first)
                    dst, local = shared_rank_of(src, t, batch, layout.shared_ranks), 0
                row = claim_row(counts, dst, src, max_tokens, overflow, f"token {t}, k={k} of rank {src}")
                if row is None:
                    dropped.append((src, t, k, dst))
                    continue
                buffers[dst, src, row] = pack_dispatch_message(tokens.q[t], tokens.scale[t], (src, t, k, local), fmt)
                placed[src, t, k] = (dst, row)
    return DispatchResult(buffers, counts, placed, tuple(dropped), tuple(activations), fmt, max_tokens)


@dataclass(frozen=True)
class Received:
    """What one rank gathered after the flags (§4.2.1, FusedDispatch), sorted by local expert, then source."""

    tokens: QuantizedActivation  # (n, H)
    meta: np.ndarray  # (n, 4) source rank, batch slot, k, local expert
    rows: np.ndarray  # (n,) row of each message in its source's region
    expert_counts: np.ndarray  # (experts_per_rank,) tokens per local expert (expertTokenNums)


def receive(result: DispatchResult, rank: int, experts_per_rank: int) -> Received:
    """Return the tokens rank ``rank`` received: rows [0, counts[rank, src]) of each source's region."""
    xs, scales, metas, rows = [], [], [], []
    for src in range(result.counts.shape[1]):
        for row in range(int(result.counts[rank, src])):
            xq, scale, meta = unpack_dispatch_message(result.buffers[rank, src, row], result.fmt)
            xs.append(xq)
            scales.append(scale)
            metas.append(meta)
            rows.append(row)
    meta = np.array(metas, dtype=np.int64).reshape(-1, META_WORDS)
    order = np.argsort(meta[:, 3], kind="stable")  # grouped by local expert, sources in order
    xq = np.array(xs, dtype=np.int8).reshape(-1, result.fmt.hidden)[order]
    return Received(tokens=QuantizedActivation(q=xq, scale=np.array(scales)[order]), meta=meta[order],
                    rows=np.array(rows, dtype=np.int64)[order],
                    expert_counts=np.bincount(meta[:, 3], minlength=experts_per_rank))


# ----------------------------------------------------------------------------------------------
# FusedCombine
# ----------------------------------------------------------------------------------------------

Expert = Callable[[int, QuantizedActivation], np.ndarray]


def identity_expert(expert: int, tokens: QuantizedActivation) -> np.ndarray:
    """Return the dequantised tokens: the expert of the combine(dispatch(x)) property."""
    return tokens.dequantize()


@dataclass(frozen=True)
class CombineResult:
    """out (R, BS, H) BF16 values; completion counts and their expected values (R, BS); dropped contributions."""

    out: np.ndarray
    completions: np.ndarray
    expected: np.ndarray
    dropped: tuple[tuple[int, int, int, int], ...]


def combine(result: DispatchResult, weights, layout: EPLayout, experts: Expert = identity_expert, *,
            out_format: Format = Format.BF16) -> CombineResult:
    """Return FusedCombine's output: every expert's BF16 result weighted by the gate and summed at its origin."""
    r_num, batch, k_plus_1, _ = result.placed.shape
    top_k = k_plus_1 - 1
    weights = as_float64(weights, "weights")
    require(weights.shape == (r_num, batch, top_k), ShapeError,
            f"weights: expected ({r_num}, {batch}, {top_k}), got {weights.shape}")
    require_finite(weights, "weights")
    require_representable(weights, Format.FP32, "weights")
    hidden = result.fmt.hidden
    # (origin, expert rank, row, H) BF16 bit patterns: each origin's static combine buffer
    combine_buffers = np.zeros((r_num, r_num, result.max_tokens, hidden), dtype=np.uint16)
    completions = np.zeros((r_num, batch), dtype=np.int64)
    for rank in range(r_num):  # §4.2.1 FusedCombine: every expert rank writes back and bumps the flags
        got = receive(result, rank, layout.experts_per_rank)
        start = 0
        for local, n in enumerate(got.expert_counts):
            part = slice(start, start + int(n))
            start += int(n)
            if n == 0:
                continue
            tokens = QuantizedActivation(q=got.tokens.q[part], scale=got.tokens.scale[part])
            y = round_to(experts(layout.expert_at(rank, local), tokens), Format.BF16)  # the combine message is BF16
            require(y.shape == (int(n), hidden), ImplementationError,
                    f"experts: expected an output of shape ({int(n)}, {hidden}), got {y.shape}")
            for (src, t, _, _), row, out_row in zip(got.meta[part], got.rows[part], y):
                combine_buffers[src, rank, row] = to_bits(out_row, Format.BF16)  # AIV-Direct write back
                completions[src, t] += 1  # atomic add on the origin's per-token flag
    dropped_per_token = np.zeros((r_num, batch), dtype=np.int64)
    for src, t, _, _ in result.dropped:
        dropped_per_token[src, t] += 1
    expected = top_k + 1 - dropped_per_token
    if np.any(completions != expected):
        idx = tuple(int(i) for i in np.argwhere(completions != expected)[0])
        raise ImplementationError(f"completions: token {idx} has {int(completions[idx])} contributions, expected "
                                  f"{int(expected[idx])}; a kernel waiting on this flag would "
                                  f"{'hang' if completions[idx] < expected[idx] else 'read a stale buffer'}")
    out = np.zeros((r_num, batch, hidden))
    for src in range(r_num):  # §4.2.1 FusedCombine: every origin weights and sums its K + 1 results
        for t in range(batch):
            acc = np.zeros(hidden)
            for k in range(top_k + 1):
                dst, row = result.placed[src, t, k]
                if dst < 0:
                    continue  # dropped: reported in result.dropped
                y = from_bits(combine_buffers[src, dst, row], Format.BF16)
                term = y if k == top_k else round_to(weights[src, t, k] * y, Format.FP32)  # Muls(scaleVal)
                acc = round_to(acc + term, Format.FP32)  # Add in FP32, k order, shared last
            out[src, t] = round_to(acc, out_format)
    return CombineResult(out=out, completions=completions, expected=expected, dropped=result.dropped)


# ----------------------------------------------------------------------------------------------
# Property checkers and the derived bound
# ----------------------------------------------------------------------------------------------

def dispatch_problems(result: DispatchResult, x, expert_ids, layout: EPLayout) -> list[str]:
    """Return every violation of "each token reaches each of its top-k experts and one shared rank exactly once".

    Reads only the receive buffers and counts (not the dispatcher's own bookkeeping): each
    received message must name a (source, token, k) that was routed to the expert hosted at
    its (rank, local expert), carry that token's INT8 payload and scale, and appear once;
    every (source, token, k) must be received or listed in ``dropped``.
    """
    x = as_float64(x, "x")
    ids = np.asarray(expert_ids)
    r_num, batch, top_k = ids.shape
    problems = []
    seen: dict[tuple[int, int, int], int] = {}
    for rank in range(r_num):
        for src in range(r_num):
            for row in range(int(result.counts[rank, src])):
                xq, scale, (m_src, t, k, local) = unpack_dispatch_message(result.buffers[rank, src, row], result.fmt)
                where = f"rank {rank} region {src} row {row}"
                if m_src != src or not (0 <= t < batch and 0 <= k <= top_k):
                    problems.append(f"{where}: metadata ({m_src}, {t}, {k}) does not belong to source {src}")
                    continue
                seen[(src, t, k)] = seen.get((src, t, k), 0) + 1
                want = SHARED if k == top_k else int(ids[src, t, k])
                hosted = layout.expert_at(rank, local) if 0 <= local < layout.experts_per_rank else None
                if hosted != want:
                    problems.append(f"{where}: token ({src}, {t}) k={k} for expert {want} landed at expert {hosted}")
                sent = result.activations[src]
                if not (np.array_equal(xq, sent.q[t]) and scale == sent.scale[t]):
                    problems.append(f"{where}: payload of token ({src}, {t}) differs from what was quantised")
    dropped = {(s, t, k) for s, t, k, _ in result.dropped}
    for src in range(r_num):
        for t in range(batch):
            for k in range(top_k + 1):
                n = seen.get((src, t, k), 0)
                if n + ((src, t, k) in dropped) != 1:
                    problems.append(f"token ({src}, {t}) k={k}: received {n} times, "
                                    f"{'dropped' if (src, t, k) in dropped else 'not dropped'}")
    return problems


def combine_error_bound(x, weights, result: DispatchResult, variant: Variant = "ideal") -> np.ndarray:
    """Return B (R, BS, H) with |combine(dispatch(x)) - (sum_k w_k + 1) x| <= B + ulp_out(out)/2 (identity experts).

    Derivation. Each contribution is y = bf16(s q) with |s q - x| <= E_x (int8's
    activation_error_bound) and |y - s q| <= 2^-8 |y| + 2^-134 (BF16 rounding, subnormals
    included), so |y| <= Y := (|x| + E_x)(1 + 2^-7) + 2^-133 and |y - x| <= E_x + 2^-8 Y + 2^-134.
    The origin's FP32 sum of K + 1 terms (K products, K additions) errs by at most
    gamma_{K+2} (sum_k |w_k| + 1) Y (Higham, Lemma 3.1 / eq. 3.4), and the output rounding by
    ulp_out(out)/2. With W = sum_k |w_k| + 1:
        B = W (E_x + 2^-8 Y + 2^-134) + gamma_{K+2} W Y,
    evaluated with a factor 1 + 2^-40 for its own float64 rounding; the output rounding
    ulp_out(out)/2 depends on the combine's output and is added by :func:`combine_within_bound`.
    """
    x = as_float64(x, "x")
    weights = as_float64(weights, "weights")
    top_k = weights.shape[-1]
    e_x = np.stack([activation_error_bound(x[r], result.activations[r].scale, variant) for r in range(x.shape[0])])
    y_max = (np.abs(x) + e_x) * (1 + 2.0**-7) + 2.0**-133
    w_sum = (np.sum(np.abs(weights), axis=-1) + 1)[..., None]  # (R, BS, 1)
    u = Format.FP32.info.unit_roundoff
    gamma = (top_k + 2) * u / (1 - (top_k + 2) * u)
    return (w_sum * (e_x + 2.0**-8 * y_max + 2.0**-134) + gamma * w_sum * y_max) * (1 + 2.0**-40)


def combine_within_bound(x, weights, result: DispatchResult, combined: CombineResult, variant: Variant = "ideal",
                         out_format: Format = Format.BF16) -> tuple[bool, float]:
    """Return (ok, max error / bound) of combine(dispatch(x)) against (sum_k w_k + 1) x, identity experts.

    The target is evaluated in binary64 (fsum of the weights, + 1, then one product): its
    three roundings, at most 2^-50 relative, are added to the bound.
    """
    x = as_float64(x, "x")
    weights = as_float64(weights, "weights")
    total = np.array([[math.fsum(w) + 1 for w in row] for row in weights])[..., None]  # (R, BS, 1)
    target = total * x
    bound = (combine_error_bound(x, weights, result, variant) + ulp(combined.out, out_format) / 2
             + 2.0**-50 * np.abs(target))
    err = np.abs(combined.out - target)
    return bool(np.all(err <= bound)), float(np.max(err / bound))


def routing_problems(routing: Routing, config: GateConfig = DEEPSEEK_V3_GATE) -> list[str]:
    """Return every violation of the gate's defining properties by ``routing`` (for its own scores and bias).

    (a) K distinct experts, all inside the kept groups; (b) the kept groups have the largest
    top-2 sums of biased scores; (c) no expert of a kept group outside the selection has a
    larger biased score than a selected one; (d) the weights are proportional to the
    unbiased scores and sum to route_scale within the rounding bound
    route_scale ((1 + g)/(1 - g) (1 + u)^2 - 1), g = gamma_{K-1} of the score format.
    """
    c = config
    per_group = c.n_experts // c.n_groups
    u = c.score_format.info.unit_roundoff
    g = (c.top_k - 1) * u / (1 - (c.top_k - 1) * u)
    tolerance = c.route_scale * ((1 + g) / (1 - g) * (1 + u) ** 2 - 1)
    problems = []
    for t, (ids, w, kept) in enumerate(zip(routing.expert_ids, routing.weights, routing.groups)):
        b = routing.biased[t]
        kept_set = set(int(j) for j in kept)
        if len(set(ids.tolist())) != c.top_k or not {int(e) // per_group for e in ids} <= kept_set:
            problems.append(f"token {t}: experts {ids.tolist()} are not {c.top_k} distinct experts of groups "
                            f"{sorted(kept_set)}")
        top2 = np.sort(b.reshape(c.n_groups, per_group), axis=-1)[:, -2:].sum(axis=-1)  # exact sums of FP32 pairs
        dropped_groups = [j for j in range(c.n_groups) if j not in kept_set]
        slack = 2 * u * np.max(np.abs(top2))  # the gate compares these sums rounded to score_format
        if dropped_groups and min(top2[sorted(kept_set)]) < max(top2[dropped_groups]) - slack:
            problems.append(f"token {t}: kept groups {sorted(kept_set)} do not have the largest top-2 sums")
        candidates = [e for e in range(c.n_experts) if e // per_group in kept_set and e not in set(ids.tolist())]
        if candidates and max(b[candidates]) > min(b[ids]):
            problems.append(f"token {t}: expert {candidates[int(np.argmax(b[candidates]))]} outscores a selected one")
        ratio = w / routing.scores[t, ids]
        if abs(math.fsum(w.tolist()) - c.route_scale) > tolerance or np.ptp(ratio) > 4 * u * np.max(ratio):
            problems.append(f"token {t}: weights {w.tolist()} are not route_scale-normalised unbiased scores")
    return problems


# ----------------------------------------------------------------------------------------------
# attnspec verify checks
# ----------------------------------------------------------------------------------------------

#: The paper's numbers (§4.2.1), in the binary units they are stated in.
PAPER_DISPATCH_MSG_KIB, PAPER_COMBINE_MSG_KIB = 7.5, 14.0
PAPER_DISPATCH_MIB, PAPER_COMBINE_MIB, PAPER_TOTAL_MIB = 225.0, 420.0, 645.0


@check("ep.buffer_sizes_ep320", "model")
def check_buffer_sizes_ep320() -> Outcome:
    """EP320 at 96 tokens per die: 7.5 KiB / 14 KiB messages and 225 + 420 = 645 MiB of buffers per die."""
    r = buffer_report()
    got = (r.dispatch_msg / 1024, r.combine_msg / 1024, r.dispatch_buffer / MIB, r.combine_buffer / MIB, r.total / MIB)
    want = (PAPER_DISPATCH_MSG_KIB, PAPER_COMBINE_MSG_KIB, PAPER_DISPATCH_MIB, PAPER_COMBINE_MIB, PAPER_TOTAL_MIB)
    return Outcome.from_bool(got == want, f"{r.total / MIB} MiB per die (paper: 645 MB); " + "; ".join(r.lines()[1:3]),
                             {"lines": r.lines(), "derived": got, "paper": want})


def small_case(seed: int, *, experts_per_rank: int = 1, batch: int = 5, hidden: int = 16, load_skew: bool = True):
    """Return (layout, gate, x (R, BS, H) BF16, routing) of a seeded scaled-down EP problem (8 experts, 4 groups)."""
    rng = np.random.default_rng(seed)
    gate = GateConfig(n_experts=8, n_groups=4, topk_groups=2, top_k=3)
    load = rng.uniform(0, 10, 8) if load_skew else np.ones(8)
    slots = 12 if experts_per_rank == 2 else 10
    layout = EPLayout(shared_ranks=2, phy2log=replicate_experts(load, slots), experts_per_rank=experts_per_rank,
                      n_experts=8)
    r_num = layout.world_size
    x = round_to(rng.standard_normal((r_num, batch, hidden)), Format.BF16)
    bias = round_to(rng.standard_normal(8) * 0.1, Format.FP32)
    routing = route(rng.standard_normal((r_num * batch, 8)), bias, gate)
    return layout, gate, x, routing


def split_per_rank(routing: Routing, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the routing of R x BS tokens as expert ids and weights (R, BS, K), matching x (R, BS, H)."""
    shape = x.shape[:2] + (-1,)
    return routing.expert_ids.reshape(shape), routing.weights.reshape(shape)


@check("ep.dispatch_exactly_once", "property")
def check_dispatch_exactly_once() -> Outcome:
    """Every token reaches each of its top-k experts and one shared rank exactly once (both replica policies)."""
    problems = []
    for seed, per_rank, policy in ((0, 1, "source_rank"), (1, 2, "token"), (2, 2, "source_rank")):
        layout, _, x, routing = small_case(seed, experts_per_rank=per_rank)
        ids, _ = split_per_rank(routing, x)
        result = dispatch(x, ids, layout, replica_policy=policy)
        problems += dispatch_problems(result, x, ids, layout)
    return Outcome.from_bool(not problems, "3 configurations, no violation" if not problems else problems[0],
                             {"problems": problems[:10]})


@check("ep.combine_identity_bound", "property")
def check_combine_identity_bound() -> Outcome:
    """With identity experts, combine(dispatch(x)) is within the derived INT8 bound of (sum_k w_k + 1) x."""
    ratios = []
    for seed, variant in ((3, "ideal"), (4, "cann")):
        layout, _, x, routing = small_case(seed)
        ids, weights = split_per_rank(routing, x)
        result = dispatch(x, ids, layout, variant=variant)
        ok, ratio = combine_within_bound(x, weights, result, combine(result, weights, layout), variant)
        ratios.append(ratio if ok else math.inf)
    return Outcome.from_bool(max(ratios) <= 1, f"max error / bound = {max(ratios):.3f}", {"ratios": ratios})


@check("ep.overflow_policy", "property")
def check_overflow_policy() -> Outcome:
    """Below the worst-case capacity, 'raise' raises and 'drop' reports every dropped message; nothing is lost."""
    layout, _, x, routing = small_case(5, experts_per_rank=2)
    ids, weights = split_per_rank(routing, x)
    try:
        dispatch(x, ids, layout, max_tokens=2)
        raised = False
    except DomainError:
        raised = True
    result = dispatch(x, ids, layout, max_tokens=2, overflow="drop")
    problems = dispatch_problems(result, x, ids, layout)
    combined = combine(result, weights, layout)
    ok = raised and bool(result.dropped) and not problems and combined.dropped == result.dropped
    return Outcome.from_bool(ok, f"raise: {raised}; drop: {len(result.dropped)} messages dropped and reported, "
                                 f"{len(problems)} violations",
                             {"dropped": len(result.dropped), "problems": problems[:5]})


def release_mask_case() -> tuple[np.ndarray, np.ndarray, GateConfig]:
    """Return (logits, bias, config) on which the release's (4c2fdb8) multiplied mask picks a dropped group's expert."""
    config = GateConfig(n_experts=8, n_groups=4, topk_groups=2, top_k=3)
    logits = np.zeros((1, 8))  # every sigmoid score is 0.5
    # Biased scores -2.5 x4, 1.5, 1.5, -0.25, -0.25: groups 2 and 3 are kept (top-2 sums 3 and -0.5 against -5),
    # and group 3's -0.25 loses to the zeros that multiplying by the mask leaves in groups 0 and 1.
    bias = np.array([-3.0, -3.0, -3.0, -3.0, 1.0, 1.0, -0.75, -0.75])
    return logits, bias, config


@check("ep.routing_group_limited", "property")
def check_routing_group_limited() -> Outcome:
    """The gate keeps its defining properties on seeded inputs; the release's multiplicative mask breaks them."""
    rng = np.random.default_rng(6)
    bias = round_to(rng.standard_normal(256) * 0.05, Format.FP32)
    routing = route(rng.standard_normal((64, 256)), bias)
    problems = routing_problems(routing)
    logits, bias, config = release_mask_case()
    fixed = routing_problems(route(logits, bias, config), config)
    release = dataclasses.replace(config, group_mask="multiply")
    broken = routing_problems(route(logits, bias, release), release)
    ok = not problems and not fixed and bool(broken)
    return Outcome.from_bool(ok, f"64 tokens x 256 experts: {len(problems)} violations; release mask: "
                                 f"{broken[0] if broken else 'no violation (expected one)'}",
                             {"problems": problems[:5]})


@check("ep.ep320_exactly_once", "property", quick=False)
def check_ep320_exactly_once() -> Outcome:
    """The full EP320 layout (32 shared, 256 + 32 replicas) with DeepSeek-V3's gate: exactly once, and the bound."""
    rng = np.random.default_rng(7)
    layout = ep320_layout(load=rng.uniform(0, 1, 256))
    x = round_to(rng.standard_normal((layout.world_size, 2, 8)), Format.BF16)
    routing = route(rng.standard_normal((layout.world_size * 2, 256)),
                    round_to(rng.standard_normal(256) * 0.01, Format.FP32))
    ids, weights = split_per_rank(routing, x)
    result = dispatch(x, ids, layout, fmt=MessageFormat(hidden=8, scale_region=32))
    problems = dispatch_problems(result, x, ids, layout)
    ok, ratio = combine_within_bound(x, weights, result, combine(result, weights, layout))
    return Outcome.from_bool(ok and not problems, f"320 ranks x 2 tokens x (8 + 1) messages: {len(problems)} "
                                                  f"violations; combine error / bound = {ratio:.3f}")


@tool("report", "ep-buffers", "FusedDispatch/FusedCombine message and static buffer sizes (EP320, 96 tokens/die)")
def ep_buffers_report(argv: list[str]) -> int:
    """Print the buffer arithmetic of §4.2.1 for a configuration; --json for a machine-readable copy."""
    parser = argparse.ArgumentParser(prog="attnspec report ep-buffers")
    parser.add_argument("--rank-num", type=int, default=320)
    parser.add_argument("--local-batch", type=int, default=96, help="tokens per die per step (MTP included)")
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--experts-per-rank", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=7168)
    parser.add_argument("--scale-region", type=int, default=512, help="512 (paper) or 128 (ops-transformer@c29bc10)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    fmt = MessageFormat(hidden=args.hidden, scale_region=args.scale_region)
    r = buffer_report(args.rank_num, args.local_batch, args.top_k, args.experts_per_rank, fmt)
    if args.json:
        print(json.dumps({**dataclasses.asdict(r), "total": r.total, "total_mib": r.total / MIB}, indent=1))
    else:
        print("\n".join(r.lines()))
    return 0
