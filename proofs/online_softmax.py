"""FlashAttention-2's online-softmax recurrence equals softmax attention, in exact real arithmetic.

Claim (``spec/flash.py``, after arXiv 2307.08691 Alg. 1 l.8-13): for keys with logits s_j
(-inf where masked) and values v_j, split into KV blocks in any way, the recurrence

    m' = max(m, rowmax S_blk);  m~ = (m' == -inf ? 0 : m')          flash_step, softmax.h guard
    P  = exp(S_blk - m~);  alpha = exp(m - m~)
    l' = alpha l + rowsum P;  O' = alpha O + P V_blk
    out = O_T / l_T,  LSE = m_T + log l_T                            flash_finalize

started from (m, l, O) = (-inf, 0, 0) gives out = sum_j e^{s_j} v_j / sum_j e^{s_j} and
e^{LSE} = sum_j e^{s_j}, and m_T = -inf exactly when no key is admitted (the empty row,
O = 0 by definition).

Reduction to rational arithmetic. exp is an order isomorphism from [-inf, inf) onto
[0, inf) that maps + to *. Write e_j = exp(s_j) (e_j = 0 for a masked key, e_j > 0
otherwise) and E = exp(m) (E = 0 while m = -inf). Then max(m, s) becomes max(E, e), the
guard becomes E~ = (E' == 0 ? 1 : E'), P_j = e_j / E~, alpha = E / E~ (0 when m = -inf), and
LSE = m + log l becomes e^{LSE} = E l. Each step is now +, *, / and max over reals with
e_j >= 0, which Z3's nonlinear real arithmetic decides; since the map is a bijection onto
its image, a statement about the e's is the same statement about the s's. The counterexamples
of the negative controls are mapped back (s_j = log e_j) and replayed in the exp domain with
mpmath, so the reduction itself is exercised on every run.

Two theorems: an inductive invariant (base, one step for a symbolic block, finalisation),
which covers every number of blocks; and the recurrence unrolled on symbolic inputs for
several (blocks, block size, value width), compared directly with the definition.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import mpmath
import z3

from attnspec.proofs._core import ProofResult, prove, theorem

#: The recurrence of spec/flash.py and the deliberately wrong ones used as negative controls.
VARIANTS = ("fa2", "no_rescale_o", "no_rescale_l", "stale_max")
#: (blocks, block size, value width) of the unrolled theorem.
UNROLLED_SHAPES = ((1, 3, 2), (2, 2, 2), (2, 3, 1), (3, 1, 2), (4, 1, 1))
CONFIRM_DPS = 60


# ----------------------------------------------------------------------------------------------
# Arithmetic shared by the exact-real proofs: the same code runs on Z3 terms and on Fractions
# ----------------------------------------------------------------------------------------------

def if_then_else(cond, a, b):
    """Return ``a if cond else b``: a Z3 If for a symbolic condition, else Python's."""
    return z3.If(cond, a, b) if isinstance(cond, z3.BoolRef) else (a if cond else b)


def maximum(*xs):
    """Return the maximum of ``xs`` (Z3 terms or numbers)."""
    best = xs[0]
    for x in xs[1:]:
        best = if_then_else(x > best, x, best)
    return best


class Exact:
    """Evaluate an algorithm on Fractions (used to replay and to test the symbolic encodings)."""

    def name(self, x):
        return x

    def div(self, n, d):
        return Fraction(n) / d


class Symbolic:
    """Build an algorithm as Z3 terms, naming every intermediate value by a defining equation.

    Naming keeps the terms flat (an If-nested max of maxes grows exponentially otherwise), and
    ``div`` states q * d == n instead of q == n / d: every real run satisfies these equations,
    so a claim proved under them holds for the real run, and nlsat avoids division. ``defs``
    collects the equations; they are assumptions of the proof.
    """

    def __init__(self, prefix: str):
        self.prefix, self.defs = prefix, []

    def _fresh(self) -> z3.ArithRef:
        return z3.Real(f"{self.prefix}t{len(self.defs)}")

    def name(self, x):
        v = self._fresh()
        self.defs.append(v == x)
        return v

    def div(self, n, d):
        v = self._fresh()
        self.defs.append(v * d == n)
        return v


def model_fraction(model: z3.ModelRef, term) -> Fraction:
    """Return the value of ``term`` in ``model`` as a Fraction (algebraic numbers to 2**-200)."""
    value = model.eval(term, model_completion=True)
    if z3.is_algebraic_value(value):
        value = value.approx(60)
    return Fraction(value.numerator_as_long(), value.denominator_as_long())


def prove_conjunction(name: str, parts: Sequence[tuple[str, z3.BoolRef, Sequence[z3.BoolRef]]], *,
                      statement: str) -> ProofResult:
    """Return one ProofResult for several (label, claim, assumptions) parts, each proved by its own solver call.

    nlsat decides one small part in milliseconds where their conjunction, whose variables it
    must project together, can take minutes. Proved iff every part is; seconds are summed;
    the first part that is not proved gives the status, counterexample and reason.
    """
    results = [prove(f"{name}[{label}]", claim, assumptions, statement=label) for label, claim, assumptions in parts]
    seconds = sum(r.seconds for r in results)
    failed = next((r for r in results if r.status != "proved"), None)
    if failed is None:
        return ProofResult(name, statement, "proved", "proved", seconds, note=f"{len(parts)} parts")
    return ProofResult(name, statement, "proved", failed.status, seconds, counterexample=failed.counterexample,
                       reason=failed.reason, note=f"part {failed.name} not proved")


# ----------------------------------------------------------------------------------------------
# The recurrence in the e-domain (E = exp(m), e_j = exp(s_j))
# ----------------------------------------------------------------------------------------------

def flash_step(E, l, O: Sequence, es: Sequence, vs: Sequence[Sequence], variant: str = "fa2", ctx=Exact()):
    """Return (E', l', O') after one block with weights ``es`` and values ``vs`` (one row per key)."""
    E_new = ctx.name(maximum(E, *es))  # m' = max(m, rowmax S)            Alg. 1 l.9
    shift_new = ctx.name(if_then_else(E_new == 0, 1, E_new))  # max == -inf ? 0 : max     softmax.h
    shift_old = ctx.name(if_then_else(E == 0, 1, E))
    alpha = ctx.div(E, shift_new)  # exp(m - m~); 0 while m = -inf
    p = [ctx.div(e, shift_old if variant == "stale_max" else shift_new) for e in es]  # P = exp(S - m~)
    l_new = ctx.name((l if variant == "no_rescale_l" else alpha * l) + sum(p))  # l.9
    O_new = [ctx.name((O[d] if variant == "no_rescale_o" else alpha * O[d]) + sum(pj * v[d] for pj, v in zip(p, vs)))
             for d in range(len(O))]  # l.10
    return E_new, l_new, O_new


def run_recurrence(es: Sequence, vs: Sequence[Sequence], block: int, variant: str = "fa2", ctx=Exact()):
    """Return the final (E, l, O) after all keys, ``block`` keys per block, from (0, 0, 0)."""
    E, l, O = 0, 0, [0] * len(vs[0])
    for start in range(0, len(es), block):
        E, l, O = flash_step(E, l, O, es[start:start + block], vs[start:start + block], variant, ctx)
    return E, l, O


def _symbols(prefix: str, keys: int, width: int):
    es = [z3.Real(f"{prefix}e{j}") for j in range(keys)]
    vs = [[z3.Real(f"{prefix}v{j}_{d}") for d in range(width)] for j in range(keys)]
    return es, vs


def definition_parts(E, l, O, es, vs) -> list[tuple[str, z3.BoolRef]]:
    """Return the claims that (E, l, O) finalises to softmax attention over the weights ``es``, as labelled parts."""
    Z = sum(es)
    parts = [("empty", (E == 0) == (Z == 0)),  # m_T = -inf exactly when no key is admitted
             ("l>0", z3.Implies(Z > 0, l > 0)),
             ("lse", z3.Implies(Z > 0, E * l == Z))]  # e^{LSE} = E l = sum e_j
    parts += [(f"out{d}", z3.Implies(Z > 0, O[d] * Z == sum(e * v[d] for e, v in zip(es, vs)) * l))
              for d in range(len(O))]  # O / l = N / Z
    return parts


# ----------------------------------------------------------------------------------------------
# Replaying a counterexample in the exp domain (mpmath), independently of the e-domain algebra
# ----------------------------------------------------------------------------------------------

def exp_domain_flash(scores: Sequence, values: Sequence[Sequence], block: int, variant: str = "fa2"):
    """Return (out, lse) of the recurrence on logits ``scores`` (mpmath, -inf = masked) as spec/flash.py runs it."""
    width = len(values[0])
    m, l, O = mpmath.mpf("-inf"), mpmath.mpf(0), [mpmath.mpf(0)] * width
    for start in range(0, len(scores), block):
        s, v = scores[start:start + block], values[start:start + block]
        m_new = max([m] + list(s))
        shift_new = 0 if m_new == mpmath.mpf("-inf") else m_new
        shift_old = 0 if m == mpmath.mpf("-inf") else m
        alpha = mpmath.exp(m - shift_new)
        p = [mpmath.exp(x - (shift_old if variant == "stale_max" else shift_new)) for x in s]
        l = (l if variant == "no_rescale_l" else alpha * l) + mpmath.fsum(p)
        O = [(O[d] if variant == "no_rescale_o" else alpha * O[d]) + mpmath.fsum(pj * vj[d] for pj, vj in zip(p, v))
             for d in range(width)]
        m = m_new
    if m == mpmath.mpf("-inf"):
        return [mpmath.mpf(0)] * width, m
    return [o / l for o in O], m + mpmath.log(l)


def exp_domain_definition(scores: Sequence, values: Sequence[Sequence]):
    """Return (out, lse) of softmax attention on logits ``scores`` (mpmath, -inf = masked)."""
    weights = [mpmath.exp(s) for s in scores]
    total = mpmath.fsum(weights)
    if total == 0:
        return [mpmath.mpf(0)] * len(values[0]), mpmath.mpf("-inf")
    return ([mpmath.fsum(w * v[d] for w, v in zip(weights, values)) / total for d in range(len(values[0]))],
            mpmath.log(total))


def confirm_in_exp_domain(es, vs, block: int, variant: str):
    """Return a ``confirm`` hook: map a model's e_j to s_j = log e_j and show the variant differs from the definition."""

    def confirm(model: z3.ModelRef) -> str:
        with mpmath.workdps(CONFIRM_DPS):
            weights = [model_fraction(model, e) for e in es]
            if any(w < 0 for w in weights):
                raise AssertionError(f"counterexample has a negative weight {weights}: not the exp of a logit")
            scores = [mpmath.log(mpmath.mpf(w.numerator) / w.denominator) if w else mpmath.mpf("-inf") for w in weights]
            values = [[mpmath.mpf(model_fraction(model, x).numerator) / model_fraction(model, x).denominator
                       for x in row] for row in vs]
            out, lse = exp_domain_flash(scores, values, block, variant)
            ref_out, ref_lse = exp_domain_definition(scores, values)
            gap = max([abs(a - b) for a, b in zip(out, ref_out)]
                      + [abs(lse - ref_lse) if mpmath.isfinite(ref_lse) else (0 if lse == ref_lse else mpmath.inf)])
            if not gap > mpmath.mpf(10) ** (-CONFIRM_DPS // 2):
                raise AssertionError(f"variant {variant} agrees with the definition at the model (gap {gap})")
            return f"replayed with mpmath at s_j = log e_j: out/lse off by {mpmath.nstr(gap, 6)}"

    return confirm


# ----------------------------------------------------------------------------------------------
# Theorems
# ----------------------------------------------------------------------------------------------

def invariant(E, l, O, Z, N):
    """Return I(E, l, O; Z, N): the state encodes the prefix sums Z = sum e_j and N = sum e_j v_j."""
    shift = if_then_else(E == 0, 1, E)
    return z3.And(E >= 0, Z >= E, z3.Implies(E == 0, z3.And(Z == 0, *[n == 0 for n in N])),
                  l * shift == Z, *[o * shift == n for o, n in zip(O, N)])


def invariant_parts(block_sizes: Sequence[int] = (1, 2, 3), width: int = 2, variant: str = "fa2",
                    nonnegative: bool = True) -> list[tuple[str, z3.BoolRef, list[z3.BoolRef]]]:
    """Return the (label, claim, assumptions) parts: base, one step per block size, finalisation."""
    zero = [z3.RealVal(0)] * width
    parts = [("base", invariant(z3.RealVal(0), z3.RealVal(0), zero, z3.RealVal(0), zero), [])]  # (-inf, 0, 0)
    for b in block_sizes:
        E, l, Z = z3.Reals(f"E_{b} l_{b} Z_{b}")
        O = [z3.Real(f"O_{b}_{d}") for d in range(width)]
        N = [z3.Real(f"N_{b}_{d}") for d in range(width)]
        es, vs = _symbols(f"b{b}_", b, width)
        ctx = Symbolic(f"step{b}_")
        E2, l2, O2 = flash_step(E, l, O, es, vs, variant, ctx)
        N2 = [N[d] + sum(e * v[d] for e, v in zip(es, vs)) for d in range(width)]
        assumptions = [invariant(E, l, O, Z, N)] + ctx.defs + ([e >= 0 for e in es] if nonnegative else [])
        parts.append((f"step{b}", invariant(E2, l2, O2, Z + sum(es), N2), assumptions))
    E, l, Z = z3.Reals("E_T l_T Z_T")
    O = [z3.Real(f"O_T_{d}") for d in range(width)]
    N = [z3.Real(f"N_T_{d}") for d in range(width)]
    final = z3.And(z3.Implies(E == 0, Z == 0),  # m_T = -inf only for an empty row
                   z3.Implies(E > 0, z3.And(l > 0, E * l == Z, *[o * Z == n * l for o, n in zip(O, N)])))
    parts.append(("final", final, [invariant(E, l, O, Z, N)]))
    return parts


def unrolled_parts(blocks: int, block: int, width: int, variant: str = "fa2"):
    """Return (parts, es, vs): the recurrence on symbolic inputs against the definition, as labelled parts."""
    es, vs = _symbols(f"T{blocks}b{block}w{width}_", blocks * block, width)
    ctx = Symbolic(f"T{blocks}b{block}w{width}_")
    final = run_recurrence(es, vs, block, variant, ctx)
    assumptions = [e >= 0 for e in es] + ctx.defs  # e_j = exp(s_j) >= 0; the named intermediates
    return [(f"T{blocks}b{block}w{width}:{label}", claim, assumptions)
            for label, claim in definition_parts(*final, es, vs)], es, vs


@theorem("online_softmax.invariant")
def prove_online_softmax_invariant() -> ProofResult:
    # spec/flash.py flash_step:
    #   alpha = policy.exp(policy.to_softmax(state.m - m_shift))
    #   l_new = ... alpha * state.l ... + policy.sum(p, axis=-1);  o_new = ... alpha * state.o ... + pv
    return prove_conjunction("online_softmax.invariant", invariant_parts(),
                             statement="I(E,l,O;Z,N): E>=0, Z>=E, E=0 => Z=N=0, l*E~=Z, O*E~=N holds for (0,0,0), "
                                       "is kept by one FA2 step on any block of 1-3 keys (e_j>=0, width 2), and "
                                       "gives O/l=N/Z, E*l=Z; so the recurrence is exact for any number of blocks")


@theorem("online_softmax.unrolled")
def prove_online_softmax_unrolled() -> ProofResult:
    # spec/flash.py flash_state: for start in range(0, sk, block_k): state = flash_step(state, ...)
    parts = [part for shape in UNROLLED_SHAPES for part in unrolled_parts(*shape)[0]]
    return prove_conjunction("online_softmax.unrolled", parts,
                             statement="FA2 recurrence == softmax attention for symbolic e_j>=0, v_j at (blocks, "
                                       f"block size, width) in {UNROLLED_SHAPES}")


def refute_variant(variant: str, name: str) -> ProofResult:
    """Return the (expected refuted) claim that ``variant`` matches the definition on 2 blocks of 1 key."""
    parts, es, vs = unrolled_parts(2, 1, 1, variant)
    claim = z3.And(*[c for _, c, _ in parts])
    return prove(name, claim, parts[0][2], expect="refuted",
                 statement=f"the '{variant}' recurrence equals softmax attention (2 blocks of 1 key)",
                 confirm=confirm_in_exp_domain(es, vs, 1, variant))


@theorem("online_softmax.control.no_rescale_o")
def prove_online_softmax_control_no_rescale_o() -> ProofResult:
    # wrong: o_new = state.o + pv   (alpha dropped from Alg. 1 l.10)
    return refute_variant("no_rescale_o", "online_softmax.control.no_rescale_o")


@theorem("online_softmax.control.no_rescale_l")
def prove_online_softmax_control_no_rescale_l() -> ProofResult:
    # wrong: l_new = state.l + rowsum(p)   (alpha dropped from Alg. 1 l.9)
    return refute_variant("no_rescale_l", "online_softmax.control.no_rescale_l")


@theorem("online_softmax.control.stale_max")
def prove_online_softmax_control_stale_max() -> ProofResult:
    # wrong: p = exp(s - m_old)   (P shifted by the previous block's max)
    return refute_variant("stale_max", "online_softmax.control.stale_max")


@theorem("online_softmax.control.negative_weights")
def prove_online_softmax_control_negative_weights() -> ProofResult:
    # precondition dropped: e_j = exp(s_j) >= 0. Without it the invariant is not kept by a step.
    label, claim, assumptions = invariant_parts(block_sizes=(2,), nonnegative=False)[1]
    return prove("online_softmax.control.negative_weights", claim, assumptions, expect="refuted",
                 statement=f"the invariant's {label} with the precondition e_j >= 0 dropped")
