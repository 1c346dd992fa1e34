"""FlashAttention-2 forward pass: the online-softmax recurrence over KV blocks.

Normative source: T. Dao, "FlashAttention-2", arXiv 2307.08691, Algorithm 1 (forward pass),
lines 8-13; the (-inf) guard and the reciprocal normalisation follow
Dao-AILab/flash-attention @ 0251105 ``csrc/flash_attn/src/softmax.h``.

Per query row, for KV blocks j = 1..T of ``block_k`` keys:

    S_j  = scale * Q K_j^T                    (Alg. 1 l.8; masks as in spec.attention)
    m_j  = max(m_{j-1}, rowmax(S_j))          (l.9)
    P_j  = exp(S_j - m_j)                     (l.9)
    l_j  = exp(m_{j-1} - m_j) l_{j-1} + rowsum(P_j)          (l.9)
    O_j  = exp(m_{j-1} - m_j) O_{j-1} + P_j V_j              (l.10)
    O    = O_T / l_T,   LSE = m_T + log l_T                  (l.12-13)

In exact arithmetic this equals :func:`spec.attention.attention` for every block size
(proved in ``proofs/online_softmax.py``). Rounding points under a policy: S into the
accumulate then the softmax format; m, P, l, the rescale factor and LSE in the softmax
format; P cast to the matmul input format before P V; O in the accumulate format; the final
O * (1/l) in the accumulate format, then the output format.

Decision (2026-11-28): the row max of a block with no admissible key is -inf, and the shift
uses 0 in its place (FA's ``max == -inf ? 0 : max``), so a fully masked block contributes
exactly nothing and never produces (-inf) - (-inf) = NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attention import AttentionResult, check_strict, logits
from .errors import ShapeError, require
from .formats import Format
from .policy import PrecisionPolicy, require_policy
from .problem import AttentionProblem, attention_problem

#: FP32 everywhere: the policy under which FlashAttention's recurrence is usually studied.
POLICY_FP32 = PrecisionPolicy.uniform(Format.FP32)


@dataclass(frozen=True)
class FlashState:
    """The running state after some KV blocks: unnormalised O, row max m and row sum l."""

    o: np.ndarray  # (B, Hq, Sq, Dv), accumulate format
    m: np.ndarray  # (B, Hq, Sq, 1), softmax format; -inf while no key has been admitted
    l: np.ndarray  # (B, Hq, Sq, 1), softmax format


def initial_state(problem: AttentionProblem) -> FlashState:
    """Return the state before any KV block: O = 0, m = -inf, l = 0."""
    b, hq, sq, _ = problem.q.shape
    dv = problem.v.shape[3]
    return FlashState(o=np.zeros((b, hq, sq, dv)), m=np.full((b, hq, sq, 1), -np.inf), l=np.zeros((b, hq, sq, 1)))


def flash_step(state: FlashState, block: AttentionProblem, policy: PrecisionPolicy) -> FlashState:
    """Return the state after one more KV block (Alg. 1 l.8-10)."""
    s = logits(block, policy)  # (B, Hq, Sq, bk)   l.8
    m_new = np.maximum(state.m, np.max(s, axis=-1, keepdims=True, initial=-np.inf))  # l.9
    m_shift = np.where(m_new == -np.inf, 0.0, m_new)  # softmax.h: max == -inf ? 0 : max
    p = policy.exp(policy.to_softmax(s - m_shift))  # l.9
    alpha = policy.exp(policy.to_softmax(state.m - m_shift))  # rescale factor; 0 on the first admitted block
    l_new = policy.to_softmax(policy.to_softmax(alpha * state.l) + policy.sum(p, axis=-1))  # l.9
    v = policy.to_input(block.v_per_q_head())  # (B, Hq, bk, Dv)
    pv = policy.matmul(policy.to_input(p), v)  # (B, Hq, Sq, Dv)
    o_new = policy.to_accumulate(policy.to_accumulate(alpha * state.o) + pv)  # l.10
    return FlashState(o=o_new, m=m_new, l=l_new)


def flash_finalize(state: FlashState, policy: PrecisionPolicy, empty_lse: float,
                   partial: bool = False) -> AttentionResult:
    """Return O = O_T / l_T and LSE = m_T + log l_T (Alg. 1 l.12-13), with empty rows defined.

    A ``partial`` result (one split of split-KV) keeps O in the accumulate format for the combine.
    """
    empty = state.m == -np.inf  # (B, Hq, Sq, 1)
    safe_l = np.where(empty, 1.0, state.l)
    inv_l = policy.to_softmax(1 / safe_l)  # softmax.h multiplies by the reciprocal
    out = policy.to_accumulate(state.o * inv_l)
    if not partial:
        out = policy.to_output(out)
    out = np.where(empty, 0.0, out)
    lse = policy.to_softmax(state.m + policy.log(safe_l))
    lse = np.where(empty, empty_lse, lse)[..., 0]
    return AttentionResult(out=out, lse=lse)


def flash_state(problem: AttentionProblem, policy: PrecisionPolicy, block_k: int) -> FlashState:
    """Return the state after all KV blocks of ``problem``."""
    require_policy(policy)
    require(isinstance(block_k, (int, np.integer)) and not isinstance(block_k, bool) and block_k >= 1, ShapeError,
            f"block_k: expected a positive int, got {block_k!r}")
    state = initial_state(problem)
    sk = problem.k.shape[2]
    for start in range(0, sk, block_k):
        state = flash_step(state, problem.key_slice(start, min(start + block_k, sk)), policy)
    return state


def flash_from_problem(problem: AttentionProblem, policy: PrecisionPolicy = POLICY_FP32,
                       block_k: int = 128) -> AttentionResult:
    """Return the FlashAttention-2 forward result of a validated problem."""
    return flash_finalize(flash_state(problem, policy, block_k), policy, problem.empty_lse)


def flash_attention(q, k, v, *, block_k: int = 128, policy: PrecisionPolicy = POLICY_FP32,
                    strict: bool = False, **conventions) -> AttentionResult:
    """Return FlashAttention-2's O and LSE; ``conventions`` as in :func:`spec.attention.attention`."""
    problem = attention_problem(q, k, v, **conventions)
    if strict:
        check_strict(problem, policy)
    return flash_from_problem(problem, policy, block_k)
