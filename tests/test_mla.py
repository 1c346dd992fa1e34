"""Tests of spec/mla.py and spec/rope.py: the scale, RoPE, naive == absorbed, the kernel view, paging, bad input."""

from __future__ import annotations

import math
import re

import mpmath
import numpy as np
import pytest
from hypothesis import find, given
from hypothesis import strategies as st

import attnspec.spec.mla as mla
from attnspec.reference.bounds import exceeds
from attnspec.reference.mla_checks import TINY, naive_absorbed_bound, paged_from_dense, tiny_layer
from attnspec.spec.attention import POLICY_FP64, attention, logits
from attnspec.spec.errors import AttnSpecError, ConventionError, DomainError, ShapeError
from attnspec.spec.formats import Format, round_to
from attnspec.spec.mla import DEEPSEEK_V3, MLAConfig, MLAWeights, absorbed_problem, kernel_inputs, mla_attention, \
    mla_decode, mla_forward, mla_latents, mla_queries, naive_problem
from attnspec.spec.policy import PrecisionPolicy
from attnspec.spec.rope import Yarn, apply_rope, correction_range, rope_angles, rope_frequencies

U = 2.0 ** -53


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


# ----------------------------------------------------------------------------------------------
# Config and scale
# ----------------------------------------------------------------------------------------------

def test_deepseek_v3_softmax_scale():
    """192^-1/2 * (0.1 ln 40 + 1)^2 = 0.135234 (anchors §3.4); binary64 evaluation within 8 roundings."""
    with mpmath.workdps(40):
        mscale = mpmath.mpf("0.1") * mpmath.log(40) + 1
        exact = mscale ** 2 / mpmath.sqrt(192)
    assert abs(DEEPSEEK_V3.softmax_scale - float(exact)) <= 8 * U * float(exact)
    assert round(DEEPSEEK_V3.softmax_scale, 6) == 0.135234
    assert round(DEEPSEEK_V3.attention_mscale, 6) == 1.368888
    assert DEEPSEEK_V3.latent_dim == 576 and DEEPSEEK_V3.qk_head_dim == 192


def test_scale_without_yarn_is_plain():
    config = MLAConfig(max_seq_len=4096)  # not longer than original_seq_len: YaRN is off
    assert config.yarn is None and config.softmax_scale == 192 ** -0.5
    assert np.array_equal(config.rope_frequencies(), rope_frequencies(64, 1e4))


# ----------------------------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------------------------

def test_yarn_correction_range_of_deepseek_v3():
    """d(r) = 64 ln(4096 / (2 pi r)) / (2 ln 1e4): d(32) = 10.47 -> floor 10, d(1) = 22.52 -> ceil 23."""
    assert correction_range(64, 1e4, DEEPSEEK_V3.yarn) == (10, 23)


def test_yarn_frequencies_keep_fast_and_interpolate_slow_pairs():
    base, yarn = rope_frequencies(64, 1e4), rope_frequencies(64, 1e4, DEEPSEEK_V3.yarn)
    assert np.array_equal(yarn[:11], base[:11])  # ramp 0: high-frequency pairs untouched
    assert np.allclose(yarn[23:], base[23:] / 40, rtol=4 * U, atol=0)  # ramp 1: f / factor (two roundings)
    ratio = yarn[11:23] / base[11:23]
    assert np.all(np.diff(ratio) < 0) and np.all((ratio > 1 / 40) & (ratio < 1))
    with mpmath.workdps(30):  # pair 16: ramp = (16 - 10) / 13, f = f0 (1 - ramp + ramp / 40)
        ramp = mpmath.mpf(6) / 13
        expected = mpmath.mpf(10) ** -2 * (1 - ramp + ramp / 40)  # f0 = 1e4^(-32/64)
    assert abs(yarn[16] - float(expected)) <= 16 * U * float(expected)


def test_rope_rotates_interleaved_pairs():
    """e_0 at position t becomes (cos t f_0, sin t f_0, 0, ...): pairs are adjacent (GPT-J), not halves (NeoX)."""
    freqs = rope_frequencies(8, 1e4)
    x = np.zeros(8)
    x[0] = 1.0
    y = apply_rope(x, rope_angles(np.array(3), freqs))
    assert np.array_equal(y, [math.cos(3.0), math.sin(3.0), 0, 0, 0, 0, 0, 0])


def neox_rope(x, angles):
    """Mutant: rotate pairs (x_j, x_{j + dim/2}) (the NeoX / Llama layout) instead of adjacent pairs."""
    half = x.shape[-1] // 2
    order = np.stack([np.arange(half), np.arange(half) + half], axis=-1).reshape(-1)  # interleave the halves
    return apply_rope(x[..., order], angles)[..., np.argsort(order)]


def rotated_dot_holds(rope, q, k, m, n, freqs) -> bool:
    """Return whether rope(q, m) . rope(k, n) matches sum_j Re(q_j conj(k_j) e^{i (m - n) f_j}) within the bound.

    The closed form depends on m - n only; it is evaluated with mpmath. Bound: an angle
    t f is rounded (u t f), cos/sin err by <= 2u, and each rotated component costs 3 more
    roundings, so component errors are <= |pair|_1 (eps_t + 3u) with eps_t = u t f_max + 2u;
    the dot adds gamma_D sum |q||k|; 1% covers second-order terms.
    """
    got = float(np.dot(rope(q, rope_angles(np.array(m), freqs)), rope(k, rope_angles(np.array(n), freqs))))
    with mpmath.workdps(40):
        exact = sum(mpmath.re(mpmath.mpc(q[2 * j], q[2 * j + 1]) * mpmath.mpc(k[2 * j], -k[2 * j + 1])
                              * mpmath.expjpi((m - n) * mpmath.mpf(float(f)) / mpmath.pi)) for j, f in enumerate(freqs))
    pairs = np.abs(q).reshape(-1, 2).sum(1) * np.abs(k).reshape(-1, 2).sum(1)
    eps = lambda t: U * t * float(np.max(freqs)) + 2 * U  # noqa: E731
    bound = float(np.sum(pairs)) * (2 * (eps(m) + 3 * U) + 2 * (eps(n) + 3 * U) + gamma(len(q))) * 1.01
    return abs(got - float(exact)) <= bound


rope_cases = st.tuples(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=0, max_value=3000),
                       st.integers(min_value=0, max_value=3000), st.booleans())


def _rope_case(seed, m, n, with_yarn):
    rng = np.random.default_rng(seed)
    q, k = rng.uniform(-2, 2, size=(2, 8))
    freqs = rope_frequencies(8, 1e4, Yarn(8.0, 64, 32, 1) if with_yarn else None)
    return q, k, m, n, freqs


@given(rope_cases)
def test_rope_relative_position(case):
    assert rotated_dot_holds(apply_rope, *_rope_case(*case))


def test_rope_relative_position_catches_neox_layout():
    find(rope_cases, lambda case: not rotated_dot_holds(neox_rope, *_rope_case(*case)))


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=0, max_value=16383))
def test_rope_preserves_each_pair_norm(seed, t):
    x = np.random.default_rng(seed).uniform(-3, 3, size=64)
    freqs = DEEPSEEK_V3.rope_frequencies()
    y = apply_rope(x, rope_angles(np.array(t), freqs))
    before, after = np.hypot(x[0::2], x[1::2]), np.hypot(y[0::2], y[1::2])
    eps = U * t + 2 * U  # as in rotated_dot_holds, f_max = 1
    bound = np.sqrt(2) * np.abs(x).reshape(-1, 2).sum(1) * (eps + 3 * U) * 1.01 + 2 * U * before
    assert np.all(np.abs(after - before) <= bound)


# ----------------------------------------------------------------------------------------------
# Naive == absorbed
# ----------------------------------------------------------------------------------------------

@st.composite
def mla_cases(draw):
    """A seeded tiny layer, queries = the last s_q tokens, and attention conventions."""
    batch, tokens = draw(st.integers(min_value=1, max_value=2)), draw(st.integers(min_value=1, max_value=6))
    s_q = draw(st.integers(min_value=1, max_value=tokens))
    weights, q_nope, q_pe, c, k_pe = tiny_layer(draw(st.integers(min_value=0, max_value=2**32 - 1)), batch, tokens)
    conventions = {"causal": draw(st.booleans()),
                   "causal_alignment": draw(st.sampled_from(["bottom_right", "top_left"]))}
    if draw(st.booleans()):
        conventions["kv_seqlens"] = np.array(draw(st.lists(st.integers(min_value=0, max_value=tokens),
                                                           min_size=batch, max_size=batch)))
    return (q_nope[:, -s_q:], q_pe[:, -s_q:], c, k_pe, weights), conventions


def forms_agree(case) -> bool:
    """Return whether naive and absorbed MLA agree within reference.mla_checks.naive_absorbed_bound."""
    args, conventions = case
    naive = mla_attention(*args, TINY, form="naive", **conventions)
    absorbed = mla_attention(*args, TINY, form="absorbed", **conventions)
    out_bound, lse_bound = naive_absorbed_bound(*args, TINY, **conventions)
    return not (np.any(exceeds(naive.out, absorbed.out, out_bound)) or np.any(exceeds(naive.lse, absorbed.lse, lse_bound)))


@given(mla_cases())
def test_naive_equals_absorbed(case):
    assert forms_agree(case)


def _swapped_cache_layout(real):
    """Mutant: the cache rows hold [k_pe ; c] while q stays [q~ ; q_pe] (a layout mismatch)."""
    def kernel_inputs_mutant(*args, **kwargs):
        q, cache = real(*args, **kwargs)
        rope = TINY.qk_rope_head_dim
        return q, np.concatenate([cache[..., -rope:], cache[..., :-rope]], axis=-1)
    return kernel_inputs_mutant


def _next_head_query(real):
    """Mutant: head h is given the absorbed query of head h + 1."""
    def kernel_inputs_mutant(*args, **kwargs):
        q, cache = real(*args, **kwargs)
        return np.roll(q, -1, axis=2), cache
    return kernel_inputs_mutant


@pytest.mark.parametrize("mutant", [_swapped_cache_layout, _next_head_query])
def test_naive_equals_absorbed_catches_mutants(monkeypatch, mutant):
    monkeypatch.setattr(mla, "kernel_inputs", mutant(mla.kernel_inputs))
    find(mla_cases(), lambda case: not forms_agree(case))


def integer_case(seed: int):
    """Return small-integer projections and weights: every dot product is exact in binary64."""
    rng = np.random.default_rng(seed)
    ints = lambda *shape: rng.integers(-3, 4, size=shape).astype(np.float64)  # noqa: E731
    shapes = mla.weight_shapes(TINY)
    weights = MLAWeights(**{name: None if shape is None else ints(*shape) for name, shape in shapes.items()})
    h, r, rope = TINY.n_heads, TINY.kv_lora_rank, TINY.qk_rope_head_dim
    return ints(2, 3, h, TINY.qk_nope_head_dim), ints(2, 3, h, rope), ints(2, 5, r), ints(2, 5, rope), weights


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_scores_and_lse_are_identical_with_exact_arithmetic(seed):
    """With integers every dot is exact, so both forms' logits, hence P and LSE, are bit-identical."""
    args = integer_case(seed)
    naive = naive_problem(*args, TINY, causal=True)
    absorbed = absorbed_problem(*args, TINY, causal=True)
    assert np.array_equal(logits(naive, POLICY_FP64), logits(absorbed, POLICY_FP64))
    assert np.array_equal(mla_attention(*args, TINY, form="naive", causal=True).lse,
                          mla_attention(*args, TINY, form="absorbed", causal=True).lse)


def test_exact_scores_catch_next_head_mutant(monkeypatch):
    monkeypatch.setattr(mla, "kernel_inputs", _next_head_query(mla.kernel_inputs))
    args = integer_case(0)
    assert not np.array_equal(logits(naive_problem(*args, TINY), POLICY_FP64),
                              logits(absorbed_problem(*args, TINY), POLICY_FP64))


def test_forward_naive_equals_absorbed():
    """y = W_o o: |y_n - y_a| <= |W_o| |o_n - o_a| + gamma_{H v} |W_o| (|o_n| + |o_a|) (both GEMMs round)."""
    rng = np.random.default_rng(11)
    weights = MLAWeights.random(TINY, 11)
    x = rng.standard_normal((2, 5, TINY.hidden))
    y_n, y_a = mla_forward(x, weights, TINY, form="naive"), mla_forward(x, weights, TINY, form="absorbed")
    args = (*mla_queries(x, weights, TINY), *mla_latents(x, weights, TINY), weights)
    out_bound, _ = naive_absorbed_bound(*args, TINY, causal=True)
    o_n, o_a = (mla_attention(*args, TINY, form=f, causal=True).out for f in ("naive", "absorbed"))
    flat = lambda a: np.swapaxes(a, 1, 2).reshape(2, 5, -1)  # noqa: E731  (B, S, H * v)
    wo = np.abs(weights.wo)
    bound = flat(out_bound) @ wo.T + gamma(TINY.n_heads * TINY.v_head_dim) * (np.abs(flat(o_n)) + np.abs(flat(o_a))) @ wo.T
    assert np.all(np.abs(y_n - y_a) <= bound)


def test_low_precision_policy_runs_and_rounds():
    """Under a BF16/FP32 policy both forms return BF16 values (the same model, different rounding)."""
    policy = PrecisionPolicy("bf16", "fp32", "fp32", "bf16")
    weights = MLAWeights.random(TINY, 3, fmt=Format.BF16)
    x = np.random.default_rng(3).standard_normal((1, 4, TINY.hidden))
    for form in ("naive", "absorbed"):
        y = mla_forward(x, weights, TINY, form=form, policy=policy)
        assert np.array_equal(y, round_to(y, Format.BF16)) and np.all(np.isfinite(y))


# ----------------------------------------------------------------------------------------------
# The kernel view
# ----------------------------------------------------------------------------------------------

def test_kernel_view_is_attention_with_v_the_first_512_channels():
    rng = np.random.default_rng(5)
    q = rng.uniform(-1, 1, size=(1, 2, 3, 576))  # (B, s_q, h_q, 576)
    cache = rng.uniform(-1, 1, size=(1, 5, 1, 576))  # (B, S, h_kv, 576)
    got = mla_decode(q, cache, cache_seqlens=np.array([4]), causal=True)
    k = np.swapaxes(cache, 1, 2)  # (B, h_kv, S, 576)
    want = attention(np.swapaxes(q, 1, 2), k, k[..., :512], scale=DEEPSEEK_V3.softmax_scale, causal=True,
                     kv_seqlens=np.array([4]))
    assert np.array_equal(got.out, np.swapaxes(want.out, 1, 2)) and np.array_equal(got.lse, want.lse)
    wrong_v = attention(np.swapaxes(q, 1, 2), k, k[..., -512:], scale=DEEPSEEK_V3.softmax_scale, causal=True,
                        kv_seqlens=np.array([4]))
    assert not np.array_equal(got.out, np.swapaxes(wrong_v.out, 1, 2))  # the comparison sees a wrong V
    flashmla_default = mla_decode(q, cache, scale=576 ** -0.5)
    assert np.array_equal(flashmla_default.lse, attention(np.swapaxes(q, 1, 2), k, k[..., :512]).lse)


def test_kernel_view_times_w_uv_is_absorbed_mla():
    weights, q_nope, q_pe, c, k_pe = tiny_layer(seed=4, batch=2, tokens=5)
    q, cache = kernel_inputs(q_nope[:, -2:], q_pe[:, -2:], c, k_pe, weights, TINY)
    lengths = np.array([5, 3])
    latent = mla_decode(q, cache, cache_seqlens=lengths, causal=True, config=TINY)
    out = mla.gemm(np.swapaxes(latent.out, 1, 2), np.swapaxes(weights.w_uv(TINY), 1, 2), POLICY_FP64)
    want = mla_attention(q_nope[:, -2:], q_pe[:, -2:], c, k_pe, weights, TINY, causal=True, kv_seqlens=lengths)
    assert np.array_equal(out, want.out) and np.array_equal(latent.lse, want.lse)


def test_mtp_causal_mask_is_bottom_right_per_sequence():
    """s_q = 3 against 2 cached tokens: query 0 has no key, query 1 sees key 0, query 2 sees keys 0-1."""
    rng = np.random.default_rng(8)
    q = rng.uniform(-1, 1, size=(1, 3, 2, TINY.latent_dim))
    cache = rng.uniform(-1, 1, size=(1, 4, 1, TINY.latent_dim))
    got = mla_decode(q, cache, cache_seqlens=np.array([2]), causal=True, config=TINY)
    assert np.all(got.out[0, 0] == 0) and np.all(got.lse[0, :, 0] == -np.inf)
    assert np.array_equal(got.out[0, 1], np.broadcast_to(cache[0, 0, 0, :TINY.kv_lora_rank], (2, TINY.kv_lora_rank)))
    logit, reach = TINY.softmax_scale * q[0, 1] @ cache[0, 0, 0], TINY.softmax_scale * np.abs(q[0, 1]) @ np.abs(cache[0, 0, 0])
    assert np.all(np.abs(got.lse[0, :, 1] - logit) <= 2 * gamma(TINY.latent_dim + 1) * reach)  # one key: LSE = its logit
    assert np.all(mla_decode(q, cache, cache_seqlens=np.array([2]), causal=True, config=TINY,
                             empty_lse=np.inf).lse[0, :, 0] == np.inf)  # FlashMLA's convention, on request


@st.composite
def paged_cases(draw):
    """A paged latent cache (NaN-poisoned, permuted table, lengths including 0) and its dense twin."""
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    batch, page = draw(st.integers(min_value=1, max_value=3)), draw(st.integers(min_value=1, max_value=4))
    h_kv, group, s_q = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(min_value=0, max_value=9), min_size=batch, max_size=batch))
    seq = max(1, max(lengths))
    case = paged_from_dense(rng.uniform(-1, 1, size=(batch, h_kv, seq, TINY.latent_dim)), lengths, page, rng)
    q = rng.uniform(-1, 1, size=(batch, s_q, h_kv * group, TINY.latent_dim))
    options = {"causal": draw(st.booleans()), "algorithm": draw(st.sampled_from(["attention", "flash"])),
               "block_k": draw(st.integers(min_value=1, max_value=5))}
    return q, case, options


def paged_equals_dense(case) -> bool:
    """Return whether the paged cache gives exactly the dense cache's result (NaN past the lengths there too)."""
    q, paged, options = case
    dense = np.swapaxes(paged.dense, 1, 2).copy()  # (B, S, h_kv, D)
    dense[np.arange(dense.shape[1])[None, :] >= paged.lengths[:, None]] = np.nan
    try:
        a = mla_decode(q, paged.cache, block_table=paged.block_table, cache_seqlens=paged.lengths, config=TINY, **options)
        b = mla_decode(q, dense, cache_seqlens=paged.lengths, config=TINY, **options)
    except AttnSpecError:
        return False  # e.g. a NaN slot or an unused table entry was read
    return np.array_equal(a.out, b.out) and np.array_equal(a.lse, b.lse) and bool(np.all(np.isfinite(a.out)))


@given(paged_cases())
def test_paged_equals_dense(case):
    assert paged_equals_dense(case)


def test_paged_equals_dense_catches_reading_past_the_length(monkeypatch):
    real = mla.gather_paged

    def gather_one_too_many(cache, table, lengths):
        return real(cache, table, np.minimum(np.asarray(lengths) + 1, np.shape(table)[1] * np.shape(cache)[1]))

    monkeypatch.setattr(mla, "gather_paged", gather_one_too_many)
    find(paged_cases(), lambda case: not paged_equals_dense(case))


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

def _decode(**overrides):
    rng = np.random.default_rng(0)
    args = dict(q=rng.uniform(size=(1, 1, 2, 12)), kv_cache=rng.uniform(size=(3, 4, 1, 12)),
                block_table=np.array([[2, 0]]), cache_seqlens=np.array([6]), config=TINY)
    args.update(overrides)
    return lambda: mla_decode(args.pop("q"), args.pop("kv_cache"), **args)


def _layer(**overrides):
    weights, q_nope, q_pe, c, k_pe = tiny_layer(seed=1, batch=1, tokens=3)
    args = dict(q_nope=q_nope, q_pe=q_pe, c=c, k_pe=k_pe, weights=weights)
    args.update(overrides)
    return lambda: mla_attention(args["q_nope"], args["q_pe"], args["c"], args["k_pe"], args["weights"], TINY)


BAD_INPUTS = [
    ("q latent width", _decode(q=np.zeros((1, 1, 2, 8))), ShapeError, "q: expected (B, s_q, h_q, kv_lora_rank"),
    ("q rank", _decode(q=np.zeros((1, 2, 12))), ShapeError, "q: expected"),
    ("cache width", _decode(kv_cache=np.zeros((3, 4, 1, 8))), ShapeError, "kv_cache: expected (num_blocks"),
    ("dv", _decode(dv=4), ShapeError, "dv: expected kv_lora_rank = 8"),
    ("block id out of range", _decode(block_table=np.array([[2, 3]])), ShapeError, "expected block ids in [0, 3)"),
    ("length beyond the table", _decode(cache_seqlens=np.array([9])), ShapeError, "max_blocks * page = 8"),
    ("negative length", _decode(cache_seqlens=np.array([-1])), ShapeError, "cache_seqlens: expected lengths >= 0"),
    ("table batch", _decode(block_table=np.array([[2, 0], [1, 0]])), ShapeError, "block_table: expected (B=1"),
    ("no lengths", _decode(cache_seqlens=None), ShapeError, "cache_seqlens: expected (B,) lengths"),
    ("nan query", _decode(q=np.full((1, 1, 2, 12), np.nan)), DomainError, "q: expected finite values"),
    ("algorithm", _decode(algorithm="split"), ConventionError, "algorithm: expected one of"),
    ("heads", _decode(kv_cache=np.zeros((3, 4, 3, 12))), ShapeError, "divisible by the kv-head count 3"),
    ("dense batch", _decode(block_table=None, kv_cache=np.zeros((2, 4, 1, 12))), ShapeError, "expected a dense (B=1"),
    ("wrong ranks", _layer(weights=MLAWeights.random(MLAConfig(hidden=16, n_heads=4, q_lora_rank=8, kv_lora_rank=6,
                                                               qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=4,
                                                               max_seq_len=64), 0)),
     ShapeError, "wkv_a: expected shape (12, 16) for this config, got (10, 16)"),
    ("latent rank", _layer(c=np.zeros((1, 3, 6))), ShapeError, "c: expected (B=1, T, kv_lora_rank=8)"),
    ("rope width", _layer(q_pe=np.zeros((1, 3, 4, 2))), ShapeError, "q_pe: expected"),
    ("form", lambda: mla_attention(*tiny_layer(1, 1, 2)[1:], tiny_layer(1, 1, 2)[0], TINY, form="fused"),
     ConventionError, "form: expected 'naive' or 'absorbed'"),
    ("odd rope dim", lambda: MLAConfig(qk_rope_head_dim=63), ShapeError, "qk_rope_head_dim: expected an even int"),
    ("zero heads", lambda: MLAConfig(n_heads=0), ShapeError, "n_heads: expected a positive int"),
    ("betas", lambda: MLAConfig(beta_fast=1, beta_slow=32), DomainError, "beta_fast, beta_slow"),
    ("position", lambda: mla_queries(np.zeros((1, 2, 16)), MLAWeights.random(TINY, 0), TINY, positions=[0, 64]),
     DomainError, "positions: expected values in [0, max_seq_len=64)"),
    ("hidden", lambda: mla_latents(np.zeros((1, 2, 15)), MLAWeights.random(TINY, 0), TINY), ShapeError,
     "x: expected shape (B, S, hidden=16)"),
]


@pytest.mark.parametrize("name, call, error, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_named_error(name, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_random_weights_are_seeded():
    a, b = MLAWeights.random(TINY, 9), MLAWeights.random(TINY, 9)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("wq_a", "wkv_b", "wo"))
    assert not np.array_equal(a.wkv_b, MLAWeights.random(TINY, 10).wkv_b)
