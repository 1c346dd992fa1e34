"""spec.flash and spec.split_kv: the online-softmax recurrence and the LSE combine.

1. Exactly, with rationals: the spec's own FlashAttention code, run under a policy whose
   every "rounding" is exact rational arithmetic and whose exponential is 2**x on integer
   logits, equals the spec's definition for every block size. (Base 2 instead of e changes
   nothing the recurrence relies on: exp(a - b) = exp(a) / exp(b) and monotonicity.)
2. In floating point: FP32 / BF16 / FP16 FlashAttention and split-KV stay within the derived
   bounds of reference/bounds.py from the mpmath oracle.
3. Mutants (forgotten rescale of O or of l, stale max, off-by-one block boundary) fail 1.
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnspec.reference.bounds import attention_error_bound, exceeds
from attnspec.reference.oracle import attention_oracle
from attnspec.reference.strategies import AttentionCase, attention_inputs, find_failure
from attnspec.spec.attention import logits, softmax_attention
from attnspec.spec.flash import FlashState, flash_finalize, flash_from_problem, flash_step, initial_state
from attnspec.spec.formats import Format
from attnspec.spec.policy import PrecisionPolicy
from attnspec.spec.problem import attention_problem
from attnspec.spec.split_kv import split_kv_attention


def _frac(x):
    a = np.asarray(x, dtype=object)
    return np.vectorize(lambda v: v if isinstance(v, Fraction) or v in (np.inf, -np.inf) else Fraction(v),
                        otypes=[object])(a) if a.size else a


def _exp2(v):
    if v == -np.inf:
        return Fraction(0)
    if not (isinstance(v, Fraction) and v.denominator == 1):
        raise ValueError(f"the rational policy needs integer logits, got {v!r}")
    return Fraction(2) ** int(v)


class RationalPolicy(PrecisionPolicy):
    """Every rounding point is exact; exp is 2**x (integer logits only); log is only used for LSE."""

    def to_input(self, x):
        return _frac(x)

    to_accumulate = to_softmax = to_output = to_input

    def exp(self, x):
        return np.vectorize(_exp2, otypes=[object])(np.asarray(x, dtype=object))

    def log(self, x):
        return np.vectorize(lambda v: float(np.log(float(v))) if v > 0 else -np.inf, otypes=[object])(x)

    def matmul(self, a, b, fmt=None):
        return np.matmul(_frac(a), _frac(b))

    def sum(self, x, axis=-1, fmt=None):
        return np.sum(np.asarray(x, dtype=object), axis=axis, keepdims=True)


EXACT = RationalPolicy(Format.FP64, Format.FP64, Format.FP64, Format.FP64, name="rational")


@st.composite
def integer_logit_cases(draw, *, max_seq=12):
    """Small-integer Q and K with scale 1, so that every logit is an integer."""
    base = draw(attention_inputs(max_batch=1, max_heads=2, max_seq=max_seq, max_dim=3, varlen=True))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**16)))
    q = rng.integers(-3, 4, size=base.q.shape).astype(np.float64)
    k = rng.integers(-3, 4, size=base.k.shape).astype(np.float64)
    conventions = {key: v for key, v in base.conventions.items() if key != "softcap"}
    return AttentionCase(q, k, base.v, {**conventions, "scale": 1.0}), draw(st.integers(min_value=1, max_value=5))


def run_flash(problem, policy, block_k, step=flash_step, boundary_shift=0):
    """Run the block loop of spec.flash with a given step function (the spec's, or a mutant's)."""
    state = initial_state(problem)
    sk = problem.k.shape[2]
    for start in range(0, sk, block_k):
        stop = min(start + block_k, sk) - boundary_shift if start + block_k < sk else sk
        state = step(state, problem.key_slice(start, max(start, stop)), policy)
    return flash_finalize(state, policy, problem.empty_lse)


def exact_flash_equals_definition(case_and_block, step=flash_step, boundary_shift=0) -> bool:
    case, block_k = case_and_block
    problem = attention_problem(case.q, case.k, case.v, **case.conventions)
    want = softmax_attention(problem, EXACT).out
    got = run_flash(problem, EXACT, block_k, step, boundary_shift).out
    return bool(np.all(got == want))


@given(case_and_block=integer_logit_cases())
def test_flash_equals_attention_exactly_in_rationals(case_and_block):
    assert exact_flash_equals_definition(case_and_block)


def test_spec_flash_uses_the_same_loop_as_this_test():
    """Guard for the rational test: run_flash with the spec step is the spec's flash_from_problem."""
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 1, 11, 4)), rng.standard_normal((1, 1, 11, 2))
    problem = attention_problem(q, k, v, causal=True)
    policy = PrecisionPolicy.uniform("fp32")
    assert np.array_equal(run_flash(problem, policy, 4).out, flash_from_problem(problem, policy, 4).out)


# ---------------------------------------------------------------------------------------------
# Mutants of the recurrence (each a small, deliberate change of spec.flash.flash_step)
# ---------------------------------------------------------------------------------------------

def mutant_step(*, rescale_o=True, rescale_l=True, stale_max=False):
    def step(state: FlashState, block, policy):
        s = logits(block, policy)
        m_new = np.maximum(state.m, np.max(s, axis=-1, keepdims=True, initial=-np.inf))
        m_used = state.m if stale_max else m_new  # stale: exponentiate against the previous max once there is one
        m_shift = np.where(m_used == -np.inf, np.where(m_new == -np.inf, 0.0, m_new), m_used)
        p = policy.exp(policy.to_softmax(s - m_shift))
        alpha = policy.exp(policy.to_softmax(state.m - m_shift))
        l_old = policy.to_softmax(alpha * state.l) if rescale_l else state.l
        o_old = policy.to_accumulate(alpha * state.o) if rescale_o else state.o
        pv = policy.matmul(policy.to_input(p), policy.to_input(block.v_per_q_head()))
        return FlashState(o=policy.to_accumulate(o_old + pv), m=m_new, l=policy.to_softmax(l_old + policy.sum(p, axis=-1)))
    return step


@pytest.mark.parametrize("mutant", [dict(rescale_o=False), dict(rescale_l=False), dict(stale_max=True)],
                         ids=["forgotten-rescale-of-O", "forgotten-rescale-of-l", "stale-max"])
def test_mutant_recurrences_are_caught(mutant):
    find_failure(integer_logit_cases(), lambda c: not exact_flash_equals_definition(c, mutant_step(**mutant))) \
        is not None


def test_mutant_off_by_one_block_boundary_is_caught():
    find_failure(integer_logit_cases(), lambda c: not exact_flash_equals_definition(c, boundary_shift=1))


# ---------------------------------------------------------------------------------------------
# Floating point against the oracle
# ---------------------------------------------------------------------------------------------

POLICIES = {"fp32": PrecisionPolicy.uniform("fp32"), "bf16-fp32acc": PrecisionPolicy("bf16", "fp32", "fp32", "bf16"),
            "fp16": PrecisionPolicy.uniform("fp16"), "fp64": PrecisionPolicy.uniform("fp64")}
float_cases = attention_inputs(max_batch=1, max_heads=2, max_seq=12, max_dim=4)


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
@given(case=float_cases, block_k=st.integers(min_value=1, max_value=6), splits=st.integers(min_value=1, max_value=4))
def test_flash_and_split_kv_within_derived_bound_of_the_oracle(policy, case, block_k, splits):
    exact = attention_oracle(case.q, case.k, case.v, **case.conventions)
    problem = attention_problem(case.q, case.k, case.v, **case.conventions)
    flash = flash_from_problem(problem, policy, block_k)
    out_b, lse_b = attention_error_bound(problem, policy, algorithm="flash", block_k=block_k)
    assert not exceeds(flash.out, exact.out, out_b).any(), case.describe()
    assert not exceeds(flash.lse, exact.lse, lse_b).any(), case.describe()
    split = split_kv_attention(case.q, case.k, case.v, num_splits=splits, block_k=block_k, policy=policy,
                               **case.conventions)
    out_b, lse_b = attention_error_bound(problem, policy, algorithm="split", block_k=block_k, num_splits=splits)
    assert not exceeds(split.out, exact.out, out_b).any() and not exceeds(split.lse, exact.lse, lse_b).any()


def test_split_kv_with_fully_masked_splits_has_no_nan():
    """MTP decode with s_q > 1 and causal masking: some rows see no key of the last split (aiter#4711)."""
    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal((1, 2, 4, 8)), rng.standard_normal((1, 1, 9, 8)), rng.standard_normal((1, 1, 9, 3))
    mask = np.ones((4, 9), dtype=bool)
    mask[:2, 6:] = False  # rows 0-1 see nothing of the last split
    mask[0] = False  # row 0 sees nothing at all
    r = split_kv_attention(q, k, v, num_splits=3, block_k=3, mask=mask)
    exact = attention_oracle(q, k, v, mask=mask)
    assert np.all(np.isfinite(r.out)) and np.all(r.out[0, :, 0] == 0) and np.all(r.lse[0, :, 0] == -np.inf)
    bound, _ = attention_error_bound(attention_problem(q, k, v, mask=mask), POLICIES["fp32"], algorithm="split",
                                     block_k=3, num_splits=3)
    assert not exceeds(r.out, exact.out, bound).any()


def test_empty_and_single_block_edges():
    """Lengths 1, b-1, b and b+1 around the block size give the definition's result."""
    rng = np.random.default_rng(7)
    for sk in (0, 1, 3, 4, 5):
        q, k, v = rng.standard_normal((1, 1, 2, 3)), rng.standard_normal((1, 1, sk, 3)), rng.standard_normal((1, 1, sk, 2))
        exact = attention_oracle(q, k, v)
        problem = attention_problem(q, k, v)
        got = flash_from_problem(problem, POLICIES["fp32"], block_k=4)
        bound, _ = attention_error_bound(problem, POLICIES["fp32"], block_k=4)
        assert not exceeds(got.out, exact.out, bound).any()
        assert (sk == 0) == bool(np.all(got.lse == -np.inf))


def test_bound_is_infinite_when_the_error_budget_is_exhausted():
    """The lemma needs eps < 1; past that the a-priori bound must say 'anything' (+inf), never a negative number."""
    big = np.full((1, 1, 1, 64), 200.0)
    out_b, lse_b = attention_error_bound(attention_problem(big, big, np.ones((1, 1, 1, 2))), POLICIES["fp16"])
    assert np.all(out_b == np.inf) and np.all(lse_b == np.inf)
