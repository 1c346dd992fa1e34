"""The split-KV (flash-decoding) LSE combine is exact, empty splits included.

Claim (``spec/split_kv.py`` ``combine``, after FlashAttention-3's ``attention_combine_ref``,
Dao-AILab/flash-attention @ 0251105): let the keys of a row be cut into n splits, and let
split s report its normalised partial (O_s, lse_s): O_s = sum_{j in s} e^{s_j} v_j / Z_s and
lse_s = log Z_s with Z_s = sum_{j in s} e^{s_j}, or (O_s, lse_s) = (0, -inf) when the split
admits no key. Then

    lse_max = max_s lse_s;  shift = (lse_max == -inf ? 0 : lse_max)
    lse = shift + log sum_s exp(lse_s - shift);   O = sum_s exp(lse_s - lse) O_s

gives lse = log sum_s Z_s and O = sum_s Z_s O_s / sum_s Z_s, which is softmax attention over
all keys; and lse_max = -inf exactly when every split is empty (the empty row). Together
with ``online_softmax.invariant`` (each partial is FlashAttention over its key range) this
proves split-KV attention equal to the definition.

Reduction to rational arithmetic, as in ``proofs/online_softmax.py``: exp maps lse_s to
Z_s = exp(lse_s) >= 0 (0 for an empty split), max to max, a difference to a quotient and
exp(lse) to L = shift~ * total. The partial is abstracted by Z_s >= 0, O_s with
O_s Z_s = N_s (N_s = sum e_j v_j) and O_s = 0 when Z_s = 0.

Negative controls (wrong combines and a weakened precondition), each replayed with mpmath
at lse_s = log Z_s: averaging the O_s uniformly; weighting by exp(lse_s) without
normalising; normalising by the max instead of the log-sum-exp; and an empty split that
reports lse_s = 0 (weight 1) instead of -inf (weight 0).
"""

from __future__ import annotations

from typing import Sequence

import mpmath
import z3

from attnspec.proofs._core import ProofResult, prove, theorem
from attnspec.proofs.online_softmax import (CONFIRM_DPS, Exact, Symbolic, if_then_else, maximum, model_fraction,
                                            prove_conjunction)

VARIANTS = ("lse", "uniform", "unnormalised", "max")
#: (splits, value width) of the theorem.
SHAPES = ((1, 2), (2, 2), (3, 2), (4, 1))


def combine(Zs: Sequence, Os: Sequence[Sequence], variant: str = "lse", ctx=Exact()):
    """Return (empty, L = exp(lse), O) of the combine of partials (Z_s = exp(lse_s), O_s)."""
    n, width = len(Zs), len(Os[0])
    M = ctx.name(maximum(*Zs))  # lse_max = max(lses)
    empty = M == 0  # lse_max == -inf
    shift = ctx.name(if_then_else(empty, 1, M))  # shift = where(empty, 0, lse_max)
    weights = [ctx.div(z, shift) for z in Zs]  # exp(lses - shift)
    total = ctx.name(sum(weights))
    L = ctx.name(shift * if_then_else(empty, 1, total))  # lse = shift + log(where(empty, 1, total))
    if variant == "max":
        L = shift  # wrong: lse = max lse_s
    if variant == "uniform":
        scales = [ctx.div(1, n)] * n  # wrong: O = mean O_s
    elif variant == "unnormalised":
        scales = list(Zs)  # wrong: O = sum exp(lse_s) O_s
    else:
        scales = [ctx.div(z, L) for z in Zs]  # exp(lse_s - lse)
    out = [ctx.name(if_then_else(empty, 0, sum(sc * o[d] for sc, o in zip(scales, Os)))) for d in range(width)]
    return empty, L, out


def _partials(prefix: str, n: int, width: int, empty_lse_zero: bool = False):
    """Return (Zs, Os, Ns, assumptions): symbolic normalised partials; optionally one empty split with lse 0."""
    Zs = [z3.Real(f"{prefix}Z{s}") for s in range(n)]
    Os = [[z3.Real(f"{prefix}O{s}_{d}") for d in range(width)] for s in range(n)]
    Ns = [[z3.Real(f"{prefix}N{s}_{d}") for d in range(width)] for s in range(n)]
    assumptions = []
    for z, o, nn in zip(Zs, Os, Ns):
        assumptions += [z >= 0, z3.Implies(z == 0, z3.And(*[x == 0 for x in o + nn]))]  # empty split: (0, -inf)
        assumptions += [x * z == y for x, y in zip(o, nn)]  # O_s = N_s / Z_s
    if empty_lse_zero:  # a split with no key that reports lse = 0 (weight 1) and O = 0
        Zs, Os = Zs + [z3.RealVal(1)], Os + [[z3.RealVal(0)] * width]
    return Zs, Os, Ns, assumptions


def combine_parts(n: int, width: int, variant: str = "lse", empty_lse_zero: bool = False):
    """Return (parts, Zs, Os): the combine of n symbolic partials against attention over all keys."""
    prefix = f"n{n}w{width}{variant}_"
    Zs, Os, Ns, assumptions = _partials(prefix, n, width, empty_lse_zero)
    ctx = Symbolic(prefix)
    empty, L, out = combine(Zs, Os, variant, ctx)
    total = sum(Zs[:n])  # the keys that exist: an extra empty split contributes none
    assumptions = assumptions + ctx.defs
    parts = [(f"n{n}w{width}:empty", empty == (total == 0), assumptions),
             (f"n{n}w{width}:lse", z3.Implies(total > 0, L == total), assumptions)]
    parts += [(f"n{n}w{width}:out{d}", z3.Implies(total > 0, out[d] * total == sum(N[d] for N in Ns)), assumptions)
              for d in range(width)]
    return parts, Zs, Os


def exp_domain_combine(outs: Sequence[Sequence], lses: Sequence, variant: str = "lse"):
    """Return (out, lse) of spec/split_kv.combine's formulas (or a wrong variant) on mpmath partials."""
    n, width = len(lses), len(outs[0])
    lse_max = max(lses)
    if lse_max == mpmath.mpf("-inf"):
        return [mpmath.mpf(0)] * width, lse_max
    lse = lse_max + mpmath.log(mpmath.fsum(mpmath.exp(x - lse_max) for x in lses))
    if variant == "max":
        lse = lse_max
    scales = {"uniform": [mpmath.mpf(1) / n] * n, "unnormalised": [mpmath.exp(x) for x in lses]}.get(
        variant, [mpmath.exp(x - lse) for x in lses])
    return [mpmath.fsum(sc * o[d] for sc, o in zip(scales, outs)) for d in range(width)], lse


def confirm_combine(Zs, Os, n: int, variant: str):
    """Return a ``confirm`` hook: replay the model's partials in the exp domain and show the combine is wrong."""

    def confirm(model: z3.ModelRef) -> str:
        with mpmath.workdps(CONFIRM_DPS):
            def mp(term):
                f = model_fraction(model, term)
                return mpmath.mpf(f.numerator) / f.denominator

            weights = [mp(z) for z in Zs]
            outs = [[mp(x) for x in o] for o in Os]
            lses = [mpmath.log(w) if w > 0 else mpmath.mpf("-inf") for w in weights]
            out, lse = exp_domain_combine(outs, lses, variant)
            # Split s realised by one key with logit lse_s and value O_s; the splits past n hold no key.
            total = mpmath.fsum(weights[:n])
            if total == 0:  # the empty row: O = 0, LSE = -inf
                ref, lse_gap = [mpmath.mpf(0)] * len(out), (0 if lse == mpmath.mpf("-inf") else mpmath.inf)
            else:
                ref = [mpmath.fsum(w * o[d] for w, o in zip(weights[:n], outs[:n])) / total for d in range(len(out))]
                lse_gap = abs(lse - mpmath.log(total))
            gap = max([abs(a - b) for a, b in zip(out, ref)] + [lse_gap])
            if not gap > mpmath.mpf(10) ** (-CONFIRM_DPS // 2):
                raise AssertionError(f"combine '{variant}' agrees with attention at the model (gap {gap})")
            return f"replayed with mpmath at lse_s = log Z_s: out/lse off by {mpmath.nstr(gap, 6)}"

    return confirm


@theorem("split_kv.combine")
def prove_split_kv_combine() -> ProofResult:
    # spec/split_kv.py combine:
    #   weights = policy.exp(policy.to_softmax(lses - shift)); lse = shift + log(total)
    #   scales = policy.exp(policy.to_softmax(lses - lse)); out += scales[s] * outs[s]
    parts = [part for shape in SHAPES for part in combine_parts(*shape)[0]]
    return prove_conjunction("split_kv.combine", parts,
                             statement="LSE combine of n normalised partials (Z_s>=0, O_s Z_s=N_s, empty split "
                                       f"(0,-inf)) == attention over all keys, (splits, width) in {SHAPES}")


def refute_combine(variant: str, name: str, *, empty_lse_zero: bool = False) -> ProofResult:
    """Return the (expected refuted) claim that a combine variant is exact for 2 splits of width 1."""
    parts, Zs, Os = combine_parts(2, 1, variant, empty_lse_zero)
    return prove(name, z3.And(*[c for _, c, _ in parts]), parts[0][2], expect="refuted",
                 statement=f"the '{variant}' combine is exact" + (" when an empty split reports lse = 0"
                                                                  if empty_lse_zero else ""),
                 confirm=confirm_combine(Zs, Os, 2, variant))


@theorem("split_kv.control.uniform_average")
def prove_split_kv_control_uniform_average() -> ProofResult:
    # wrong: out = mean(outs, axis=0)
    return refute_combine("uniform", "split_kv.control.uniform_average")


@theorem("split_kv.control.unnormalised")
def prove_split_kv_control_unnormalised() -> ProofResult:
    # wrong: out = sum_s exp(lse_s) * outs[s]   (no division by sum_s exp(lse_s))
    return refute_combine("unnormalised", "split_kv.control.unnormalised")


@theorem("split_kv.control.max_for_logsumexp")
def prove_split_kv_control_max_for_logsumexp() -> ProofResult:
    # wrong: lse = max(lses); scales = exp(lses - lse)
    return refute_combine("max", "split_kv.control.max_for_logsumexp")


@theorem("split_kv.control.empty_split_lse_zero")
def prove_split_kv_control_empty_split_lse_zero() -> ProofResult:
    # precondition weakened: an empty split must report lse = -inf (weight 0); here it reports 0 (weight 1)
    return refute_combine("lse", "split_kv.control.empty_split_lse_zero", empty_lse_zero=True)
