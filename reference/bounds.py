"""A-priori forward error bounds for the spec's own evaluations of attention.

These bounds say how far :func:`spec.attention.softmax_attention`, :mod:`spec.flash` and
:mod:`spec.split_kv`, run under a :class:`spec.policy.PrecisionPolicy`, may be from the
exact result (the oracle). The tests and ``attnspec verify`` compare against the oracle
with exactly these bounds, so a bound that is too loose hides bugs and one that is too
tight fails; both are derived here, step by step. Notation: u_F = 2**-p of format F
(unit roundoff), gamma_n = n u / (1 - n u) (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., Lemma 3.1), V_d = max over admitted keys of |v_{jd}|.

**Lemma (perturbed weights).** Let w_j > 0 be exact weights, L = sum w_j, N_d = sum w_j v_jd,
and let the computation produce N^_d, L^ with |N^_d - N_d| <= eps sum w_j |v_jd| and
|L^ - L| <= eps L, eps < 1. Then |N^_d/L^ - N_d/L| <= 2 eps/(1 - eps) V_d.
Proof: |N^/L^ - N/L| <= |N^ - N|/L^ + |N| |L^ - L|/(L L^) <= eps L V/((1-eps)L) + L V eps L/(L L (1-eps)).

**The error budget tau.** Every rounding a weight's contribution passes through multiplies it
by a factor in [e^-t, e^t] for a known t; tau is the sum of those t, and eps = e^tau - 1.
A rounding to nearest in F is a factor (1 + d), |d| <= u_F, i.e. t = log1p(u_F)... we use
t = u_F / (1 - u_F) >= -log(1 - u_F). For key j in KV block b of T blocks:

1. Logit: S^_j = fl(fl(dot) * fl(scale)). With the "exact" rule the dot is rounded once
   (u_acc); otherwise |fl(dot) - dot| <= gamma_Dk sum_d |q_d k_jd| (any order, incl. BLAS).
   Then scale and the product round in the softmax format: |S^_j - S_j| <= sigma_j with
   sigma_j = |scale| ((1+u_sm)^2 (|dot| + delta_dot) - |dot|). The weight exp(S^_j - m)
   differs from exp(S_j - m) by a factor e^{+-sigma}, sigma = max_j sigma_j. (Softcap
   adds, since |tanh'| <= 1: sigma + |cap| (gamma_4 of the softmax format).)
2. The subtraction S^_j - m rounds with relative error u_sm: an absolute error u_sm |S^_j - m|,
   i.e. a factor e^{+-u_sm X}, X = max_j |S^_j - m_b| <= 2 max_j |S^_j|.
3. exp is numpy's binary64 exp (<= 1 ulp of binary64, 2**-52 relative) then rounded: t_exp = u_sm + 2**-52.
4. P is cast to the matmul input format before P V: t = u_in (0 when that is the softmax format).
5. The P V dot and the row sum l each round once: by |fl(sum) - sum| <= u |sum| <= u sum |terms|
   this is a per-term factor t = u_acc (resp. u_sm) in the lemma's sense. Under the
   "sequential" rule it is gamma_{n} instead (n terms).
6. Each of the T - 1 rescales: alpha = fl(exp(fl(m_old - m_new))) contributes t_exp and a
   subtraction error u_sm |m_old - m_new|; the sum of |m_old - m_new| over all rescales
   is m_T - m_1 <= 2 max|S^|. The updates fl(fl(alpha O) + PV) and fl(fl(alpha l) + rowsum)
   contribute two roundings each (u_acc for O, u_sm for l).
7. Final O * fl(1/l): three roundings (reciprocal, product, cast to the output format),
   outside the lemma: an absolute error <= gamma-like (1+u)^3 - 1 times |N^/L^| <= (1+eps)/(1-eps) V.

The naive definition (``softmax_attention``) is the case T = 1, with the division p/l and the
cast of the normalised weights in place of step 7 (same count). Split-KV adds, per split,
the LSE error (below) and the combine's exp, products and sums.

**LSE.** lse^ = fl(m + fl(log l^)): |lse^ - lse| <= |log(1 + beta)| + u_log |log l^| + u_sm |lse^|
with |beta| <= eps, i.e. <= eps/(1 - eps) + 2**-52 |log l^| + u_sm (|log l^| + |lse^|).

Every bound returned here is multiplied by ``SAFETY`` = 1 + 2**-20 to absorb the float64
evaluation of the bound itself.
"""

from __future__ import annotations

import math

import numpy as np

from attnspec.spec.errors import ConventionError, ShapeError, require
from attnspec.spec.formats import Format
from attnspec.spec.policy import PrecisionPolicy, require_policy
from attnspec.spec.problem import AttentionProblem
from attnspec.spec.split_kv import split_boundaries

SAFETY = 1 + 2.0 ** -20
_EXP64 = 2.0 ** -52  # numpy's binary64 exp and log: within 1 ulp


def _t(u: float) -> float:
    """Return t with (1 + d) in [e^-t, e^t] for every |d| <= u."""
    return u / (1 - u)


def _gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


def _u(fmt: Format) -> float:
    return fmt.info.unit_roundoff if fmt is not Format.FP64 else 2.0 ** -53


def _row_stats(problem: AttentionProblem, policy: PrecisionPolicy):
    """Return (sigma, max|S|) per row (B, Hq, Sq, 1), from exact-in-float64 magnitudes."""
    q = np.abs(problem.q)
    k = np.abs(problem.k_per_q_head())
    magnitude = np.matmul(q, np.swapaxes(k, -1, -2)) * (1 + _gamma(q.shape[-1], 2.0 ** -53))  # >= sum |q k|
    u_acc, u_sm, u_in = _u(policy.accumulate), _u(policy.softmax), _u(policy.matmul_input)
    dk = q.shape[-1]
    if policy.matmul_input is Format.FP64:
        dot_err = _gamma(dk, 2.0 ** -53) * magnitude
    elif policy.accumulation == "sequential":
        dot_err = _gamma(dk, u_acc) * magnitude
    else:
        dot_err = u_acc * magnitude
    # Inputs are rounded to the matmul input format first: each product gains (1+u_in)^2.
    dot_err = dot_err + ((1 + u_in) ** 2 - 1) * magnitude * (policy.matmul_input is not Format.FP64)
    scale = abs(problem.scale)
    sigma = scale * ((1 + u_sm) ** 2 * (magnitude + dot_err) - magnitude)
    if problem.scale_is_default:
        sigma = sigma + 2.0 ** -52 * scale * magnitude  # 1/sqrt(Dk) in binary64 is itself rounded
    s_max = scale * (magnitude + dot_err) * (1 + u_sm) ** 2
    if problem.softcap is not None:
        sigma = np.minimum(sigma, 2 * problem.softcap) + problem.softcap * _gamma(4, u_sm)
        s_max = np.minimum(s_max, problem.softcap * (1 + _gamma(4, u_sm)))
    if problem.bias is not None:
        finite_bias = np.where(np.isfinite(problem.bias_full()), problem.bias_full(), 0.0)
        s_max = s_max + np.abs(finite_bias)
        sigma = sigma + u_sm * (s_max + np.abs(finite_bias))
    admitted = problem.allowed
    sigma = np.max(np.where(admitted, sigma, 0.0), axis=-1, keepdims=True, initial=0.0)
    s_max = np.max(np.where(admitted, s_max, 0.0), axis=-1, keepdims=True, initial=0.0)
    return sigma, s_max


def attention_error_bound(problem: AttentionProblem, policy: PrecisionPolicy, *, algorithm: str = "flash",
                          block_k: int = 128, num_splits: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Return (bound on |O^ - O| (B, Hq, Sq, Dv), bound on |LSE^ - LSE| (B, Hq, Sq)).

    ``algorithm``: "naive" (spec.attention.softmax_attention), "flash" (spec.flash) or
    "split" (spec.split_kv with ``num_splits`` splits of ``block_k``-key blocks).
    Rows without an admissible key have bound 0 (their result is defined exactly).
    """
    require(isinstance(problem, AttentionProblem), ShapeError,
            f"problem: expected an AttentionProblem (spec.problem.attention_problem), got {type(problem).__name__}")
    require_policy(policy)
    require(algorithm in ("naive", "flash", "split"), ConventionError,
            f"algorithm: expected 'naive', 'flash' or 'split', got {algorithm!r}")
    split_boundaries(problem.k.shape[2], num_splits, block_k)  # raises on a bad block_k or num_splits
    sigma, s_max = _row_stats(problem, policy)  # (B, Hq, Sq, 1)
    u_acc, u_sm, u_in, u_out = (_u(f) for f in (policy.accumulate, policy.softmax, policy.matmul_input, policy.output))
    sk = problem.k.shape[2]
    log_sk = math.log(max(sk, 1))
    blocks = 1 if algorithm == "naive" else max(1, -(-sk // block_k))
    terms = sk if algorithm == "naive" else min(block_k, max(sk, 1))
    if policy.accumulation == "sequential":
        t_sum = _t(_gamma(terms, max(u_acc, u_sm)))
    else:
        t_sum = _t(max(u_acc, u_sm))
    t_exp = _t(u_sm + _EXP64)
    tau = (sigma  # step 1
           + _t(u_sm) * 2 * s_max  # step 2
           + t_exp  # step 3
           + (_t(u_in) if policy.matmul_input is not policy.softmax else 0.0)  # step 4
           + t_sum  # step 5
           + (blocks - 1) * (t_exp + 2 * max(_t(u_acc), _t(u_sm))) + _t(u_sm) * 2 * s_max)  # step 6
    if algorithm == "naive":
        tau = tau + _t(u_sm) + _t(u_in)  # the normalised weights p/l are rounded, then cast
    # The lemma needs eps < 1; beyond that the a-priori analysis says nothing: the bound is +inf.
    eps = np.where(tau < np.log(2), np.expm1(np.minimum(tau, np.log(2))), np.inf)
    rel = np.where(eps < 1, eps / np.where(eps < 1, 1 - eps, 1.0), np.inf)  # eps / (1 - eps)
    lemma = 2 * rel
    lse_err = (rel + (_EXP64 + u_sm) * (log_sk + rel)
               + u_sm * (s_max + log_sk + 1))  # LSE paragraph of the module docstring
    if algorithm != "split":
        final = (1 + u_sm) * (1 + u_acc) * (1 + u_out) - 1  # step 7
        out_rel = lemma + final * (1 + rel) * (1 + eps)
    else:
        partial = lemma + ((1 + u_sm) * (1 + u_acc) - 1) * (1 + rel) * (1 + eps)  # partials stay in accumulate
        spread = 2 * (s_max + log_sk)  # |lse_s - shift| and |lse_s - lse| are at most this
        lse_comb = (lse_err + u_sm * spread + t_exp + _t(_gamma(num_splits, u_sm))
                    + (_EXP64 + u_sm) * math.log(num_splits) + u_sm * (s_max + log_sk + 1))
        t_c = lse_err + lse_comb + u_sm * spread + t_exp  # error budget of each combine weight exp(lse_s - lse)
        g = _gamma(num_splits + 1, u_acc)
        out_rel = np.expm1(t_c) + np.exp(t_c) * partial + g * np.exp(t_c) * (1 + partial)
        out_rel = out_rel + u_out * (1 + out_rel)
        lse_err = lse_comb
    v = np.abs(problem.v_per_q_head())  # (B, Hq, Sk, Dv)
    v_max = np.max(np.where(problem.allowed[..., None], v[:, :, None], 0.0), axis=-2, initial=0.0)
    empty = ~np.any(problem.allowed, axis=-1)  # (B, Hq, Sq)
    out_bound = np.where(empty[..., None], 0.0, out_rel * v_max) * SAFETY
    lse_bound = np.where(empty, 0.0, lse_err[..., 0]) * SAFETY
    return out_bound, lse_bound


def exceeds(computed: np.ndarray, exact: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Return True where |computed - exact| > bound (equal infinities and NaNs never exceed)."""
    same = (computed == exact) | (np.isnan(computed) & np.isnan(exact))
    with np.errstate(invalid="ignore"):
        return ~same & ~(np.abs(computed - exact) <= bound)
