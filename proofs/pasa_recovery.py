"""PASA recovers softmax attention exactly, for every beta < 1 and every running reference.

Claim (``spec/pasa.py``, steps pre-13; chenglong92/PASA@14f5c6f ``PASA_Verification.py``
``pasa()``): in exact real arithmetic, with each KV block shifted by M = I - (beta/n) 1 1^T,

    K'_j = M K_j                         "temp_K = temp_K.permute(0, 1, 3, 2) @ M"
    r'   = rowmean(S')  (all n columns)  "S_ave = torch.mean(S, axis=-1, keepdim=True)"
    Delta = gamma (r' - R_j), delta = gamma (R_{j-1} - R_j),   gamma = beta / (1 - beta)

the state after the last block T carries, for every admitted key t of block j, the weight
exp(e_t) with

    e_t = (S'_t - m~_j) + (m~_j + Delta_j - m_j) + sum_{i=j+1..T} (m_{i-1} + delta_i - m_i)
        = S_t - (gamma R_T + m_T),

where S_t is the true logit: the exponent differs from S_t by one constant per row, so
O / l = sum_t e^{S_t} v_t / sum_t e^{S_t} (the normalisation theorem) is softmax attention.
This holds for *any* local maxima m~_j, running maxima m_j and references R_j: the maxima
only keep the arguments <= 0 (``proofs/pasa_overflow.py``), and the running mean is one
choice of reference. The one real requirement is that r' is the mean over every column M
acts on, masked and padded ones included.

The recurrence is written once, :func:`pasa_exponents`, over any arithmetic with + - * /:
Z3 terms for the theorems (symbolic beta, scores, references, maxima), Fractions for the
exact-rational property tests in ``tests/test_pasa_recovery.py``. Theorems:

- ``pasa.recovery.shift_inverse``: (I - (beta/n) J)(I + (gamma/n) J) = I, J = 1 1^T, n = 3.
- ``pasa.recovery.exponents``: e_t = S_t - C for 3 blocks of 3 keys, one key masked.
- ``pasa.recovery.normalisation``: a common factor kappa > 0 cancels in O / l.
- ``pasa.recovery.fixed_point_closed_form``: f/(1 + f) = 1 - (a - n b)/c (spec/pasa_beta.py).
- ``pasa.recovery.fixed_point_residual``: with the stored M~ = a I - b J and gamma = f,
  S' + gamma r' 1^T = c S + (a - c)(S - r 1^T): no error proportional to the block mean.
Negative controls (counterexamples): gamma = beta in the inverse; the mean over the admitted keys only; no re-basing by
delta; a stale reference in Delta; the normalisation with per-key factors; the closed form
without the (c - a)/a term; the residual for a gamma that is not f.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Sequence

import z3

from attnspec.proofs._core import ProofResult, prove, theorem

#: Shapes of the exponent theorem: blocks of ``N`` keys; key (block, index) ``MASKED`` is masked.
BLOCKS, N = 3, 3
MASKED = (1, 2)


def _max(a, b):
    """Return max(a, b) for numbers, or a Z3 If for terms."""
    if isinstance(a, z3.ArithRef) or isinstance(b, z3.ArithRef):
        return z3.If(a >= b, a, b)
    return max(a, b)


def block_mean(values: Sequence, admitted: Sequence[bool]):
    """Return the mean over every column of the block (PASA's pseudo-average, taken before masking)."""
    return sum(values[1:], values[0]) / len(values)


def admitted_mean(values: Sequence, admitted: Sequence[bool]):
    """Return the mean over the admitted columns only: the wrong pseudo-average (a negative control)."""
    kept = [x for x, ok in zip(values, admitted) if ok]
    return sum(kept[1:], kept[0]) / len(kept)


def pasa_exponents(scores: Sequence[Sequence], admitted: Sequence[Sequence[bool]], beta, gamma, *,
                   references: Sequence | None = None, local_max: Sequence | None = None,
                   running_max: Sequence | None = None, row_mean: Callable = block_mean,
                   rebase: bool = True, stale: bool = False) -> tuple[dict, object]:
    """Return ({(j, s): e_t}, C) for one query row: each admitted key's final exponent, and gamma R_T + m_T.

    ``scores[j][s]`` are the true logits S of block j (padded columns included). Missing
    ``references`` default to the running mean of the r' (``pasa()``'s ``S_ave_0``); missing
    maxima are the actual maxima (numbers only). ``row_mean``, ``rebase`` and ``stale``
    select the negative controls.
    """
    exps: dict = {}
    m = r_bar = None
    for j, (row, ok) in enumerate(zip(scores, admitted)):
        mean = block_mean(row, ok)
        shifted = [s - beta * mean for s in row]  # S' = S M (step 2)
        r = row_mean(shifted, ok)  # step 3
        r_old = r if r_bar is None else r_bar  # step 6
        r_bar = references[j] if references is not None else (r + j * r_old) / (j + 1)  # step 7
        offset = gamma * (r - (r_old if stale else r_bar))  # step 8: Delta
        delta = gamma * (r_old - r_bar) if rebase else 0  # step 8: delta
        m_loc = local_max[j] if local_max is not None else max(x for x, a in zip(shifted, ok) if a)
        cand_new = m_loc + offset
        cand_old = None if m is None else m + delta
        m_new = running_max[j] if running_max is not None else (cand_new if m is None else _max(cand_new, cand_old))
        for key in exps:  # step 10-11: the previous state is rescaled by exp(m + delta - m_new)
            exps[key] = exps[key] + (cand_old - m_new)
        for s, (x, a) in enumerate(zip(shifted, ok)):
            if a:  # P = exp(S' - m~), then exp(m~ + Delta - m_new)
                exps[(j, s)] = (x - m_loc) + (cand_new - m_new)
        m = m_new  # step 12
    return exps, gamma * r_bar + m


def _symbolic_row(prefix: str):
    """Return symbolic scores, references and maxima for the exponent theorem, and beta, gamma with their assumptions."""
    beta, gamma = z3.Reals(f"{prefix}beta {prefix}gamma")
    scores = [[z3.Real(f"{prefix}S{j}_{s}") for s in range(N)] for j in range(BLOCKS)]
    admitted = [[(j, s) != MASKED for s in range(N)] for j in range(BLOCKS)]
    refs = [z3.Real(f"{prefix}R{j}") for j in range(BLOCKS)]
    local = [z3.Real(f"{prefix}mloc{j}") for j in range(BLOCKS)]
    running = [z3.Real(f"{prefix}m{j}") for j in range(BLOCKS)]
    assumptions = [beta >= 0, beta < 1, gamma * (1 - beta) == beta]  # gamma = beta / (1 - beta)
    return scores, admitted, beta, gamma, refs, local, running, assumptions


def _exponent_claim(name: str, statement: str, expect: str, **variant) -> ProofResult:
    scores, admitted, beta, gamma, refs, local, running, assumptions = _symbolic_row("")
    exps, const = pasa_exponents(scores, admitted, beta, gamma, references=refs, local_max=local,
                                 running_max=running, **variant)
    claim = z3.And([exps[(j, s)] == scores[j][s] - const for (j, s) in exps])
    return prove(name, claim, assumptions, statement=statement, expect=expect)


def _shift_inverse(gamma_is_ratio: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    n = 3
    beta, gamma = z3.Reals("beta gamma")
    m = [[(1 if i == k else 0) - beta / n for k in range(n)] for i in range(n)]
    inv = [[(1 if i == k else 0) + gamma / n for k in range(n)] for i in range(n)]
    product = [[sum(m[i][t] * inv[t][k] for t in range(n)) for k in range(n)] for i in range(n)]
    claim = z3.And([product[i][k] == (1 if i == k else 0) for i in range(n) for k in range(n)])
    return claim, [beta >= 0, beta < 1, gamma * (1 - beta) == beta if gamma_is_ratio else gamma == beta]


@theorem("pasa.recovery.shift_inverse")
def prove_pasa_recovery_shift_inverse() -> ProofResult:
    """Return the proof that M^-1 = I + (gamma/n) 1 1^T for n = 3, symbolic beta (Sherman-Morrison)."""
    claim, assumptions = _shift_inverse(True)
    return prove("pasa.recovery.shift_inverse", claim, assumptions,
                 statement="(I - beta/n J)(I + gamma/n J) = I with gamma = beta/(1-beta), n = 3")


@theorem("pasa.recovery.shift_inverse.control")
def prove_pasa_recovery_control_shift_inverse() -> ProofResult:
    """Return the counterexample for gamma = beta (adding back only what was subtracted)."""
    claim, assumptions = _shift_inverse(False)
    return prove("pasa.recovery.shift_inverse.control", claim, assumptions, expect="refuted",
                 statement="gamma = beta does not invert the shift")


@theorem("pasa.recovery.exponents")
def prove_pasa_recovery_exponents() -> ProofResult:
    """Return the proof that every admitted key's final exponent is S_t - (gamma R_T + m_T)."""
    return _exponent_claim("pasa.recovery.exponents", expect="proved",
                           statement=f"e_t = S_t - (gamma R_T + m_T) for {BLOCKS} blocks of {N} keys, "
                                     "any beta in [0,1), references and maxima")


@theorem("pasa.recovery.exponents.control_admitted_mean")
def prove_pasa_recovery_control_admitted_mean() -> ProofResult:
    """Return the counterexample for a pseudo-average over the admitted keys only."""
    return _exponent_claim("pasa.recovery.exponents.control_admitted_mean", expect="refuted",
                           row_mean=admitted_mean, statement="r' over the admitted keys only (mean after masking)")


@theorem("pasa.recovery.exponents.control_no_rebase")
def prove_pasa_recovery_control_no_rebase() -> ProofResult:
    """Return the counterexample for a state that is never re-based by delta."""
    return _exponent_claim("pasa.recovery.exponents.control_no_rebase", expect="refuted", rebase=False,
                           statement="delta = 0: the previous state keeps the old reference")


@theorem("pasa.recovery.exponents.control_stale_reference")
def prove_pasa_recovery_control_stale_reference() -> ProofResult:
    """Return the counterexample for Delta = gamma (r' - R_{j-1})."""
    return _exponent_claim("pasa.recovery.exponents.control_stale_reference", expect="refuted", stale=True,
                           statement="Delta taken against the previous reference R_{j-1}")


def _normalisation(per_key: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    w = z3.Reals("w0 w1 w2")
    v = z3.Reals("v0 v1 v2")
    kappa = z3.Reals("k0 k1 k2") if per_key else [z3.Real("k")] * 3
    num = sum(kk * ww * vv for kk, ww, vv in zip(kappa, w, v))
    den = sum(kk * ww for kk, ww in zip(kappa, w))
    plain_num, plain_den = sum(ww * vv for ww, vv in zip(w, v)), sum(w)
    assumptions = [x >= 0 for x in w] + [plain_den > 0] + [k > 0 for k in kappa]
    return num * plain_den == plain_num * den, assumptions  # O/l = sum w v / sum w, cross-multiplied


@theorem("pasa.recovery.normalisation")
def prove_pasa_recovery_normalisation() -> ProofResult:
    """Return the proof that a common factor kappa = exp(-C) > 0 cancels in O / l (3 keys)."""
    claim, assumptions = _normalisation(per_key=False)
    return prove("pasa.recovery.normalisation", claim, assumptions,
                 statement="sum kappa w v / sum kappa w = sum w v / sum w for kappa > 0, w >= 0, sum w > 0")


@theorem("pasa.recovery.normalisation.control_per_key")
def prove_pasa_recovery_control_per_key() -> ProofResult:
    """Return the counterexample when each key gets its own factor (exponents off by different constants)."""
    claim, assumptions = _normalisation(per_key=True)
    return prove("pasa.recovery.normalisation.control_per_key", claim, assumptions, expect="refuted",
                 statement="a different factor per key does not cancel")


def _closed_form(with_diagonal_term: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    a, b, c, n, f = z3.Reals("a b c n f")
    # f = c n b / (a (a - n b)) + (c - a)/a, multiplied out: optimal_para.py obtainInvPam
    defining = f * a * (a - n * b) == c * n * b + ((c - a) * (a - n * b) if with_diagonal_term else 0)
    claim = f * c == (1 + f) * (c - (a - n * b))  # f/(1+f) = 1 - (a - n b)/c
    return claim, [defining, a > 0, a - n * b > 0, c > 0, n >= 1, b >= 0]


@theorem("pasa.recovery.fixed_point_closed_form")
def prove_pasa_recovery_fixed_point_closed_form() -> ProofResult:
    """Return the proof that the beta map f/(1+f) equals 1 - (M0 + (n-1) M1)/c."""
    claim, assumptions = _closed_form(True)
    return prove("pasa.recovery.fixed_point_closed_form", claim, assumptions,
                 statement="f = c n b/(a(a - n b)) + (c - a)/a  =>  f/(1 + f) = 1 - (a - n b)/c")


@theorem("pasa.recovery.fixed_point_closed_form.control")
def prove_pasa_recovery_control_closed_form() -> ProofResult:
    """Return the counterexample for the closed form without the (c - a)/a term."""
    claim, assumptions = _closed_form(False)
    return prove("pasa.recovery.fixed_point_closed_form.control", claim, assumptions, expect="refuted",
                 statement="f = c n b/(a(a - n b)) alone (optimal_para.py's comment) has another fixed point")


def _residual(gamma_is_f: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    n = 3
    a, b, c, gamma = z3.Reals("a b c gamma")
    s = z3.Reals("s0 s1 s2")  # unscaled scores q.k of one block
    shifted = [a * x - b * sum(s) for x in s]  # S' = S M~, M~ = a I - b J
    r_shift = sum(shifted) / n
    r = sum(s) / n
    assumptions = [a > 0, a - n * b > 0, c > 0]
    if gamma_is_f:
        assumptions.append(gamma * (a - n * b) == c - (a - n * b))  # gamma = f = f/(1+f) / (1 - f/(1+f))
    claim = z3.And([x + gamma * r_shift == c * y + (a - c) * (y - r) for x, y in zip(shifted, s)])
    return claim, assumptions


@theorem("pasa.recovery.fixed_point_residual")
def prove_pasa_recovery_fixed_point_residual() -> ProofResult:
    """Return the proof that at a fixed point the recovery error is (a/c - 1)(S - r 1^T), free of the block mean."""
    claim, assumptions = _residual(True)
    return prove("pasa.recovery.fixed_point_residual", claim, assumptions,
                 statement="gamma = f  =>  S' + gamma r' = c S + (a - c)(S - r), n = 3")


@theorem("pasa.recovery.fixed_point_residual.control")
def prove_pasa_recovery_control_residual() -> ProofResult:
    """Return the counterexample for a gamma that is not f (beta off its fixed point)."""
    claim, assumptions = _residual(False)
    return prove("pasa.recovery.fixed_point_residual.control", claim, assumptions, expect="refuted",
                 statement="any gamma: the error keeps a term (gamma - f) r'")


def exact_exponents(scores: Sequence[Sequence[Fraction]], admitted: Sequence[Sequence[bool]],
                    beta: Fraction, **variant) -> tuple[dict, Fraction]:
    """Return :func:`pasa_exponents` evaluated in exact rational arithmetic (gamma = beta/(1 - beta))."""
    beta = Fraction(beta)
    return pasa_exponents(scores, admitted, beta, beta / (1 - beta), **variant)
