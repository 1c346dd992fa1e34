"""Box-model overflow bounds for naive low-precision FlashAttention and for PASA.

The box model (the PASA paper's random benchmark, arXiv:2503.01873): every entry of q lies in
[b_q - A_q, b_q + A_q], every entry of k in [b_k - A_k, b_k + A_k], |v| <= V, and the box ends
are values of the GEMM input format. A format F "overflows" at an operation whose exact
result x has |x| >= the rounding threshold of F (65520 for FP16): roundTiesToEven gives inf.

**Naive FP16 FA** (S = Q K^T stored in the accumulate format before scaling, as
:mod:`spec.flash` does under a uniform policy). With M_q = |b_q| + A_q:

- *possible*: some input in the box overflows  iff  d M_q M_k >= threshold (take every
  q_c, k_c at the end of largest magnitude: all d products have the same sign);
- *certain*: every input overflows  iff  both boxes exclude 0 (|b| > A) and
  d (|b_q| - A_q)(|b_k| - A_k) >= threshold (then all products share one sign and each is at
  least (|b_q| - A_q)(|b_k| - A_k)); if a box contains 0, q = 0 gives q.k = 0.
With the scale folded into Q first, q is replaced by fl(c q), whose box ends are fl(c (b +- A)).

**PASA certificate** (:func:`pasa_certificate`, the attnspec variant with initial max -inf,
any policy). A chain of bounds B_X >= |X| for every stored quantity X, each of the form
"the exact operation on bounded operands is at most B, so its rounding is at most fl(B)"
(roundTiesToEven is monotone: |x| <= B implies |fl(x)| <= fl(B); ``proofs/pasa_fp16.py``),
plus absolute rounding errors |fl(x) - x| <= ulp(B)/2 where the bound needs a difference.
With M~ = a I - b' 1 1^T the stored shift matrix (a = diag - off, b' = -off), a - n b' its
row sum, Q_B the bound on the GEMM's q operand, and every proof in ``proofs/pasa_overflow.py``:

1. K' = fl(M~ K):  |M~ k|_t <= X = |a - n b'| |b_k| + (|a - b'| + (n-1)|b'|) A_k    (lemma shift_bound)
2. S' = fl(q K'):  |S'| <= fl(d Q_B K_B)                                      (lemma dot_bound)
3. r = fl(mean S'), R = fl(fl(r w1) + fl(R w2)):  magnitudes by monotonicity.
4. Errors against the exact r*_j = (a - n b') q.kbar_j and R*_j = mean_{t<=j} r*_t:
   E_r = d Q_B e_K + e_S + (binary64 of S'/n) + ulp(r)/2, and
   E_R(j) = j/(j+1) E_R(j-1) + E_r/(j+1) + |w1 - 1/(j+1)| R_B + |w2 - j/(j+1)| R_B(j-1)
            + three half-ulps                                             (lemma reference_error)
5. |r*_j - R*_j| <= D = |a - n b'| d Q_B 2 A_k (the bias cancels)          (lemma offset_bound)
   Delta = fl(fl(r - R) gamma) <= fl(fl(D + E_r + E_R(j)) gamma);
   delta = fl(gamma fl(R_old - R)) <= fl(gamma fl(D/(j+1) + E_R(j-1) + E_R(j)))   (lemma rebase_identity)
6. m: the running max is the max over t <= j of the candidate of block t carried over the
   later re-basings (lemma max_commutes), which is m~_t + gamma (r_t - R_j) plus the rounding
   errors of Delta_t, of every delta and of every addition (lemma telescoping_errors), and
   |r_t - R_j| <= D + E_r + E_R(j) as in 5. So |m| <= fl(S_B + gamma (D + E_r + E_R(j)) + errors).
7. Every rescale exponent is <= 0 (attnspec ordering; lemma exponent_order), so each factor
   is in [0, 1]: l <= fl(l + n_j) per block, |P V| <= fl(n_j V), |O| <= fl(|O| + |P V|)
   (lemma state_bounds), and l >= 1 for a row with an admitted key, so |O/l| <= |O|.
The configuration is *certified* when every B is finite. For the paper's grid the binding
link is the unnormalised O of FlashAttention's recurrence, N_kv V (e.g. 1407 * 50 >= 65520
at b = 30, A = 20): this is real, not slack (all-equal q and k make l = N_kv).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from attnspec.spec.errors import ConventionError, DomainError, require
from attnspec.spec.formats import Format, get_format, round_exact, ulp
from attnspec.spec.pasa import PASA_ATTNSPEC, POLICY_PASA_FP16, PasaConfig, shift_constants
from attnspec.spec.policy import PrecisionPolicy

_U64 = Fraction(1, 2**53)


@dataclass(frozen=True)
class Box:
    """Every entry lies in [bias - amplitude, bias + amplitude]."""

    bias: float
    amplitude: float

    def __post_init__(self) -> None:
        require(np.isfinite(self.bias) and np.isfinite(self.amplitude) and self.amplitude >= 0, DomainError,
                f"box: expected a finite bias and an amplitude >= 0, got ({self.bias!r}, {self.amplitude!r})")

    @classmethod
    def of(cls, x: np.ndarray) -> "Box":
        """Return the smallest box holding every element of ``x``."""
        lo, hi = float(np.min(x)), float(np.max(x))
        return cls((lo + hi) / 2, (hi - lo) / 2)

    @property
    def magnitude(self) -> Fraction:
        """Return max |x| over the box: |b| + A."""
        return abs(Fraction(self.bias)) + Fraction(self.amplitude)

    @property
    def gap(self) -> Fraction:
        """Return min |x| over the box: |b| - A when the box excludes 0, else 0."""
        return max(abs(Fraction(self.bias)) - Fraction(self.amplitude), Fraction(0))


def _overflows(x: Fraction, fmt: Format) -> bool:
    """Return True when x rounds to an infinity (or NaN, for a format without one) in ``fmt``."""
    return not np.isfinite(round_exact(x, fmt))


@dataclass(frozen=True)
class NaiveVerdict:
    """Whether naive low-precision FA overflows somewhere in the box ("possible") or everywhere ("certain")."""

    max_logit: Fraction  # max |S| over the box, before rounding
    min_logit: Fraction
    possible: bool
    certain: bool


def naive_fa_overflow(q_box: Box, k_box: Box, d: int, *, fmt: "Format | str" = Format.FP16,
                      scale_on_q: float | None = None) -> NaiveVerdict:
    """Return the verdict for S = fl(q.k) with exact accumulation (q pre-scaled by ``scale_on_q`` if given)."""
    f = get_format(fmt)
    q_hi, q_lo = q_box.magnitude, q_box.gap
    if scale_on_q is not None:  # q' = fl(c q) is monotone in q, so its box ends are the rounded ends
        c = abs(Fraction(scale_on_q))
        q_hi, q_lo = Fraction(round_exact(c * q_hi, f)), Fraction(round_exact(c * q_lo, f))
    hi = d * q_hi * k_box.magnitude
    lo = d * q_lo * k_box.gap
    return NaiveVerdict(max_logit=hi, min_logit=lo, possible=_overflows(hi, f), certain=_overflows(lo, f))


class _Overflow(Exception):
    """A link of the certificate chain overflowed; carries its name."""


@dataclass(frozen=True)
class Certificate:
    """Bounds B_X >= |X| for PASA's stored quantities (names as in ``spec.pasa.TRACED``).

    ``failed`` names the first link whose bound overflows (None: certified); the bounds of
    the links after it are absent.
    """

    bounds: dict[str, Fraction]
    blocks: int
    failed: str | None

    @property
    def safe(self) -> bool:
        return self.failed is None


def pasa_certificate(q_box: Box, k_box: Box, v_max: float, d: int, n_kv: int, *, scale: float,
                     config: PasaConfig = PASA_ATTNSPEC, policy: PrecisionPolicy = POLICY_PASA_FP16) -> Certificate:
    """Return the certificate chain of the module docstring for one parameter set.

    ``safe`` is True iff no link overflows; then no stored quantity of ``spec.pasa`` can be
    Inf or NaN for any input in the boxes with |v| <= v_max, any boolean mask, and any
    number of keys <= n_kv.
    """
    require(config.variant == "attnspec" and config.initial_max == -np.inf, ConventionError,
            "config: the certificate covers the attnspec variant with initial_max = -inf")
    require(d >= 1 and n_kv >= 1 and v_max >= 0, DomainError,
            f"d, n_kv, v_max: expected d >= 1, n_kv >= 1, v_max >= 0, got {d}, {n_kv}, {v_max}")
    f_in, f_acc, f_vec, f_out = policy.matmul_input, policy.accumulate, policy.softmax, policy.output
    n = config.block_k
    blocks = -(-n_kv // n)
    bounds: dict[str, Fraction] = {}

    def fl(name: str, x: Fraction, *fmts: Format) -> Fraction:
        for fmt in fmts:
            r = round_exact(x, fmt)
            if not np.isfinite(r):
                raise _Overflow(name)
            x = Fraction(r)
        bounds[name] = max(bounds.get(name, x), x)
        return x

    def hu(x: Fraction, fmt: Format) -> Fraction:  # |fl(y) - y| for every |y| <= x
        return Fraction(float(ulp(float(x), fmt))) / 2

    try:
        shift, gamma = shift_constants(config, scale, policy)
        diag, off = Fraction(float(shift[0, 0])), Fraction(float(shift[0, 1])) if n > 1 else Fraction(0)
        a, b_off, gamma = diag - off, -off, Fraction(gamma)
        row_sum = abs(a - n * b_off)
        q_b = q_box.magnitude
        if config.scale_placement == "q":
            q_b = fl("q", abs(Fraction(scale)) * q_b, f_in)
        x_b = row_sum * abs(Fraction(k_box.bias)) + (abs(a - b_off) + (n - 1) * abs(b_off)) * Fraction(k_box.amplitude)
        k_b = fl("k_shift", x_b, f_acc, f_in)  # 1
        e_k = hu(x_b, f_acc) + hu(k_b, f_in)
        s_b = fl("scores", d * q_b * k_b, f_acc, f_vec)  # 2
        e_s = hu(d * q_b * k_b, f_acc) + hu(s_b, f_vec)
        r_b = fl("row_mean", n * Fraction(float(s_b) / n), f_vec)  # 3: exact sum of fl64(S'/n), rounded once
        e_r = d * q_b * e_k + e_s + s_b * _U64 + hu(r_b, f_vec)  # 4
        diff = row_sum * d * q_b * 2 * Fraction(k_box.amplitude)  # 5
        ref_b, err, m_err = r_b, e_r, Fraction(0)
        l_b = o_b = Fraction(0)
        for j in range(blocks):
            err_prev = err
            if j > 0:  # block 0: R = r exactly and delta = 0
                w1 = Fraction(float(policy.to_softmax(1.0 / (j + 1))))
                w2 = Fraction(float(policy.to_softmax(j / (j + 1))))
                total = fl("reference", r_b * w1, f_vec) + fl("reference", ref_b * w2, f_vec)
                err = ((j * err_prev + e_r) / (j + 1) + abs(w1 - Fraction(1, j + 1)) * r_b
                       + abs(w2 - Fraction(j, j + 1)) * ref_b + hu(r_b * w1, f_vec) + hu(ref_b * w2, f_vec)
                       + hu(total, f_vec))
                ref_b = fl("reference", total, f_vec)
                step = fl("rebase", diff / (j + 1) + err_prev + err, f_vec)
                rebase = fl("rebase", gamma * step, f_vec)
                m_err += gamma * hu(step, f_vec) + hu(rebase, f_vec)  # rounding of delta_j (lemma telescoping_errors)
            inner = fl("offset", diff + e_r + err, f_vec)
            offset = fl("offset", inner * gamma, f_vec)
            # 6: m_j = max over t <= j of m~_t + gamma (r_t - R_j) + rounding errors (telescoping)
            cand = fl("max", s_b + offset, f_vec)
            m_err += hu(cand, f_vec) + gamma * hu(inner, f_vec) + hu(offset, f_vec)
            m_b = fl("max", s_b + gamma * (diff + e_r + err) + m_err, f_vec)
            m_err += hu(m_b, f_vec)  # the rounding of m_{j-1} + delta_j at the next block
            n_j = Fraction(min(n, n_kv - j * n))
            l_b = fl("sum", l_b + fl("sum", n_j, f_vec), f_vec)  # 7: every factor is in [0, 1]
            o_b = fl("acc", o_b + fl("acc", n_j * Fraction(v_max), f_acc, f_vec), f_vec)
        fl("out", o_b, f_vec, f_out)  # l >= 1, so |O / l| <= |O|
    except _Overflow as exc:
        return Certificate(bounds, blocks, str(exc))
    return Certificate(bounds, blocks, None)
