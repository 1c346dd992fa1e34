"""AMLA's named cases: the zero hole and the other inputs where the shipped kernel departs from attention.

Each case is built deterministically from its seed and yielded by :func:`amla_cases` as
``(name, inputs, expected, meta)``, the layout the conformance kit exports:

- ``inputs``: the kernel view's arrays, ``q`` (B, s_q, h_q, W), ``kv_cache`` (B, S, 1, W)
  (dense, V = the first ``kv_lora_rank`` channels) and ``cache_seqlens`` (B,), BF16 values;
- ``expected``: ``out`` and ``lse``, the exact attention (the mpmath oracle,
  ``reference.oracle``) correctly rounded to binary64, ``out_bf16`` correctly rounded to
  BF16, and ``out_amla_cann``, the bit-exact output of the shipped kernel as
  ``spec.amla`` (variant ``cann``) defines it: a regression value, which the tests check
  against an independent NumPy/FP32 implementation of the kernel;
- ``meta``: the conventions (scale, causal, block size, widths), the seed, what the case
  shows, and where the shipped kernel is known to lose (``lost``: (b, s_q, h_q, d) indices
  where ``out_amla_cann`` is 0 while the exact output is not).

Level ``quick``: blocks of 8 keys and latent width 4 (+2 RoPE channels), so that the oracle
takes milliseconds; the mechanisms depend on the block structure only. Level ``full`` adds
the same cases at the kernel's block size of 512 keys (still narrow: a few seconds each)
and the zero hole at the kernel's full geometry, 576 / 512 wide (the oracle needs minutes).

Cases (``<kind>_b<block>_s<seed>``):

=====================  ==========================================================================
amla_zero_hole         V channel 0 is exactly 0 in the first block; the max jumps in the second.
                       O[:, 0] is 0 when N_2 is added, becomes huge (T2), and is zeroed by
                       the guard: the later contributions are lost; ``ideal`` keeps them.
amla_zero_hole_escape  the same, then the max jumps by ~22 at each of four more blocks (dn
                       clamped at -30 each time): the corrupted zero decays below 1e10 and
                       reaches the output as a large wrong number.
amla_guard_large       |V| ~ 2^30: |O| = |out| l r^ > 1e10 and the guard zeroes correct values.
amla_tiny_values       |V| ~ 2^-120 and a max jump: O is below 2^-95 (outside the safe domain of
                       the INT32 add) and the rescale corrupts it; the output is lost.
amla_random_sq<n>      regular inputs, causal MTP with s_q = n, two sequences of different
                       lengths (not multiples of the block): cann is within the error rule.
=====================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from attnspec.reference.oracle import oracle_from_problem
from attnspec.spec.amla import POLICY_AMLA, amla_from_problem
from attnspec.spec.errors import ConventionError, require
from attnspec.spec.formats import Format, round_to
from attnspec.spec.mla import DEEPSEEK_V3, MLAConfig, decode_problem
from attnspec.spec.problem import AttentionProblem

LEVELS = ("quick", "full")
NARROW = MLAConfig(kv_lora_rank=4, qk_rope_head_dim=2)  # width 6: V is 4 wide, RoPE 2
ROPE = -1  # the channel used to steer logits (the last RoPE channel: never part of V)


@dataclass(frozen=True)
class AmlaCase:
    """One kernel-view input with its conventions, rebuilt from (kind, block_k, seed)."""

    name: str
    kind: str
    q: np.ndarray  # (B, s_q, h_q, W)
    kv_cache: np.ndarray  # (B, S, 1, W)
    cache_seqlens: np.ndarray  # (B,)
    scale: float
    block_k: int
    seed: int
    config: MLAConfig = NARROW
    causal: bool = False
    shows: str = ""
    within_rule: bool = False  # whether the error rule of reference/amla_report.py is claimed
    extra: dict = field(default_factory=dict)

    def problem(self) -> AttentionProblem:
        """Return the validated attention problem of the kernel view."""
        return decode_problem(self.q, self.kv_cache, cache_seqlens=self.cache_seqlens, scale=self.scale,
                              causal=self.causal, config=self.config)

    def conventions(self) -> dict:
        """Return the scalar conventions, JSON-able."""
        return {"scale": self.scale, "causal": self.causal, "block_k": self.block_k,
                "kv_lora_rank": self.config.kv_lora_rank, "qk_rope_head_dim": self.config.qk_rope_head_dim,
                "causal_alignment": "bottom_right"}


def _bf16(x) -> np.ndarray:
    return round_to(x, Format.BF16)


def _base(rng, heads: int, keys: int, config: MLAConfig, spread: float = 0.5, sq: int = 1):
    """Return (q (1, sq, heads, W), cache (1, keys, 1, W)) with N(0, spread^2) entries and quiet RoPE channels."""
    width = config.latent_dim
    q = _bf16(rng.normal(0.0, spread, size=(1, sq, heads, width)))
    kv = _bf16(rng.normal(0.0, spread, size=(1, keys, 1, width)))
    q[..., ROPE] = 2.0
    kv[..., ROPE] = 0.0
    return q, kv


def zero_hole(seed: int, block: int, config: MLAConfig = NARROW) -> AmlaCase:
    """Return the zero hole: V channel 0 exactly 0 in block 1, a logit jump of ~4 at the first key of block 2."""
    rng = np.random.default_rng(seed)
    q, kv = _base(rng, 4 if block < 512 else 16, block + 1, config)
    kv[0, :block, 0, 0] = 0.0  # O[:, 0] = P~ V[:, 0] = 0 exactly after block 1
    kv[0, block, 0, ROPE] = 4.0  # logit += scale * 2 * 4 = 4: dn ~ -6 at block 2
    return AmlaCase(f"amla_zero_hole_b{block}_s{seed}", "zero_hole", q, kv, np.array([block + 1]), 0.5, block, seed,
                    config, shows="channel 0 is lost: cann outputs 0, the exact value is not 0")


def zero_hole_escape(seed: int, block: int, config: MLAConfig = NARROW) -> AmlaCase:
    """Return the escaping zero hole: channel 0 zero in block 1, then four logit jumps of 22."""
    rng = np.random.default_rng(seed)
    q, kv = _base(rng, 4 if block < 512 else 16, 4 * block + 1, config, spread=0.25)
    q[..., ROPE] = 8.0
    kv[0, :block, 0, 0] = 0.0
    for i in range(1, 5):
        kv[0, i * block, 0, ROPE] = 11.0 * i  # logit = 0.25 * 8 * 11 i = 22 i: dn = -32 -> clamped to -30
    return AmlaCase(f"amla_zero_hole_escape_b{block}_s{seed}", "zero_hole_escape", q, kv, np.array([4 * block + 1]),
                    0.25, block, seed, config, shows="channel 0 is a large wrong number: the corrupted zero "
                                                     "decayed below the 1e10 guard")


def guard_large(seed: int, block: int, config: MLAConfig = NARROW) -> AmlaCase:
    """Return |V| ~ 2^30 over two blocks: |O| exceeds 1e10 and the guard zeroes correct outputs."""
    rng = np.random.default_rng(seed)
    q, kv = _base(rng, 4 if block < 512 else 16, 2 * block, config, spread=0.1)
    latent = config.kv_lora_rank
    kv[..., :latent] = _bf16(2.0**30 * (1 + np.abs(kv[..., :latent])))  # positive: no cancellation in O
    q[..., :latent] = _bf16(q[..., :latent] * 2.0**-30)  # keeps the logits O(1)
    return AmlaCase(f"amla_guard_large_b{block}_s{seed}", "guard_large", q, kv, np.array([2 * block]), 0.5, block,
                    seed, config, shows="outputs ~2^30 are zeroed: |O| = |out| l r^ > 1e10")


def tiny_values(seed: int, block: int, config: MLAConfig = NARROW) -> AmlaCase:
    """Return |V| ~ 2^-120 and a logit jump of ~8 in block 2: O below 2^-95 is corrupted by the rescale."""
    rng = np.random.default_rng(seed)
    q, kv = _base(rng, 4 if block < 512 else 16, 2 * block, config, spread=0.1)
    latent = config.kv_lora_rank
    kv[..., :latent] = _bf16(2.0**-120 * (1 + np.abs(kv[..., :latent])))
    q[..., :latent] = _bf16(q[..., :latent] * 2.0**120)
    kv[0, block, 0, ROPE] = 8.0  # logit += 8: dn ~ -12 while O's exponent field is ~10
    return AmlaCase(f"amla_tiny_values_b{block}_s{seed}", "tiny_values", q, kv, np.array([2 * block]), 0.5, block,
                    seed, config, shows="outputs ~2^-120 are lost: the INT32 add underflows O past the sign bit")


def random_mtp(seed: int, block: int, sq: int, config: MLAConfig = NARROW) -> AmlaCase:
    """Return regular inputs: 2 sequences (lengths 4.5 and 2.5 blocks), causal MTP with ``sq`` queries, 16 heads."""
    rng = np.random.default_rng(seed)
    keys = 4 * block + block // 2
    width = config.latent_dim
    q = _bf16(rng.normal(0.0, 1.0, size=(2, sq, 16, width)))
    kv = _bf16(rng.normal(0.0, 1.0, size=(2, keys, 1, width)))
    lengths = np.array([keys, 2 * block + block // 2])
    return AmlaCase(f"amla_random_sq{sq}_b{block}_s{seed}", "random", q, kv, lengths, 0.5, block, seed, config,
                    causal=True, shows="regular inputs: cann within the error rule", within_rule=True)


def case_table(level: str = "quick") -> list[AmlaCase]:
    """Return the cases of ``level`` ("quick": blocks of 8; "full": also blocks of 512 and the 576/512 geometry)."""
    require(level in LEVELS, ConventionError, f"level: expected one of {LEVELS}, got {level!r}")
    blocks = (8,) if level == "quick" else (8, 512)
    table = []
    for block in blocks:
        table += [zero_hole(1, block), zero_hole_escape(2, block), guard_large(3, block), tiny_values(4, block)]
        table += [random_mtp(10 + sq, block, sq) for sq in (1, 2, 3, 4)]
    if level == "full":
        table.append(zero_hole(5, 512, DEEPSEEK_V3))
    return table


def _kernel_layout(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, 1, 2)  # (B, Hq, Sq, Dv) -> (B, s_q, h_q, Dv)


def expected_of(case: AmlaCase) -> dict[str, np.ndarray]:
    """Return the expected arrays: the oracle's out / lse / out_bf16 and the spec's bit-exact ``cann`` output."""
    problem = case.problem()
    oracle = oracle_from_problem(problem)
    cann, _ = amla_from_problem(problem, "cann", POLICY_AMLA, case.block_k)
    return {"out": _kernel_layout(oracle.out), "lse": oracle.lse,
            "out_bf16": _kernel_layout(oracle.rounded(Format.BF16)[0]), "out_amla_cann": _kernel_layout(cann)}


def lost_elements(expected: dict[str, np.ndarray]) -> list[tuple[int, ...]]:
    """Return the indices where the shipped kernel outputs 0 and the exact output is not 0."""
    lost = (expected["out_amla_cann"] == 0) & (expected["out"] != 0)
    return [tuple(int(i) for i in idx) for idx in np.argwhere(lost)]


def amla_cases(level: str = "quick") -> Iterator[tuple[str, dict, dict, dict]]:
    """Yield ``(name, inputs, expected, meta)`` for every AMLA case of ``level``."""
    for case in case_table(level):
        expected = expected_of(case)
        inputs = {"q": case.q, "kv_cache": case.kv_cache, "cache_seqlens": case.cache_seqlens}
        meta = {"kind": case.kind, "seed": case.seed, "shows": case.shows, "conventions": case.conventions(),
                "within_rule": case.within_rule, "lost": lost_elements(expected), "source": "spec/amla.py (cann), "
                "ops-transformer@c29bc10; expected out from the mpmath oracle"}
        yield case.name, inputs, expected, meta
