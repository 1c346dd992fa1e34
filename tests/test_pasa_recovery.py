"""PASA's recovery in exact rational arithmetic (proofs/pasa_recovery.py's recurrence on Fractions).

The Z3 theorem covers 3 blocks of 3 keys with symbolic everything; these tests run the same
recurrence (``pasa_exponents``) on Fractions for up to 6 blocks of 8 keys, random masks,
betas, references and maxima, and check e_t = S_t - C exactly. Then the exponents of one row
are turned into an output with mpmath and compared with the oracle, which ties the model to
the definition of attention. Mutants: the mean after masking, no re-basing, a stale reference.
"""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from attnspec.proofs.pasa_recovery import admitted_mean, exact_exponents
from attnspec.reference.oracle import attention_oracle
from attnspec.reference.strategies import find_failure

rationals = st.fractions(min_value=-50, max_value=50, max_denominator=64)


@st.composite
def rows(draw, *, free_maxima: bool = False):
    """Draw one query row: blocks of true logits, admitted flags, beta, and optional references and maxima."""
    blocks = draw(st.integers(min_value=1, max_value=6))
    n = draw(st.integers(min_value=1, max_value=8))
    scores = [[draw(rationals) for _ in range(n)] for _ in range(blocks)]
    admitted = [[draw(st.booleans()) for _ in range(n)] for _ in range(blocks)]
    if not free_maxima:  # the actual maxima need an admitted key in every block
        for ok in admitted:
            ok[draw(st.integers(min_value=0, max_value=n - 1))] = True
    beta = draw(st.sampled_from([Fraction(0), Fraction(1, 2), Fraction(15, 16), Fraction(63, 64)]) | st.fractions(
        min_value=0, max_value=Fraction(99, 100), max_denominator=1000))
    extra = {}
    if draw(st.booleans()):
        extra["references"] = [draw(rationals) for _ in range(blocks)]
    if free_maxima:
        extra["local_max"] = [draw(rationals) for _ in range(blocks)]
        extra["running_max"] = [draw(rationals) for _ in range(blocks)]
    return scores, admitted, beta, extra


def exact(row, **mutant) -> bool:
    scores, admitted, beta, extra = row
    exps, const = exact_exponents(scores, admitted, beta, **extra, **mutant)
    return all(e == scores[j][s] - const for (j, s), e in exps.items())


@given(row=rows())
def test_exponents_are_the_logits_up_to_one_constant(row):
    assert exact(row)


@given(row=rows(free_maxima=True))
def test_any_maxima_and_references_work(row):
    assert exact(row)


def test_mutant_mean_after_masking_is_caught():
    find_failure(rows(), lambda r: not exact(r, row_mean=admitted_mean))


def test_mutant_without_rebase_is_caught():
    find_failure(rows(), lambda r: not exact(r, rebase=False))


def test_mutant_stale_reference_is_caught():
    find_failure(rows(), lambda r: not exact(r, stale=True))


def model_matches_oracle(drawn, **mutant) -> bool:
    """Return True when sum_t exp(e_t) v_t / sum_t exp(e_t) of the exact exponents equals the oracle to 1e-40."""
    seed, beta, n = drawn
    rng = np.random.default_rng(seed)
    sk, d = 11, 3
    q, k, v = rng.uniform(-3, 3, (1, 1, 1, d)), rng.uniform(-3, 3, (1, 1, sk, d)), rng.uniform(-1, 1, (1, 1, sk, 2))
    mask = rng.random((1, 1, 1, sk)) < 0.7
    mask[..., 0] = True
    logits = [sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(q[0, 0, 0], k[0, 0, j])) / 2
              for j in range(sk)]  # scale 1/2: exact
    padded = logits + [Fraction(0)] * (-sk % n)  # pad columns: any value, masked
    flags = list(mask[0, 0, 0]) + [False] * (-sk % n)
    blocks = [padded[i:i + n] for i in range(0, len(padded), n)]
    admitted = [flags[i:i + n] for i in range(0, len(flags), n)]
    zeros = [Fraction(0)] * len(blocks)  # any maxima will do (proved); these allow fully masked blocks
    exps, _ = exact_exponents(blocks, admitted, beta, local_max=zeros, running_max=zeros, **mutant)
    want = attention_oracle(q, k, v, scale=0.5, mask=mask).out_mp[0, 0, 0]
    if sorted(j * n + s for j, s in exps) != list(np.flatnonzero(mask[0, 0, 0])):
        return False
    with mpmath.workdps(60):
        weights = {j * n + s: mpmath.exp(mpmath.mpf(e.numerator) / e.denominator) for (j, s), e in exps.items()}
        total = mpmath.fsum(weights.values())
        return all(abs(mpmath.fsum(w * mpmath.mpf(float(v[0, 0, t, c])) for t, w in weights.items()) / total
                       - want[c]) < mpmath.mpf(10) ** -40 for c in range(2))


oracle_draws = st.tuples(st.integers(min_value=0, max_value=2**32 - 1),
                         st.sampled_from([Fraction(15, 16), Fraction(1, 3)]), st.integers(min_value=1, max_value=5))


@settings(max_examples=10)
@given(drawn=oracle_draws)
def test_exact_model_gives_the_oracles_output(drawn):
    assert model_matches_oracle(drawn)


def test_mutant_model_is_caught_by_the_oracle():
    find_failure(oracle_draws, lambda x: not model_matches_oracle(x, row_mean=lambda values, ok: admitted_mean(
        values, ok) if any(ok) else values[0]), max_examples=50)
