"""Checks of the MLA spec for ``attnspec verify``, and the test data they share with the test suite.

- ``mla.naive_vs_absorbed``: the two forms of :mod:`spec.mla`, evaluated in binary64 on a
  tiny config, agree within :func:`naive_absorbed_bound` (derived below). They are equal in
  real arithmetic (``proofs/mla_absorption.py``), so the bound is pure rounding.
- ``mla.decode_vs_oracle``: the kernel view :func:`spec.mla.mla_decode` on a paged cache
  with a randomly permuted block table, NaN in every unused slot and lengths 0, 1 (shorter
  than s_q, so a causal query has no key) and 7, against the mpmath oracle on the dense
  cache built independently of :func:`spec.paged.gather_paged`, within
  :func:`reference.bounds.attention_error_bound`, for the definition and FlashAttention
  under FP64 and under FlashMLA's BF16-in / FP32-softmax policy.

**Derivation of the naive/absorbed bound (binary64, u = 2**-53, gamma_n = nu/(1-nu)).**
Let o* be exact MLA. Both forms start from the same q_nope, q_pe, c, k_pe and float scale.

1. Naive: k_nope = fl(W_UK c_t) and v_t = fl(W_UV c_t) carry errors <= gamma_r |W||c_t|
   (any summation order), so its logits differ from the exact ones by at most
   delta_t = |scale| gamma_r |q_nope|^T |W_UK| |c_t|.
   Absorbed: q~ = fl(W_UK^T q_nope) errs by <= gamma_n |W_UK|^T |q_nope|, the same form with
   gamma_n (n = qk_nope_head_dim). K = [c ; k_pe] and V = c are exact.
2. Logits off by <= delta = max_t delta_t change each softmax weight by a factor in
   [e^-2delta, e^2delta], hence sum_t |p'_t - p_t| <= eps = e^{2 delta} - 1.
3. Naive: the exact attention of its (perturbed) problem is within
   eps max_t |v_t| + gamma_r max_t |W_UV||c_t| of o*; the spec's evaluation of that problem is
   within ``attention_error_bound(problem, FP64, "naive")`` of its exact attention.
4. Absorbed: likewise o~ is within E = eps max_t |c_t| + attention_error_bound of the exact
   latent output o~*, and o = fl(W_UV o~) is within |W_UV| E + gamma_r |W_UV||o~| of W_UV o~* = o*.
5. |o_naive - o_absorbed| <= (bound 3) + (bound 4). For the LSE, logsumexp is 1-Lipschitz in
   the max norm: |lse_naive - lse_absorbed| <= delta_naive + delta_absorbed + both LSE bounds.

Magnitudes are computed in binary64 and the result multiplied by ``bounds.SAFETY``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnspec.reference.bounds import SAFETY, attention_error_bound, exceeds
from attnspec.reference.oracle import oracle_from_problem
from attnspec.registry import Outcome, check
from attnspec.spec.attention import POLICY_FP64
from attnspec.spec.formats import Format, round_to
from attnspec.spec.mla import MLAConfig, MLAWeights, absorbed_problem, mla_attention, mla_decode, mla_latents, \
    mla_queries, naive_problem
from attnspec.spec.policy import PrecisionPolicy
from attnspec.spec.problem import attention_problem

#: A config small enough for the oracle: latent rows 8 + 4 = 12 wide, 4 heads.
TINY = MLAConfig(hidden=16, n_heads=4, q_lora_rank=8, kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=4,
                 v_head_dim=4, original_seq_len=16, max_seq_len=64)
#: FlashMLA's precision: BF16 operands and output, FP32 accumulation and softmax.
POLICY_FLASHMLA = PrecisionPolicy(Format.BF16, Format.FP32, Format.FP32, Format.BF16, name="flashmla-bf16")
#: FlashMLA's test sentinel for block-table entries past a sequence's last page.
UNUSED_BLOCK = 2147480000

_U = 2.0 ** -53


def _gamma(n: int) -> float:
    return n * _U / (1 - n * _U)


def _row_max(x: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Return max over admitted keys of x (..., Sk) -> (..., 1); 0 for a row without keys."""
    return np.max(np.where(allowed, x, 0.0), axis=-1, keepdims=True, initial=0.0)


def naive_absorbed_bound(q_nope, q_pe, c, k_pe, weights: MLAWeights, config: MLAConfig, *,
                         scale: float | None = None, **conventions) -> tuple[np.ndarray, np.ndarray]:
    """Return bounds on |o_naive - o_absorbed| (B, H, S, v) and |lse_naive - lse_absorbed| (B, H, S) in binary64.

    Valid for ``mla_attention(..., policy=POLICY_FP64)``; the derivation is in the module docstring.
    """
    naive = naive_problem(q_nope, q_pe, c, k_pe, weights, config, scale=scale, **conventions)
    absorbed = absorbed_problem(q_nope, q_pe, c, k_pe, weights, config, scale=scale, **conventions)
    w_uk, w_uv = np.abs(weights.w_uk(config)), np.abs(weights.w_uv(config))  # (H, n, r), (H, v, r)
    abs_c = np.abs(c)  # (B, T, r)
    reach = np.einsum("bhsr,btr->bhst", np.einsum("bshn,hnr->bhsr", np.abs(q_nope), w_uk), abs_c)  # |q||W_UK||c_t|
    allowed = naive.allowed  # (B, H, S, T)
    rank, nope = config.kv_lora_rank, config.qk_nope_head_dim
    delta_naive = _row_max(abs(naive.scale) * _gamma(rank) * reach, allowed)  # (B, H, S, 1)
    delta_absorbed = _row_max(abs(naive.scale) * _gamma(nope) * reach, allowed)

    out_n, lse_n = attention_error_bound(naive, POLICY_FP64, algorithm="naive")
    v_reach = np.einsum("hvr,btr->bhtv", w_uv, abs_c)  # |W_UV||c_t|, (B, H, T, v)
    admitted = allowed[..., None]  # (B, H, S, T, 1)
    v_max = np.max(np.where(admitted, np.abs(naive.v)[:, :, None], 0.0), axis=-2, initial=0.0)  # (B, H, S, v)
    reach_max = np.max(np.where(admitted, v_reach[:, :, None], 0.0), axis=-2, initial=0.0)
    naive_bound = np.expm1(2 * delta_naive) * v_max + _gamma(rank) * reach_max + out_n

    out_a, lse_a = attention_error_bound(absorbed, POLICY_FP64, algorithm="naive")
    c_max = np.max(np.where(absorbed.allowed[..., None], abs_c[:, None, None], 0.0), axis=-2, initial=0.0)
    latent_err = np.expm1(2 * delta_absorbed) * c_max + out_a  # (B, H, S, r)
    o_latent = c_max + latent_err  # |o~| <= |o~*| + |o~ - o~*|, and o~* is a convex combination of the c_t
    absorbed_bound = np.einsum("hvr,bhsr->bhsv", w_uv, latent_err + _gamma(rank) * o_latent)
    lse_bound = delta_naive[..., 0] + delta_absorbed[..., 0] + lse_n + lse_a
    return (naive_bound + absorbed_bound) * SAFETY, lse_bound * SAFETY


# ----------------------------------------------------------------------------------------------
# Test data: a tiny MLA layer, and paged caches built the way FlashMLA's tests build them
# ----------------------------------------------------------------------------------------------

def tiny_layer(seed: int, batch: int = 2, tokens: int = 6, config: MLAConfig = TINY):
    """Return (weights, q_nope, q_pe, c, k_pe) of a seeded random layer applied to ``tokens`` random tokens."""
    rng = np.random.default_rng(seed)
    weights = MLAWeights.random(config, seed)
    x = rng.standard_normal((batch, tokens, config.hidden))
    return (weights, *mla_queries(x, weights, config), *mla_latents(x, weights, config))


@dataclass(frozen=True)
class PagedCase:
    """A paged latent cache and the dense cache it holds (built by hand, not by spec.paged)."""

    cache: np.ndarray  # (num_blocks, page, h_kv, D); NaN in every slot no sequence uses
    block_table: np.ndarray  # (B, max_blocks) int32; UNUSED_BLOCK past each sequence's last page
    lengths: np.ndarray  # (B,) int32
    dense: np.ndarray  # (B, h_kv, max_blocks * page, D); zero past each length


def paged_from_dense(dense: np.ndarray, lengths, page: int, rng: np.random.Generator, spare_blocks: int = 2) -> PagedCase:
    """Return a paged copy of ``dense`` (B, h_kv, S, D): pages scattered to a random permutation of blocks."""
    b, h_kv, s, d = dense.shape
    lengths = np.asarray(lengths, dtype=np.int32)
    max_blocks = -(-s // page)
    num_blocks = b * max_blocks + spare_blocks
    cache = np.full((num_blocks, page, h_kv, d), np.nan)
    table = np.full((b, max_blocks), UNUSED_BLOCK, dtype=np.int32)
    free = iter(rng.permutation(num_blocks))
    clean = np.zeros((b, h_kv, max_blocks * page, d))
    for i in range(b):
        for blk in range(-(-int(lengths[i]) // page)):
            table[i, blk] = next(free)
            for slot in range(page):
                t = blk * page + slot
                if t < lengths[i]:
                    cache[table[i, blk], slot] = dense[i, :, t]
                    clean[i, :, t] = dense[i, :, t]
    return PagedCase(cache=cache, block_table=table, lengths=lengths, dense=clean)


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

@check("mla.naive_vs_absorbed", "property")
def check_naive_vs_absorbed() -> Outcome:
    """Naive and absorbed MLA agree within the derived binary64 bound (causal prefill and a decode step)."""
    weights, q_nope, q_pe, c, k_pe = tiny_layer(seed=7, batch=2, tokens=6)
    cases = {"prefill": dict(q_nope=q_nope, q_pe=q_pe, causal=True),
             "decode-s_q=2": dict(q_nope=q_nope[:, -2:], q_pe=q_pe[:, -2:], causal=True,
                                  kv_seqlens=np.array([6, 3]))}
    worst, data = 0.0, {}
    for name, case in cases.items():
        qn, qp = case.pop("q_nope"), case.pop("q_pe")
        naive = mla_attention(qn, qp, c, k_pe, weights, TINY, form="naive", **case)
        absorbed = mla_attention(qn, qp, c, k_pe, weights, TINY, form="absorbed", **case)
        out_bound, lse_bound = naive_absorbed_bound(qn, qp, c, k_pe, weights, TINY, **case)
        bad = int(np.sum(exceeds(naive.out, absorbed.out, out_bound)) + np.sum(exceeds(naive.lse, absorbed.lse, lse_bound)))
        ratio = float(np.max(np.abs(naive.out - absorbed.out) / np.where(out_bound > 0, out_bound, np.inf)))
        worst = max(worst, ratio)
        data[name] = {"violations": bad, "max_err": float(np.max(np.abs(naive.out - absorbed.out))),
                      "max_bound": float(np.max(out_bound)), "err/bound": ratio}
    ok = all(d["violations"] == 0 for d in data.values())
    return Outcome.from_bool(ok, f"max |naive - absorbed| / bound = {worst:.3g} over {len(cases)} cases", data)


@check("mla.decode_vs_oracle", "oracle")
def check_decode_vs_oracle() -> Outcome:
    """The kernel view on a NaN-poisoned paged cache matches the oracle within attention_error_bound."""
    rng = np.random.default_rng(2026)
    width, page, s_q, h_q = TINY.latent_dim, 4, 2, 4
    lengths = [7, 1, 0]
    dense = round_to(rng.uniform(-1, 1, size=(len(lengths), 1, 8, width)), Format.BF16)  # (B, h_kv, S, 576')
    q = round_to(rng.uniform(-1, 1, size=(len(lengths), s_q, h_q, width)), Format.BF16)  # (B, s_q, h_q, 576')
    case = paged_from_dense(dense, lengths, page, rng)
    problem = attention_problem(np.swapaxes(q, 1, 2), case.dense, case.dense[..., :TINY.kv_lora_rank],
                                scale=TINY.softmax_scale, causal=True, kv_seqlens=case.lengths)
    oracle = oracle_from_problem(problem)
    runs = (("attention", POLICY_FP64), ("flash", POLICY_FP64), ("flash", POLICY_FLASHMLA))
    data, bad = {}, 0
    for algorithm, policy in runs:
        got = mla_decode(q, case.cache, block_table=case.block_table, cache_seqlens=case.lengths, causal=True,
                         config=TINY, policy=policy, algorithm=algorithm, block_k=page)
        out_bound, lse_bound = attention_error_bound(problem, policy, algorithm="naive" if algorithm == "attention"
                                                     else "flash", block_k=page)
        exact_out, exact_lse = oracle.out, oracle.lse  # correctly rounded to binary64: add its half ulp
        out_bound = out_bound + _U * np.abs(exact_out)
        lse_bound = lse_bound + _U * np.abs(np.where(np.isfinite(exact_lse), exact_lse, 0.0))
        out = np.swapaxes(got.out, 1, 2)  # (B, h_q, s_q, dv)
        n_bad = int(np.sum(exceeds(out, exact_out, out_bound)) + np.sum(exceeds(got.lse, exact_lse, lse_bound)))
        bad += n_bad
        err = np.abs(out - exact_out)
        data[f"{algorithm}/{policy.name}"] = {"violations": n_bad, "max_err": float(np.max(err)),
                                             "err/bound": float(np.max(err / np.where(out_bound > 0, out_bound, np.inf)))}
    empty_ok = bool(np.all(oracle.lse[1, :, 0] == -np.inf) and np.all(oracle.lse[2] == -np.inf))
    return Outcome.from_bool(bad == 0 and empty_ok and oracle.certified,
                             f"{len(runs)} runs, {bad} violations; lonely and empty rows give LSE -inf", data)
