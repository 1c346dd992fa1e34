"""Split-KV (flash-decoding): partial results over key ranges and their exact LSE combine.

Normative sources: the combine of FlashAttention-3, ``hopper/test_flash_attn.py::
attention_combine_ref`` (Dao-AILab/flash-attention @ 0251105), and FlashMLA's split-KV
decode (deepseek-ai/FlashMLA @ 9241ae3):

    lse  = log sum_s exp(lse_s)
    O    = sum_s exp(lse_s - lse) O_s

where split s covers keys [a_s, a_{s+1}) and (O_s, lse_s) is attention restricted to those
keys (O_s normalised, lse_s = -inf for a split with no admissible key). In exact arithmetic
the combine equals attention over all keys (``proofs/split_kv_combine.py``).

Decision (2026-11-28): a split with no admissible key has lse_s = -inf and O_s = 0, and its
weight is exactly 0. The max used for the stable log-sum-exp is replaced by 0 when every
split is empty, so an all-empty row never computes (-inf) - (-inf); cf. ROCm/aiter#4711,
where a fully masked MTP split poisoned the combine with NaN.
"""

from __future__ import annotations

import numpy as np

from .attention import AttentionResult, check_strict
from .errors import ShapeError, require
from .flash import POLICY_FP32, flash_finalize, flash_state
from .policy import PrecisionPolicy, require_policy
from .problem import AttentionProblem, attention_problem


def split_boundaries(sk: int, num_splits: int, block_k: int) -> list[int]:
    """Return split boundaries 0 = a_0 <= ... <= a_n = sk, each a multiple of ``block_k`` except sk.

    Splits get ceil(blocks / num_splits) KV blocks each, as flash-decoding schedules them;
    trailing splits may be empty.
    """
    for name, value in (("num_splits", num_splits), ("block_k", block_k)):
        require(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1, ShapeError,
                f"{name}: expected a positive int, got {value!r}")
    require(isinstance(sk, (int, np.integer)) and sk >= 0, ShapeError, f"sk: expected an int >= 0, got {sk!r}")
    blocks = -(-sk // block_k)
    per_split = max(1, -(-blocks // num_splits))
    return [min(sk, i * per_split * block_k) for i in range(num_splits)] + [sk]


def split_partials(problem: AttentionProblem, boundaries: list[int], policy: PrecisionPolicy,
                   block_k: int) -> list[AttentionResult]:
    """Return one normalised partial (O_s in the accumulate format, lse_s) per key range."""
    sk = problem.k.shape[2]
    require(len(boundaries) >= 2 and boundaries[0] == 0 and boundaries[-1] == sk
            and all(a <= b for a, b in zip(boundaries, boundaries[1:])), ShapeError,
            f"boundaries: expected a non-decreasing list from 0 to Sk={sk}, got {boundaries}")
    partials = []
    for start, stop in zip(boundaries, boundaries[1:]):
        state = flash_state(problem.key_slice(start, stop), policy, block_k)
        partials.append(flash_finalize(state, policy, empty_lse=-np.inf, partial=True))
    return partials


def combine(partials: list[AttentionResult], policy: PrecisionPolicy, empty_lse: float = -np.inf) -> AttentionResult:
    """Return the exact LSE combine of split partials, rounded where ``policy`` says."""
    require_policy(policy)
    require(len(partials) >= 1, ShapeError, "partials: expected at least one partial result")
    for i, part in enumerate(partials):
        require(part.out.shape == partials[0].out.shape and part.lse.shape == part.out.shape[:-1], ShapeError,
                f"partials[{i}]: expected out {partials[0].out.shape} and lse {partials[0].out.shape[:-1]} "
                f"(from partials[0]), got {part.out.shape} and {part.lse.shape}")
    lses = np.stack([p.lse for p in partials])  # (n, B, Hq, Sq)
    outs = np.stack([p.out for p in partials])  # (n, B, Hq, Sq, Dv)
    lse_max = np.max(lses, axis=0)  # (B, Hq, Sq)
    empty = lse_max == -np.inf
    shift = np.where(empty, 0.0, lse_max)
    weights = policy.exp(policy.to_softmax(lses - shift))  # exp(-inf) = 0 for empty splits
    total = policy.sum(weights, axis=0)[0]  # (B, Hq, Sq)
    lse = policy.to_softmax(shift + policy.log(np.where(empty, 1.0, total)))
    scales = policy.exp(policy.to_softmax(lses - lse))  # exp(lse_s - lse), 0 for empty splits
    out = policy.to_accumulate(np.zeros(outs.shape[1:]))
    for s in range(len(partials)):  # in split order, as the combine kernel accumulates
        out = policy.to_accumulate(out + policy.to_accumulate(scales[s][..., None] * outs[s]))
    out = np.where(empty[..., None], 0.0, policy.to_output(out))
    lse = np.where(empty, empty_lse, lse)
    return AttentionResult(out=out, lse=lse)


def split_kv_attention(q, k, v, *, num_splits: int = 2, block_k: int = 64,
                       policy: PrecisionPolicy = POLICY_FP32, strict: bool = False,
                       **conventions) -> AttentionResult:
    """Return flash-decoding's result: FlashAttention per split, then the LSE combine."""
    problem = attention_problem(q, k, v, **conventions)
    if strict:
        check_strict(problem, policy)
    bounds = split_boundaries(problem.k.shape[2], num_splits, block_k)
    return combine(split_partials(problem, bounds, policy, block_k), policy, problem.empty_lse)
