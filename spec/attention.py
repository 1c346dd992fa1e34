"""Scaled dot-product attention: the normative definition.

    S   = scale * Q K^T                        (per query head h, with K, V of kv head h // G)
    S   = softcap * tanh(S / softcap)          (optional; before the mask)
    S   = S + bias;  S = -inf where masked     (causal / window / boolean mask / lengths)
    P   = softmax(S) along keys
    O   = P V
    LSE = log sum_j exp(S_j)                   (natural log of the scaled, capped, masked logits)

Conventions are decided in :mod:`spec.problem` and :mod:`spec.masks`; this module only
computes. With the default policy (all FP64) it is the definition evaluated in binary64;
the exact value is :mod:`reference.oracle`. With a low-precision policy it is the *naive
same-format implementation* that FlashAttention's tolerance rule compares against: logits
rounded into the accumulate format and then into the softmax format, the normalised P cast
to the matmul input format, O = P V accumulated and rounded into the output format.

Fully-masked row (no admissible key, including Sk = 0 and padded queries):
O = 0 and LSE = ``empty_lse`` (default -inf). Other anchors: FA2 reports +inf (-inf in its
split-KV partials), FA3 -inf, FlashMLA +inf, ONNX has no LSE and O = 0 (errata of
onnx/onnx#8068), PyTorch O = 0 (``_safe_softmax``). Every one of them returns O = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import Format, require_representable
from .policy import PrecisionPolicy, require_policy
from .problem import AttentionProblem, attention_problem

#: The definition evaluated in binary64 (not bit-reproducible across BLAS builds; see spec.policy).
POLICY_FP64 = PrecisionPolicy.uniform(Format.FP64)


@dataclass(frozen=True)
class AttentionResult:
    """O (B, Hq, Sq, Dv) and LSE (B, Hq, Sq), as float64 arrays holding values of their formats."""

    out: np.ndarray
    lse: np.ndarray


def logits(problem: AttentionProblem, policy: PrecisionPolicy) -> np.ndarray:
    """Return S (B, Hq, Sq, Sk): scaled, soft-capped, biased logits, -inf where masked."""
    q = policy.to_input(problem.q)  # (B, Hq, Sq, Dk)
    k = policy.to_input(problem.k_per_q_head())  # (B, Hq, Sk, Dk)
    qk = policy.matmul(q, np.swapaxes(k, -1, -2))  # (B, Hq, Sq, Sk), accumulate format
    scale = policy.to_softmax(problem.scale)  # the kernel holds the scale in a vector register
    s = policy.to_softmax(qk * scale)
    if problem.softcap is not None:
        cap = policy.to_softmax(problem.softcap)
        s = policy.to_softmax(cap * policy.to_softmax(np.tanh(policy.to_softmax(s / cap))))
    if problem.bias is not None:
        s = policy.to_softmax(s + problem.bias)
    return np.where(problem.allowed, s, -np.inf)


def empty_rows(s: np.ndarray) -> np.ndarray:
    """Return (…, 1) True where a row of logits has no admissible key (all -inf)."""
    return ~np.any(s > -np.inf, axis=-1, keepdims=True)


def softmax_attention(problem: AttentionProblem, policy: PrecisionPolicy = POLICY_FP64) -> AttentionResult:
    """Return the attention of a validated problem, rounding where ``policy`` says."""
    require_policy(policy)
    s = logits(problem, policy)  # (B, Hq, Sq, Sk)
    empty = empty_rows(s)  # (B, Hq, Sq, 1)
    # Shift by the row max; an empty row uses 0 so that (-inf) - (-inf) never appears.
    m = np.where(empty, 0.0, np.max(s, axis=-1, keepdims=True, initial=-np.inf))
    p = policy.exp(policy.to_softmax(s - m))  # exp(-inf) = 0 for masked keys
    l = policy.sum(p, axis=-1)  # (B, Hq, Sq, 1)
    safe_l = np.where(empty, 1.0, l)
    weights = policy.to_softmax(p / safe_l)
    v = policy.to_input(problem.v_per_q_head())  # (B, Hq, Sk, Dv)
    out = policy.to_output(policy.matmul(policy.to_input(weights), v))  # (B, Hq, Sq, Dv)
    out = np.where(empty, 0.0, out)
    lse = policy.to_softmax(m + policy.log(safe_l))
    lse = np.where(empty, problem.empty_lse, lse)[..., 0]  # (B, Hq, Sq)
    return AttentionResult(out=out, lse=lse)


def check_strict(problem: AttentionProblem, policy: PrecisionPolicy) -> None:
    """Raise FormatError unless Q, K and V are already values of the policy's matmul input format."""
    require_policy(policy)
    for name, arr in (("q", problem.q), ("k", problem.k), ("v", problem.v)):
        require_representable(arr, policy.matmul_input, name)


def attention(q, k, v, *, policy: PrecisionPolicy = POLICY_FP64, strict: bool = False,
              **conventions) -> AttentionResult:
    """Return softmax attention of Q, K, V under the conventions of :func:`spec.problem.attention_problem`.

    ``conventions`` are the keywords of ``attention_problem``: ``scale``, ``causal``,
    ``causal_alignment``, ``mask``, ``window``, ``softcap``, ``q_seqlens``, ``kv_seqlens``,
    ``empty_lse``. ``strict=True`` rejects inputs that are not already values of
    ``policy.matmul_input`` instead of rounding them.
    """
    problem = attention_problem(q, k, v, **conventions)
    if strict:
        check_strict(problem, policy)
    return softmax_attention(problem, policy)
