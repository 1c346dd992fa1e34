"""The rounding-aware choice of PASA's beta: fixed points of beta/(1-beta) = f(beta).

Normative source: chenglong92/PASA, branch PASA_Torch, commit
14f5c6f6a13d3a68352e74d123b48aa3a0bf460c, ``optimal_para.py`` (``obtainInvPam``,
``optimal_beta``); the paper (Cheng et al., arXiv:2503.01873v1) describes the same routine
as a "nonlinear condition" solved by fixed-point iteration in FP64.

PASA shifts each KV block by M = c (I - (beta/n) 1 1^T) (c = 1 when the softmax scale is
applied elsewhere) and later adds back gamma * r' with gamma = beta/(1-beta). In a low
precision format F the kernel stores M-tilde with entries

    M0 = fl_F(c (1 - beta/n))      (diagonal)
    M1 = fl_F(-c beta/n)           (off-diagonal)

i.e. M-tilde = a I - b 1 1^T with b = -M1 and a = M0 + b. The author's condition is

    beta/(1-beta) = f(beta),   f(beta) = c n b / (a (a - n b)) + (c - a)/a,

(``optimal_para.py`` has c = 1; with the scale folded in, c = 1/sqrt(d)), iterated as
beta_{k+1} = f(beta_k) / (1 + f(beta_k)) with a relative stopping tolerance of 1e-8.

Closed form (derivation, ours): 1 + f = c/(a - n b), hence

    f/(1 + f) = 1 - (a - n b)/c = 1 - (M0 + (n-1) M1)/c.

a - n b = M0 + (n-1) M1 is the row sum of M-tilde: its eigenvalue on the constant vector.
So beta is a fixed point exactly when the *stored* matrix removes the fraction beta of every
row mean, 1^T M-tilde = c (1 - beta) 1^T, and the map beta -> f/(1+f) is piecewise constant
(it only sees beta through the rounded entries). At a fixed point the recovered logits are
S' + gamma r' = S + (a/c - 1)(S - r 1^T) exactly (proved in ``proofs/pasa_recovery.py``):
the error no longer depends on the block mean r, only on the centred scores. Away from a
fixed point it carries a per-(row, block) constant error (gamma - f(beta)) r' that softmax
cancels only when every block has the same mean.

Decision (2026-11-28): the default beta is 1 - 2**-4 = 0.9375 with the scale applied to Q
(``spec.pasa.PASA_ATTNSPEC``). Reasons:

- For n = 128 and c = 1 it is an exact fixed point in FP16 *and* nothing rounds: beta/n =
  15/2048 and 1 - beta/n = 2033/2048 are FP16 values, so a = 1 and the recovery identity
  holds without the (a/c - 1) term; gamma = 15 is an FP16 value too. The other two seeds
  give fixed points 0.968994140625 and 0.9844970703125 whose gamma (31.2519..., 63.5039...)
  is not an FP16 value (stored as 31.25 and 63.5): a per-block error of up to 0.004 r'.
- gamma multiplies every rounding error of the row means r' and of R-bar; 15 amplifies them
  two to four times less than 31.25 or 63.5.
- The residual bias (1 - beta)|b| = |b|/16 already keeps the shifted scores of the paper's
  grid (|b| <= 30, A <= 20, d = 128) below 23,000, and the certificate in
  ``reference/pasa_bounds.py`` extends the FP16-safe region to |b| of a few hundred.
Folding the scale into M (the author's layout) makes a != 1 for every beta; its fixed points
near the seeds are 0.93743..., 0.96895... and 0.98471... for d = 128 (``fixed_point``).
The author's final script uses 0.984497 with the scale folded in, which is not a fixed point
of that matrix (the nearest is 0.98471...).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .errors import DomainError, ShapeError, require
from .formats import Format, get_format, next_up, round_exact, round_to

DEFAULT_TOL = 1.0e-8  # optimal_para.py: optimal_beta(tol = 1.0e-8)


def _check(beta: float, n: int, scale: float) -> None:
    require(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1, ShapeError,
            f"n: expected a block length >= 1, got {n!r}")
    require(np.isfinite(beta) and 0.0 <= beta < 1.0, DomainError, f"beta: expected 0 <= beta < 1, got {beta!r}")
    require(np.isfinite(scale) and scale > 0.0, DomainError, f"scale: expected a finite scale > 0, got {scale!r}")


def stored_shift_entries(beta: float, n: int, *, fmt: "Format | str" = Format.FP16,
                         scale: float = 1.0) -> tuple[float, float]:
    """Return (M0, M1), the diagonal and off-diagonal of scale*(I - (beta/n) 1 1^T) rounded once into ``fmt``.

    Each entry is evaluated in binary64 and rounded once (optimal_para.py ``obtainInvPam``:
    ``M0 = 1 - beta0/N``, ``M1 = -beta0/N`` in float64, then cast to ``tp``).
    """
    _check(beta, n, scale)
    f = get_format(fmt)
    m0 = float(round_to(scale * (1.0 - beta / n), f))
    m1 = float(round_to(-scale * beta / n, f))
    return m0, m1


def recovery_coefficient(beta: float, n: int, *, fmt: "Format | str" = Format.FP16, scale: float = 1.0) -> float:
    """Return f(beta) = c n b/(a (a - n b)) + (c - a)/a in binary64, with a, b from the stored entries."""
    m0, m1 = stored_shift_entries(beta, n, fmt=fmt, scale=scale)
    b = -m1
    a = m0 + b
    return scale * n * b / (a * (a - n * b)) + (scale - a) / a  # optimal_para.py obtainInvPam (c = 1 there)


def beta_map(beta: float, n: int, *, fmt: "Format | str" = Format.FP16, scale: float = 1.0) -> Fraction:
    """Return f/(1+f) exactly, as 1 - (M0 + (n-1) M1)/c (the closed form of the module docstring)."""
    m0, m1 = stored_shift_entries(beta, n, fmt=fmt, scale=scale)
    return 1 - (Fraction(m0) + (n - 1) * Fraction(m1)) / Fraction(scale)


def is_fixed_point(beta: float, n: int, *, fmt: "Format | str" = Format.FP16, scale: float = 1.0) -> bool:
    """Return True when ``beta`` is a binary64 number equal to the exact value of the map at itself.

    With a scale that is not a power of two the exact fixed point is usually not a binary64
    number; then no float is a fixed point in this exact sense and :func:`fixed_point`
    returns the binary64 rounding of the exact one.
    """
    return beta_map(beta, n, fmt=fmt, scale=scale) == Fraction(beta)


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point of the beta map: its value, gamma = beta/(1-beta), and the iteration that found it."""

    beta: float
    gamma: float
    iterations: int
    exact: Fraction  # the value of the map in the fixed point's rounding cell
    stored_entries: tuple[float, float]


def fixed_point(beta0: float, n: int, *, fmt: "Format | str" = Format.FP16, scale: float = 1.0,
                tol: float = DEFAULT_TOL, max_iter: int = 100) -> FixedPoint:
    """Return the fixed point reached from ``beta0`` by optimal_para.py's iteration.

    The iteration is the author's: beta <- f/(1+f) until |beta_new - beta|/|beta| <= tol.
    The returned ``beta`` is the binary64 rounding of the exact map value of the final
    rounding cell; :class:`DomainError` if the cell of that value is not its own (the
    iteration stopped on a cell boundary) or ``max_iter`` is reached.
    """
    _check(beta0, n, scale)
    beta, err, iterations = float(beta0), 1.0, 0
    while err > tol:  # optimal_para.py optimal_beta
        require(iterations < max_iter, DomainError,
                f"beta0: expected the iteration to converge within {max_iter} steps, it did not from {beta0!r}")
        f = recovery_coefficient(beta, n, fmt=fmt, scale=scale)
        new = f / (1.0 + f)
        err = abs(new - beta) / abs(beta)
        beta, iterations = new, iterations + 1
    exact = beta_map(beta, n, fmt=fmt, scale=scale)
    value = float(round_exact(exact, Format.FP64))
    require(stored_shift_entries(value, n, fmt=fmt, scale=scale) == stored_shift_entries(beta, n, fmt=fmt, scale=scale),
            DomainError, f"beta0: the iteration from {beta0!r} stopped at {beta!r}, whose rounding cell does not "
                         f"contain its own map value {value!r}")
    return FixedPoint(beta=value, gamma=value / (1.0 - value), iterations=iterations, exact=exact,
                      stored_entries=stored_shift_entries(value, n, fmt=fmt, scale=scale))


def fixed_points(n: int, *, fmt: "Format | str" = Format.FP16, scale: float = 1.0, lo: float = 0.5,
                 hi: float = 0.999) -> list[float]:
    """Return every fixed point in [lo, hi], sorted (binary64 roundings of the exact values).

    The map only sees beta through (M0, M1), so it is constant on the cells between the
    points where scale*beta/n or scale*(1 - beta/n) crosses a rounding boundary of ``fmt``.
    Each cell's map value is a candidate; it is a fixed point iff rounding at that value
    reproduces the cell's entries.
    """
    _check(lo, n, scale)
    _check(hi, n, scale)
    require(lo <= hi, DomainError, f"lo, hi: expected lo <= hi, got {lo!r} > {hi!r}")
    f = get_format(fmt)
    cuts = {lo, hi}
    # Rounding boundaries of the two entries inside the range: midpoints between neighbouring F values.
    for first, last, to_beta in ((scale * lo / n, scale * hi / n, lambda x: x * n / scale),
                                 (scale * (1 - hi / n), scale * (1 - lo / n), lambda x: n * (1 - x / scale))):
        x = float(round_to(first, f))
        while x <= last:
            above = float(next_up(x, f))
            beta = to_beta((x + above) / 2)
            if lo < beta < hi:
                cuts.add(beta)
            x = above
    betas = sorted(c for c in cuts if lo <= c <= hi)
    found = set()
    for left, right in zip(betas, betas[1:]):
        candidate = float(round_exact(beta_map((left + right) / 2, n, fmt=fmt, scale=scale), Format.FP64))
        if lo <= candidate <= hi and stored_shift_entries(candidate, n, fmt=fmt, scale=scale) == \
                stored_shift_entries((left + right) / 2, n, fmt=fmt, scale=scale):
            found.add(candidate)
    return sorted(found)
