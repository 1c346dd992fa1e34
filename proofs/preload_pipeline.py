"""The steady-state period of the Cube/Vector preload pipeline, and when it is Cube-bound.

Schedule (hicann/ops-transformer@c29bc10 ``attention/common/op_kernel/arch32/fia_kernel_nonquant_mla.h``,
``PreloadPipeline``; amla.md §5): loop k issues, in program order,

    Cube  : C1(k)              then C2(k-1)
    Vector: V1(k-1) [NU(k-1)]  then V2(k-2)

with the cross-core flags C1(i) -> V1(i), V1(i) -> C2(i), C2(i) -> V2(i), and, per variant:

- ``none`` (baseline FlashAttention, O rescaled in V2): nothing more.
- ``atomic`` (amla.md §5's model of AMLA): the whole V1(i) waits for C2(i-1).
- ``cann`` (AMLA as shipped): only the nUpdate NU(i) waits for C2(i-1), and C2(i) waits for NU(i)::

      CrossCoreSetFlag<..., PIPE_MTE3>(constInfo.syncV1C2);   // softmax done: C2 may start its MMADs
      CrossCoreWaitFlag(constInfo.syncC2V1);                 // wait for C2(i-1) to have written O
      ProcessAmlaNupdate(info, mSplitInfo);                  // int32 atomic add of N_i onto O

Every cross-core flag costs s >= 0 (the stated synchronisation cost). Stage times c1, c2,
v1, vn, v2 are arbitrary non-negative reals; vn is the nUpdate (0 outside ``cann``).

Outside ``cann`` the nUpdate is part of V1 (v1 + vn in the formulas below read as v1).

The state after loop k is x(k) = (a, b, d) = the end times of C1(k), C2(k-1), V2(k-2); loops
3..n are identical for a schedule of n >= 3 blocks, and x(k+1) = F(x(k)) with F built from
max and + (:func:`step`). The period is the growth rate of x(k). Each variant is proved in one
solver call, the conjunction of:

1. Upper bound, as an induction step over the loop index k (an integer, 3 <= k < n, the
   states A(k), B(k), D(k) uninterpreted functions of k): if x(k) <= u + m then
   x(k+1) <= u + m + T, for the witness u = a column of the Kleene star of A - T (A the
   max-plus matrix of F). With the base case x(3) <= u + max_j(x_j(3) - u_j), induction gives
   x(k) <= u + const + (k - 3) T for every block count n >= 3 and every k <= n.
2. Lower bound: for each term t of T there is a component j and a number of loops p with
   F^p(x)_j >= x_j + p t for every state x (a cycle of the dependency graph of mean t), and
   some term is at least T.

Together: x(k) = k T + O(1), so T is the steady-state period, for every n >= 3. The derived
periods (found by exhaustive simulation, then proved here):

    none  : T = max(c1 + c2, v1 + v2, (c1 + c2 + v1 + 2s)/2, (c2 + v1 + v2 + 2s)/2)
    atomic: T = max(c2 + max(c1, v1 + 2s), v1 + v2)
    cann  : T = max(c1 + c2, v1 + vn + v2, c2 + vn + 2s, (c1 + c2 + v1 + vn + 2s)/2)

With s = 0, ``none`` is the textbook max(T_C1 + T_C2, T_V1 + T_V2) (issue 5's statement), and
``atomic`` is amla.md's max(T_C2 + max(T_C1, T_V1), T_V1 + T_V2). Cube-bound (T = c1 + c2) is
:func:`cube_bound_condition`; the period for ``none`` need not repeat every loop when s > 0
(it alternates with period 2 while averaging T), which is why the bound is a growth rate.

Negative controls: the ``none`` formula used for the ``atomic`` schedule (amla.md's warning);
the ``cann`` formula without its sync terms; and, from the cost model, a Vector-bound
configuration (the baseline kernel at s_q = 2).

Solver: z3-solver 5.4.1.0, linear real arithmetic with ``If``; no quirks relied on.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Literal, Sequence

import z3

from attnspec.proofs._core import ProofResult, prove, theorem

Variant = Literal["none", "atomic", "cann"]
VARIANTS: tuple[Variant, ...] = ("none", "atomic", "cann")
NAMES = ("c1", "c2", "v1", "vn", "v2", "s")


def _zmax(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = z3.If(x > out, x, out)
    return out


def _max_for(values: Sequence) -> Callable:
    return _zmax if any(isinstance(v, z3.ExprRef) for v in values) else max


def _stages(d: dict, variant: Variant) -> tuple:
    """Return (c1, c2, v1, vn, v2, s) as the variant schedules them: outside ``cann`` the nUpdate is part of V1."""
    c1, c2, v1, vn, v2, s = (d[n] for n in NAMES)
    return (c1, c2, v1, vn, v2, s) if variant == "cann" else (c1, c2, v1 + vn, 0, v2, s)


def step(x: Sequence, d: dict, variant: Variant) -> tuple:
    """Return x(k+1) = F(x(k)): the end times of C1(k+1), C2(k), V2(k-1) after one full loop.

    Works on numbers (floats, Fractions) and on Z3 terms alike. ``d`` holds c1, c2, v1 (the
    softmax part of V1), vn (the nUpdate), v2 and s for every variant.
    """
    a, b, dv = x
    c1, c2, v1, vn, v2, s = _stages(d, variant)
    mx = _max_for([a, b, dv, *d.values()])
    a1 = b + c1  # C1(k+1): the Cube is free once C2(k-1) ends
    if variant == "atomic":
        e1 = mx(dv, a + s, b + s) + v1  # V1(k), nUpdate included, waits for C1(k) and C2(k-1)
        en = e1
    else:
        e1 = mx(dv, a + s) + v1  # V1(k) waits for C1(k); the Vector is free once V2(k-2) ends
        en = mx(e1, b + s) + vn if variant == "cann" else e1  # NU(k) waits for C2(k-1)
    b1 = mx(a1, en + s) + c2  # C2(k) after C1(k+1) on the Cube, and after V1(k) (and NU(k))
    d1 = mx(en, b + s) + v2  # V2(k-1) waits for C2(k-1)
    return a1, b1, d1


def period_terms(d: dict, variant: Variant) -> list[tuple[int, int, object]]:
    """Return the cycles of the dependency graph as (component, loops p, mean t): F^p(x)_j >= x_j + p t."""
    c1, c2, v1, vn, v2, s = _stages(d, variant)
    if variant == "none":
        return [(1, 1, c1 + c2), (2, 1, v1 + v2), (0, 2, (c1 + c2 + v1 + 2 * s) / 2), (1, 2, (c2 + v1 + v2 + 2 * s) / 2)]
    if variant == "atomic":
        return [(1, 1, c1 + c2), (1, 1, c2 + v1 + 2 * s), (2, 1, v1 + v2)]
    return [(1, 1, c1 + c2), (2, 1, v1 + vn + v2), (1, 1, c2 + vn + 2 * s), (0, 2, (c1 + c2 + v1 + vn + 2 * s) / 2)]


def period(d: dict, variant: Variant):
    """Return the steady-state period T of the preload pipeline (a number, or a Z3 term)."""
    terms = [t for _, _, t in period_terms(d, variant)]
    return _max_for(terms)(*terms)


def cube_bound_condition(d: dict, variant: Variant):
    """Return the condition under which T = c1 + c2, one inequality per other cycle of the graph."""
    c1, c2, v1, vn, v2, s = _stages(d, variant)
    conds = {"none": [v1 + v2 <= c1 + c2, v1 + 2 * s <= c1 + c2, v1 + v2 + 2 * s <= 2 * c1 + c2],
             "atomic": [v1 + 2 * s <= c1, v1 + v2 <= c1 + c2],
             "cann": [v1 + vn + v2 <= c1 + c2, vn + 2 * s <= c1, v1 + vn + 2 * s <= c1 + c2]}[variant]
    if any(isinstance(c, z3.ExprRef) for c in conds):
        return z3.And(*conds)
    return all(conds)


def _symbols() -> dict:
    return {n: z3.Real(n) for n in NAMES}


def _nonnegative(d: dict) -> list:
    return [v >= 0 for v in d.values()]


# ----------------------------------------------------------------------------------------------
# The witness u: a column of the Kleene star of (A - T), A the max-plus matrix of F
# ----------------------------------------------------------------------------------------------

def _matrix(d: dict, variant: Variant) -> list[list]:
    """Return A with A[i][j] = weight of the heaviest path from x_j(k) to x_i(k+1), None for none."""
    # F is max-plus linear, x'_i = max_j (A_ij + x_j); the weights below follow :func:`step` line by line.
    c1, c2, v1, vn, v2, s = _stages(d, variant)
    if variant == "none":
        e = {0: s + v1, 2: v1}  # e1 = max(d, a + s) + v1 as weights from (a, d)
        en = e
    elif variant == "atomic":
        e = {0: s + v1, 1: s + v1, 2: v1}
        en = e
    else:
        e = {0: s + v1, 2: v1}
        en = {0: s + v1 + vn, 1: s + vn, 2: v1 + vn}
    a_row = {1: c1}
    b_row = _merge({1: c1 + c2}, {j: w + s + c2 for j, w in en.items()})
    d_row = _merge({j: w + v2 for j, w in en.items()}, {1: s + v2})
    return [[row.get(j) for j in range(3)] for row in (a_row, b_row, d_row)]


def _merge(x: dict, y: dict) -> dict:
    out = dict(x)
    for j, w in y.items():
        out[j] = _zmax(out[j], w) if j in out else w
    return out


def _witness(d: dict, variant: Variant, t) -> list:
    """Return u = column 1 (the C2 state) of I + B + B^2 in max-plus, B = A - T: a sub-eigenvector."""
    a = _matrix(d, variant)
    b = [[None if w is None else w - t for w in row] for row in a]

    def mul(x, y):
        out = []
        for i in range(3):
            row = []
            for j in range(3):
                terms = [x[i][k] + y[k][j] for k in range(3) if x[i][k] is not None and y[k][j] is not None]
                row.append(_zmax(*terms) if terms else None)
            out.append(row)
        return out

    b2 = mul(b, b)
    column = []
    for i in range(3):
        terms = [z3.RealVal(0)] if i == 1 else []
        terms += [m[i][1] for m in (b, b2) if m[i][1] is not None]
        column.append(_zmax(*terms))
    return column


def _period_claim(d: dict, variant: Variant, t) -> tuple[z3.BoolRef, list]:
    """Return (claim, assumptions) of the two-part period theorem for period candidate ``t``."""
    k, n = z3.Int("k"), z3.Int("n")
    state = [z3.Function(f"{c}_end", z3.IntSort(), z3.RealSort()) for c in ("C1", "C2", "V2")]
    x_k = [f(k) for f in state]
    x_k1 = [f(k + 1) for f in state]
    m = z3.Real("m")
    u = _witness(d, variant, t)
    recurrence = [lhs == rhs for lhs, rhs in zip(x_k1, step(x_k, d, variant))]
    induction = z3.Implies(z3.And(*[xi <= ui + m for xi, ui in zip(x_k, u)]),
                           z3.And(*[xi <= ui + m + t for xi, ui in zip(x_k1, u)]))
    x = [z3.Real("x_a"), z3.Real("x_b"), z3.Real("x_d")]
    one, two = step(x, d, variant), step(step(x, d, variant), d, variant)
    terms = period_terms(d, variant)
    lower = [(one if p == 1 else two)[j] >= x[j] + p * term for j, p, term in terms]
    lower.append(z3.Or(*[term >= t for _, _, term in terms]))  # some cycle is at least as slow as t
    assumptions = _nonnegative(d) + [n >= 3, k >= 3, k + 1 <= n] + recurrence
    return z3.And(induction, *lower), assumptions


def _prove_period(variant: Variant) -> ProofResult:
    d = _symbols()
    claim, assumptions = _period_claim(d, variant, period(d, variant))
    return prove(f"preload_period_{variant}", claim, assumptions, timeout_s=10,
                 statement=f"for every n >= 3 blocks and stage times >= 0, the '{variant}' preload schedule "
                           f"advances by exactly T = {_formula(variant)} per loop (induction on the loop index)")


def _formula(variant: Variant) -> str:
    return {"none": "max(c1+c2, v1+v2, (c1+c2+v1+2s)/2, (c2+v1+v2+2s)/2)",
            "atomic": "max(c2+max(c1, v1+2s), v1+v2)",
            "cann": "max(c1+c2, v1+vn+v2, c2+vn+2s, (c1+c2+v1+vn+2s)/2)"}[variant]


@theorem("preload_period_baseline_fa")
def prove_period_none() -> ProofResult:
    """Baseline FA (no C2 -> V1 edge): T = max(c1+c2, v1+v2, ...) with the sync terms."""
    return _prove_period("none")


@theorem("preload_period_amla_atomic")
def prove_period_atomic() -> ProofResult:
    """amla.md's model, V1(i) after C2(i-1): T = max(c2 + max(c1, v1 + 2s), v1 + v2)."""
    return _prove_period("atomic")


@theorem("preload_period_amla_cann")
def prove_period_cann() -> ProofResult:
    """The shipped kernel, only NU(i) after C2(i-1): T = max(c1+c2, v1+vn+v2, c2+vn+2s, ...)."""
    return _prove_period("cann")


@theorem("preload_cube_bound_iff")
def prove_cube_bound_iff() -> ProofResult:
    """For each variant, T = c1 + c2 exactly when :func:`cube_bound_condition` holds."""
    d = _symbols()
    claim = z3.And(*[(period(d, v) == d["c1"] + d["c2"]) == cube_bound_condition(d, v) for v in VARIANTS])
    return prove("preload_cube_bound_iff", claim, _nonnegative(d), timeout_s=10,
                 statement="for stage times >= 0: T = c1 + c2 <=> the variant's Cube-bound condition")


# ----------------------------------------------------------------------------------------------
# Negative controls
# ----------------------------------------------------------------------------------------------

def _confirm_growth(variant: Variant, wrong: Callable[[dict], Fraction]) -> Callable[[z3.ModelRef], str]:
    """Return a checker that replays a counterexample's stage times in exact arithmetic."""
    def confirm(model: z3.ModelRef) -> str:
        d = {n: _fraction(model.eval(z3.Real(n), model_completion=True)) for n in NAMES}
        x: tuple = (Fraction(0), Fraction(0), Fraction(0))
        loops = 64
        for _ in range(loops):
            x = step(x, d, variant)
        y = x
        for _ in range(loops):
            y = step(y, d, variant)
        measured = (y[1] - x[1]) / loops
        claimed = wrong(d)
        if measured <= claimed:
            raise AssertionError(f"counterexample not confirmed: measured period {measured} <= claimed {claimed}")
        return f"replayed {loops} loops exactly: period {float(measured):.6g} > claimed {float(claimed):.6g}"
    return confirm


def _fraction(value: z3.ExprRef) -> Fraction:
    if z3.is_rational_value(value):
        return Fraction(value.numerator_as_long(), value.denominator_as_long())
    return Fraction(value.as_decimal(20).rstrip("?"))


def _without_sync(d: dict) -> dict:
    return {**d, "s": 0}


@theorem("preload_negative_textbook_period_for_atomic")
def prove_textbook_period_fails_for_atomic() -> ProofResult:
    """Negative control: max(c1+c2, v1+v2) is not the period once V1(i) waits for C2(i-1)."""
    d = _symbols()
    textbook = lambda dd: max(dd["c1"] + dd["c2"], dd["v1"] + dd["v2"])  # noqa: E731
    claim, assumptions = _period_claim(d, "atomic", _zmax(d["c1"] + d["c2"], d["v1"] + d["v2"]))
    return prove("preload_negative_textbook_period_for_atomic", claim, assumptions + [d["s"] == 0, d["vn"] == 0],
                 expect="refuted", timeout_s=10, confirm=_confirm_growth("atomic", textbook),
                 statement="(expected false) with s = 0 and no separate nUpdate, the atomic schedule's period "
                           "is max(c1+c2, v1+v2)")


@theorem("preload_negative_cann_without_sync")
def prove_cann_without_sync_fails() -> ProofResult:
    """Negative control: dropping the 2s sync terms from the cann period is wrong when s > 0."""
    d = _symbols()
    claim, assumptions = _period_claim(d, "cann", period(_without_sync(d), "cann"))
    return prove("preload_negative_cann_without_sync", claim, assumptions, expect="refuted", timeout_s=10,
                 confirm=_confirm_growth("cann", lambda dd: period(_without_sync(dd), "cann")),
                 statement="(expected false) the cann period ignores the cross-core flag cost s")
