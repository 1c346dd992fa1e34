"""Precision policies: where an algorithm rounds, and how its dot products and sums round.

Every algorithm in ``spec/`` takes a :class:`PrecisionPolicy`. The policy names four formats,
one per kind of value a kernel holds:

==============  ==========================================================================
matmul_input    the operands of the two GEMMs (Q, K, V, and P before P.V)
accumulate      the GEMM outputs (S = Q K^T, the P.V partials, the running O)
softmax         the vector unit's values (scale, max, exp, l, rescale factors, LSE)
output          the final O written back to memory
==============  ==========================================================================

and one accumulation rule for every dot product and row sum:

``"exact"`` (default)
    The sum of exact products, rounded once into the target format. Every product of two
    numbers of <= 26 significant bits is exact in binary64, so this is well defined and
    independent of summation order: the model of a tensor core or Cube unit whose internal
    accumulator is wide enough not to matter. Fast path: one float64 GEMM, certified per
    element against the a-priori bound |fl(sum) - sum| <= gamma_{K-1} * sum|x_i|
    (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 4.4, any
    summation order); elements the bound cannot certify are summed exactly in rationals.

``"sequential"``
    Left-to-right over the reduction index, rounding into the target format after every
    addition: the model of a narrow accumulator (the "FP16 accumulation" failure mode).

With ``matmul_input = FP64`` products are no longer exact in binary64; that policy is the
"reference-grade float64" evaluation (numpy's BLAS order, error <= gamma_K sum|x_i|) and is
not bit-reproducible across BLAS builds. Use the mpmath oracle when exactness matters.

Elementary functions (exp, log, tanh) are evaluated in float64 by numpy (<= 1 ulp of
binary64) and then rounded into the target format: this equals a correctly rounded function
except for arguments within ~2**-52 relative of a rounding boundary of the target format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from .errors import ConventionError, FormatError, require
from .formats import Format, get_format, round_exact, round_to

Accumulation = Literal["exact", "sequential"]

_U64 = 2.0 ** -53


@dataclass(frozen=True)
class PrecisionPolicy:
    """Where an algorithm rounds. See the module docstring for the meaning of each field."""

    matmul_input: Format
    accumulate: Format
    softmax: Format
    output: Format
    accumulation: Accumulation = "exact"
    name: str = ""

    def __post_init__(self) -> None:
        for field in ("matmul_input", "accumulate", "softmax", "output"):
            object.__setattr__(self, field, get_format(getattr(self, field)))
        require(self.accumulation in ("exact", "sequential"), ConventionError,
                f"accumulation: expected 'exact' or 'sequential', got {self.accumulation!r}")
        if not self.name:
            object.__setattr__(self, "name", f"{self.matmul_input}/{self.accumulate}/{self.softmax}/"
                                             f"{self.output}" + ("" if self.accumulation == "exact" else "/seq"))

    @classmethod
    def uniform(cls, fmt: "Format | str", accumulation: Accumulation = "exact") -> "PrecisionPolicy":
        """Return the policy that keeps every value in ``fmt``: a naive same-format implementation."""
        f = get_format(fmt)
        return cls(f, f, f, f, accumulation, name=f"{f}" + ("" if accumulation == "exact" else "/seq"))

    # Rounding points -------------------------------------------------------------------------
    def to_input(self, x) -> np.ndarray:
        """Return x rounded to the GEMM operand format."""
        return round_to(x, self.matmul_input)

    def to_accumulate(self, x) -> np.ndarray:
        """Return x rounded to the accumulator format."""
        return round_to(x, self.accumulate)

    def to_softmax(self, x) -> np.ndarray:
        """Return x rounded to the vector-unit format."""
        return round_to(x, self.softmax)

    def to_output(self, x) -> np.ndarray:
        """Return x rounded to the output format."""
        return round_to(x, self.output)

    # Vector-unit operations, each correctly rounded into the softmax format ------------------
    def exp(self, x) -> np.ndarray:
        """Return exp(x) rounded into the softmax format (exp(-inf) = 0)."""
        with np.errstate(over="ignore"):
            return self.to_softmax(np.exp(x))

    def log(self, x) -> np.ndarray:
        """Return log(x) rounded into the softmax format (log(0) = -inf)."""
        with np.errstate(divide="ignore"):
            return self.to_softmax(np.log(x))

    # Reductions ------------------------------------------------------------------------------
    def matmul(self, a: np.ndarray, b: np.ndarray, fmt: "Format | None" = None) -> np.ndarray:
        """Return a @ b (batched over leading axes) rounded into ``fmt`` (default: accumulate).

        ``a`` and ``b`` must already hold values of the matmul_input format.
        """
        return matmul_rounded(a, b, self.accumulate if fmt is None else get_format(fmt), self.accumulation)

    def sum(self, x: np.ndarray, axis: int = -1, fmt: "Format | None" = None) -> np.ndarray:
        """Return the sum of ``x`` over ``axis`` (keepdims) rounded into ``fmt`` (default: softmax)."""
        return sum_rounded(x, axis, self.softmax if fmt is None else get_format(fmt), self.accumulation)


def require_policy(policy, name: str = "policy") -> PrecisionPolicy:
    """Return ``policy`` after checking that it is a PrecisionPolicy (a format name is not one)."""
    require(isinstance(policy, PrecisionPolicy), FormatError,
            f"{name}: expected a PrecisionPolicy, e.g. PrecisionPolicy.uniform('bf16'), got {policy!r}")
    return policy


def matmul_rounded(a: np.ndarray, b: np.ndarray, fmt: Format, accumulation: Accumulation = "exact") -> np.ndarray:
    """Return a @ b with every output element rounded into ``fmt`` by the given accumulation rule."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])  # (..., M, K)
    b = np.broadcast_to(b, batch + b.shape[-2:])  # (..., K, N)
    if accumulation == "sequential":
        acc = np.zeros(batch + (a.shape[-2], b.shape[-1]))
        for k in range(a.shape[-1]):  # one rank-1 term at a time, rounded after each addition
            acc = round_to(acc + a[..., :, k:k + 1] * b[..., k:k + 1, :], fmt)
        return acc
    approx = np.matmul(a, b)
    if fmt is Format.FP64:
        return approx
    magnitude = np.matmul(np.abs(a), np.abs(b))
    return _certify(approx, magnitude, a.shape[-1], fmt,
                    lambda idx: _exact_dot(a[idx[:-1]], b[idx[:-2] + (slice(None), idx[-1])]),
                    lambda und: _exact_products(a[und[:-1]], np.swapaxes(b, -1, -2)[und[:-2] + und[-1:]]))


def sum_rounded(x: np.ndarray, axis: int, fmt: Format, accumulation: Accumulation = "exact") -> np.ndarray:
    """Return sum(x, axis, keepdims=True) rounded into ``fmt`` by the given accumulation rule."""
    x = np.asarray(x, dtype=np.float64)
    moved = np.moveaxis(x, axis, -1)  # reduction index last
    if accumulation == "sequential":
        acc = np.zeros(moved.shape[:-1])
        for k in range(moved.shape[-1]):
            acc = round_to(acc + moved[..., k], fmt)
        return np.expand_dims(acc, axis)
    approx = moved.sum(axis=-1)
    if fmt is Format.FP64:
        return np.expand_dims(approx, axis)
    rows = moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])  # (rows, n): a 1-D x is one row
    out = _certify(approx.reshape(-1), np.abs(rows).sum(axis=-1), rows.shape[-1], fmt,
                   lambda idx: _exact_sum(rows[idx]), lambda und: rows[und])
    return np.expand_dims(out.reshape(moved.shape[:-1]), axis)


def _dyadic_sum(terms) -> Fraction:
    """Return the exact sum of the rationals n/d given as (n, d) pairs whose d are powers of two.

    Integer arithmetic over the largest denominator, normalised once: the same value as a
    sum of Fractions, without a gcd per term (ties of low-precision dot products are common,
    and each is resolved here).
    """
    terms = list(terms)
    if not terms:
        return Fraction(0)
    top = max(d for _, d in terms)
    return Fraction(sum(n * (top // d) for n, d in terms), top)


def _float_sum_if_exact(terms: list[float]) -> Fraction | None:
    """Return the exact sum of binary64 ``terms`` when it is itself a binary64 number, else None.

    ``math.fsum`` is correctly rounded, so the sum is exact iff fsum(terms + [-s]) is 0. This
    is the common case for low-precision operands and costs two C loops instead of a
    Python-level rational sum.
    """
    s = math.fsum(terms)
    if math.isfinite(s) and math.fsum(terms + [-s]) == 0.0:
        return Fraction(s)
    return None


def _exact_products(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return x * y elementwise, with NaN wherever the binary64 product is not exact (Dekker's TwoProduct)."""
    with np.errstate(over="ignore", invalid="ignore"):
        p = x * y
        (xh, xl), (yh, yl) = _split(x), _split(y)
        err = ((xh * yh - p) + xh * yl + xl * yh) + xl * yl
    return np.where(err == 0, p, np.nan)


def _sum_if_exact(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (left-to-right binary64 sums of the rows of ``terms``, whether no addition rounded).

    Knuth's TwoSum gives each addition's rounding error exactly; a row whose every error is 0
    (and whose terms are finite) was summed exactly, so its sum is the exact value.
    """
    total = np.zeros(terms.shape[0])
    exact = np.all(np.isfinite(terms), axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(terms.shape[1]):
            x = terms[:, k]
            new = total + x
            back = new - total
            exact &= ((total - (new - back)) + (x - back)) == 0
            total = new
    return total, exact


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return Veltkamp's split a = hi + lo into halves of at most 26 significant bits."""
    c = 134217729.0 * a  # 2**27 + 1
    hi = c - (c - a)
    return hi, a - hi


def _exact_dot(x: np.ndarray, y: np.ndarray) -> "Fraction | float":
    """Return the exact rational value of sum(x_i * y_i); with an Inf or NaN operand, its IEEE value."""
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        with np.errstate(invalid="ignore"):
            return float(np.sum(x * y))  # IEEE 754 §6.1-6.2: Inf and NaN propagate in any order
    with np.errstate(over="ignore", invalid="ignore"):
        p = x * y
        (xh, xl), (yh, yl) = _split(x), _split(y)
        err = ((xh * yh - p) + xh * yl + xl * yh) + xl * yl  # Dekker's TwoProduct: p's rounding error
    if np.all(np.isfinite(p)) and not np.any(err):  # every product is exact in binary64 (NaN err fails this)
        fast = _float_sum_if_exact(p.tolist())
        if fast is not None:
            return fast
    ratios = ((p.as_integer_ratio(), q.as_integer_ratio()) for p, q in zip(x.tolist(), y.tolist()))
    return _dyadic_sum((a * c, b * d) for (a, b), (c, d) in ratios)


def _exact_sum(x: np.ndarray) -> "Fraction | float":
    """Return the exact rational value of sum(x_i); with an Inf or NaN term, its IEEE value."""
    terms = x.tolist()
    if not all(map(math.isfinite, terms)):
        with np.errstate(invalid="ignore"):
            return float(np.sum(x))  # IEEE 754 §6.1-6.2: Inf and NaN propagate in any order
    fast = _float_sum_if_exact(terms)
    return fast if fast is not None else _dyadic_sum(v.as_integer_ratio() for v in terms)


def _certify(approx: np.ndarray, magnitude: np.ndarray, n_terms: int, fmt: Format, exact, terms) -> np.ndarray:
    """Round ``approx`` into ``fmt`` where its error bound allows; compute the rest exactly.

    ``magnitude`` is fl(sum |x_i|). With gamma = (n-1)u/(1-(n-1)u), the true sum lies within
    gamma/(1-gamma) * magnitude of ``approx`` (the extra factor covers the rounding of
    ``magnitude`` itself); the 1 + 2**-50 slack covers the float64 evaluation of the radius.
    Where both ends of that interval round to the same value, that value is the correctly
    rounded exact sum (rounding is monotone). The rest is summed exactly: by a vectorised
    error-free pass where binary64 holds the sum, else element by element in rationals.
    """
    nu = max(n_terms - 1, 1) * _U64
    gamma = nu / (1 - nu)
    radius = magnitude * (gamma / (1 - gamma)) * (1 + 2.0 ** -50)
    with np.errstate(invalid="ignore"):  # Inf - Inf where an operand is Inf: decided exactly below
        lo = round_to(approx - radius, fmt)
        hi = round_to(approx + radius, fmt)
    out = lo.copy()
    undecided = np.nonzero(~((lo == hi) | (np.isnan(lo) & np.isnan(hi))))
    if undecided[0].size == 0:
        return out
    # Most undecided elements are exact ties whose terms add up in binary64 without rounding:
    # decide those in one vectorised pass (``terms`` gives their exact float64 terms, NaN if inexact).
    sums, exact_in_binary64 = _sum_if_exact(terms(undecided))
    out[undecided] = np.where(exact_in_binary64, round_to(sums, fmt), out[undecided])
    for idx in zip(*(u[~exact_in_binary64] for u in undecided)):
        value = exact(idx)
        out[idx] = round_to(value, fmt) if isinstance(value, float) else round_exact(value, fmt)
    return out
