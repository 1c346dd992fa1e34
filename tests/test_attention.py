"""spec.attention and its conventions: GQA, causal alignment, masks, windows, softcap, LSE,
fully-masked rows, variable lengths, paged caches, and invariances.

Reference values come from the mpmath oracle (reference/oracle.py) with the derived bounds of
reference/bounds.py, or from independent restatements of a convention (a hand-written mask,
a per-head loop); never from the code under test. Bit-exact comparisons use the FP32 policy,
whose "exact" accumulation rule does not depend on array shapes (float64 BLAS does).
"""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnspec.reference.bounds import attention_error_bound, exceeds
from attnspec.reference.oracle import attention_oracle
from attnspec.reference.strategies import attention_inputs, find_failure, format_arrays
from attnspec.spec.attention import POLICY_FP64, attention, logits, softmax_attention
from attnspec.spec.flash import POLICY_FP32
from attnspec.spec.masks import allowed_keys
from attnspec.spec.paged import gather_paged
from attnspec.spec.problem import attention_problem

small_cases = attention_inputs(max_batch=2, max_heads=4, max_seq=10, max_dim=6)


def within_oracle_bound(case, policy=POLICY_FP64, algorithm="naive") -> bool:
    """Return whether spec attention is within its derived bound of the oracle for ``case``."""
    exact = attention_oracle(case.q, case.k, case.v, **case.conventions)
    problem = attention_problem(case.q, case.k, case.v, **case.conventions)
    got = softmax_attention(problem, policy)
    out_bound, lse_bound = attention_error_bound(problem, policy, algorithm=algorithm)
    return not exceeds(got.out, exact.out, out_bound).any() and not exceeds(got.lse, exact.lse, lse_bound).any()


@given(case=small_cases)
def test_attention_matches_oracle_within_derived_bound(case):
    assert within_oracle_bound(case), case.describe()


# ---------------------------------------------------------------------------------------------
# Causal alignment: FlashAttention README §2.1 gives the bottom-right rows for (Sq, Sk) = (2, 5)
# ---------------------------------------------------------------------------------------------

def test_causal_alignment_masks_match_the_anchors():
    br = allowed_keys(2, 5, q_len=2, kv_len=5, causal=True, alignment="bottom_right", window=None)
    assert br.astype(int).tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]  # FA >= 2.1 README
    tl = allowed_keys(2, 5, q_len=2, kv_len=5, causal=True, alignment="top_left", window=None)
    assert tl.astype(int).tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]  # PyTorch tril(ones(L, S))
    short = allowed_keys(5, 2, q_len=5, kv_len=2, causal=True, alignment="bottom_right", window=None)
    assert short.astype(int).tolist() == [[0, 0], [0, 0], [0, 0], [1, 0], [1, 1]]  # "all zero rows output zero"


def test_causal_alignment_reaches_the_output():
    """With Sq < Sk, the last key is visible to query 0 under neither alignment, the first is under both."""
    q = np.ones((1, 1, 2, 1))
    k = np.ones((1, 1, 5, 1))
    v = np.arange(5.0).reshape(1, 1, 5, 1)
    br = attention(q, k, v, causal=True).out[0, 0, :, 0]
    tl = attention(q, k, v, causal=True, causal_alignment="top_left").out[0, 0, :, 0]
    assert br.tolist() == pytest.approx([1.5, 2.0], abs=1e-15)  # mean of 0..3 and of 0..4
    assert tl.tolist() == pytest.approx([0.0, 0.5], abs=1e-15)  # mean of 0 and of 0..1


def test_default_alignment_is_bottom_right():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 2, 7, 4)), rng.standard_normal((1, 2, 7, 2))
    assert np.array_equal(attention(q, k, v, causal=True).out,
                          attention(q, k, v, causal=True, causal_alignment="bottom_right").out)


def test_window_follows_flash_attention_formula():
    """Query i sees keys in [i + Sk - Sq - left, i + Sk - Sq + right] (flash_attn_func docstring)."""
    sq, sk, left, right = 3, 9, 2, 1
    got = allowed_keys(sq, sk, q_len=sq, kv_len=sk, causal=False, alignment="bottom_right", window=(left, right))
    want = [[int(i + sk - sq - left <= j <= i + sk - sq + right) for j in range(sk)] for i in range(sq)]
    assert got.astype(int).tolist() == want


# ---------------------------------------------------------------------------------------------
# GQA mapping: q head h uses kv head h // (Hq / Hkv)
# ---------------------------------------------------------------------------------------------

def per_head_reference(case, kv_head_of):
    """Attention head by head with MHA slices, using the given mapping (an independent restatement)."""
    hq, hkv = case.q.shape[1], case.k.shape[1]
    outs = []
    for h in range(hq):
        g = kv_head_of(h, hq, hkv)
        outs.append(attention(case.q[:, h:h + 1], case.k[:, g:g + 1], case.v[:, g:g + 1], policy=POLICY_FP32,
                              **case.conventions).out)
    return np.concatenate(outs, axis=1)


def spec_mapping(h, hq, hkv):
    return h // (hq // hkv)


def interleaved_mapping(h, hq, hkv):
    """Mutant: h % Hkv (the 'interleaved' layout some kernels use)."""
    return h % hkv


gqa_cases = attention_inputs(max_batch=1, max_heads=6, max_seq=6, max_dim=4, masks=False, varlen=False)


@given(case=gqa_cases)
def test_gqa_mapping(case):
    assert np.array_equal(attention(case.q, case.k, case.v, policy=POLICY_FP32).out,
                          per_head_reference(case, spec_mapping))


def test_mutant_gqa_mapping_is_caught():
    def wrong(case):
        return not np.array_equal(attention(case.q, case.k, case.v, policy=POLICY_FP32).out,
                                  per_head_reference(case, interleaved_mapping))
    find_failure(gqa_cases, wrong)


# ---------------------------------------------------------------------------------------------
# LSE, fully masked rows
# ---------------------------------------------------------------------------------------------

def test_fully_masked_rows_are_zero_with_lse_minus_inf():
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((1, 1, 5, 3)), rng.standard_normal((1, 1, 2, 3)), rng.standard_normal((1, 1, 2, 4))
    r = attention(q, k, v, causal=True)  # bottom-right, Sq > Sk: the first 3 rows see nothing
    assert np.array_equal(r.out[0, 0, :3], np.zeros((3, 4))) and np.all(r.lse[0, 0, :3] == -np.inf)
    assert np.all(np.isfinite(r.out)) and np.all(np.isfinite(r.lse[0, 0, 3:]))
    mask = np.zeros((1, 1, 5, 2), dtype=bool)
    assert np.all(attention(q, k, v, mask=mask, empty_lse=np.inf).lse == np.inf)  # FA2/FlashMLA style
    assert np.all(attention(q, k, v, mask=np.full((5, 2), -np.inf)).out == 0)  # additive -inf everywhere
    empty = attention(q, k[:, :, :0], v[:, :, :0])  # Sk = 0
    assert empty.out.shape == (1, 1, 5, 4) and np.all(empty.out == 0) and np.all(empty.lse == -np.inf)


def test_lse_is_log_sum_exp_of_scaled_capped_masked_logits():
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((1, 1, 2, 3)), rng.standard_normal((1, 1, 4, 3)), rng.standard_normal((1, 1, 4, 1))
    bias = np.array([[0.0, -1.0, -np.inf, 2.0]])
    r = attention(q, k, v, mask=bias, softcap=1.5, scale=0.7)
    exact = attention_oracle(q, k, v, mask=bias, softcap=1.5, scale=0.7)
    assert np.max(np.abs(r.lse - exact.lse)) <= 1e-14  # float64 evaluation: a few ulps of |LSE| <= 3


def test_softcap_is_applied_before_the_mask():
    """Softcap after the mask would turn -inf into -softcap and leak weight (onnx/onnx#7865)."""
    q = np.ones((1, 1, 1, 1))
    k = np.array([[[[1.0], [1.0]]]])
    v = np.array([[[[0.0], [1.0]]]])
    r = attention(q, k, v, mask=np.array([[0.0, -np.inf]]), softcap=2.0)
    assert r.out[0, 0, 0, 0] == 0.0


# ---------------------------------------------------------------------------------------------
# Variable lengths and paged caches: unused slots never influence the output
# ---------------------------------------------------------------------------------------------

@st.composite
def paged_cases(draw):
    b = draw(st.integers(min_value=1, max_value=3))
    page = draw(st.sampled_from([1, 2, 4]))
    max_blocks = draw(st.integers(min_value=1, max_value=4))
    heads, width, sq = 1, 3, draw(st.integers(min_value=1, max_value=3))
    lengths = np.array(draw(st.lists(st.integers(min_value=0, max_value=max_blocks * page), min_size=b, max_size=b)))
    num_blocks = b * max_blocks + 2
    cache = draw(format_arrays((num_blocks, page, heads, width)))
    perm = np.random.default_rng(draw(st.integers(min_value=0, max_value=99))).permutation(num_blocks)
    table = perm[: b * max_blocks].reshape(b, max_blocks)
    used = set()
    for i in range(b):
        for p in range(-(-int(lengths[i]) // page)):
            used.add((int(table[i, p]), None))
            for s in range(page):
                if p * page + s < lengths[i]:
                    used.add((int(table[i, p]), s))
    poisoned = cache.copy()
    for blk in range(num_blocks):
        for s in range(page):
            if (blk, s) not in used:
                poisoned[blk, s] = np.nan  # FlashMLA's tests fill unused slots with NaN
    for i in range(b):  # table entries past the used pages are garbage, as in FlashMLA (2147480000)
        table[i, -(-int(lengths[i]) // page):] = 2147480000
    q = draw(format_arrays((b, heads, sq, width)))
    return q, poisoned, table, lengths, draw(st.booleans())


@given(case=paged_cases())
def test_paged_with_nan_poison_equals_dense_per_sequence(case):
    q, cache, table, lengths, causal = case
    dense, lens = gather_paged(cache, table, lengths)
    got = attention(q, dense, dense, kv_seqlens=lens, causal=causal, policy=POLICY_FP32)
    assert np.all(np.isfinite(got.out))
    for b in range(q.shape[0]):
        rows = [cache[table[b, t // cache.shape[1]], t % cache.shape[1]] for t in range(lengths[b])]
        k_b = np.stack(rows, axis=1)[None] if rows else np.zeros((1, 1, 0, 3))  # (1, H, len, D)
        want = attention(q[b:b + 1], k_b, k_b, causal=causal, policy=POLICY_FP32)
        assert np.array_equal(got.out[b:b + 1], want.out) and np.array_equal(got.lse[b:b + 1], want.lse)


def test_padded_queries_are_ignored_even_when_nan():
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((2, 1, 4, 3)), rng.standard_normal((2, 1, 6, 3)), rng.standard_normal((2, 1, 6, 2))
    q[1, :, 2:] = np.nan
    k[0, :, 5:] = np.nan
    r = attention(q, k, v, q_seqlens=np.array([4, 2]), kv_seqlens=np.array([5, 6]), causal=True, policy=POLICY_FP32)
    want0 = attention(q[:1], k[:1, :, :5], v[:1, :, :5], causal=True, policy=POLICY_FP32)
    # bottom-right alignment uses each sequence's own lengths: offset 5 - 4 for batch 0
    assert np.array_equal(r.out[:1], want0.out)
    want1 = attention(q[1:, :, :2], k[1:], v[1:], causal=True, policy=POLICY_FP32)
    assert np.array_equal(r.out[1:, :, :2], want1.out) and np.all(r.out[1, :, 2:] == 0)


# ---------------------------------------------------------------------------------------------
# Invariances
# ---------------------------------------------------------------------------------------------

@given(case=attention_inputs(max_seq=8, max_dim=4, masks=False, varlen=False),
       seed=st.integers(min_value=0, max_value=2**16))
def test_invariant_under_key_permutation(case, seed):
    perm = np.random.default_rng(seed).permutation(case.k.shape[2])
    a = attention(case.q, case.k, case.v)
    b = attention(case.q, case.k[:, :, perm], case.v[:, :, perm])
    exact = attention_oracle(case.q, case.k, case.v)
    bound, lse_bound = attention_error_bound(attention_problem(case.q, case.k, case.v), POLICY_FP64, algorithm="naive")
    # Both orders are within the bound of the same exact value, so within twice of each other.
    assert not exceeds(a.out, b.out, 2 * bound).any() and not exceeds(b.out, exact.out, bound).any()
    assert not exceeds(a.lse, b.lse, 2 * lse_bound).any()


@given(case=attention_inputs(max_seq=8, max_dim=4, masks=False, varlen=False),
       shift=st.sampled_from([-3.0, 0.5, 10.0, 1e3]))
def test_invariant_under_per_row_logit_shift(case, shift):
    """Adding c to every logit of a row leaves O unchanged and adds c to LSE."""
    b, hq, sq, _ = case.q.shape
    sk = case.k.shape[2]
    bias = np.broadcast_to(np.full((sq, 1), shift), (sq, sk))
    plain, shifted = attention(case.q, case.k, case.v), attention(case.q, case.k, case.v, mask=bias)
    bound, lse_bound = attention_error_bound(attention_problem(case.q, case.k, case.v, mask=bias), POLICY_FP64,
                                             algorithm="naive")
    assert not exceeds(shifted.out, plain.out, 2 * bound).any()
    assert not exceeds(shifted.lse, plain.lse + shift, 2 * lse_bound + abs(shift) * 2.0 ** -52).any()


# ---------------------------------------------------------------------------------------------
# Mutants: each property above must notice a deliberately broken variant
# ---------------------------------------------------------------------------------------------

def _scale_applied_twice(case):
    problem = attention_problem(case.q, case.k, case.v, **case.conventions)
    return softmax_attention(replace(problem, scale=problem.scale ** 2, scale_is_default=False), POLICY_FP64)


def _drops_last_key(case):
    return attention(case.q, case.k[:, :, :-1], case.v[:, :, :-1], **case.conventions)


def _unshifted_softmax(case):
    """Mutant: exp(S) without subtracting the row max (overflows for large logits)."""
    problem = attention_problem(case.q, case.k, case.v, **case.conventions)
    s = logits(problem, POLICY_FP64)
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.exp(s)
        out = np.matmul(p / p.sum(-1, keepdims=True), problem.v_per_q_head())
    return out


def test_mutant_misplaced_scale_is_caught_by_the_oracle_bound():
    def wrong(case):
        exact = attention_oracle(case.q, case.k, case.v, **case.conventions)
        problem = attention_problem(case.q, case.k, case.v, **case.conventions)
        bound, _ = attention_error_bound(problem, POLICY_FP64, algorithm="naive")
        return exceeds(_scale_applied_twice(case).out, exact.out, bound).any()
    find_failure(attention_inputs(max_seq=6, max_dim=4, masks=False, varlen=False), wrong)


def test_mutant_dropped_key_is_caught_by_permutation_invariance():
    def wrong(case):
        perm = np.random.default_rng(0).permutation(case.k.shape[2])
        permuted = attention(case.q, case.k[:, :, perm], case.v[:, :, perm])
        return not np.allclose(_drops_last_key(case).out, permuted.out, rtol=0, atol=1e-9)
    find_failure(attention_inputs(min_seq=2, max_seq=6, max_dim=3, masks=False, varlen=False), wrong)


def test_mutant_unshifted_softmax_is_caught_by_the_shift_invariance():
    def wrong(case):
        b, hq, sq, _ = case.q.shape
        bias = np.full((sq, case.k.shape[2]), 1e3)
        shifted = _unshifted_softmax(replace(case, conventions={"mask": bias}))
        return not np.all(np.abs(shifted - attention(case.q, case.k, case.v).out) <= 1e-9)
    find_failure(attention_inputs(min_seq=1, max_seq=4, max_dim=3, masks=False, varlen=False), wrong)


def test_mutant_ignoring_cache_lengths_is_caught():
    def wrong(case):
        q, cache, table, lengths, causal = case
        dense, _ = gather_paged(cache, table, lengths)
        ignored = attention(q, dense, dense, causal=causal, policy=POLICY_FP32)  # the zeroed slots now count
        return not np.array_equal(ignored.out, attention(q, dense, dense, kv_seqlens=lengths, causal=causal,
                                                          policy=POLICY_FP32).out)
    find_failure(paged_cases(), wrong)
