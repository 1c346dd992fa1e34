"""reference.certified: the certified fast oracle against the mpmath oracle, its kernels, and its mutants.

Expected values come from reference.oracle (mpmath intervals, exact tie decisions) or from
exact rational arithmetic, never from the module under test. Agreement is checked from both
first tiers (1a: a-priori bounds, 1b: exact products). Each property is also shown to fail
for a mutant of the module: an error term dropped from a bound (exp, summation, tails,
roundings), a budget of exact products one to five bits too large, keys left off their grid,
a claimed exp bound below the truth.
"""

from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnspec.reference import certified
from attnspec.reference.certified import (EXP_REL, U, AttentionCase, adversarial_cases, cancelling_logit_case,
                                          cancelling_weights_case, certified_attention, disagreement,
                                          exact_tie_case, exp_kernel, exp_kernel_error, exp_kernel_sample,
                                          extreme_cases, grid_tie_case, near_tie_case, round_enclosure)
from attnspec.reference.oracle import OracleUncertifiedError, attention_oracle
from attnspec.reference.strategies import attention_inputs, find_failure
from attnspec.spec.errors import DomainError, FormatError
from attnspec.spec.formats import Format, round_to
from attnspec.spec.problem import attention_problem

FORMATS = ("fp32", "bf16", "fp16")
BUILDERS = (near_tie_case, exact_tie_case, cancelling_logit_case, cancelling_weights_case, grid_tie_case)
FIRST = st.sampled_from(["1a", "1b"])
small_cases = attention_inputs(max_batch=2, max_heads=4, max_seq=8, max_dim=6)


# ---------------------------------------------------------------------------------------------
# Agreement with the mpmath oracle
# ---------------------------------------------------------------------------------------------

@given(case=small_cases, fmt=st.sampled_from(FORMATS), magnitude=st.sampled_from([1.0, 1e-3, 40.0]), first=FIRST)
def test_agrees_with_the_mpmath_oracle(case, fmt, magnitude, first):
    scaled = AttentionCase(case.q * magnitude, case.k, case.v, case.conventions)
    assert disagreement(scaled, fmt, first=first) is None


@given(seed=st.integers(min_value=0, max_value=2**32 - 1), fmt=st.sampled_from(FORMATS),
       build=st.sampled_from(BUILDERS), first=FIRST)
def test_agrees_on_constructed_near_and_exact_ties(seed, fmt, build, first):
    assert disagreement(build(fmt, seed), fmt, first=first) is None


@pytest.mark.parametrize("first", ["1a", "1b"])
@pytest.mark.parametrize("index", range(len(extreme_cases())))
def test_agrees_at_the_extremes(index, first):
    case, fmt = extreme_cases()[index]
    assert disagreement(case, fmt, first=first) is None


def test_near_ties_are_decided_by_the_later_tiers():
    """A near tie cannot be certified by tier 1; the result still matches, and the fallback is counted."""
    case = near_tie_case("fp32", 3)
    got = certified_attention(case.q, case.k, case.v, fmt="fp32", **case.conventions)
    assert got.refined_rows == 1 and got.fallback_out + got.fallback_lse >= 1
    assert disagreement(case, "fp32") is None


def test_fully_masked_rows_follow_the_convention():
    case, fmt = extreme_cases()[4]  # kv_seqlens = 0, empty_lse = +inf
    got = certified_attention(case.q, case.k, case.v, fmt=fmt, **case.conventions)
    assert np.array_equal(got.out, np.zeros_like(got.out)) and np.all(got.lse == np.inf)
    assert np.all(got.out_rad == 0) and got.fallback_rows == 0


def test_float64_enclosure_without_a_format():
    case = near_tie_case("bf16", 0)
    got = certified_attention(case.q, case.k, case.v, fmt=None, **case.conventions)
    assert got.out is None and got.lse is None and got.refined_rows == 0 and got.fallback_rows == 0
    assert np.all(np.isfinite(got.out_rad)) and np.all(got.out_rad < 64 * U * np.abs(got.out_mid).max())


# ---------------------------------------------------------------------------------------------
# Mutants: each dropped error term must let a wrong rounding through on a constructed case
# ---------------------------------------------------------------------------------------------

def test_mutant_without_the_exp_error_term_is_caught(monkeypatch):
    monkeypatch.setattr(certified, "EXP_REL", 0.0)
    seed = find_failure(st.integers(min_value=0, max_value=10**6),
                        lambda s: disagreement(cancelling_weights_case("fp32", s), "fp32") is not None, max_examples=50)
    monkeypatch.undo()
    assert disagreement(cancelling_weights_case("fp32", seed), "fp32") is None


def test_mutant_without_the_summation_error_terms_is_caught(monkeypatch):
    monkeypatch.setattr(certified, "gamma", lambda n: 0.0)
    seed = find_failure(st.integers(min_value=0, max_value=10**6),
                        lambda s: disagreement(cancelling_logit_case("fp32", s), "fp32") is not None, max_examples=50)
    monkeypatch.undo()
    assert disagreement(cancelling_logit_case("fp32", seed), "fp32") is None


def test_agreement_check_catches_a_shifted_enclosure(monkeypatch):
    """The harness's own known-bad input: enclosures moved off the exact value by 1e-9 are reported."""
    real = certified._evaluate

    def shifted(rows, precise, empty_lse, need=None):
        e = real(rows, precise, empty_lse, need)
        return certified._Enclosure(e.out * (1 + 1e-9), e.out_rad, e.lse, e.lse_rad, e.empty)

    monkeypatch.setattr(certified, "_evaluate", shifted)
    assert "misses the exact value" in disagreement(near_tie_case("fp32", 0), "bf16")


# ---------------------------------------------------------------------------------------------
# Kernels: exp, log, split products, certified rounding
# ---------------------------------------------------------------------------------------------

def test_exp_kernel_is_within_its_derived_bound():
    worst = exp_kernel_error(exp_kernel_sample(1, 2000))
    assert worst <= EXP_REL, f"max_rel_err={worst / U:.4f}u, but should be <= {EXP_REL / U:.4f}u [exp_kernel]"
    assert exp_kernel(np.array([0.0]))[0] == 1.0


def test_exp_bound_below_the_truth_is_refuted():
    """A claimed bound of 0.45 u (less than a correctly rounded exp can promise) must be violated."""
    assert exp_kernel_error(exp_kernel_sample(1, 2000)) > 0.45 * U


@given(s=st.floats(min_value=0.5, max_value=2.0**60))
def test_log_enclosure_contains_log(s):
    import mpmath

    lam, err = certified._log_enclosure(np.array([s]))
    with mpmath.workprec(200):
        assert abs(mpmath.log(mpmath.mpf(s)) - mpmath.mpf(float(lam[0]))) <= mpmath.mpf(float(err[0]))


@given(seed=st.integers(min_value=0, max_value=2**32 - 1), slices=st.integers(min_value=1, max_value=2),
       spread=st.sampled_from([1.0, 2.0**20, 2.0**60]))
def test_split_product_encloses_the_exact_product(seed, slices, spread):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, 7)) * spread ** rng.uniform(-1, 1, (3, 7))
    b = rng.standard_normal((7, 4)) * spread ** rng.uniform(-1, 1, (7, 4))
    parts, tail, err = certified._split_terms(a, b, slices)
    for i, j in np.ndindex(3, 4):
        exact = sum(Fraction(float(a[i, t])) * Fraction(float(b[t, j])) for t in range(7))
        head = sum(Fraction(float(p[i, j])) for p in parts)
        assert abs(exact - head - Fraction(float(np.broadcast_to(tail, err.shape)[i, j]))) <= Fraction(float(err[i, j]))


def test_split_product_without_its_tail_misses():
    """Mutant of the split: the leading slices alone are not the product when the operands have more bits."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 7)), rng.standard_normal((7, 4))
    parts, _, _ = certified._split_terms(a, b, 1)
    exact = [[sum(Fraction(float(a[i, t])) * Fraction(float(b[t, j])) for t in range(7)) for j in range(4)]
             for i in range(3)]
    assert any(Fraction(float(parts[0][i, j])) != exact[i][j] for i in range(3) for j in range(4))


@pytest.mark.parametrize("fmt", ["fp32", "bf16", "fp16"])
def test_round_enclosure_known_good_and_known_bad(fmt):
    info = Format[fmt.upper()].info if fmt != "bf16" else Format.BF16.info
    one_up = 1 + 2.0 ** (1 - info.p)
    midpoint = (1 + one_up) / 2
    value, ok = round_enclosure(np.array([1.0, midpoint, midpoint, np.nan, 1.0]),
                                np.array([2.0**-40, 0.0, 2.0**-60, 0.0, np.inf]), fmt)
    assert ok.tolist() == [True, False, False, False, False]
    assert value[0] == 1.0


# ---------------------------------------------------------------------------------------------
# Bad input and the oracle's undecidable cases
# ---------------------------------------------------------------------------------------------

def test_bad_input_is_rejected():
    q, k, v = np.ones((1, 1, 1, 2)), np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2))
    with pytest.raises(FormatError, match="fmt: expected fp32, bf16"):
        certified_attention(q, k, v, fmt="fp64")
    with pytest.raises(FormatError, match="format: expected one of"):
        certified_attention(q, k, v, fmt="fp33")
    with pytest.raises(DomainError, match="q: expected finite values"):
        certified_attention(np.full((1, 1, 1, 2), np.nan), k, v)


def test_undecided_elements_are_passed_through_as_the_oracle_reports_them():
    """Two logit groups with the same V mean under softcap: O is that mean exactly, a bf16 midpoint.

    Whatever the mpmath oracle can decide, the certified oracle must report alike: raise
    OracleUncertifiedError when strict exactly when the oracle does, and list the same rows as
    uncertified when not strict.
    """
    mid = float(np.float64(1.0) + 2.0**-8)  # a bf16 midpoint
    v = np.array([mid - 2.0**-10, mid + 2.0**-10, mid - 2.0**-9, mid + 2.0**-9]).reshape(1, 1, 4, 1)
    k = np.array([0.5, 0.5, 1.5, 1.5]).reshape(1, 1, 4, 1)  # groups {0, 1} and {2, 3}, each of mean mid
    q = np.ones((1, 1, 1, 1))
    conventions = dict(scale=1.0, softcap=20.0)
    exact = attention_oracle(q, k, v, **conventions)
    try:
        expected = exact.rounded("bf16")
    except OracleUncertifiedError:
        expected = None
    if expected is None:
        with pytest.raises(OracleUncertifiedError):
            certified_attention(q, k, v, fmt="bf16", **conventions)
    else:
        assert disagreement(AttentionCase(q, k, v, conventions), "bf16") is None
    lenient = certified_attention(q, k, v, fmt="bf16", strict=False, **conventions)
    oracle_lenient = attention_oracle(q, k, v, **conventions)
    oracle_lenient.rounded("bf16", strict=False)
    assert lenient.certified == oracle_lenient.certified


def test_seeded_adversarial_set_is_nonempty_and_mixed():
    cases = adversarial_cases(range(1))
    assert len(cases) >= 20 and {fmt for _, fmt in cases} == set(FORMATS)


@pytest.mark.parametrize("shapes", [((1, 2, 0, 3), (1, 1, 4, 3), (1, 1, 4, 2)),  # no queries
                                    ((0, 2, 1, 3), (0, 1, 4, 3), (0, 1, 4, 2)),  # no batch
                                    ((1, 2, 1, 3), (1, 1, 0, 3), (1, 1, 0, 2))])  # no keys: empty rows
def test_degenerate_shapes(shapes):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s) for s in shapes)
    assert disagreement(AttentionCase(q, k, v), "fp16") is None


# ---------------------------------------------------------------------------------------------
# Tier 1b: grids, exact products, the shifted logits and the shift (each claim against exact
# rational arithmetic, and each caught when one of its terms or budgets is mutated)
# ---------------------------------------------------------------------------------------------

def exact_dot(a, b) -> Fraction:
    return sum((Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b)), Fraction(0))


@st.composite
def grid_arrays(draw, rows: int, cols: int):
    """Arrays of BF16, FP16 or FP8 values over a few binades, with up to three elements off any coarse grid.

    The elements off the grid are tiny values of the format or arbitrary float64 values: they
    make split rows and keys off the grid in tier 1b.
    """
    fmt = draw(st.sampled_from(["bf16", "fp16", "fp8_e4m3"]))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    x = round_to(rng.standard_normal((rows, cols)) * 2.0 ** rng.integers(-3, 4, (rows, cols)), fmt)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        i, j = draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))
        x[i, j] = draw(st.sampled_from([0.0, float(round_to(2.0**-30, "bf16")), float(rng.standard_normal())]))
    return x


def logit_terms_violation(q, k) -> str | None:
    """Return why ``_logit_terms`` breaks its contract on q, k, or None."""
    terms = certified._logit_terms(q, k, certified.scan_rows(k)["grid"], certified._norm_up(k))
    tail, err = terms.dense()
    for r, j in np.ndindex(terms.c.shape):
        exact = exact_dot(q[r], k[j])
        if abs(Fraction(float(terms.c[r, j])) + Fraction(float(tail[r, j])) - exact) > Fraction(float(err[r, j])):
            return f"c + tail misses q.k by more than err at {(r, j)}"
    for r in np.setdiff1d(np.arange(q.shape[0]), terms.rows):  # clean rows: differences exact
        c = terms.c[r]
        if any(Fraction(float(c[j] - c[0])) != Fraction(float(c[j])) - Fraction(float(c[0])) for j in range(c.size)):
            return f"a difference of row {r} is inexact"
    return None


logit_operands = st.integers(min_value=1, max_value=4).flatmap(
    lambda r: st.integers(min_value=1, max_value=6).flatmap(
        lambda dk: st.tuples(grid_arrays(r, dk), st.integers(min_value=1, max_value=10).flatmap(
            lambda sk: grid_arrays(sk, dk)))))


@given(operands=logit_operands)
def test_logit_terms_are_exact_with_bounded_tails(operands):
    assert logit_terms_violation(*operands) is None


CLEAN_ROWS = np.array([[1.0, 2.0, 0.5], [1.0, -1.0, 2.0], [0.5, 0.5, 1.0]])  # on the grid: no correction


def budget_logits() -> tuple[np.ndarray, np.ndarray]:
    """Return (q, k) whose row 0 has one bit more than 53 - 5 allows: a split row, unless the budget is too large.

    c_00 = 1.5 * 4 + (1/4 + 2^-51) = 6.25 + 2^-51 is not a binary64 number; with the budget's
    4 bits of slack gone (5 more bits), row 0 counts as clean and c_00 is claimed exact.
    """
    return np.vstack([[1.5, 0.25 + 2.0**-51, 0.0], CLEAN_ROWS]), np.array([[4.0, 1.0, 0.0], [2.0, 1.0, 0.0]])


def rounding_tail_logits() -> tuple[np.ndarray, np.ndarray]:
    """Return (q, k) with a split row whose tail q2.k rounds in binary64 (3 2^-51 + 3 2^-60 (1 + 2^-52))."""
    return (np.vstack([[1.5, 0.25 + 3 * 2.0**-51, 2.0**-60 * (1 + 2.0**-52)], CLEAN_ROWS]),
            np.array([[4.0, 1.0, 3.0], [2.0, 1.0, 1.0]]))


#: Mutants of tier 1b: a budget 5 bits too large, the float64 products' error terms dropped, keys left off the grid.
MUTANTS = {"budget": ("BITS", 58), "error terms": ("gamma", lambda n: 0.0),
           "no rounding onto the grid": ("_to_grid", lambda x, grid: (x, np.zeros_like(x)))}


@pytest.mark.parametrize("mutate", sorted(MUTANTS))
def test_logit_terms_mutants_are_caught(monkeypatch, mutate):
    """Each mutant fails on a constructed case (budget, tails) or on a generated one (keys left off the grid)."""
    witness = {"budget": budget_logits, "error terms": rounding_tail_logits}.get(mutate)
    if witness is not None:
        assert logit_terms_violation(*witness()) is None
    monkeypatch.setattr(certified, *MUTANTS[mutate])
    if witness is None:
        find_failure(logit_operands, lambda ops: logit_terms_violation(*ops) is not None, max_examples=300)
    else:
        assert logit_terms_violation(*witness()) is not None


def numerator_violation(p, v) -> str | None:
    """Return why ``_numerator_terms`` breaks its contract on p >= 0, v, or None."""
    stats = certified.scan_rows(v, columns=True)
    num, nu, s, sigma_s = certified._numerator_terms(p, v, stats["grid"], stats["column"])
    for r in range(p.shape[0]):
        if abs(Fraction(float(s[r, 0])) - sum(map(Fraction, map(float, p[r])))) > Fraction(float(sigma_s[r, 0])):
            return f"row sum {r} outside sigma_s"
        for d in range(v.shape[1]):
            if abs(Fraction(float(num[r, d])) - exact_dot(p[r], v[:, d])) > Fraction(float(nu[r, d])):
                return f"numerator {(r, d)} outside nu"
    return None


@st.composite
def numerator_operands(draw):
    rows, sk = draw(st.integers(min_value=1, max_value=3)), draw(st.integers(min_value=1, max_value=12))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    p = np.exp(-rng.uniform(0, draw(st.sampled_from([1.0, 30.0])), (rows, sk)))  # weights in (0, 1], all bits used
    p[:, 0] = 1.0
    return p, draw(grid_arrays(sk, draw(st.integers(min_value=1, max_value=3))))


def cancelling_numerator() -> tuple[np.ndarray, np.ndarray]:
    """Return (p, v) with N = 0 exactly while P2 V rounds: weights a_1..a_m then a_1..a_m against V = (+1, .., -1, ..).

    The a_i spread over 2^-60..1, so the low parts P2 span ~90 binades and their partial sums
    over the first half round in any order of accumulation; the second half cancels the
    values, not those roundings, and u'|N| bounds nothing.
    """
    a = np.random.default_rng(0).uniform(0.5, 1.0, 16) * 2.0 ** -np.arange(0, 64, 4)
    return np.concatenate([a, a]).reshape(1, -1), np.repeat([1.0, -1.0], a.size).reshape(-1, 1)


def off_grid_numerator() -> tuple[np.ndarray, np.ndarray]:
    """Return (p, v) whose 20 rows of V off the grid (1 + odd 2^-45) are cancelled by 20 rows of -1, N ~ 2^-31.

    Left off the grid, the products p_j v_j need bits down to 2^-66 and round in the partial
    sums (of size ~1) while N is ~2^-31: u'|N| does not cover them. 60 zero rows of V keep the
    rows off the grid below a quarter, so the grid applies.
    """
    rng = np.random.default_rng(0)
    w = 0.5 + (2 * rng.integers(0, 2**19, 20) + 1) * 2.0**-21  # 22 bits: P2 = 0
    v = np.concatenate([1 + (2 * rng.integers(0, 2**10, 20) + 1) * 2.0**-45, -np.ones(20), np.zeros(60)])
    return np.concatenate([w, w, np.full(60, 0.5)]).reshape(1, -1), v.reshape(-1, 1)


@given(operands=numerator_operands())
def test_numerator_terms_enclose_the_exact_product(operands):
    assert numerator_violation(*operands) is None


def budget_numerator() -> tuple[np.ndarray, np.ndarray]:
    """Return (p, v) on which a budget 5 bits too large breaks P1 V: 63 products with bits down to 2^-49.

    p_j = 1/2 + odd 2^-26, v_j = 1 + odd 2^-23 (on the grid 2^-23), sum ~32. The budget keeps 22
    bits of P, so P1 V is exact; with 5 more bits (beyond its 2 bits of slack) P1 keeps 2^-26, and
    the 63 partial sums near 32 (last place 2^-47) each round: the accumulated error exceeds
    the single rounding u'|N| that the bound allows for an exact P1 V.
    """
    rng = np.random.default_rng(0)
    p = 0.5 + (2 * rng.integers(0, 16, (1, 63)) + 1) * 2.0**-26
    return p, 1 + (2 * rng.integers(0, 512, (63, 1)) + 1) * 2.0**-23


@pytest.mark.parametrize("mutate", sorted(MUTANTS))
def test_numerator_terms_mutants_are_caught(monkeypatch, mutate):
    """Each mutant fails on a constructed case: a tight budget, cancelling low parts, rows of V off the grid."""
    witness = {"budget": budget_numerator, "error terms": cancelling_numerator,
               "no rounding onto the grid": off_grid_numerator}[mutate]
    assert numerator_violation(*witness()) is None
    monkeypatch.setattr(certified, *MUTANTS[mutate])
    assert numerator_violation(*witness()) is not None


def shifted_violation(q, k, allowed, scale) -> str | None:
    """Return why ``_shifted_logits`` breaks |x_j - m - t_j| <= coef |t_j| + delta_j on an allowed entry, or None."""
    hi, lo = scale
    shifted = certified._shifted_logits(q, k, allowed, scale, certified.scan_rows(k)["grid"], certified._norm_up(k))
    delta = np.zeros(shifted.t.shape)
    for _, idx, d in shifted.loose:
        delta[idx] = d
    with mpmath.workprec(300):
        sigma = mpmath.mpf(hi) + mpmath.mpf(lo)  # the scale residual is below 2^-100 |hi|: inside kappa
        for r, j in zip(*np.nonzero(allowed)):
            g = exact_dot(q[r], k[j]) - Fraction(float(shifted.ref[r]))
            exact = sigma * mpmath.mpf(g.numerator) / g.denominator
            t = float(shifted.t[r, j])
            if abs(exact - t) > shifted.coef * abs(t) + float(delta[r, j]) + SCALE_RESIDUAL_SLACK * abs(exact):
                return f"entry {(r, j)}: |x - m - t| = {float(abs(exact - t))!r} above the bound"
    return None


SCALE_RESIDUAL_SLACK = 2.0**-99  # sigma above is hi + lo, 2^-100 |hi| from the exact default scale


@st.composite
def shifted_operands(draw):
    q, k = draw(logit_operands)
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    allowed = rng.uniform(size=(q.shape[0], k.shape[0])) < draw(st.sampled_from([1.0, 0.6]))
    scale = draw(st.sampled_from([(0.3, 0.0), (-1.7, 0.0), (0.125, 0.0), "default"]))
    if scale == "default":
        scale = certified.exact_scale(attention_problem(q[None, None], k[None, None], k[None, None]))
    return q, k, allowed, scale


@given(operands=shifted_operands())
def test_shifted_logits_are_within_their_bound(operands):
    assert shifted_violation(*operands) is None


def test_shifted_logits_mutants_are_caught(monkeypatch):
    """Without the roundings' terms (u' = 0) generated cases fail; with a budget 5 bits too large, budget_logits."""
    q, k = budget_logits()
    allowed = np.ones((q.shape[0], k.shape[0]), dtype=bool)
    assert shifted_violation(q, k, allowed, (0.3, 0.0)) is None
    with monkeypatch.context() as patch:
        patch.setattr(certified, *MUTANTS["budget"])
        assert shifted_violation(q, k, allowed, (0.3, 0.0)) is not None
    monkeypatch.setattr(certified, "U1", 0.0)
    find_failure(shifted_operands(), lambda ops: shifted_violation(*ops) is not None, max_examples=100)


@given(hi=st.floats(min_value=2.0**-20, max_value=2.0**20), dk=st.integers(min_value=1, max_value=1000),
       ref=st.floats(min_value=-1e6, max_value=1e6), default=st.booleans())
def test_scaled_shift_encloses_sigma_ref(hi, dk, ref, default):
    scale = certified.exact_scale(attention_problem(np.ones((1, 1, 1, dk)), np.ones((1, 1, 1, dk)),
                                                    np.ones((1, 1, 1, 1)), scale=None if default else hi))
    shift, err = certified._scaled_shift(scale, np.array([ref]))
    with mpmath.workprec(300):
        sigma = 1 / mpmath.sqrt(dk) if default else mpmath.mpf(hi)
        assert abs(mpmath.mpf(float(shift[0])) - sigma * mpmath.mpf(ref)) <= mpmath.mpf(float(err[0]))


def test_scaled_shift_needs_its_error_term():
    """Without err, the float shift is not the exact one: the default scale times a float is rarely a float."""
    scale = certified.exact_scale(attention_problem(np.ones((1, 1, 1, 3)), np.ones((1, 1, 1, 3)), np.ones((1, 1, 1, 1))))
    shift, _ = certified._scaled_shift(scale, np.array([1.1]))
    with mpmath.workprec(300):
        assert mpmath.mpf(float(shift[0])) != mpmath.mpf(1.1) / mpmath.sqrt(3)


@given(x=grid_arrays(4, 5), zeros=st.booleans())
def test_scan_rows_grids_hold(x, zeros):
    if zeros:
        x[1] = 0.0
        x[2, 0] = 5e-324
    stats = certified.scan_rows(x[None], columns=True)
    for row, g in zip(x, stats["grid"][0]):
        if g == certified.GRID_NONE:
            assert not row.any()
            continue
        assert all((Fraction(float(a)) / Fraction(2) ** int(g)).denominator == 1 for a in row)
    assert np.array_equal(stats["column"][0, 0], np.max(np.abs(x), axis=0))


def test_scan_rows_grid_is_tight_on_a_simple_row():
    """The negative control: one grid coarser than claimed fails ([1.5, 3] is a multiple of 2^-1, not of 2^0)."""
    assert certified.scan_rows(np.array([[1.5, 3.0]]))["grid"].tolist() == [-1]


def grid_case_strategy():
    """Whole problems on grids (BF16, FP16, FP8 values, a few elements off), with masks, lengths and scales."""
    @st.composite
    def build(draw):
        hkv, group = draw(st.integers(min_value=1, max_value=2)), draw(st.integers(min_value=1, max_value=2))
        sq, sk = draw(st.integers(min_value=1, max_value=3)), draw(st.integers(min_value=1, max_value=12))
        dk, dv = draw(st.integers(min_value=1, max_value=6)), draw(st.integers(min_value=1, max_value=3))
        q = draw(grid_arrays(hkv * group * sq, dk)).reshape(1, hkv * group, sq, dk)
        k = draw(grid_arrays(hkv * sk, dk)).reshape(1, hkv, sk, dk)
        v = draw(grid_arrays(hkv * sk, dv)).reshape(1, hkv, sk, dv)
        conventions = {"causal": draw(st.booleans()), "scale": draw(st.sampled_from([None, 0.3, -2.0]))}
        if draw(st.booleans()):
            conventions["kv_seqlens"] = np.array([draw(st.integers(min_value=0, max_value=sk))])
        return AttentionCase(q, k, v, conventions)
    return build()


@given(case=grid_case_strategy(), fmt=st.sampled_from(FORMATS))
def test_tier_1b_agrees_with_the_mpmath_oracle(case, fmt):
    assert disagreement(case, fmt, first="1b") is None


def decode_like(sk: int = 2048, heads: int = 8, seed: int = 0):
    """Return (q, k, v) shaped like DeepSeek-V3 MLA decode (one kv head, 576/512, BF16 values), with fewer heads and keys."""
    rng = np.random.default_rng(seed)
    q = round_to(rng.standard_normal((1, heads, 1, 576)), "bf16")
    k = round_to(rng.standard_normal((1, 1, sk, 576)), "bf16")
    return q, k, np.ascontiguousarray(k[..., :512])


def test_tier_1b_certifies_fp32_where_tier_1a_cannot():
    """At a decode-like shape tier 1a leaves FP32 outputs in most rows; tier 1b none or few. Same answers."""
    problem = attention_problem(*decode_like(), scale=192**-0.5)
    rows = certified._grouped(problem)
    assert certified._first_tier(rows, Format.FP32) == "1b"
    assert certified._first_tier(rows, Format.BF16) == "1a"
    a = certified._certified(problem, "fp32", 50, True, "1a")
    b = certified._certified(problem, "fp32", 50, True, "1b")
    assert a.refined_rows >= 8 and b.refined_rows <= 1
    assert np.array_equal(a.out, b.out) and np.array_equal(a.lse, b.lse)


def test_tier_1b_is_not_used_with_softcap_or_an_additive_mask():
    q, k, v = decode_like(sk=64)
    for conventions in ({"softcap": 30.0}, {"mask": np.zeros((1, 8, 1, 64))}):
        got = certified._certified(attention_problem(q, k, v, **conventions), "fp32", 50, True, "1b")
        assert got.first_tier == "1a"
