"""A certified fast attention oracle: correctly rounded O and LSE at close to BLAS speed.

This module is a *substitute* for :mod:`reference.oracle`, the mpmath oracle that defines the
expected values. It computes the same exact quantities, the definition of :mod:`spec.attention`
read as the oracle reads it (the scale is the exact real 1/sqrt(Dk) when it is left at its
default, otherwise the exact value of the float given), but in float64, vectorised with
numpy, with a rigorous error bound on every element. It returns

- ``out_mid``, ``lse_mid``: float64 values, and ``out_rad``, ``lse_rad``: bounds with
  |exact - mid| <= rad for every element (``inf`` where float64 could not bound it);
- ``out``, ``lse``: the exact values correctly rounded (roundTiesToEven) into the requested
  format (FP32, BF16, FP16 or an FP8 format). An element is *certified* when both ends of
  its enclosure round to the same value, the rule of :func:`spec.policy._certify`; elements
  that no float64 enclosure decides are taken from the mpmath oracle, and counted.

Evaluation in tiers
-------------------
1. Every row is evaluated by one of two variants of tier 1 (which one: a decision below).

   a. **a-priori bounds**: one GEMM for Q K^T and one for P V, with a-priori bounds: for a
      dot product of n terms evaluated in any order, with or without FMA,
      |fl(x.y) - x.y| <= gamma_n |x|.|y|, gamma_n = n u / (1 - n u), u = 2^-53 (Higham,
      *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1, eq. (3.5)). The
      magnitudes |x|.|y| are bounded by Cauchy-Schwarz (logits) and Hölder (P V), so they
      cost no extra GEMM. Enclosures are ~(gamma_Dk |scale| ||q|| ||k|| + gamma_Sk) max|v|
      wide: enough for BF16 and FP16 almost always, for FP32 at small Dk and Sk only.
   b. **exact products**: the same products made exact, up to tiny bounded tails, by the
      grids of the operands. Low-precision data (BF16, FP16 or FP8 values: the K and V of an
      inference kernel) are integer multiples of a coarse power of two, so Q K^T is exact in
      one GEMM and P V in two (P split in two slices), with no splitting of K or V: one pass
      over each finds their grids (:func:`scan_rows`). The logits then round once, in
      fl(scale (q.k_j - q.k_ref)), and the enclosure is about (rho + (u + kappa) H / l)
      max|v| with H / l the mean |logit - max|: ~4u max|v| at the DeepSeek-V3 decode shape,
      enough for FP32. Problems with a softcap or an additive mask use 1a.
2. **precise**: the rows tier 1 cannot certify are recomputed with the logits carried as
   double-doubles (Dekker's TwoProduct, Knuth's TwoSum) up to the exp kernel, and exact
   products: tier 1b's where the grids allow, otherwise Ozaki's error-free splitting of both
   GEMM operands (K. Ozaki, T. Ogita, S. Oishi, S. M. Rump, "Error-free transformations of
   matrix multiplication by using fast routines of matrix multiplication and its
   applications", Numer. Algorithms 59 (2012) 95-118). The enclosure is then about
   (rho + u) sum_j p_j |v_j| / l + u |O|, rho = EXP_REL.
3. **mpmath**: what is left (exact and extremely near rounding ties, values outside the
   float64 domains stated below) comes from :func:`reference.oracle.oracle_from_problem` on
   the one-row sub-problem; it decides exact ties by the Lindemann-Weierstrass argument.

Arithmetic model. numpy's float64 ufuncs (+, -, *, /, sqrt, rint, ldexp) are IEEE 754
binary64 operations rounded to nearest-even, each rounded once. The BLAS (OpenBLAS, MKL,
BLIS, Accelerate) computes each element of a matrix product as a sum of the products
a_ik b_kj in some order, in binary64, possibly with FMA (classical GEMM, not Strassen).
``np.exp`` and ``np.log`` are *not* trusted: exp is evaluated by :func:`exp_kernel`, whose
error is derived below, and ``np.log`` only proposes a value that :func:`_log_enclosure`
then bounds with exp_kernel.

Error analysis (one query row; keys j range over the admitted keys)
---------------------------------------------------------------------
Notation: u = 2^-53, u' = u / (1 - u) (the rounding error of fl(a op b) relative to the
*computed* result), eta = 2^-1074 (a product that underflows is off by at most eta / 2).

*Logits.* The exact scale is sigma = hi + lo + r with |r| <= 2^-100 |hi| (:func:`exact_scale`:
lo = 0 for a given float; the double-double of 1/sqrt(Dk) from mpmath for the default).
Exact y_j = sigma G_j with G_j = q . k_j.
Tier 1a: G~_j = fl(q . k_j) with |G~_j - G_j| <= g = gamma_Dk ||q||_2 max_j ||k_j||_2 + Dk eta;
y~ = fl(hi G~); with kappa = (|lo| + 2^-100 |hi|) / |hi| and Y = max_j |y~_j| (over all keys),

    |y_j - y~_j| <= |hi| (1 + kappa) g + (kappa + u') Y.

Tier 2: G_j = C_j + T_j with C exact (tier 1b's products below) and the tail T~ within g_T of T;
y_j = TwoProduct(hi, C_j) + fl(fl(y_lo + hi T~) + lo C), within
|hi| g_T + |lo| (|T~| + g_T) + 2^-100 |hi| |G| + 4 u' (u |hi C| + |hi T~| + |lo C|).
Softcap z = c tanh(y / c) is 1-Lipschitz in y; computed (in float64, both tiers) as
fl(c * TANH(fl(y / c))) it adds u' Y (the division), c TANH_ABS (the kernel) and
u' c (1 + u) (the product). The additive mask adds u' X with X >= max_j |x~_j| (tier 1a) or
is added by TwoSum (tier 2, low part u'|x_lo|). Their sum e bounds the logit error.

*Weights.* Let m~ = max_j x~_j (a float: the shift need not be the true maximum, any shift
cancels). Tier 1a: t~_j = fl(x~_j - m~), off by <= u'|t~_j|. Tier 2: t~ + t_lo = TwoSum(x~, -m~)
+ x_lo, so that error is only u'|t_lo|, added to e. p~_j = EXP(t~_j (+ t_lo_j)). The exact
weights relative to m~ are w_j = exp(x_j - m~) = exp(t~_j + D_j), |D_j| <= e (+ u'|t~_j| in
tier 1a). If t~_j >= EXP_MIN then p~_j = exp(t~_j + t_lo_j)(1 + phi_j), |phi_j| <= EXP_REL =: rho,
and for e + rho <= 2^-24

    |w_j - p~_j| <= p~_j (e + rho + u'|t~_j|)(1 + 2^-20);

if t~_j < EXP_MIN then p~_j = 0 and w_j <= 2 exp(EXP_MIN). Write theta = (e + rho)(1 + 2^-20),
H = sum_j p~_j |t~_j| over t~_j >= EXP_MIN (tier 1a; H = 0 in tier 2) and n = Sk.

*Sums.* l = sum_j w_j, N_d = sum_j w_j v_jd, O_d = N_d / l and LSE = m~ + log l exactly.
With the computed row sum s~ (error <= sigma_s against sum_j p~_j), numerator N~_d (error
<= nu_d against sum_j p~_j v_jd), s+ >= sum_j p~_j, V_d >= max_j |v_jd| and
M_d >= sum_j p~_j |v_jd|:

    |l - s~|     <= dl   = sigma_s + theta s+  + u'(1 + 2^-20) H       + 2 n exp(EXP_MIN),
    |N_d - N~_d| <= dN_d = nu_d    + theta M_d + u'(1 + 2^-20) H V_d   + 2 n exp(EXP_MIN) V_d.

V_d = max_j |v_jd| in every tier. Tier 1a: s+ = s~ / (1 - gamma_{n-1}), sigma_s = gamma_{n-1} s+,
M_d = s+ V_d (Hölder), nu_d = gamma_n M_d + n eta. Tier 2: s~ and N~ by tier 1b's products (or
split products, P in two slices), s+ = s~ + sigma_s and M_d = fl(P |V|) / (1 - gamma_n) + n eta.

*Output.* With O~_d = fl(N~_d / s~), valid when s~ > dl:

    |O_d - O~_d| <= (dN_d + |O~_d| (1 + u) dl) / (s~ - dl) + u' |O~_d|.

*LSE.* lambda~ approximates log s~ within LOG (:func:`_log_enclosure`), and
|log l - log s~| <= dl / (s~ - dl), so |LSE - fl(m~ + lambda~)| <= dl / (s~ - dl) + LOG +
u' |LSE~|.

Every bound above is a sum of products of nonnegative floats, with every sum of more than
2^10 terms inflated by 1 / (1 - gamma_n); each is then multiplied by SLACK = 1 + 2^-40
(>= 1 + gamma_{2^10}, the roundings of its own evaluation) and increased by TINY = 2^-1050
(underflow in that evaluation). Rows where a bound is not finite, or e + rho > 2^-24, go
to the next tier.

*exp kernel* (:func:`exp_kernel`, for EXP_MIN = -700 <= t <= EXP_MAX = 709). Table-driven
(Tang's method, 256 entries): k = rint(t * 256 / ln 2), r = (t - k C_HI) - k C_LO (+ t_lo),
where ln2/256 = C_HI + C_LO + C_ERR, C_HI has 35 significant bits and |k| < 2^18, so
k C_HI is exact and t - k C_HI is exact (Sterbenz). exp(t) = 2^(k div 256) 2^((k mod 256)/256)
exp(r), with |r| <= R = ln2/512 (1 + 2^-30), exp(r) - 1 by a degree-5 polynomial (truncation
R^6/6! e^R), the table 2^(j/256) as T_HI + T_LO (double-double), and
y = fl(T_HI + fl(T_LO + fl(T_HI p))). The contributions to the relative error, each
derived in :func:`_exp_rel_bound`: the final addition (u), the inner products and sums
(about 3 u R), the polynomial (Horner, gamma_6), the truncation, the reduction
(u R + |k| (u |C_LO| + C_ERR)) and the dropped T_LO p term (u R). EXP_REL = 1.0096 u; the
largest error measured against mpmath (check ``certified-exp-kernel``) is about 0.99 u.

*Split product* (:func:`_split_terms`). For rows of A and columns of B, with
beta = floor((53 - ceil(log2 n)) / 2), E_i the exponent with max_k |a_ik| < 2^E_i and
sigma_i = 2^(E_i + 53 - beta): A1 = fl(fl(A + sigma) - sigma) is a multiple of 2^(E_i - beta)
with |A1| <= 2^E_i, and A2 = A - A1 is exact with |A2| <= 2^(E_i - beta) (Rump, Ogita, Oishi,
"Accurate floating-point summation part I", SIAM J. Sci. Comput. 31 (2008), ExtractScalar).
With the same for B (exponent F_j), every partial sum of A1 B1 is a multiple of
2^(E_i + F_j - 2 beta) of magnitude <= n 2^(E_i + F_j) <= 2^53 2^(E_i + F_j - 2 beta): A1 B1
is exact in any order. Splitting the remainder of A again gives further exact slices. What is
left, A_rest B + (A - A_rest) B2, is computed in float64 within
gamma_n (||A_rest||_1 max|B| + ||A - A_rest||_1 max|B2|) + 2 n eta (Hölder, per row and
column). Domain: E_i + F_j - 2 beta >= -1074 (the grid is representable) and
E_i + F_j + ceil(log2 n) <= 1023 (no overflow); elements outside get an infinite bound.

*Grids* (:func:`scan_rows`). A nonzero binary64 x of exponent e = floor(log2 |x|) and 52-bit
mantissa field F is an integer multiple of 2^(e - 52 + ctz(F | 2^52)) (ctz: trailing zero
bits); a subnormal one, F 2^-1074, is a multiple of 2^(-1074 + ctz(F)), which that formula
does not exceed. For a row with E = floor(log2) of its smallest nonzero |x| and
c = ctz((OR of its fields) | 2^52) <= ctz(F | 2^52) for each element, every element is a
multiple of 2^g, g = E - 52 + c. A row of 576 BF16 values of N(0, 1) has g ~ -17.

*Tier 1b, logits* (:func:`_logit_terms`, per kv-head group). Keys with g_j < gamma are "off
the grid" (gamma below). Row r of Q: |q_r| < 2^top_r; q_r is a multiple of 2^(top_r - depth_r);
K^ = max_j ||k_j|| + sqrt(Dk) 2^(gamma - 1); 2 ||q_r|| K^ < 2^need_r; the budget is
beta_r = 52 + top_r + gamma - need_r. If depth_r <= beta_r then q1_r = q_r; else ("a split
row") q1_r = ExtractScalar(q_r) on the grid 2^(top_r - beta_r), |q1| <= 2 |q|, and
q2 = q - q1 is exact with |q2| <= 2^(top_r - beta_r). Keys off the grid are rounded onto it:
k1 = 2^gamma rint(2^-gamma k), k2 = k - k1 exact (k and k1 are multiples of the smaller of
their last places, and |k2| <= 2^(gamma - 1)), so ||k1_j|| <= K^; on the grid k1 = k. Every
product q1_ri k1_ji is then an integer multiple of 2^grid_r, grid_r = top_r - min(beta_r,
depth_r) + gamma, and every partial sum of c_rj = q1_r . k1_j, in any order, with or without
FMA, is at most ||q1_r|| ||k1_j|| < 2^need_r <= 2^(52 + grid_r) in magnitude: c_rj is exact,
and so is c_rj - c_ri (below 2^(53 + grid_r)). The tails q . k_j - c_rj = q1 . k2_j (keys off
the grid) + q2_r . k_j (split rows) are float64 products within gamma_Dk ||q1|| ||k2_j|| +
Dk eta and gamma_Dk ||q2_r|| max_j ||k_j|| + Dk eta, plus u'|T| where both meet. gamma
minimises Sk (split rows) + 2 R (keys off the grid) over the values of g_j; if no choice is
feasible (beta_r < 1 on a split row, grid_r < -1074, need_r >= 1000) or the corrections cost
more than the split product, about (R + 5) Sk, the group falls back to it (every row split).

*Tier 1b, weights* (:func:`_shifted_logits`, :func:`_exact_group`). ref_r = c_rj at the allowed key maximising hi c_rj;
the shift is the real m_r = sigma ref_r. d_j = fl(c_j - ref) is exact on a clean row (not split)
at a key on the grid: a "tight" entry. Elsewhere ("loose") d_j = fl(fl(c_j - ref) + T~_j),
within eps_j = u'((2 + u')|d_j| + |T~_j|) + g_T,j of c_j - ref + T_j. With t_j = fl(hi d_j),
|hi d_j| <= (1 + u')|t_j| and x_j - m = sigma (G_j - ref):

    |x_j - m - t_j| <= (u' + kappa (1 + u')) |t_j| + |hi| (1 + kappa) eps_j =: delta_j,

eps_j = 0 on tight entries. As in tiers 1a and 2, |w_j - p~_j| <= p~_j (delta_j + rho)(1 + 2^-20)
while delta_j + rho <= 2^-24, so sum_j |w_j - p~_j| <= W = (1 + 2^-20)(rho s+ + (u' + kappa (1 +
u')) H + sum_loose p~_j |hi| (1 + kappa) eps_j), with H >= sum_j p~_j |t_j| =
-sum_j p~_j t_j + 2 sum_{t_j > 0} p~_j t_j <= -sum_j p~_j t_j + 2 s+ max(0, max_j t_j) (t_j > 0
only on loose entries, by rounding). W takes the place of theta s+ + u'(1 + 2^-20) H in dl, and
W V_d of theta M_d + u'(1 + 2^-20) H V_d in dN_d.

*Tier 1b, numerator* (:func:`_numerator_terms`, P >= 0). Row r: max_j p_rj < 2^top_r,
4 s+_r max|v| < 2^need_r; gamma_v = max_r (22 - 53 - top_r + need_r), so that every row keeps
beta_r = min(53 + top_r + gamma_v - need_r, 53 - ceil(log2 Sk)) >= 22 bits (P2 is then below
2^-21 max p). P1 = ExtractScalar(P) on 2^(top_r - beta_r), P2 = P - P1 exact. Rows of V with
g_j < gamma_v are rounded onto 2^gamma_v (v1, v2 as for keys) and the others are on it; if
2 s+ (max|v| + 2^(gamma_v - 1)) < 2^need_r, P1 V1 = (P1 without those keys) V + (P1 at those
keys) v1 is a sum of integer multiples of 2^(top_r - beta_r + gamma_v) below
||P1_r||_1 max|v1| < 2^need_r <= 2^(53 + top_r - beta_r + gamma_v): both GEMMs and their sum
are exact. P2 V and (P1 at those keys) v2 are float64 products within gamma_Sk ||P2_r||_1 V_d
+ Sk eta and gamma_n' ||P1_r||_1 max|v2_d| + n' eta, and two additions add u'(|lower| + |N~|).
Row sums: sum_j P1 is exact (Sk 2^top <= 2^(53 + top - beta)), sum_j P2 within
gamma_Sk ||P2||_1, and one addition. Otherwise (no feasible grid, or more than Sk/4 rows of V
off it) split products.

*Tier 1b, LSE* (:func:`_scaled_shift`). The float shift fl(m_hi + fl(m_lo + fl(lo ref))), (m_hi, m_lo) =
TwoProduct(hi, ref), is within u'(|lo ref| + |fl(m_lo + fl(lo ref))| + |shift|) +
2^-100 |hi ref| + 2^-1000 (underflow in TwoProduct) of m; that is added to the LSE radius.

Decision (2026-11-30): which variant of tier 1 evaluates the rows (:func:`_first_tier`).
Tier 1b costs a pass over K and one over V (their grids) and a second GEMM for P V, so tier 1a
runs first unless it is predicted to leave about half an output or more uncertified per
row. Its enclosure of O_d is at least rel max_j |v_jd| wide, rel = |scale| gamma_Dk max ||q||
max ||k|| + gamma_Sk, and an output is uncertified with probability ~2 rad / ulp(O_d) =
2^p rel max|v| / |O_d|; taking |O_d| ~ 2^-6 max|v| (an average over many keys), a row of Dv
outputs predicts Dv 2^(p + 6) rel. At the DeepSeek-V3 decode shape that is 2.0 for FP32
(measured with tier 1a: 9 per row, in every row) and 3e-5 for BF16. Only the time depends on the choice:
both variants are rigorous, and the agreement checks run every case from both.
Decision (2026-11-29): the sign of a zero result is not certified (a tiny negative exact value
rounds to -0, a tiny positive one to +0, and no float64 enclosure separates them): every
certified zero is reported as +0. The spec models the sign of zero as an implementation
freedom; the mpmath oracle, which is exact, does give the sign.
Decision (2026-11-29): rounding into FP64 is not offered (certifying 2^-53 would send almost
every element to tier 3); ``out_mid``/``out_rad`` are the float64 answer, and the mpmath oracle
gives correctly rounded float64.
Decision (2026-11-29): a key whose additive mask is -inf is treated as masked, as in
``spec.attention`` (its logit is -inf) and in the oracle (it has no logit part).
Decision (2026-11-29): an overflow into FP8 E4M3, which has no infinity, is certified as NaN
when both ends of the enclosure overflow (the rule of ``spec.policy._certify``); the mpmath
oracle raises instead.

Catalogue of known limitations (none of them is a deviation: each only sends elements to
tier 2 or 3, which are exact but slower):
- Softcap: tanh is evaluated through exp, with an absolute error TANH_ABS = 2 rho + 3u + ...,
  so a softcap c widens every logit enclosure by c * TANH_ABS (about 5 c u), in every tier.
- Tier 1b is not used with a softcap or an additive mask, and its products need operands on
  coarse grids (FP32 data with a wide range of magnitudes falls back to split products,
  which cost a full split of K and V: correct, but slower than tier 1a).
- Logits or values whose float64 evaluation overflows or underflows past the domains above,
  and rows with e + rho > 2^-24 (logits of magnitude ~2^29 or more), are not bounded here.
- The sign of a zero result (see the decision above).
"""

from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass, replace

import mpmath
import numpy as np

from attnspec.registry import Outcome, check
from attnspec.spec.errors import FormatError, require
from attnspec.spec.formats import Format, get_format, next_down, next_up, round_to
from attnspec.spec.problem import AttentionProblem, attention_problem
from attnspec.reference.oracle import DEFAULT_DPS, attention_oracle, oracle_from_problem
from attnspec.reference.strategies import AttentionCase

U = 2.0**-53  # unit roundoff of binary64
U1 = U / (1 - U)  # rounding error relative to the computed result
ETA = 2.0**-1074  # smallest subnormal: a product that underflows is off by at most ETA / 2
SLACK = 1 + 2.0**-40  # covers the roundings of a bound's own evaluation (<= 2^10 of them)
TINY = 2.0**-1050  # covers underflow in a bound's own evaluation
WEIGHT_LIMIT = 2.0**-24  # e + rho above this: the linearised weight bound is not used


def gamma(n: int) -> float:
    """Return gamma_n = n u / (1 - n u), the a-priori bound of an n-term dot product (Higham eq. 3.5)."""
    nu = max(n, 0) * U
    return nu / (1 - nu)


# ----------------------------------------------------------------------------------------------
# exp, tanh and log with rigorous error bounds
# ----------------------------------------------------------------------------------------------

EXP_MIN = -700.0  # exp(-700) = 9.9e-305 is normal: no subnormal result below
EXP_MAX = 709.0  # exp(709) = 8.2e307 < max float64: no overflow
_TABLE_BITS = 8
_TABLE = 2**_TABLE_BITS
_DEGREE = 5
_K_MAX = 2**18  # |k| = |rint(t * 256 / ln 2)| <= 261857 on [EXP_MIN, EXP_MAX]
_MAGIC = 1.5 * 2.0**52  # x + _MAGIC rounds x to an integer, held in the low bits (|x| < 2^51)
_MAGIC_BITS = np.float64(_MAGIC).view(np.int64)


def _constants():
    """Return 1/c, the Cody-Waite split c = ln2/256 = C_HI + C_LO (+ C_ERR) and the table 2^(j/256)."""
    with mpmath.workprec(300):
        c = mpmath.log(2) / _TABLE
        e = int(mpmath.floor(mpmath.log(c, 2)))
        bits = 53 - _K_MAX.bit_length() + 1  # k C_HI exact for |k| < 2^18
        c_hi = float(mpmath.nint(c * mpmath.mpf(2) ** (bits - 1 - e)) * mpmath.mpf(2) ** (e - bits + 1))
        c_lo = float(c - c_hi)
        c_err = float(abs(c - c_hi - c_lo)) * 2  # generous: float() rounds to nearest
        table = [mpmath.mpf(2) ** (mpmath.mpf(j) / _TABLE) for j in range(_TABLE)]
        t_hi = np.array([float(x) for x in table])
        t_lo = np.array([float(x - mpmath.mpf(h)) for x, h in zip(table, t_hi)])
        return float(1 / c), c_hi, c_lo, c_err, t_hi, t_lo


_INV, _C_HI, _C_LO, _C_ERR, _T_HI, _T_LO = _constants()
_COEF = [1.0 / math.factorial(i) for i in range(2, _DEGREE + 1)]  # h(r) = (exp(r) - 1 - r) / r^2


def _exp_rel_bound() -> float:
    """Return EXP_REL, the relative error bound of :func:`exp_kernel` (module docstring, exp kernel).

    Evaluated in mpmath at 200 bits from the derivation's terms, then rounded up by 2^-20.
    """
    with mpmath.workprec(200):
        u, one = mpmath.mpf(U), mpmath.mpf(1)
        r_max = mpmath.log(2) / (2 * _TABLE) * (1 + mpmath.mpf(2) ** -30)
        reduction = u * r_max + _K_MAX * (u * abs(mpmath.mpf(_C_LO)) + mpmath.mpf(_C_ERR))
        truncation = r_max ** (_DEGREE + 1) / mpmath.factorial(_DEGREE + 1) * mpmath.exp(r_max)
        h_abs = sum(mpmath.mpf(c) * r_max**i for i, c in enumerate(_COEF))
        steps = 2 * (len(_COEF) - 1)
        g_h = steps * u / (1 - steps * u)
        horner = r_max**2 * (h_abs * (3 * u) + (g_h + u) * h_abs * (1 + u) ** 2)  # r*r, *h, and h's own error
        p_max = mpmath.expm1(r_max) * (1 + u) + horner
        # y = fl(T_HI + fl(T_LO + fl(T_HI p))) against T (1 + p): T_HI <= T (1 + u), |T_LO| <= u T.
        combine = u * (1 + p_max) + u * (u + (1 + u) * p_max) + u * (1 + u) * p_max + u * p_max + u * u
        # Relative to T exp(r) >= T (1 - r_max): the polynomial error (u p_max + horner) and truncation too.
        rel = (combine + (1 + u) * (u * p_max + horner) + truncation) / (one - mpmath.expm1(r_max))
        total = (1 + rel) * mpmath.exp(reduction) - 1
        return float(total * (1 + mpmath.mpf(2) ** -20))


EXP_REL = _exp_rel_bound()
EXP_TINY = float(mpmath.exp(EXP_MIN)) * (1 + 2.0**-40)  # >= exp(EXP_MIN): what a flushed weight may hide


_BLOCK = 1 << 14  # elements per block of exp_kernel: its temporaries stay in cache


def exp_kernel(t: np.ndarray, t_lo: np.ndarray | None = None) -> np.ndarray:
    """Return exp(t + t_lo) within a relative error of EXP_REL (Tang's method; module docstring).

    Domain: EXP_MIN <= t <= EXP_MAX and |t_lo| <= 2^-40 (a double-double's low part).
    exp_kernel(0) = 1 exactly. The kernel is bound by memory traffic: it runs over blocks of
    _BLOCK elements, with its temporaries allocated once and kept in cache.
    """
    t = np.asarray(t, dtype=np.float64)
    flat = t.reshape(-1)
    flat_lo = None if t_lo is None else np.broadcast_to(t_lo, t.shape).reshape(-1)
    out = np.empty(flat.size)
    size = min(_BLOCK, flat.size)
    kf, r, k, j = np.empty(size), np.empty(size), np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
    for start in range(0, flat.size, _BLOCK):
        x = flat[start:start + _BLOCK]
        m = x.size
        _exp_block(x, None if flat_lo is None else flat_lo[start:start + m], out[start:start + m], kf[:m], r[:m],
                   k[:m], j[:m])
    return out.reshape(t.shape)


def _exp_block(t, t_lo, h, kf, r, k, j) -> None:
    """Write exp_kernel(t, t_lo) of one block into ``h``; ``kf``, ``r``, ``k``, ``j`` are scratch of its size."""
    np.multiply(t, _INV, out=kf)
    kf += _MAGIC  # rint(t / c) in the low bits; any integer works, it only has to keep |r| <= R
    np.subtract(kf.view(np.int64), _MAGIC_BITS, out=k)
    np.bitwise_and(k, _TABLE - 1, out=j)
    kf -= _MAGIC
    np.multiply(kf, _C_HI, out=r)
    np.subtract(t, r, out=r)  # exact: k C_HI has <= 53 bits, and Sterbenz
    kf *= _C_LO
    r -= kf
    if t_lo is not None:
        r += t_lo
    np.multiply(r, _COEF[-1], out=h)
    for c in reversed(_COEF[1:-1]):  # Horner for h(r) = 1/2 + r/6 + r^2/24 + r^3/120
        h += c
        h *= r
    h += _COEF[0]
    np.multiply(r, r, out=kf)
    h *= kf
    h += r  # p = exp(r) - 1
    t_hi = _T_HI[j]
    h *= t_hi
    h += _T_LO[j]
    h += t_hi  # y = T_HI + (T_LO + T_HI p), in [0.99, 2)
    k >>= _TABLE_BITS
    k <<= 52
    h.view(np.int64)[...] += k  # y * 2^(k div 256), exactly: the result is normal on the domain


TANH_ABS = (2 * EXP_REL + 3 * U1 + 2 * EXP_TINY) * SLACK


def tanh_kernel(w: np.ndarray) -> np.ndarray:
    """Return tanh(w) within an absolute error of TANH_ABS: sign(w) (1 - E) / (1 + E), E = exp(-2|w|).

    |d tanh / dE| <= 2 turns E's error (rho E + EXP_TINY) into 2 rho + 2 EXP_TINY; the two
    roundings of 1 -+ E and the division add 3 u' (|tanh| <= 1).
    """
    a = -2.0 * np.abs(w)  # exact
    e = exp_kernel(np.maximum(a, EXP_MIN))
    e[a < EXP_MIN] = 0.0
    return np.copysign((1.0 - e) / (1.0 + e), w)


def _log_enclosure(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (lambda, err) with |log(s) - lambda| <= err, for 1/2 <= s < 2^1000.

    ``np.log`` proposes lambda; y = exp_kernel(lambda) = e^lambda (1 + phi), |phi| <= rho, and
    d = s - y is exact (Sterbenz, y within a factor 2 of s). Then log s - lambda =
    log(1 + d/y) + log(1 + phi), and |log(1 + z)| <= |z| / (1 - |z|).
    """
    lam = np.log(s)
    y = exp_kernel(np.clip(lam, EXP_MIN, EXP_MAX))
    z = np.abs(s - y) / y * (1 + 2 * U)
    err = (z / (1 - z) + EXP_REL / (1 - EXP_REL)) * SLACK + TINY
    return lam, np.where((z <= 0.25) & (np.abs(lam) <= EXP_MAX), err, np.inf)


# ----------------------------------------------------------------------------------------------
# Error-free transformations and dot products with bounds
# ----------------------------------------------------------------------------------------------

def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (s, e) with s + e = a + b exactly (Knuth's TwoSum; any finite a, b)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _veltkamp(x):
    """Return (hi, lo) = x with hi on 26 bits and x = hi + lo exactly (|x| < 2^995)."""
    t = x * 134217729.0  # 2^27 + 1
    hi = t - (t - x)
    return hi, x - hi


def _two_product(a: float, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (p, e) with p + e = a * b exactly (Dekker), for |a|, |b| < 2^990 and no underflow."""
    a_hi, a_lo = _veltkamp(np.float64(a))
    b_hi, b_lo = _veltkamp(b)
    p = a * b
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


def _norm_up(x: np.ndarray) -> np.ndarray:
    """Return an upper bound of the 2-norm of ``x`` along its last axis.

    fl(sum x^2) >= (1 - gamma_n) sum x^2 - n eta/2, then sqrt and the products round once each.
    """
    n = x.shape[-1]
    s = np.einsum("...i,...i->...", x, x)
    return np.sqrt((s + n * ETA) * (1 + 2 * gamma(n))) * (1 + 4 * U)


def _ceil_log2(n: int) -> int:
    return max(n - 1, 0).bit_length()


def _split(x: np.ndarray, beta: int, axis: int):
    """Return (hi, lo, e, mx): x = hi + lo exactly, hi on the grid 2^(e - beta), |lo| <= 2^(e - beta).

    ``mx`` (keepdims along ``axis``) is max |x| along ``axis`` and ``e`` the exponent with mx < 2^e.
    """
    mx = np.maximum(np.max(x, axis=axis, keepdims=True, initial=0.0), -np.min(x, axis=axis, keepdims=True, initial=0.0))
    e = np.frexp(mx)[1].astype(np.int64)
    sigma = np.ldexp(1.0, np.minimum(e, 900) + 53 - beta)  # the clamp only touches out-of-domain rows
    hi = x + sigma
    hi -= sigma
    return hi, x - hi, e, mx


def _split_terms(a: np.ndarray, b: np.ndarray, slices: int):
    """Return (parts, tail, err): a @ b = sum(parts) + tail_exact, each part exact, |tail - tail_exact| <= err.

    Ozaki splitting, batched over leading axes like ``np.matmul`` (module docstring, split
    product): ``slices`` leading slices of each row of ``a`` times the leading slice of each
    column of ``b``. ``tail`` is the float 0.0 when nothing is left over; ``err`` is ``inf``
    outside the domain.
    """
    n = a.shape[-1]
    beta = (53 - _ceil_log2(n)) // 2
    b1, b2, eb, b_max = _split(b, beta, axis=-2)  # per column: (..., 1, p)
    head, rest, inside = [], a, np.ones(a.shape[:-1] + (1,), dtype=bool)
    for _ in range(slices):
        hi, rest, ea, a_max = _split(rest, beta, axis=-1)  # per row: (..., m, 1)
        head.append(hi)
        inside = inside & ((a_max == 0) | ((ea + eb - 2 * beta >= -1074) & (ea + eb + _ceil_log2(n) <= 1023)))
    parts = [hi @ b1 for hi in head]  # exact
    b2_max = np.maximum(np.max(b2, axis=-2, keepdims=True, initial=0.0), -np.min(b2, axis=-2, keepdims=True, initial=0.0))
    norm = 1 / (1 - gamma(n))
    rest_norm = np.abs(rest).sum(axis=-1, keepdims=True) * norm  # >= ||rest||_1 per row
    tails, err = [], 0.0
    if b2_max.any():  # (a - rest) @ b2, with a - rest = sum(head) exactly
        tails.append(_sparse_product(a - rest, b2, cols=b2_max[..., 0, :] > 0))
        err = (np.abs(a).sum(axis=-1, keepdims=True) * norm + rest_norm) * b2_max
    if rest_norm.any():
        tails.append(_sparse_product(rest, b, rows=rest_norm[..., 0] > 0))
        err = err + rest_norm * b_max
    tail = 0.0
    if tails:
        tail = tails[0] if len(tails) == 1 else tails[0] + tails[1]
        err = (gamma(n) * err + U1 * np.abs(tail) + 2 * n * ETA) * SLACK
    inside = inside & (eb <= 900)
    return parts, tail, np.where(inside, err, np.inf)


def _sparse_product(a: np.ndarray, b: np.ndarray, rows=None, cols=None) -> np.ndarray:
    """Return a @ b, multiplying only the ``rows`` of a and ``cols`` of b flagged (in any batch); the rest is 0.

    A tail of the split is usually zero but in a few rows or columns (the elements with more
    bits than the leading slice holds), so one small product replaces a full one.
    """
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    lead = tuple(range(len(batch)))
    r = np.arange(a.shape[-2]) if rows is None else np.flatnonzero(np.any(rows, axis=lead))
    c = np.arange(b.shape[-1]) if cols is None else np.flatnonzero(np.any(cols, axis=lead))
    if 2 * r.size * c.size > a.shape[-2] * b.shape[-1]:
        return a @ b
    out = np.zeros(batch + (a.shape[-2], b.shape[-1]))
    out[..., r[:, None], c] = a[..., r, :] @ b[..., c]
    return out


def _split_product(a: np.ndarray, b: np.ndarray, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (c, err): c = fl(a @ b) from :func:`_split_terms`, |c - a @ b| <= err."""
    parts, tail, err = _split_terms(a, b, slices)
    c, rounding = parts[0], 0.0
    for term in parts[1:] + ([] if np.isscalar(tail) else [tail]):
        c = c + term
        rounding = rounding + U1 * np.abs(c)
    return c, (err + rounding) * SLACK


# ----------------------------------------------------------------------------------------------
# Grids of the operands, and products that are exact because of them (tier 1b)
# ----------------------------------------------------------------------------------------------

GRID_NONE = 1 << 20  # the grid exponent of an all-zero row: it lies on every grid
_SCAN_ELEMENTS = 1 << 15  # elements per block of a scan: its temporary stays in cache
_M52 = np.uint64((1 << 52) - 1)
_BIT52 = np.uint64(1 << 52)
BITS = 53  # binary64 significand bits: the budgets of tier 1b's exact products (one less for logits: exact differences)
BETA_MIN = 22  # bits of each row of P in the exact slice of P V: the rest is below 2^-21 of the row max
SPLIT_PASSES = 5  # Ozaki splitting of K costs about this many rows of Q K^T (its passes over K), plus the product
OFF_GRID_SHARE = 4  # P V falls back to Ozaki splitting when more than 1/4 of the rows of V are off the grid


def _exponent(x) -> np.ndarray:
    """Return e with |x| < 2^e, elementwise as int64 (e = 0 for x = 0; 2000, beyond every budget, for inf and NaN)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(x), np.frexp(x)[1], 2000).astype(np.int64)


def _trailing_zeros(x: np.ndarray) -> np.ndarray:
    """Return the number of trailing zero bits of each nonzero uint64, as int64."""
    return np.bitwise_count((x & (~x + np.uint64(1))) - np.uint64(1)).astype(np.int64)


def scan_rows(x: np.ndarray, *, grids: bool = True, columns: bool = False) -> dict[str, np.ndarray]:
    """Return statistics of the rows of x (..., n, d) from one pass over x in cache-sized blocks.

    "grid" (..., n): every element of row x[..., i, :] is an integer multiple of 2^grid[..., i];
    grid = E - 52 + c (module docstring, "Grids"), with E = floor(log2) of the row's smallest
    nonzero magnitude and c the trailing zeros of the union (bitwise OR) of the row's mantissa
    fields and bit 52; an all-zero row gets GRID_NONE. "column" (..., 1, d): max_i |x_id|.
    """
    x = np.asarray(x, dtype=np.float64)
    lead, (n, d) = x.shape[:-2], x.shape[-2:]
    groups = x.reshape((math.prod(lead), n, d))  # (L, n, d)
    low, bits = np.full((groups.shape[0], n), np.inf), np.zeros((groups.shape[0], n), dtype=np.uint64)
    column = np.zeros((groups.shape[0], 1, d))
    step = max(1, _SCAN_ELEMENTS // max(d, 1))
    buf = np.empty((min(step, n), d))
    for i in range(groups.shape[0] if n and d else 0):
        for start in range(0, n, step):
            block = np.ascontiguousarray(groups[i, start:start + step])
            a = np.abs(block, out=buf[:block.shape[0]])
            if grids:
                np.minimum.reduce(a, axis=-1, out=low[i, start:start + step])
                np.bitwise_or.reduce(block.view(np.uint64), axis=-1, out=bits[i, start:start + step])
            if columns:
                np.maximum(column[i, 0], np.max(a, axis=0), out=column[i, 0])
    stats = {}
    if grids:
        zero = np.nonzero(low == 0)  # rows holding a zero: their smallest *nonzero* magnitude
        if zero[0].size:
            a = np.abs(groups[zero])
            low[zero] = np.min(a, axis=-1, where=a > 0, initial=np.inf)
        grid = _exponent(low) - 53 + _trailing_zeros((bits & _M52) | _BIT52)
        stats["grid"] = np.where(low == np.inf, GRID_NONE, grid).reshape(lead + (n,))
    if columns:
        stats["column"] = column.reshape(lead + (1, d))
    return stats


def _extract(x: np.ndarray, top: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Return x1: x rounded to the grid 2^(top - beta) of its row (ExtractScalar; |x| < 2^top per row).

    x1 = fl(fl(x + sigma) - sigma) with sigma = 2^(top + 53 - beta); x - x1 is then exact and
    at most 2^(top - beta), and |x1| <= 2 |x| (module docstring, "Split product").
    """
    sigma = np.ldexp(1.0, top + 53 - beta)[:, None]
    x1 = x + sigma
    x1 -= sigma
    return x1


def _to_grid(x: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (x1, x2): x1 = x rounded to the nearest multiple of 2^grid, x2 = x - x1, both exact, |x2| <= 2^(grid - 1).

    The scalings by 2^-grid and 2^grid are exact (grid >= -1074 + 53 keeps x2's bits representable:
    x and x1 are multiples of the smaller of their two last places, and |x - x1| is below 2^grid).
    """
    x1 = np.rint(x * 2.0**-grid) * 2.0**grid
    return x1, x - x1


@dataclass(frozen=True)
class _LogitTerms:
    """q @ k.T = c + T for one kv-head group (module docstring, tier 1b, "Logits").

    ``c`` is exact. On a clean row (every row but ``rows``) c is an integer multiple of one grid
    at every key, with |c| < 2^(52 + grid): differences of its entries are exact, and T is zero
    except at the keys ``keys`` (T ~ ``key_tail``, within ``key_err``). On the split rows ``rows``
    T ~ ``row_tail`` at every key, within ``row_err``.
    """

    c: np.ndarray  # (R, Sk)
    rows: np.ndarray  # (nr,) the split rows
    row_tail: np.ndarray  # (nr, Sk)
    row_err: np.ndarray  # (nr, Sk)
    keys: np.ndarray  # (nk,) the keys off the grid
    key_tail: np.ndarray  # (R, nk)
    key_err: np.ndarray  # (R, nk)

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (tail, err) as (R, Sk) arrays."""
        tail, err = np.zeros(self.c.shape), np.zeros(self.c.shape)
        tail[:, self.keys], err[:, self.keys] = self.key_tail, self.key_err
        tail[self.rows], err[self.rows] = self.row_tail, self.row_err
        return tail, err


def _logit_terms(q: np.ndarray, k: np.ndarray, k_grid: np.ndarray, k_norm: np.ndarray) -> _LogitTerms:
    """Return the exact-product terms of q @ k.T for q (R, Dk), k (Sk, Dk) (module docstring, tier 1b, "Logits").

    The grid 2^gamma of the keys is chosen to minimise the cost of the corrections: a row of q
    with more bits than its budget allows costs one extra row of products (its low part times
    k), a key off the grid about two columns (its part off the grid times q). Without a usable
    grid, or with corrections costlier than Ozaki splitting (a product plus SPLIT_PASSES rows'
    worth of passes over K), the terms come from the split product (every row split).
    """
    r, dk = q.shape
    sk = k.shape[0]
    q_max = np.max(np.abs(q), axis=-1, initial=0.0)
    top = _exponent(q_max)  # (R,): |q_r| < 2^top
    depth = np.where(q_max > 0, top - scan_rows(q)["grid"], 0)  # q_r is a multiple of 2^(top - depth)
    q_norm = _norm_up(q)
    gammas = np.unique(k_grid)[:, None]  # (candidates, 1)
    k_max = np.max(k_norm, initial=0.0) + math.sqrt(dk) * np.ldexp(1.0, np.minimum(gammas, 1000) - 1)  # >= ||k1_j||
    need = _exponent(2 * q_norm[None, :] * k_max)  # (candidates, R): 2 ||q1_r|| ||k1_j|| < 2^need
    beta = BITS - 1 + top[None, :] + gammas - need
    split = depth[None, :] > beta
    grid = top[None, :] - np.minimum(beta, depth[None, :]) + gammas
    splittable = (beta >= 1) & (top[None, :] - beta >= -1000) & (top[None, :] - beta <= 970)  # sigma is normal
    feasible = (splittable | ~split) & (grid >= -1074) & (need < 1000) & (np.abs(gammas) <= 1000)
    n_bad = np.searchsorted(np.sort(k_grid), gammas[:, 0])
    cost = np.where(feasible.all(axis=1), sk * split.sum(axis=1) + 2 * r * n_bad, np.inf)
    best = int(np.argmin(cost))
    if not np.isfinite(cost[best]) or cost[best] > (r + SPLIT_PASSES) * sk:  # more than the split product costs
        (c,), tail, err = _split_terms(q, k.T, slices=1)
        every = np.arange(r)
        return _LogitTerms(c, every, np.broadcast_to(tail, c.shape), np.broadcast_to(err, c.shape),
                           np.arange(0), np.zeros((r, 0)), np.zeros((r, 0)))
    gamma_k = int(gammas[best, 0])
    rows, keys = np.flatnonzero(split[best]), np.flatnonzero(k_grid < gamma_k)
    q1 = q.copy()
    q1[rows] = _extract(q[rows], top[rows], beta[best, rows])
    c = q1 @ k.T  # (R, Sk): exact at the keys on the grid
    k1, k2 = _to_grid(k[keys], gamma_k)
    c[:, keys] = q1 @ k1.T  # exact: k1 is on the grid
    key_tail = q1 @ k2.T  # (R, nk): |k2| <= 2^(gamma - 1)
    key_err = (gamma(dk) * _norm_up(q1)[:, None] * _norm_up(k2)[None, :] + dk * ETA) * SLACK
    q2 = q[rows] - q1[rows]  # exact, |q2| <= 2^(top - beta)
    row_tail = q2 @ k.T  # (nr, Sk)
    row_err = np.broadcast_to(((gamma(dk) * _norm_up(q2) * np.max(k_norm, initial=0.0) + dk * ETA) * SLACK)[:, None],
                              row_tail.shape).copy()
    if keys.size:  # the split rows' tails at the keys off the grid: one more rounding
        both = row_tail[:, keys] + key_tail[rows]
        row_err[:, keys] += key_err[rows] + U1 * np.abs(both)
        row_tail[:, keys] = both
    return _LogitTerms(c, rows, row_tail, row_err, keys, key_tail, key_err)


def _numerator_terms(p: np.ndarray, v: np.ndarray, v_grid: np.ndarray, v_max: np.ndarray):
    """Return (num, nu, s, sigma_s) for p (R, Sk) >= 0, v (Sk, Dv): |num - p @ v| <= nu, |s - sum p| <= sigma_s.

    P = P1 + P2 with P1 on a grid of its row (ExtractScalar); P1 V1 is exact, V1 = V on the grid
    2^gamma_v (module docstring, tier 1b, "Numerator"); P2 V and P1 (V - V1) are float64 products
    of tiny terms. ``v_max`` (1, Dv) >= max_j |v_jd|.
    """
    r, sk = p.shape
    total = p.sum(axis=-1)
    s_up = total / (1 - gamma(sk))  # >= sum p: the terms are nonnegative
    top = _exponent(np.max(p, axis=-1, initial=0.0))  # (R,): p < 2^top
    v_top = np.max(v_max, initial=0.0)
    need = _exponent(4 * s_up * v_top)  # one bit above 2 sum_j p_j max|v|
    live = total > 0
    gamma_v = int(np.max(BETA_MIN - 53 - top + need, where=live, initial=-1000))  # the finest leaving BETA_MIN bits
    beta = np.minimum(BITS + top + gamma_v - need, BITS - _ceil_log2(sk))
    fits = 2 * s_up * (v_top + 2.0**(gamma_v - 1)) < np.ldexp(1.0, need)  # 2 ||P1_r||_1 max|v1| < 2^need
    feasible = ((beta >= 1) & (top - beta + gamma_v >= -1074) & (need < 1000) & fits) | ~live
    keys = np.flatnonzero(v_grid < gamma_v)
    if not feasible.all() or gamma_v < -1000 or OFF_GRID_SHARE * keys.size > sk:
        num, nu = _split_product(p, v, slices=2)
        s, sigma_s = _split_product(p, np.ones((sk, 1)), slices=2)
        return num, nu, s, sigma_s
    p1 = _extract(p, top, np.where(live, beta, 1))
    p2 = p - p1
    s1 = p1.sum(axis=-1, keepdims=True)  # exact: beta <= 53 - ceil(log2 Sk)
    p2_abs = np.abs(p2).sum(axis=-1, keepdims=True) / (1 - gamma(sk))  # >= ||P2_r||_1
    v1, v2 = _to_grid(v[keys], gamma_v)
    p1_keys = p1[:, keys]
    p1[:, keys] = 0.0
    head = p1 @ v + p1_keys @ v1  # both products and their sum are exact: P1 V1 on one grid
    lower = p2 @ v + p1_keys @ v2
    num = head + lower
    key_mass = p1_keys.sum(axis=-1, keepdims=True) / (1 - gamma(keys.size))  # >= ||P1_r||_1 over those keys
    nu = (gamma(sk) * p2_abs * v_max + sk * ETA + gamma(keys.size) * key_mass * np.max(np.abs(v2), axis=0, initial=0.0)
          + keys.size * ETA + U1 * (np.abs(lower) + np.abs(num))) * SLACK + TINY
    s = s1 + p2.sum(axis=-1, keepdims=True)
    sigma_s = (gamma(sk) * p2_abs + U1 * np.abs(s)) * SLACK + TINY
    return num, nu, s, sigma_s


# ----------------------------------------------------------------------------------------------
# The evaluation: rows grouped by kv head, so that the rows sharing K and V make one GEMM
# ----------------------------------------------------------------------------------------------

class _KeyStats:
    """Norm bounds, grids and column maxima of K and V, each computed on first use (a pass over K or V)."""

    def __init__(self, k: np.ndarray, v: np.ndarray, memo: dict | None = None):
        self.k, self.v, self._memo = k, v, {} if memo is None else memo

    @property
    def k_norm(self) -> np.ndarray:  # (B, Hkv, Sk), >= ||k_j||_2
        if "k_norm" not in self._memo:
            self._memo["k_norm"] = _norm_up(self.k)
        return self._memo["k_norm"]

    @property
    def k_grid(self) -> np.ndarray:  # (B, Hkv, Sk)
        if "k_grid" not in self._memo:
            self._memo["k_grid"] = scan_rows(self.k)["grid"]
        return self._memo["k_grid"]

    @property
    def v_grid(self) -> np.ndarray:  # (B, Hkv, Sk)
        if "v_grid" not in self._memo:
            stats = scan_rows(self.v, columns="v_max" not in self._memo)
            self._memo.setdefault("v_max", stats.get("column"))
            self._memo["v_grid"] = stats["grid"]
        return self._memo["v_grid"]

    @property
    def v_max(self) -> np.ndarray:  # (B, Hkv, 1, Dv), >= max_j |v_jd|
        if "v_max" not in self._memo:
            self._memo["v_max"] = scan_rows(self.v, grids=False, columns=True)["column"]
        return self._memo["v_max"]

    def group(self, b: int, g: int) -> "_KeyStats":
        """Return the statistics of batch b, kv head g (those already computed are sliced, not recomputed)."""
        return _KeyStats(self.k[b:b + 1, g:g + 1], self.v[b:b + 1, g:g + 1],
                         {name: value[b:b + 1, g:g + 1] for name, value in self._memo.items()})


@dataclass(frozen=True)
class _Rows:
    """Query rows grouped by kv head; row r of kv head g is head g*G + r // Sq, query r % Sq."""

    q: np.ndarray  # (B, Hkv, R, Dk), R = G * Sq
    k: np.ndarray  # (B, Hkv, Sk, Dk)
    v: np.ndarray  # (B, Hkv, Sk, Dv)
    allowed: np.ndarray  # (B, Hkv, R, Sk); keys with an additive mask of -inf are not allowed
    bias: np.ndarray | None  # (B, Hkv, R, Sk), 0 where not allowed
    scale: tuple[float, float]  # the exact scale is hi + lo + r with |r| <= SCALE_RESIDUAL |hi|
    softcap: float | None
    stats: _KeyStats

    def subset(self, b: int, g: int, rows: np.ndarray) -> "_Rows":
        """Return the rows ``rows`` of batch b, kv head g, as a (1, 1, len(rows)) problem."""
        pick = (slice(b, b + 1), slice(g, g + 1), rows)
        return replace(self, q=self.q[pick], k=self.k[b:b + 1, g:g + 1], v=self.v[b:b + 1, g:g + 1],
                       allowed=self.allowed[pick], bias=None if self.bias is None else self.bias[pick],
                       stats=self.stats.group(b, g))


SCALE_RESIDUAL = 2.0**-100


def exact_scale(problem: AttentionProblem) -> tuple[float, float]:
    """Return the exact scale as a double-double (hi, lo): the float given, or 1/sqrt(Dk) to 2^-100."""
    if not problem.scale_is_default:
        return float(problem.scale), 0.0
    with mpmath.workprec(200):
        s = 1 / mpmath.sqrt(problem.q.shape[3])
        hi = float(s)
        return hi, float(s - hi)


def _grouped(problem: AttentionProblem) -> _Rows:
    """Return the problem's query rows grouped by kv head (views where the layout allows)."""
    b, hq, sq, dk = problem.q.shape
    hkv, sk = problem.kv_heads, problem.k.shape[2]
    rows = hq // hkv * sq
    allowed = problem.allowed.reshape(b, hkv, rows, sk)  # (B, Hkv, G*Sq, Sk): heads of a group are adjacent
    bias = None
    if problem.bias is not None:
        full = problem.bias_full().reshape(b, hkv, rows, sk)
        allowed = allowed & (full > -np.inf)
        bias = np.where(allowed, full, 0.0)
    return _Rows(q=problem.q.reshape(b, hkv, rows, dk), k=problem.k, v=problem.v, allowed=allowed, bias=bias,
                 scale=exact_scale(problem), softcap=problem.softcap, stats=_KeyStats(problem.k, problem.v))


@dataclass(frozen=True)
class _Enclosure:
    """Float64 values and radii of O (..., R, Dv) and LSE (..., R); ``empty`` rows are exact."""

    out: np.ndarray
    out_rad: np.ndarray
    lse: np.ndarray
    lse_rad: np.ndarray
    empty: np.ndarray


def _row_max(x, allowed: np.ndarray) -> np.ndarray:
    """Return max |x| over the allowed keys of each row, (..., R, 1)."""
    return np.max(np.broadcast_to(np.abs(x), allowed.shape), axis=-1, keepdims=True, initial=0.0, where=allowed)


def _cap_and_bias(rows: _Rows, y: np.ndarray, e: np.ndarray, y_max: np.ndarray):
    """Return (x, e) after softcap and the additive mask, in float64 (module docstring, logits)."""
    x = y
    if rows.softcap is not None:
        cap = rows.softcap
        x = cap * tanh_kernel(y / cap)
        e = e + U1 * y_max + cap * TANH_ABS + U1 * cap * (1 + U)
    if rows.bias is not None:
        x = x + rows.bias
        e = e + U1 * _row_max(x, rows.allowed)
    return x, e


def _kappa(scale: tuple[float, float]) -> float:
    """Return kappa = (|lo| + 2^-100 |hi|) / |hi|: the exact scale is within kappa |hi| of hi."""
    hi, lo = scale
    return (abs(lo) + SCALE_RESIDUAL * abs(hi)) / abs(hi)


def _logits_fast(rows: _Rows):
    """Return (x, None, e): tier-1a logits (-inf where masked) and their per-row error bound."""
    dk = rows.q.shape[-1]
    hi, _ = rows.scale
    kappa = _kappa(rows.scale)
    y = rows.q @ np.swapaxes(rows.k, -1, -2)  # (B, Hkv, R, Sk)
    magnitude = _norm_up(rows.q)[..., None] * np.max(rows.stats.k_norm, axis=-1, initial=0.0)[..., None, None]
    g = gamma(dk) * magnitude + dk * ETA  # (B, Hkv, R, 1)
    y *= hi
    y_max = np.max(np.abs(y), axis=-1, keepdims=True, initial=0.0)  # over all keys: an upper bound
    e = abs(hi) * (1 + kappa) * g + (kappa + U1) * y_max
    x, e = _cap_and_bias(rows, y, e, y_max)
    return x, None, e


def _logit_products(rows: _Rows):
    """Return (c, tail, err) of Q K^T for every kv-head group (:func:`_logit_terms`), stacked (B, Hkv, R, Sk)."""
    b, hkv, r, _ = rows.q.shape
    shape = (b, hkv, r, rows.k.shape[2])
    c, tail, err = np.empty(shape), np.empty(shape), np.empty(shape)
    for i, g in np.ndindex(b, hkv):
        terms = _logit_terms(rows.q[i, g], rows.k[i, g], rows.stats.k_grid[i, g], rows.stats.k_norm[i, g])
        c[i, g] = terms.c
        tail[i, g], err[i, g] = terms.dense()
    return c, tail, err


def _logits_precise(rows: _Rows):
    """Return (x, x_lo, e): tier-2 logits as double-doubles where there is no softcap.

    G = C + T with C exact (:func:`_logit_products`); y = TwoProduct(hi, C) + fl(hi T + lo C),
    whose error is |hi| g_T + |lo| (|T| + g_T) + 2^-100 |hi| |G| + the roundings of the three low terms.
    """
    hi, lo = rows.scale
    c, tail, g_tail = _logit_products(rows)  # (B, Hkv, R, Sk)
    y, y_lo = _two_product(hi, c)
    y_lo = (y_lo + tail * hi) + c * lo
    g_max = _row_max(np.where(np.abs(c) < 2.0**990, g_tail, np.inf), rows.allowed)
    c_max, t_max = _row_max(c, rows.allowed), _row_max(tail, rows.allowed)
    e = (abs(hi) * g_max + abs(lo) * (t_max + g_max) + SCALE_RESIDUAL * abs(hi) * (c_max + t_max + g_max)
         + 4 * U1 * (1 + U) * (U * abs(hi) * c_max + abs(hi) * t_max + abs(lo) * c_max) + 2.0**-1000)
    if rows.softcap is not None:
        y = y + y_lo
        y_max = _row_max(y, rows.allowed)
        x, e = _cap_and_bias(rows, y, e + U1 * y_max, y_max)
        return x, None, e
    x_lo = y_lo
    if rows.bias is not None:
        y, x_lo = _two_sum(y, rows.bias)
        x_lo += y_lo
        e = e + U1 * _row_max(x_lo, rows.allowed)
    x, x_lo = _two_sum(y, x_lo)  # renormalise: the tail may carry the whole logit when C = 0
    return x, x_lo, e


def _dense(need: np.ndarray | None) -> bool:
    """Return True when tier 2 computes every output: more than 1/64 of them are needed."""
    return need is None or 64 * need.sum() > need.size


def _precise_numerator(rows: _Rows, p: np.ndarray, need: np.ndarray | None):
    """Return (N~, nu, M, V, s, sigma_s) of tier 2: P V and the row sums, their bounds, M >= P |V| and V_d >= max_j |v_jd|.

    Dense: P V and the sums by :func:`_numerator_terms` per kv-head group. With ``need`` (B, Hkv, R, Dv) flagging
    at most 1/64 of the outputs, only those are computed, each as its own 1 x Sk by Sk x 1 split product; the
    others get N~ = NaN and nu = inf.
    """
    v = rows.v
    sk = v.shape[-2]
    if _dense(need):
        num, nu = np.empty(p.shape[:-1] + v.shape[-1:]), np.empty(p.shape[:-1] + v.shape[-1:])
        s, sigma_s = np.empty(p.shape[:-1] + (1,)), np.empty(p.shape[:-1] + (1,))
        for i, g in np.ndindex(p.shape[:2]):
            num[i, g], nu[i, g], s[i, g], sigma_s[i, g] = _numerator_terms(
                p[i, g], v[i, g], rows.stats.v_grid[i, g], rows.stats.v_max[i, g])
        return num, nu, (p @ np.abs(v)) / (1 - gamma(sk)) + sk * ETA, rows.stats.v_max, s, sigma_s
    s, sigma_s = _split_product(p, np.ones(v.shape[:-1] + (1,)), slices=2)  # (B, Hkv, R, 1)
    b, g, r, d = np.nonzero(need)
    pe, ve = p[b, g, r], np.swapaxes(v, -1, -2)[b, g, d]  # (E, Sk) each: P's row and V's column of a pair
    num_e, nu_e = _split_product(pe[:, None, :], ve[:, :, None], slices=2)  # (E, 1, 1)
    fields = [np.full(need.shape, fill) for fill in (np.nan, np.inf, np.inf, np.inf)]
    values = (num_e[:, 0, 0], nu_e[:, 0, 0], np.einsum("ej,ej->e", pe, np.abs(ve)) / (1 - gamma(sk)) + sk * ETA,
              np.max(np.abs(ve), axis=-1, initial=0.0))
    for field, value in zip(fields, values):
        field[b, g, r, d] = value
    return tuple(fields) + (s, sigma_s)


def _finish(num, dn, s, dl, shift, shift_err, usable, empty, empty_lse: float) -> _Enclosure:
    """Return the enclosures of O = N / l and LSE = shift + log l from |N - num| <= dn and |l - s| <= dl.

    Module docstring, "Output" and "LSE"; ``shift_err`` bounds the distance of the float ``shift`` from
    the exact shift. Arrays end in (R, Dv) for ``num``/``dn`` and (R, 1) for the others.
    """
    out = num / s
    out_rad = ((dn + np.abs(out) * (1 + U) * dl) / (s - dl) + U1 * np.abs(out)) * SLACK + TINY
    lam, log_err = _log_enclosure(np.where(empty, 1.0, s))
    lse = shift + lam
    lse_rad = ((dl / (s - dl) + log_err + U1 * np.abs(lse) + shift_err) * SLACK + TINY)[..., 0]
    lse = lse[..., 0]
    usable = usable & (s > dl)
    out_rad = np.where(usable & np.isfinite(out), out_rad, np.inf)
    lse_rad = np.where(usable[..., 0] & np.isfinite(lse), lse_rad, np.inf)
    out = np.where(empty, 0.0, out)
    out_rad = np.where(empty, 0.0, out_rad)
    lse = np.where(empty[..., 0], empty_lse, lse)
    lse_rad = np.where(empty[..., 0], 0.0, lse_rad)
    return _Enclosure(out, out_rad, lse, lse_rad, empty[..., 0])


def _evaluate(rows: _Rows, precise: bool, empty_lse: float, need: np.ndarray | None = None) -> _Enclosure:
    """Return the enclosures of O and LSE for every row (tier 2 when ``precise``, else tier 1a).

    ``need`` (tier 2 only) flags the outputs to compute; the others get an infinite radius.
    """
    sk = rows.k.shape[-2]
    x, x_lo, e = (_logits_precise if precise else _logits_fast)(rows)
    if not rows.allowed.all():
        x = np.where(rows.allowed, x, -np.inf)
    # Weights relative to the computed row max (module docstring, "Weights").
    m = np.max(x, axis=-1, keepdims=True, initial=-np.inf)  # (B, Hkv, R, 1)
    empty = m == -np.inf
    shift = np.where(empty, 0.0, m)
    if x_lo is None:
        t, t_lo = x - shift, None  # rounding error <= u'|t|: the H term below
    else:
        t, t_lo = _two_sum(x, -shift)  # exact
        t_lo += x_lo
        t_lo[t == -np.inf] = 0.0  # TwoSum(-inf, .) leaves NaN in the low part of a masked key
        e = e + U1 * _row_max(t_lo, rows.allowed)
        t, t_lo = _two_sum(t, t_lo)  # renormalise: |t_lo| <= u |t|, the kernel's domain
    e = e * SLACK + TINY
    tc = np.maximum(t, EXP_MIN)  # masked keys (-inf) and flushed weights
    p = exp_kernel(tc, t_lo)
    p[t < EXP_MIN] = 0.0
    h = 0.0
    if t_lo is None:
        h = -np.einsum("...j,...j->...", p, tc)[..., None] / (1 - gamma(sk))  # H >= sum p |t|, (B, Hkv, R, 1)
    # Sums (module docstring, "Sums").
    if precise:
        num, nu, m_abs, v_max, s, sigma_s = _precise_numerator(rows, p, need)
        s_up = s + sigma_s
    else:
        v_max = rows.stats.v_max  # (B, Hkv, 1, Dv)
        num = p @ rows.v  # (B, Hkv, R, Dv)
        s = p.sum(axis=-1, keepdims=True)
        s_up = s / (1 - gamma(sk - 1))
        sigma_s = gamma(sk - 1) * s_up
        m_abs = s_up * v_max  # Hölder
        nu = gamma(sk) * m_abs + sk * ETA
    theta = (e + EXP_REL) * (1 + 2.0**-20)
    tail = U1 * (1 + 2.0**-20) * h
    flushed = 2 * sk * EXP_TINY
    dl = (sigma_s + theta * s_up + tail + flushed) * SLACK + TINY
    dn = (nu + theta * m_abs + (tail + flushed) * v_max) * SLACK + TINY
    return _finish(num, dn, s, dl, shift, 0.0, e + EXP_REL <= WEIGHT_LIMIT, empty, empty_lse)


def _evaluate_exact(rows: _Rows, empty_lse: float) -> _Enclosure:
    """Return the tier-1b enclosures of every row: exact products, one kv-head group at a time.

    Only for problems without softcap and additive mask (module docstring, tier 1b).
    """
    b, hkv, r, _ = rows.q.shape
    dv = rows.v.shape[-1]
    out, out_rad = np.empty((b, hkv, r, dv)), np.empty((b, hkv, r, dv))
    lse, lse_rad, empty = np.empty((b, hkv, r)), np.empty((b, hkv, r)), np.empty((b, hkv, r), dtype=bool)
    for i, g in np.ndindex(b, hkv):
        enc = _exact_group(rows, i, g, empty_lse)
        out[i, g], out_rad[i, g], lse[i, g], lse_rad[i, g], empty[i, g] = (enc.out, enc.out_rad, enc.lse, enc.lse_rad,
                                                                         enc.empty)
    return _Enclosure(out, out_rad, lse, lse_rad, empty)


@dataclass(frozen=True)
class _Shifted:
    """Tier 1b's kernel arguments t for one kv-head group: |x_j - m - t_j| <= coef |t_j| + delta_j (module docstring).

    delta_j is 0 on the tight entries; ``loose`` lists (rows, index, delta) for the others. The exact
    shift of row r is m_r = sigma ref_r.
    """

    t: np.ndarray  # (R, Sk), -inf at masked keys
    coef: float
    loose: list
    ref: np.ndarray  # (R,)


def _shifted_logits(q: np.ndarray, k: np.ndarray, allowed: np.ndarray, scale: tuple[float, float],
                    k_grid: np.ndarray, k_norm: np.ndarray) -> _Shifted:
    """Return t = fl(hi fl(c - ref)) (+ tails on the loose entries) for one kv-head group (tier 1b, "weights")."""
    hi, _ = scale
    kappa = _kappa(scale)
    terms = _logit_terms(q, k, k_grid, k_norm)
    c = terms.c
    # The reference: the largest hi * c over each row's allowed keys (any float would do; this one keeps t <= ~0).
    if allowed.all():
        ref = c.max(axis=-1) if hi > 0 else c.min(axis=-1)
    else:
        ref = np.max(c, axis=-1, where=allowed, initial=-np.inf) if hi > 0 else \
            np.min(c, axis=-1, where=allowed, initial=np.inf)
    ref = np.where(np.isfinite(ref), ref, 0.0)  # (R,); rows without keys
    d = c  # c becomes d, then t, in place: it is not needed again
    d -= ref[:, None]  # (R, Sk): exact on the tight entries
    clean_rows = np.setdiff1d(np.arange(q.shape[0]), terms.rows)
    blocks = [(terms.rows, (terms.rows, slice(None)), terms.row_tail, terms.row_err)]
    if terms.keys.size:
        blocks.append((clean_rows, np.ix_(clean_rows, terms.keys), terms.key_tail[clean_rows], terms.key_err[clean_rows]))
    loose = []
    for at, idx, tail, err in blocks:  # d = fl(fl(c - ref) + T~) within eps of c - ref + T
        d[idx] += tail
        delta = abs(hi) * (1 + kappa) * (U1 * ((2 + U1) * np.abs(d[idx]) + np.abs(tail)) + err) * (1 + 4 * U)
        loose.append((at, idx, np.where(allowed[idx], delta, 0.0)))
    t = d
    t *= hi  # t = fl(hi d): |hi d - t| <= u'|t|
    if not allowed.all():
        t[~allowed] = -np.inf
    return _Shifted(t, U1 + kappa * (1 + U1), loose, ref)


def _scaled_shift(scale: tuple[float, float], ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (shift, err): the float shift = fl(m_hi + fl(m_lo + fl(lo ref))) and |shift - sigma ref| <= err."""
    hi, lo = scale
    m_hi, m_lo = _two_product(hi, ref)
    inner = m_lo + lo * ref
    shift = m_hi + inner
    err = (U1 * (np.abs(lo * ref) + np.abs(inner) + np.abs(shift)) + SCALE_RESIDUAL * np.abs(hi * ref)
           + 2.0**-1000) * SLACK
    return shift, err


def _exact_group(rows: _Rows, b: int, g: int, empty_lse: float) -> _Enclosure:
    """Return the tier-1b enclosures of batch b, kv head g (module docstring, tier 1b)."""
    v, allowed = rows.v[b, g], rows.allowed[b, g]
    sk = allowed.shape[-1]
    logits = _shifted_logits(rows.q[b, g], rows.k[b, g], allowed, rows.scale, rows.stats.k_grid[b, g],
                             rows.stats.k_norm[b, g])
    t = logits.t
    flushed_keys = t < EXP_MIN if np.min(t, initial=0.0) < EXP_MIN else None  # masked keys (-inf), tiny weights
    tc = np.maximum(t, EXP_MIN, out=t)
    p = exp_kernel(tc)
    if flushed_keys is not None:
        p[flushed_keys] = 0.0
    extra, extra_max = np.zeros(t.shape[0]), np.zeros(t.shape[0])
    for at, idx, delta in logits.loose:  # sum_j p_j delta_j over the loose entries, and the largest delta_j
        extra[at] += np.einsum("rj,rj->r", p[idx], delta) / (1 - gamma(sk))
        extra_max[at] = np.maximum(extra_max[at], np.max(delta, axis=-1, initial=0.0))
    num, nu, s, sigma_s = _numerator_terms(p, v, rows.stats.v_grid[b, g], rows.stats.v_max[b, g])
    s_up = (s + sigma_s)[:, 0]
    t_top, t_low = np.max(tc, axis=-1, initial=EXP_MIN), np.min(tc, axis=-1, initial=0.0)
    # H >= sum_j p_j |t_j| = -sum_j p_j t_j + 2 sum_{t_j > 0} p_j t_j
    h = (-np.einsum("rj,rj->r", p, tc) + 2 * s_up * np.maximum(t_top, 0.0)) / (1 - gamma(sk))
    weight = (1 + 2.0**-20) * (EXP_REL * s_up + logits.coef * h + extra) * SLACK  # >= sum_j |w_j - p_j|
    flushed = 2 * sk * EXP_TINY
    dl = (sigma_s + weight[:, None] + flushed) * SLACK + TINY
    dn = (nu + (weight[:, None] + flushed) * rows.stats.v_max[b, g]) * SLACK + TINY
    shift, shift_err = _scaled_shift(rows.scale, logits.ref)
    span = np.maximum(-t_low, t_top)  # >= |t_j| over every key
    usable = ((logits.coef * span + extra_max + EXP_REL <= WEIGHT_LIMIT) & (np.abs(logits.ref) < 2.0**960)
              & (t_top <= EXP_MAX))
    empty = ~allowed.any(axis=-1)
    return _finish(num, dn, s, dl, shift[:, None], shift_err[:, None], usable[:, None], empty[:, None], empty_lse)


# ----------------------------------------------------------------------------------------------
# Certified rounding and the tiers
# ----------------------------------------------------------------------------------------------

def round_enclosure(mid: np.ndarray, rad: np.ndarray, fmt: "Format | str") -> tuple[np.ndarray, np.ndarray]:
    """Return (value, ok): where ``ok``, every point of [mid - rad, mid + rad] rounds to ``value`` in ``fmt``.

    The ends are widened by 4u|mid| (1 + 2^-49) + 2^-1060 so that their own float64 rounding
    cannot move them inside the enclosure; rounding is monotone, so equal ends decide every
    point. A certified zero is +0 (module docstring, decision on the sign of zero).
    """
    mid = np.asarray(mid, dtype=np.float64)
    rad = np.asarray(rad, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        w = (rad + 2.0**-51 * np.abs(mid)) * (1 + 2.0**-49) + 2.0**-1060
        lo = round_to(mid - w, fmt)
        hi = round_to(mid + w, fmt)
    ok = np.isfinite(mid) & np.isfinite(rad) & ((lo == hi) | (np.isnan(lo) & np.isnan(hi)))
    return np.where(lo == 0, 0.0, lo), ok


@dataclass(frozen=True)
class CertifiedResult:
    """O (B, Hq, Sq, Dv) and LSE (B, Hq, Sq): enclosures, and their certified rounding into ``fmt``.

    ``out``/``lse`` are None when no format was requested. ``first_tier`` names the tier that
    evaluated every row ("1a" a-priori bounds, "1b" exact products); ``refined_rows`` counts
    the query rows recomputed by tier 2; ``fallback_out``/``fallback_lse`` count the elements
    taken from the mpmath oracle, in ``fallback_rows`` rows; ``uncertified`` lists the rows
    whose oracle rounding was itself uncertified (only with ``strict=False``).
    """

    out_mid: np.ndarray
    out_rad: np.ndarray
    lse_mid: np.ndarray
    lse_rad: np.ndarray
    fmt: Format | None
    out: np.ndarray | None
    lse: np.ndarray | None
    refined_rows: int
    fallback_out: int
    fallback_lse: int
    fallback_rows: int
    uncertified: tuple = ()
    first_tier: str = "1a"

    @property
    def certified(self) -> bool:
        """Return True when every element of ``out`` and ``lse`` is certified."""
        return not self.uncertified

    def summary(self) -> str:
        """Return a one-line account of which tier decided how much."""
        return (f"{self.out_mid.size} outputs, {self.lse_mid.size} LSE; tier {self.first_tier} for all rows; "
                f"tier 2 rows: {self.refined_rows}; mpmath elements: {self.fallback_out} O + {self.fallback_lse} "
                f"LSE in {self.fallback_rows} rows")


def certified_attention(q, k, v, *, fmt: "Format | str | None" = Format.FP32, dps: int = DEFAULT_DPS,
                        strict: bool = True, **conventions) -> CertifiedResult:
    """Return attention of Q, K, V correctly rounded into ``fmt``, with float64 enclosures.

    ``conventions`` are the keywords of :func:`spec.problem.attention_problem`; ``dps`` and
    ``strict`` are passed to the mpmath oracle for the elements it decides (strict: raise
    ``OracleUncertifiedError`` where even the oracle cannot certify, as the oracle does).
    """
    return certified_from_problem(attention_problem(q, k, v, **conventions), fmt=fmt, dps=dps, strict=strict)


def certified_from_problem(problem: AttentionProblem, *, fmt: "Format | str | None" = Format.FP32,
                           dps: int = DEFAULT_DPS, strict: bool = True) -> CertifiedResult:
    """Return the certified result of a validated problem (see :func:`certified_attention`)."""
    return _certified(problem, fmt, dps, strict, first=None)


START_UNCERTIFIED = 0.5  # tier 1b runs first when tier 1a is predicted to leave this many outputs per row
TYPICAL_SPREAD = 2.0**6  # max_j |v_jd| / |O_d| assumed by that prediction (an average over many keys)


def _exact_applies(rows: _Rows) -> bool:
    """Return True when tier 1b can evaluate the rows: no softcap, no additive mask, and some rows and keys."""
    return rows.softcap is None and rows.bias is None and rows.q.size > 0 and rows.k.shape[2] > 0


def _first_tier(rows: _Rows, f: Format | None) -> str:
    """Return "1b" when exact products should evaluate every row first, else "1a" (module docstring, decision).

    Tier 1a's enclosure of O_d is at least rel * max_j |v_jd| wide, rel = |scale| gamma_Dk
    max ||q|| max ||k|| + gamma_Sk; an output O_d is uncertified with probability ~2 rad / ulp(O_d)
    = 2^p rel max|v| / |O_d|, so a row of Dv outputs is predicted to leave Dv 2^p rel TYPICAL_SPREAD.
    The choice affects the time only: every tier's enclosures are rigorous.
    """
    if f is None or not _exact_applies(rows):
        return "1a"
    dk, sk, dv = rows.q.shape[-1], rows.k.shape[2], rows.v.shape[-1]
    rel = (abs(rows.scale[0]) * gamma(dk) * np.max(_norm_up(rows.q), initial=0.0)
           * np.max(rows.stats.k_norm, initial=0.0) + gamma(sk))
    return "1b" if dv * 2.0**f.info.p * rel * TYPICAL_SPREAD >= START_UNCERTIFIED else "1a"


def _certified(problem: AttentionProblem, fmt, dps: int, strict: bool, first: str | None) -> CertifiedResult:
    """Return the certified result, with tier ``first`` ("1a" or "1b"; None: :func:`_first_tier`) for every row."""
    f = None if fmt is None else get_format(fmt)
    require(f is not Format.FP64, FormatError,
            "fmt: expected fp32, bf16, fp16, fp8_e4m3, fp8_e5m2 or None, got fp64 (use out_mid/out_rad, or "
            "reference.oracle for correctly rounded float64)")
    rows = _grouped(problem)
    first = first or _first_tier(rows, f)
    with np.errstate(all="ignore"):
        if first == "1b" and _exact_applies(rows):
            enc = _evaluate_exact(rows, problem.empty_lse)
        else:
            first, enc = "1a", _evaluate(rows, precise=False, empty_lse=problem.empty_lse)
    refined: set = set()
    out = lse = None
    fallback = (0, 0, 0)
    uncertified: list = []
    if f is not None:
        out, ok_out, lse, ok_lse = _certify(enc, f)
        for _ in range(2):  # tier 2; a dense pass leaves few outputs, which one sparse pass then refines
            dense = False
            bad = ~ok_out.all(axis=-1) | ~ok_lse  # (B, Hkv, R)
            for b, g in sorted({(int(i), int(j)) for i, j, _ in np.argwhere(bad)}):
                idx = np.flatnonzero(bad[b, g])
                refined.update((b, g, int(r)) for r in idx)
                need = ~ok_out[b, g, idx][None, None]  # (1, 1, rows, Dv)
                dense |= _dense(need)
                with np.errstate(all="ignore"):
                    sub = _evaluate(rows.subset(b, g, idx), precise=True, empty_lse=problem.empty_lse, need=need)
                better = need[0, 0] & (sub.out_rad[0, 0] < enc.out_rad[b, g, idx])
                enc.out[b, g, idx] = np.where(better, sub.out[0, 0], enc.out[b, g, idx])
                enc.out_rad[b, g, idx] = np.where(better, sub.out_rad[0, 0], enc.out_rad[b, g, idx])
                better_lse = sub.lse_rad[0, 0] < enc.lse_rad[b, g, idx]
                enc.lse[b, g, idx] = np.where(better_lse, sub.lse[0, 0], enc.lse[b, g, idx])
                enc.lse_rad[b, g, idx] = np.where(better_lse, sub.lse_rad[0, 0], enc.lse_rad[b, g, idx])
            if not bad.any():
                break
            out, ok_out, lse, ok_lse = _certify(enc, f)
            if not dense:
                break
        fallback = _fallback(problem, out, ok_out, lse, ok_lse, f, dps, strict, uncertified)
    shape = problem.q.shape[:3]
    out_shape = shape + (problem.v.shape[3],)  # (B, Hq, Sq, Dv)
    return CertifiedResult(
        out_mid=enc.out.reshape(out_shape), out_rad=enc.out_rad.reshape(out_shape),
        lse_mid=enc.lse.reshape(shape), lse_rad=enc.lse_rad.reshape(shape), fmt=f,
        out=None if out is None else out.reshape(out_shape), lse=None if lse is None else lse.reshape(shape),
        refined_rows=len(refined), fallback_out=fallback[0], fallback_lse=fallback[1], fallback_rows=fallback[2],
        uncertified=tuple(uncertified), first_tier=first)


def _certify(enc: _Enclosure, f: Format):
    """Return (out, ok_out, lse, ok_lse) in the grouped layout; empty rows hold their defined values."""
    out, ok_out = round_enclosure(enc.out, enc.out_rad, f)
    lse, ok_lse = round_enclosure(enc.lse, enc.lse_rad, f)
    lse = np.where(enc.empty, enc.lse, lse)  # empty_lse is the defined result, not a rounding
    return out, ok_out | enc.empty[..., None], lse, ok_lse | enc.empty


def _fallback(problem: AttentionProblem, out, ok_out, lse, ok_lse, f: Format, dps: int, strict: bool,
              uncertified: list) -> tuple[int, int, int]:
    """Fill the elements no float64 enclosure decided from the mpmath oracle; return the counts."""
    b_, hq, sq, _ = problem.q.shape
    group = hq // problem.kv_heads
    need = ~ok_out.all(axis=-1) | ~ok_lse
    bias = None if problem.bias is None else problem.bias_full()
    for b, g, r in map(tuple, np.argwhere(need)):
        head, i = g * group + r // sq, r % sq
        cols = np.flatnonzero(~ok_out[b, g, r])
        cols = cols if cols.size else np.arange(1)
        pick = (slice(b, b + 1), slice(head, head + 1), slice(i, i + 1))
        sub = replace(problem, q=problem.q[pick], k=problem.k[b:b + 1, g:g + 1],
                      v=problem.v[b:b + 1, g:g + 1][..., cols], allowed=problem.allowed[pick],
                      bias=None if bias is None else bias[pick], q_lens=np.ones(1, dtype=np.int64),
                      kv_lens=problem.kv_lens[b:b + 1])
        exact = oracle_from_problem(sub, dps=dps)
        o, ell = exact.rounded(f, strict=strict)
        out[b, g, r, cols] = np.where(o[0, 0, 0] == 0, 0.0, o[0, 0, 0])
        lse[b, g, r] = ell[0, 0, 0]
        if not exact.certified:
            uncertified.append((int(b), int(head), int(i)))
    return int((~ok_out).sum()), int((~ok_lse).sum()), int(need.sum())


# ----------------------------------------------------------------------------------------------
# Adversarial cases (near and exact rounding ties, cancellation, extremes) and the checks
# ----------------------------------------------------------------------------------------------

def _nearest_midpoint(x: float, f: Format) -> float:
    """Return the rounding midpoint of ``f`` nearest to ``x`` (exact in float64 for p <= 24)."""
    r = float(round_to(x, f))
    other = float(next_up(r, f) if x >= r else next_down(r, f))
    return (r + other) / 2


def near_tie_case(fmt: "Format | str", seed: int) -> AttentionCase:
    """Return a one-row case whose outputs and LSE lie within ~2^-53 (relative) of midpoints of ``fmt``.

    Two keys with exact logits 0 and x (scale 1): O = (v1 + e^x v2) / (1 + e^x), LSE = log(1 + e^x).
    x is solved in mpmath for LSE = a midpoint, then each v2 for O = a midpoint.
    """
    f = get_format(fmt)
    rng = np.random.default_rng(seed)
    dv = 3
    with mpmath.workprec(200):
        lse_mid = _nearest_midpoint(float(rng.uniform(0.8, 3.0)), f)
        x = float(mpmath.log(mpmath.exp(lse_mid) - 1))
        ex = mpmath.exp(mpmath.mpf(x))
        v1 = round_to(rng.uniform(-2, 2, dv), f)
        v2 = []
        for a in v1:
            guess = (a + float(ex) * rng.uniform(-2, 2)) / (1 + float(ex))
            mid = _nearest_midpoint(guess, f)
            v2.append(float((mid * (1 + ex) - a) / ex))
    q = np.ones((1, 1, 1, 1))
    k = np.array([0.0, x]).reshape(1, 1, 2, 1)
    v = np.stack([v1, np.array(v2)]).reshape(1, 1, 2, dv)
    return AttentionCase(q, k, v, {"scale": 1.0})


def exact_tie_case(fmt: "Format | str", seed: int) -> AttentionCase:
    """Return a case with exact ties: equal logits and V columns whose mean is a midpoint of ``fmt``.

    Row 1 sees four keys with one logit; each V column holds mid -+ a, mid -+ b (a, b with few
    bits, so these are exact), so O is exactly a midpoint. Row 0 sees only key 0, whose logit
    is a midpoint, so LSE is exactly one.
    """
    f = get_format(fmt)
    rng = np.random.default_rng(seed)
    mids = [_nearest_midpoint(float(rng.uniform(-3, 3)), f) for _ in range(2)]
    a, b = rng.integers(1, 2**20, 2) * 2.0**-22
    v = np.array([[m - a, m + a, m - b, m + b] for m in mids]).T  # (4 keys, 2 columns), exact mean m
    logit = _nearest_midpoint(float(rng.uniform(0.5, 2)), f)
    mask = np.array([[True, False, False, False], [True, True, True, True]])
    return AttentionCase(np.ones((1, 1, 2, 1)), np.full((1, 1, 4, 1), logit), v.reshape(1, 1, 4, 2),
                         {"scale": 1.0, "mask": mask})


def cancelling_logit_case(fmt: "Format | str", seed: int) -> AttentionCase:
    """Return a case whose logit q.k2 suffers massive cancellation, with its output near a midpoint.

    q = (A,..,A, 1, A,..,A), k2 = (1,..,1, f, -1,..,-1, -1 + c): f arrives while every
    accumulator of the float64 dot product holds a partial sum >= A, so it is lost; the
    a-priori bound gamma_D |q|.|k| covers that, a bound without it does not. O = sigmoid(q.k2)
    for V = (0, 1) is steered by c and f onto a midpoint of ``fmt``.
    """
    f = get_format(fmt)
    rng = np.random.default_rng(seed)
    m = 16  # positives before f: more than the accumulators of any BLAS dot kernel
    big = 2.0 ** int(rng.integers(20, 30))
    with mpmath.workprec(200):
        mid = _nearest_midpoint(float(rng.uniform(0.3, 0.7)), f)
        target = mpmath.log(mid / (1 - mid))  # sigmoid(target) = mid
        c = float(-1 + float(target / big)) + 1  # -1 + c is a float
        fine = float(target - big * mpmath.mpf(c))
    q = np.concatenate([np.full(m, big), [1.0], np.full(m, big)])
    k2 = np.concatenate([np.ones(m), [fine], -np.ones(m)])
    k2[-1] = -1 + c
    d = q.size
    k = np.stack([np.zeros(d), k2]).reshape(1, 1, 2, d)
    v = np.array([0.0, 1.0]).reshape(1, 1, 2, 1)
    return AttentionCase(q.reshape(1, 1, 1, d), k, v, {"scale": 1.0})


def cancelling_weights_case(fmt: "Format | str", seed: int) -> AttentionCase:
    """Return a case whose numerator cancels: logits 0 and t (tiny), V = (1, -a) with a e^t ~ 1.

    O = (1 - a e^t) / (1 + e^t) is ~2^-40 while each weight is only known to EXP_REL: the
    exp error term dominates the bound, and a bound without it certifies wrong roundings.
    """
    f = get_format(fmt)
    rng = np.random.default_rng(seed)
    t = float(rng.uniform(1, 2)) * 2.0**-20
    with mpmath.workprec(200):
        a = float(mpmath.exp(-mpmath.mpf(t)) * (1 + mpmath.mpf(float(rng.uniform(-4, 4))) * 2**-40))
    v = np.array([[1.0, round_to(rng.uniform(-1, 1), f)], [-a, round_to(rng.uniform(-1, 1), f)]])
    return AttentionCase(np.ones((1, 1, 1, 1)), np.array([0.0, t]).reshape(1, 1, 2, 1), v.reshape(1, 1, 2, 2),
                         {"scale": 1.0})


def grid_tie_case(fmt: "Format | str", seed: int) -> AttentionCase:
    """Return a case on which tier 1b's exact products apply, with row 0's O and LSE within ~2^-53 of midpoints.

    Q, K, V hold BF16 values of N(0, 1) with a tiny element in one row of Q (a split row), in
    one key and in one row of V (off the grid). Then K[1, 0] is solved in mpmath for row 0's
    LSE on a midpoint of ``fmt``, and V[2, :] for row 0's outputs on midpoints; both become
    float64 values off the grid. The scale alternates with the seed between 0.3 (logits ~ N(0, 0.7))
    and 3 (logits spread over ~40: large |t| in the weights).
    """
    f = get_format(fmt)
    rng = np.random.default_rng(seed)
    scale = (0.3, 3.0)[seed % 2]
    q = round_to(rng.standard_normal((1, 2, 2, 8)), Format.BF16)  # (B, Hq, Sq, Dk): 4 rows of one kv head
    k = round_to(rng.standard_normal((1, 1, 40, 8)), Format.BF16)
    v = round_to(rng.standard_normal((1, 1, 40, 3)), Format.BF16)
    q[0, 1, 0, 3], k[0, 0, 5, 2], v[0, 0, 7, 1] = 2.0**-30, 1.5 * 2.0**-31, 2.0**-29
    row, sigma = q[0, 0, 0], Fraction(scale)

    def weights():  # exact weights of row 0 relative to its first key, at 200 bits
        dots = [sigma * sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(row, key)) for key in k[0, 0]]
        return [mpmath.exp(mpmath.mpf(d.numerator) / d.denominator - mpmath.mpf(dots[0].numerator) / dots[0].denominator)
                for d in dots], dots[0]

    with mpmath.workprec(200):
        w, base = weights()
        lse = mpmath.log(sum(w)) + mpmath.mpf(base.numerator) / base.denominator
        target = mpmath.mpf(_nearest_midpoint(float(lse), f))
        if target <= lse:  # the midpoint above: key 1's weight can only grow to reach it
            target = mpmath.mpf(_nearest_midpoint(float(next_up(round_to(float(lse), f), f)), f))
        shift = mpmath.mpf(base.numerator) / base.denominator
        logit = mpmath.log(mpmath.exp(target - shift) - (sum(w) - w[1])) + shift  # key 1's logit for LSE = target
        rest = sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(row[1:], k[0, 0, 1, 1:]))
        k[0, 0, 1, 0] = float((logit / scale - mpmath.mpf(rest.numerator) / rest.denominator) / float(row[0]))
        w, _ = weights()
        total = sum(w)
        for d in range(3):
            others = sum(wj * float(v[0, 0, j, d]) for j, wj in enumerate(w) if j != 2)
            mid = _nearest_midpoint(float((others + w[2] * float(v[0, 0, 2, d])) / total), f)
            v[0, 0, 2, d] = float((mid * total - others) / w[2])
    return AttentionCase(q, k, v, {"scale": scale})


def extreme_cases() -> list[tuple[AttentionCase, str]]:
    """Return (case, format) pairs at the edges: flushed weights, huge and tiny values, overflow, empty rows."""
    rng = np.random.default_rng(7)

    def arrays(*shape, scale=1.0, fmt=Format.FP32):
        return round_to(rng.standard_normal(shape) * scale, fmt)

    q, k, v = arrays(1, 2, 3, 4), arrays(1, 1, 5, 4), arrays(1, 1, 5, 3)
    bias = np.where(rng.uniform(size=(1, 2, 3, 5)) < 0.3, -np.inf, rng.uniform(-3, 3, (1, 2, 3, 5)))
    return [
        (AttentionCase(arrays(1, 2, 3, 4, scale=300.0), arrays(1, 1, 6, 4, scale=300.0), arrays(1, 1, 6, 3)), "fp32"),
        (AttentionCase(q, k, arrays(1, 1, 5, 3, scale=1e-300, fmt=Format.FP64)), "fp32"),
        (AttentionCase(q, k, arrays(1, 1, 5, 3, scale=1e300, fmt=Format.FP64)), "bf16"),
        (AttentionCase(q, k, arrays(1, 1, 5, 3, scale=6e4)), "fp16"),
        (AttentionCase(q, k, v, {"kv_seqlens": np.array([0]), "empty_lse": np.inf}), "fp32"),
        (AttentionCase(arrays(1, 2, 6, 4), k, v, {"causal": True, "window": (1, 0)}), "bf16"),
        (AttentionCase(q, k, v, {"mask": bias}), "fp32"),
        (AttentionCase(arrays(1, 2, 3, 4, scale=30.0), k, v, {"softcap": 5.0}), "fp16"),
        (AttentionCase(q, arrays(1, 1, 0, 4), arrays(1, 1, 0, 3)), "fp32"),
        (AttentionCase(arrays(1, 2, 3, 4, scale=1e-150, fmt=Format.FP64), arrays(1, 1, 5, 4, scale=1e150,
                                                                                 fmt=Format.FP64), v), "fp32"),
    ]


def adversarial_cases(seeds: range) -> list[tuple[AttentionCase, str]]:
    """Return the near-tie, exact-tie and cancellation cases of every format for ``seeds``, and the extremes."""
    cases = [(build(f, seed), f) for seed in seeds for f in ("fp32", "bf16", "fp16")
             for build in (near_tie_case, exact_tie_case, cancelling_logit_case, cancelling_weights_case, grid_tie_case)]
    return cases + extreme_cases()


def disagreement(case: AttentionCase, fmt: str, dps: int = DEFAULT_DPS, first: str | None = None) -> str | None:
    """Return why the certified result of ``case`` differs from the mpmath oracle's, or None if it agrees.

    Agreement: the same rounding into ``fmt`` for every element (zeros compare equal whatever
    their sign; NaN equals NaN), and the exact value (the oracle's enclosure) inside every
    finite float64 enclosure. ``first`` forces tier 1a or 1b for every row (None: the rule).
    """
    problem = attention_problem(case.q, case.k, case.v, **case.conventions)
    got = _certified(problem, fmt, dps, True, first)
    exact = attention_oracle(case.q, case.k, case.v, dps=dps, **case.conventions)
    out, lse = exact.rounded(fmt)
    for name, mine, theirs in (("out", got.out, out), ("lse", got.lse, lse)):
        bad = ~((mine == theirs) | (np.isnan(mine) & np.isnan(theirs)))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            return (f"{name}{list(idx)}={mine[idx]!r}, but the oracle rounds to {theirs[idx]!r} [{case.describe()}, "
                    f"{fmt}, tier {got.first_tier}]")
    with mpmath.workprec(4096):  # exact sums of the float64 ends and the interval's ends
        for name, mid, rad, ivs in (("out", got.out_mid, got.out_rad, exact.out_iv),
                                    ("lse", got.lse_mid, got.lse_rad, exact.lse_iv)):
            for idx in zip(*np.nonzero(np.isfinite(rad))):
                if ivs[idx] is None:  # an empty row: its LSE is the convention, not a value
                    continue
                lo, hi = (mpmath.mp.make_mpf(end) for end in ivs[idx]._mpi_)
                m, r = mpmath.mpf(float(mid[idx])), mpmath.mpf(float(rad[idx]))
                if hi < m - r or lo > m + r:
                    return (f"{name}{[int(i) for i in idx]}: enclosure {mid[idx]!r} +- {rad[idx]!r} misses the "
                            f"exact value in [{lo}, {hi}] [{case.describe()}, {fmt}, tier {got.first_tier}]")
    return None


def _agreement_outcome(cases: list[tuple[AttentionCase, str]]) -> Outcome:
    """Return the registry outcome of comparing the certified oracle, from either first tier, with the mpmath oracle."""
    for case, fmt in cases:
        for first in ("1a", "1b"):
            why = disagreement(case, fmt, first=first)
            if why is not None:
                return Outcome("fail", why)
    return Outcome("pass", f"{len(cases)} cases agree with the mpmath oracle from tiers 1a and 1b (near and exact "
                           f"ties, cancellation, extremes)", {"cases": len(cases)})


@check("certified-vs-oracle", "oracle")
def check_agrees_with_oracle() -> Outcome:
    """The certified oracle and the mpmath oracle round identically on the seeded adversarial cases."""
    return _agreement_outcome(adversarial_cases(range(1)))


@check("certified-vs-oracle-thorough", "oracle", quick=False)
def check_agrees_with_oracle_thorough() -> Outcome:
    """As certified-vs-oracle, over twenty seeds."""
    return _agreement_outcome(adversarial_cases(range(20)))


def exp_kernel_error(t: np.ndarray) -> float:
    """Return max |exp_kernel(t) / exp(t) - 1| over ``t``, with exp(t) from mpmath at 120 bits."""
    y = exp_kernel(t)
    with mpmath.workprec(120):
        return float(max((abs(mpmath.mpf(float(a)) / mpmath.exp(mpmath.mpf(float(b))) - 1) for a, b in zip(y, t)),
                         default=0))


def exp_kernel_sample(seed: int, count: int) -> np.ndarray:
    """Return arguments for the exp kernel: uniform over its domain and near 0, and the table's and
    reduction's boundaries (multiples and half-multiples of ln2/256), and the domain's ends."""
    rng = np.random.default_rng(seed)
    c = math.log(2) / _TABLE
    steps = rng.integers(-_K_MAX // 2, _K_MAX // 2, count // 4)
    return np.concatenate([rng.uniform(EXP_MIN, EXP_MAX, count // 4), rng.uniform(-1, 1, count // 4), steps * c,
                           (steps + 0.5) * c, [EXP_MIN, EXP_MAX, 0.0, -0.0, 5e-324, -5e-324]])


@check("certified-exp-kernel", "oracle")
def check_exp_kernel() -> Outcome:
    """exp_kernel stays within its derived bound EXP_REL against mpmath on a seeded sample."""
    worst = exp_kernel_error(exp_kernel_sample(0, 4000))
    return Outcome.from_bool(worst <= EXP_REL, f"max relative error {worst / U:.4f} u, derived bound {EXP_REL / U:.4f} u",
                             {"max_error_u": worst / U, "bound_u": EXP_REL / U})
