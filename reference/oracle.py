"""The high-precision attention oracle: simple, exact and slow on purpose.

It evaluates the definition of :mod:`spec.attention` in rigorous interval arithmetic
(mpmath's ``iv`` context; every operation rounds its lower end down and its upper end up),
so each result comes with an enclosure that provably contains the exact real value:

- Inputs are the exact binary values of the given floats. Logit dot products are summed
  exactly in integers (every float is a dyadic rational), then enclosed.
- The scale is the exact real 1/sqrt(Dk) when it is left at its default, and otherwise the
  exact value of the float given.
- Precision: ``dps`` decimal digits (default 50), i.e. p = ceil(dps * log2(10)) + 8 bits
  of working precision for the interval ends. Typical enclosure widths are ~2**-p relative.

Rounding into a target format (p, emin, emax of that format, roundTiesToEven) is
*certified*: a value is returned only when both ends of the enclosure round to it. When they
do not, the row is recomputed with four times the precision, up to three times. A result
that is exactly a rounding midpoint cannot be separated that way; for those the oracle
decides exactly, using the Lindemann-Weierstrass theorem: without softcap every logit is an
algebraic number, so exp of distinct logits are linearly independent over the algebraic
numbers, and an output sum_g e^{s_g} V_g / sum_g n_g e^{s_g} (keys grouped by equal logit)
is rational iff every group has the same mean V_g / n_g, which is then its exact value (that
the common mean is the exact value holds for any logits, softcap included).
Likewise LSE is rational only for a row with a single admitted key and a rational logit.
Anything still undecided raises :class:`OracleUncertifiedError` rather than guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from mpmath import libmp
from mpmath.ctx_iv import MPIntervalContext

from attnspec.spec.errors import AttnSpecError, DomainError, require
from attnspec.spec.formats import Format, get_format, round_exact
from attnspec.spec.problem import AttentionProblem, attention_problem

DEFAULT_DPS = 50
ESCALATIONS = 3  # each multiplies the working precision by 4


class OracleUncertifiedError(AttnSpecError, ArithmeticError):
    """The oracle could not certify the rounding of a result into the requested format."""


def attention_oracle(q, k, v, *, dps: int = DEFAULT_DPS, **conventions) -> "OracleResult":
    """Return the exact attention of Q, K, V (enclosed at ``dps`` digits) under ``conventions``.

    ``conventions`` are the keywords of :func:`spec.problem.attention_problem`.
    """
    return oracle_from_problem(attention_problem(q, k, v, **conventions), dps=dps)


def oracle_from_problem(problem: AttentionProblem, *, dps: int = DEFAULT_DPS) -> "OracleResult":
    """Return the oracle's enclosures for a validated problem."""
    require(isinstance(dps, int) and not isinstance(dps, bool) and 15 <= dps <= 10_000, DomainError, f"dps: expected an int in [15, 10000], got {dps!r}")
    result = OracleResult(problem=problem, prec=math.ceil(dps * math.log2(10)) + 8)
    result._compute_all()
    return result


# ----------------------------------------------------------------------------------------------
# Exact dyadic arithmetic for the logits
# ----------------------------------------------------------------------------------------------

def _dyadic(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return integer mantissas M and exponents E with a == M * 2**E exactly (elementwise)."""
    mant, ex = np.frexp(a)
    return (mant * 2.0**53).astype(np.int64), ex.astype(np.int64) - 53


def _exact_dot(mq, eq, mk, ek) -> Fraction:
    """Return sum_d (mq[d] 2**eq[d]) (mk[d] 2**ek[d]) exactly."""
    exps = [int(a) + int(b) for a, b in zip(eq, ek)]
    base = min(exps, default=0)
    total = sum((int(a) * int(b)) << (e - base) for a, b, e in zip(mq, mk, exps))
    return Fraction(total) * Fraction(2) ** base


def _to_fraction(raw) -> Fraction:
    """Return the exact rational value of a finite raw mpf tuple."""
    p, q = libmp.to_rational(raw)
    return Fraction(p, q)


@dataclass
class OracleResult:
    """Enclosures of O (B, Hq, Sq, Dv) and LSE (B, Hq, Sq) of one problem."""

    problem: AttentionProblem
    prec: int
    out_iv: np.ndarray = field(init=False, repr=False)  # object array of interval numbers
    lse_iv: np.ndarray = field(init=False, repr=False)
    _row_prec: np.ndarray = field(init=False, repr=False)
    _cache: dict = field(init=False, repr=False, default_factory=dict)

    # -- evaluation ---------------------------------------------------------------------------
    def _compute_all(self) -> None:
        b, hq, sq, _ = self.problem.q.shape
        dv = self.problem.v.shape[3]
        self.out_iv = np.empty((b, hq, sq, dv), dtype=object)
        self.lse_iv = np.empty((b, hq, sq), dtype=object)
        self._row_prec = np.full((b, hq, sq), self.prec, dtype=np.int64)
        self._mq, self._eq = _dyadic(self.problem.q)
        self._mk, self._ek = _dyadic(self.problem.k_per_q_head())
        for idx in np.ndindex(b, hq, sq):
            self._compute_row(idx, self.prec)

    def _exact_logit_parts(self, idx) -> list[tuple[int, Fraction, Fraction]]:
        """Return (key j, exact dot q.k_j, exact bias) for every admitted key of row ``idx``."""
        b, h, i = idx
        bias = self.problem.bias_full()
        keys = np.flatnonzero(self.problem.allowed[b, h, i])
        return [(int(j), _exact_dot(self._mq[b, h, i], self._eq[b, h, i], self._mk[b, h, j], self._ek[b, h, j]),
                 Fraction(float(bias[b, h, i, j]))) for j in keys if bias[b, h, i, j] != -np.inf]

    def _compute_row(self, idx, prec: int) -> None:
        """Enclose O and LSE of row ``idx`` at ``prec`` bits (the definition, term by term)."""
        ctx = MPIntervalContext()
        ctx.prec = prec
        p = self.problem
        b, h, i = idx
        dv = p.v.shape[3]
        self._row_prec[idx] = prec
        parts = self._exact_logit_parts(idx)
        if not parts:  # no admissible key: O = 0 and LSE = empty_lse by definition
            self.out_iv[idx] = np.array([ctx.mpf(0)] * dv, dtype=object)
            self.lse_iv[idx] = None
            return
        scale = ctx.mpf(1) / ctx.sqrt(p.q.shape[3]) if p.scale_is_default else ctx.mpf(p.scale)
        logits = []
        for _, dot, bias in parts:
            s = _enclose(ctx, dot) * scale  # S = scale * q.k
            if p.softcap is not None:
                cap = ctx.mpf(p.softcap)
                s = cap * (1 - 2 / (ctx.exp(2 * s / cap) + 1))  # softcap * tanh(S / softcap), before the mask
            logits.append(s + _enclose(ctx, bias))  # + additive mask
        # Any shift cancels exactly in real arithmetic; the midpoint of the largest logit keeps exp tame.
        shift = max((x.mid for x in logits), key=lambda m: _to_fraction(m._mpi_[0]))
        weights = [ctx.exp(s - shift) for s in logits]
        total = sum(weights[1:], weights[0])
        vrow = p.v_per_q_head()[b, h]  # (Sk, Dv)
        out = []
        for d in range(dv):
            num = sum((w * ctx.mpf(float(vrow[j, d])) for w, (j, _, _) in zip(weights, parts)), ctx.mpf(0))
            out.append(num / total)
        self.out_iv[idx] = np.array(out, dtype=object)
        self.lse_iv[idx] = shift + ctx.log(total)

    # -- certified rounding -------------------------------------------------------------------
    def rounded(self, fmt: "Format | str", *, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Return (O, LSE) correctly rounded into ``fmt`` (roundTiesToEven), as float64 arrays.

        Raises OracleUncertifiedError when an element cannot be certified (see the module
        docstring); with ``strict=False`` such an element gets the rounding of its midpoint
        and is listed in ``self.uncertified``.
        """
        f = get_format(fmt)
        if f in self._cache:
            return self._cache[f]
        shape = self.out_iv.shape
        out = np.empty(shape)
        lse = np.empty(shape[:-1])
        for idx in np.ndindex(shape[:-1]):
            for attempt in range(ESCALATIONS + 1):
                target = self.prec * 4 ** attempt
                if self._row_prec[idx] < target:
                    self._compute_row(idx, target)
                row = self._round_row(idx, f)
                if row is not None:
                    break
            if row is None:
                row = self._decide_exactly(idx, f, strict)
            out[idx], lse[idx] = row
        self._cache[f] = (out, lse)
        return out, lse

    def _round_row(self, idx, f: Format):
        """Return (out values, lse value) of row ``idx`` in ``f`` if every enclosure decides it, else None."""
        values = [_round_enclosure(x, f) for x in self.out_iv[idx]]
        lse = self.problem.empty_lse if self.lse_iv[idx] is None else _round_enclosure(self.lse_iv[idx], f)
        if lse is None or any(v is None for v in values):
            return None
        return np.array(values), lse

    def _decide_exactly(self, idx, f: Format, strict: bool):
        """Return row ``idx`` rounded into ``f`` when its undecided elements are exact rationals."""
        p = self.problem
        parts = self._exact_logit_parts(idx)
        vrow = p.v_per_q_head()[idx[0], idx[1]]
        rational_scale = _rational_scale(p)
        groups: dict = {}
        for j, dot, bias in parts:
            key = (rational_scale * dot + bias,) if rational_scale is not None else (dot, bias)
            groups.setdefault(key, []).append(j)
        out = []
        for d, x in enumerate(self.out_iv[idx]):
            value = _round_enclosure(x, f)
            # When every group has the same mean c, the output is exactly c whatever the logits
            # (softcap included). Otherwise, without softcap, Lindemann-Weierstrass says it is
            # irrational, so no rounding boundary can hold it and more precision would have decided it.
            if value is None:
                means = {sum((Fraction(float(vrow[j, d])) for j in js), Fraction(0)) / len(js) for js in groups.values()}
                if len(means) == 1:
                    value = round_exact(means.pop(), f)
            out.append(self._undecided(idx, f, x, strict) if value is None else value)
        if self.lse_iv[idx] is None:
            lse = p.empty_lse
        else:
            lse = _round_enclosure(self.lse_iv[idx], f)
            if lse is None and p.softcap is None and len(parts) == 1 and rational_scale is not None:
                _, dot, bias = parts[0]
                lse = round_exact(rational_scale * dot + bias, f)  # log(exp(s)) = s, rational
            if lse is None:
                lse = self._undecided(idx, f, self.lse_iv[idx], strict)
        return np.array(out), lse

    def _undecided(self, idx, f: Format, x, strict: bool) -> float:
        if strict:
            mid = round_exact(_in_range(x.mid._mpi_[0], Format.FP64), Format.FP64)
            raise OracleUncertifiedError(
                f"oracle: cannot certify the {f} rounding of row {idx} at {int(self._row_prec[idx])} bits "
                f"(value ~{mid!r} sits on a rounding boundary); pass strict=False to accept the midpoint's rounding")
        self.uncertified.append((f.info.name, idx))
        return round_exact(_in_range(x.mid._mpi_[0], f), f)

    # -- convenience views ----------------------------------------------------------------------
    @property
    def uncertified(self) -> list:
        return self._cache.setdefault("uncertified", [])

    @property
    def certified(self) -> bool:
        """Return True unless some element was returned uncertified (``strict=False``)."""
        return not self.uncertified

    @property
    def out(self) -> np.ndarray:
        """Return O correctly rounded to float64."""
        return self.rounded(Format.FP64)[0]

    @property
    def lse(self) -> np.ndarray:
        """Return LSE correctly rounded to float64."""
        return self.rounded(Format.FP64)[1]

    @property
    def out_mp(self) -> np.ndarray:
        """Return the midpoints of the O enclosures as mpmath numbers."""
        return _midpoints(self.out_iv)

    @property
    def lse_mp(self) -> np.ndarray:
        """Return the midpoints of the LSE enclosures (None for an empty row) as mpmath numbers."""
        return _midpoints(self.lse_iv)

    def max_relative_width(self) -> float:
        """Return the largest enclosure width relative to its magnitude (a measure of the oracle's accuracy)."""
        widths = [float(x.delta.b) / max(float(abs(x).b), 1e-300) for x in
                  list(self.out_iv.reshape(-1)) + [y for y in self.lse_iv.reshape(-1) if y is not None]]
        return max(widths, default=0.0)


def _enclose(ctx: MPIntervalContext, value: Fraction):
    """Return an interval of ``ctx`` that contains the rational ``value``."""
    return ctx.mpf(value.numerator) / ctx.mpf(value.denominator)


def _in_range(raw, f: Format) -> Fraction:
    """Return the value of a finite raw mpf, or a stand-in that rounds the same in ``f`` when it is far outside f's range.

    A weight such as exp(-1e20) is a fine interval end but has no exact rational one could
    build (2**1e20 bits); anything below half the least subnormal rounds to zero, anything
    at or above 2**(emax + 2) overflows, whatever its exact value.
    """
    sign, man, exp, bc = raw
    top = exp + bc  # |x| < 2**top
    side = -1 if sign else 1
    if man and top < f.info.emin - f.info.p:
        return Fraction(side, 2 ** (f.info.p - f.info.emin + 1))
    if man and top > f.info.emax + 3:
        return Fraction(side * 2 ** (f.info.emax + 2))
    return _to_fraction(raw)


def _round_enclosure(x, f: Format) -> float | None:
    """Return the rounding of every point of the interval ``x`` into ``f``, or None if they differ."""
    lo, hi = (round_exact(_in_range(end, f), f) for end in x._mpi_)
    return lo if lo == hi else None


def _rational_scale(p: AttentionProblem) -> Fraction | None:
    """Return the exact scale when it is rational (a given float, or 1/sqrt(Dk) for a square Dk)."""
    if not p.scale_is_default:
        return Fraction(p.scale)
    root = math.isqrt(p.q.shape[3])
    return Fraction(1, root) if root * root == p.q.shape[3] else None


def _midpoints(arr: np.ndarray) -> np.ndarray:
    import mpmath
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        out[idx] = None if arr[idx] is None else mpmath.mp.make_mpf(arr[idx].mid._mpi_[0])
    return out
