"""Deliberately wrong kernels (mutants) and correct ones built from the spec, for the mutant matrix.

The harness must flag every mutant in :data:`MUTANTS` and pass every kernel in
:data:`CORRECT` (tests/test_mutants.py; the real peers are in tests/test_peers.py). Each
mutant is one bug seen in the field, built by composing spec pieces with exactly one
thing changed; where a spec function has no seam for the change, the few lines that
differ restate the spec's lines and mark the changed one ``# [mutant]``.

Every kernel here computes like a typical GPU/NPU kernel: inputs in the case's format F,
FP32 accumulator and vector unit, output in F (:func:`kernel_policy`), KV blocks of
:data:`BLOCK_K` = 16 keys (so that the cases' edges at 15, 16, 17, ... cut blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from attnspec.spec.amla import CANN, POLICY_AMLA, POLICY_AMLA_FP16, amla_decode
from attnspec.spec.attention import AttentionResult, logits, softmax_attention
from attnspec.spec.flash import FlashState, flash_finalize, flash_from_problem, flash_step, initial_state
from attnspec.spec.formats import Format, format_of_dtype
from attnspec.spec.mla import MLAConfig, mla_decode
from attnspec.spec.pasa import PASA_ATTNSPEC, padded_kv, pasa_attention
from attnspec.spec.policy import PrecisionPolicy
from attnspec.spec.problem import AttentionProblem, attention_problem
from attnspec.spec.split_kv import combine, split_boundaries, split_partials

from .conformance import Kernel

BLOCK_K = 16
CONVENTIONS = frozenset({"scale", "causal", "causal_alignment", "window", "softcap", "mask", "q_seqlens", "kv_seqlens"})


def kernel_policy(fmt: Format) -> PrecisionPolicy:
    """Return the usual kernel precision: F inputs and output, FP32 accumulator and vector unit."""
    return PrecisionPolicy(fmt, Format.FP32, Format.FP32, fmt, name=f"{fmt}/fp32")


def _fmt(q: np.ndarray) -> Format:
    return format_of_dtype(q.dtype)


@dataclass(frozen=True)
class Entry:
    """A kernel of the matrix, the op it is checked under, its formats, and what is wrong with it."""

    kernel: Kernel
    op: str
    formats: tuple[str, ...]
    description: str


def _attention_kernel(name: str, run, *, rewrite=None, after=None, accepts=CONVENTIONS, lse: bool = True,
                      **declared) -> Kernel:
    """Return an attention-signature Kernel; ``run(problem, policy)`` -> result; O and LSE, or O alone.

    ``rewrite(conventions)`` changes the conventions the kernel uses, ``after(result, conventions)`` its result.
    """
    def fn(q, k, v, **conventions):
        policy = kernel_policy(_fmt(q))
        used = rewrite(dict(conventions)) if rewrite else conventions
        result = run(attention_problem(q, k, v, **used), policy)
        if after:
            result = after(result, conventions, policy)
        return (result.out, result.lse) if lse else result.out

    return Kernel(fn=fn, name=name, signature="attention", accepts=accepts, **declared)


def _blocks(sk: int, bk: int) -> list[tuple[int, int]]:
    return [(start, min(start + bk, sk)) for start in range(0, sk, bk)]


def _flash_with(problem: AttentionProblem, policy: PrecisionPolicy, *, blocks=_blocks, step=flash_step) -> AttentionResult:
    """Return spec.flash's forward pass with the block list or the step replaced."""
    state = initial_state(problem)
    for start, stop in blocks(problem.k.shape[2], BLOCK_K):
        state = step(state, problem.key_slice(start, stop), policy)
    return flash_finalize(state, policy, problem.empty_lse)


def _defective_step(defect: str):
    """Return spec.flash.flash_step (FlashAttention-2 Alg. 1 l.8-10) with one line changed."""
    def step(state: FlashState, block: AttentionProblem, policy: PrecisionPolicy) -> FlashState:
        s = logits(block, policy)
        m_new = np.maximum(state.m, np.max(s, axis=-1, keepdims=True, initial=-np.inf))
        m_p = state.m if defect == "stale_max" else m_new  # [mutant] stale_max: P against m_{j-1}
        p = policy.exp(policy.to_softmax(s - np.where(m_p == -np.inf, 0.0, m_p)))
        alpha = policy.exp(policy.to_softmax(state.m - np.where(m_new == -np.inf, 0.0, m_new)))
        l_new = policy.to_softmax(policy.to_softmax(alpha * state.l) + policy.sum(p, axis=-1))
        pv = policy.matmul(policy.to_input(p), policy.to_input(block.v_per_q_head()))
        o_alpha = state.o if defect == "forgotten_rescale" else alpha * state.o  # [mutant] forgotten_rescale
        return FlashState(o=policy.to_accumulate(policy.to_accumulate(o_alpha) + pv), m=m_new, l=l_new)
    return step


def _softmax_unguarded(problem: AttentionProblem, policy: PrecisionPolicy) -> AttentionResult:
    """Return spec.attention.softmax_attention without the empty-row guard: (-inf) - (-inf) = NaN."""
    s = logits(problem, policy)
    m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)  # [mutant] no `max == -inf ? 0 : max`
    with np.errstate(invalid="ignore"):
        p = policy.exp(policy.to_softmax(s - m))
        l = policy.sum(p, axis=-1)
        out = policy.to_output(policy.matmul(policy.to_input(policy.to_softmax(p / l)),
                                             policy.to_input(problem.v_per_q_head())))
        lse = policy.to_softmax(m + policy.log(l))[..., 0]
    return AttentionResult(out=out, lse=lse)


def _attention_on_logits(problem: AttentionProblem, s: np.ndarray, policy: PrecisionPolicy) -> AttentionResult:
    """Return spec.attention's softmax of the given logits S (B, Hq, Sq, Sk): Q = 0 and S carried as the bias."""
    carried = replace(problem, q=np.zeros_like(problem.q), softcap=None, bias=s, allowed=np.ones_like(problem.allowed))
    return softmax_attention(carried, policy)


def _softcap_after_mask(problem: AttentionProblem, policy: PrecisionPolicy) -> AttentionResult:
    """Return attention with softcap applied after the mask, as ONNX's first Attention did (onnx/onnx#7865)."""
    if problem.softcap is None:
        return softmax_attention(problem, policy)
    masked = logits(replace(problem, softcap=None), policy)  # -inf where masked
    cap = problem.softcap
    return _attention_on_logits(problem, policy.to_softmax(cap * np.tanh(masked / cap)), policy)  # [mutant] -inf -> -cap


def _pasa_mean_after_masking(problem: AttentionProblem, policy: PrecisionPolicy) -> AttentionResult:
    """Return what PASA computes (in real arithmetic) when its row mean skips the masked keys.

    spec.pasa recovers S from the shifted S' = S - beta rowmean(S) exactly because step 3 takes
    r' = rowmean(S') over all n columns of the block (deviation 5 of spec/pasa.py; the
    counterexample is in proofs/pasa_recovery.py). With r' over the admitted columns only, the
    recovered logits of block j become S + gamma (mean_admitted(S_j) - mean_all(S_j)): a
    per-block offset that reweights whole blocks. Built from spec.pasa's padding and beta.
    """
    config = PASA_ATTNSPEC
    n, gamma = config.block_k, config.beta / (1 - config.beta)
    k_pad, v_pad = padded_kv(problem, config)  # (B, Hkv, T n, D)
    total, sk = k_pad.shape[2], problem.k.shape[2]
    allowed = np.zeros(problem.allowed.shape[:3] + (total,), dtype=bool)
    allowed[..., :sk] = problem.allowed
    unmasked = logits(replace(problem, k=k_pad, v=v_pad, bias=None, allowed=np.ones_like(allowed)), policy)
    blocks = unmasked.reshape(unmasked.shape[:3] + (total // n, n))  # (B, Hq, Sq, T, n)
    admitted = allowed.reshape(blocks.shape)
    mean_all = blocks.mean(axis=-1, keepdims=True)
    count = admitted.sum(axis=-1, keepdims=True)
    mean_admitted = np.where(admitted, blocks, 0.0).sum(axis=-1, keepdims=True) / np.maximum(count, 1)  # [mutant]
    offset = np.broadcast_to(gamma * (mean_admitted - mean_all), blocks.shape).reshape(unmasked.shape)
    with np.errstate(invalid="ignore"):
        s = logits(problem, policy) + offset[..., :sk]  # -inf where masked stays -inf
    return _attention_on_logits(problem, s, policy)


def _wrong_gqa(problem: AttentionProblem, policy: PrecisionPolicy) -> AttentionResult:
    """Return attention where query head h uses kv head h % Hkv instead of h // G."""
    group = problem.q_heads // problem.kv_heads
    tiled = replace(problem, k=np.tile(problem.k, (1, group, 1, 1)), v=np.tile(problem.v, (1, group, 1, 1)))  # [mutant]
    return flash_from_problem(tiled, policy, BLOCK_K)


def _split_nan_partials(problem: AttentionProblem, policy: PrecisionPolicy) -> AttentionResult:
    """Return split-KV whose empty splits leave O_s = 0/0 = NaN, so 0 * NaN poisons the combine (ROCm/aiter#4711)."""
    bounds = split_boundaries(problem.k.shape[2], 3, BLOCK_K)
    partials = [AttentionResult(out=np.where((p.lse == -np.inf)[..., None], np.nan, p.out), lse=p.lse)  # [mutant]
                for p in split_partials(problem, bounds, policy, BLOCK_K)]
    return combine(partials, policy, problem.empty_lse)


def _mla_kernel(name: str, *, scale_override: float | None = None, read_whole_pages: bool = False) -> Kernel:
    """Return an mla-signature kernel on spec.mla.mla_decode (FlashAttention algorithm, page-sized blocks)."""
    def fn(q, k_cache, block_table, cache_seqlens, *, head_dim_v, softmax_scale, causal):
        fmt = _fmt(q)
        lengths = np.asarray(cache_seqlens)
        if read_whole_pages:  # [mutant] reads every slot of the last page, NaN-poisoned ones included
            page = k_cache.shape[1]
            lengths = -(-lengths // page) * page
        config = MLAConfig(kv_lora_rank=head_dim_v, qk_rope_head_dim=q.shape[-1] - head_dim_v)
        scale = softmax_scale if scale_override is None else scale_override  # [mutant] ignores softmax_scale
        r = mla_decode(q, k_cache, block_table=block_table, cache_seqlens=lengths, scale=scale, causal=causal,
                       config=config, policy=kernel_policy(fmt), algorithm="flash", empty_lse=np.inf)
        return r.out, r.lse

    return Kernel(fn=fn, name=name, signature="mla", accepts=frozenset({"scale", "causal"}), empty_lse=np.inf)


def amla_kernel(name: str, constants=CANN, block_k: int = 512) -> Kernel:
    """Return an mla-signature kernel on spec.amla.amla_decode (the shipped ``cann`` kernel, ``block_k`` keys a block)."""
    def fn(q, k_cache, block_table, cache_seqlens, *, head_dim_v, softmax_scale, causal):
        fmt = _fmt(q)
        config = MLAConfig(kv_lora_rank=head_dim_v, qk_rope_head_dim=q.shape[-1] - head_dim_v)
        r = amla_decode(q, k_cache, block_table=block_table, cache_seqlens=cache_seqlens, scale=softmax_scale,
                        causal=causal, config=config, policy=POLICY_AMLA if fmt is Format.BF16 else POLICY_AMLA_FP16,
                        block_k=block_k, empty_lse=np.inf, constants=constants)
        return r.out, r.lse

    return Kernel(fn=fn, name=name, signature="mla", accepts=frozenset({"scale", "causal"}), empty_lse=np.inf,
                  formats=(Format.BF16, Format.FP16))


def _pasa_kernel(name: str) -> Kernel:
    """Return an attention-signature kernel on spec.pasa (attnspec's PASA, every value in the input format)."""
    def fn(q, k, v, **conventions):
        r = pasa_attention(q, k, v, config=PASA_ATTNSPEC, policy=PrecisionPolicy.uniform(_fmt(q)), **conventions)
        return r.out

    return Kernel(fn=fn, name=name, signature="attention", accepts=CONVENTIONS - {"softcap"})


def _flash_signature(name: str, causal_alignment: str) -> Kernel:
    """Return a FlashAttention-signature kernel (B, S, H, D) on spec.flash with the given causal alignment."""
    def fn(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, return_attn_probs=False):
        to_bhsd = [np.transpose(a, (0, 2, 1, 3)) for a in (q, k, v)]  # (B, H, S, D)
        problem = attention_problem(*to_bhsd, scale=softmax_scale, causal=causal, causal_alignment=causal_alignment,
                                    window=window_size, softcap=softcap or None, empty_lse=np.inf)
        result = flash_from_problem(problem, kernel_policy(_fmt(q)), BLOCK_K)
        out = np.transpose(result.out, (0, 2, 1, 3)).astype(q.dtype)  # (B, S, H, D)
        return (out, result.lse, None) if return_attn_probs else out

    return Kernel(fn=fn, name=name, signature="flash", accepts=frozenset({"scale", "causal", "window", "softcap"}),
                  empty_lse=np.inf, returns_lse_keyword="return_attn_probs")


def _flash(problem: AttentionProblem, policy: PrecisionPolicy) -> AttentionResult:
    return flash_from_problem(problem, policy, BLOCK_K)


def _base2_lse(problem: AttentionProblem, policy: PrecisionPolicy) -> AttentionResult:
    r = flash_from_problem(problem, policy, BLOCK_K)
    return AttentionResult(out=r.out, lse=r.lse / math.log(2))  # [mutant] log2 of the row sum, not ln


ALL = ("fp32", "bf16", "fp16")

CORRECT: dict[str, Entry] = {
    "spec_attention": Entry(_attention_kernel("spec_attention", softmax_attention), "attention", ALL,
                            "the definition under an FP32-internal policy"),
    "spec_flash": Entry(_attention_kernel("spec_flash", _flash), "attention", ALL, "FlashAttention-2, 16-key blocks"),
    "spec_split_kv": Entry(_attention_kernel("spec_split_kv", lambda p, pol: combine(
        split_partials(p, split_boundaries(p.k.shape[2], 3, BLOCK_K), pol, BLOCK_K), pol, p.empty_lse)),
        "attention", ALL, "flash-decoding: 3 splits and the LSE combine"),
    "spec_flash_fa_signature": Entry(_flash_signature("spec_flash(fa-signature)", "bottom_right"), "flash", ALL,
                                     "FlashAttention-2 behind flash_attn_func's signature"),
    "spec_mla": Entry(_mla_kernel("spec_mla"), "mla", ALL, "spec.mla.mla_decode, FlashAttention with 64-key pages"),
    "spec_amla": Entry(amla_kernel("spec_amla"), "amla", ("bf16", "fp16"), "spec.amla's shipped (cann) kernel"),
    "spec_pasa": Entry(_pasa_kernel("spec_pasa"), "pasa", ("fp16",), "spec.pasa (beta = 0.9375), all FP16"),
}

_FLIP = {"bottom_right": "top_left", "top_left": "bottom_right"}


def _flip_alignment(c: dict) -> dict:
    return {**c, "causal_alignment": _FLIP[c.get("causal_alignment", "bottom_right")]}  # [mutant]


def _unit_scale(c: dict) -> dict:
    return {**c, "scale": 1.0}  # [mutant] the kernel never multiplies by the scale


def _scale_output(result: AttentionResult, c: dict, policy: PrecisionPolicy) -> AttentionResult:
    return AttentionResult(out=policy.to_output(result.out * c["scale"]), lse=result.lse)  # [mutant] scale after softmax


def _drop_partial(sk: int, bk: int) -> list[tuple[int, int]]:
    return [(start, start + bk) for start in range(0, sk - bk + 1, bk)]  # [mutant] the tail block Sk % bk is lost


def _short_blocks(sk: int, bk: int) -> list[tuple[int, int]]:
    return [(start, min(start + bk - 1, sk)) for start in range(0, sk, bk)]  # [mutant] stop one key early


def _fp16_accumulation(problem: AttentionProblem, policy: PrecisionPolicy) -> AttentionResult:
    fp16_acc = replace(policy, accumulate=Format.FP16, accumulation="sequential", name="")  # [mutant]
    return flash_from_problem(problem, fp16_acc, BLOCK_K)


def _dense_mutant(name: str, run, description: str, **options) -> tuple[str, Entry]:
    """Return (name, Entry) of an attention-op mutant in every format."""
    return name, Entry(_attention_kernel(name, run, **options), "attention", ALL, description)


def _flash_variant(**changes):
    return lambda problem, policy: _flash_with(problem, policy, **changes)


MUTANTS: dict[str, Entry] = dict([
    _dense_mutant("wrong_causal_alignment", _flash, "top-left where bottom-right was asked, and vice versa",
                  rewrite=_flip_alignment),
    _dense_mutant("missing_scale", _flash, "the softmax scale is never applied", rewrite=_unit_scale),
    _dense_mutant("misplaced_scale", _flash, "the scale multiplies O instead of the logits", rewrite=_unit_scale,
                  after=_scale_output),
    _dense_mutant("stale_running_max", _flash_variant(step=_defective_step("stale_max")),
                  "P_j exponentiated against m_{j-1}"),
    _dense_mutant("forgotten_rescale", _flash_variant(step=_defective_step("forgotten_rescale")),
                  "O is not rescaled when the max grows"),
    _dense_mutant("off_by_one_block_boundary", _flash_variant(blocks=_short_blocks), "each KV block ends one key early"),
    _dense_mutant("wrong_gqa_mapping", _wrong_gqa, "query head h uses kv head h % Hkv"),
    _dense_mutant("fp16_accumulation", _fp16_accumulation, "Q K^T, P V and O accumulated in FP16, rounding every add"),
    _dense_mutant("lse_base2", _base2_lse, "LSE as log2 instead of the natural log"),
    _dense_mutant("dropped_last_partial_block", _flash_variant(blocks=_drop_partial),
                  "the last Sk % 16 keys are never read"),
    _dense_mutant("nan_fully_masked_rows", _softmax_unguarded, "exp(-inf - (-inf)) = NaN for a row without a key"),
    _dense_mutant("softcap_after_mask", _softcap_after_mask, "softcap maps masked -inf to -cap (onnx/onnx#7865)"),
    _dense_mutant("split_kv_nan_partial", _split_nan_partials,
                  "an empty split's 0/0 partial poisons the combine (ROCm/aiter#4711)"),
]) | {
    "top_left_causal_flash": Entry(_flash_signature("top_left_causal(fa-signature)", "top_left"), "flash", ALL,
                                   "a flash_attn_func whose causal is top-left (SDPA's) instead of bottom-right"),
    "mla_reads_unused_slots": Entry(_mla_kernel("mla_reads_unused_slots", read_whole_pages=True), "mla", ALL,
                                    "reads the NaN-poisoned slots of each sequence's last page"),
    "mla_ignores_softmax_scale": Entry(_mla_kernel("mla_ignores_softmax_scale", scale_override=576 ** -0.5), "mla",
                                       ALL, "uses FlashMLA's default 1/sqrt(576) whatever softmax_scale says"),
    "pasa_mean_after_masking": Entry(_attention_kernel("pasa_mean_after_masking", _pasa_mean_after_masking,
                                                       accepts=CONVENTIONS - {"softcap"}, lse=False), "pasa", ("fp16",),
                                     "PASA whose row mean skips masked keys: the recovery offsets whole blocks"),
    "amla_without_zero_guard": Entry(amla_kernel("amla_without_zero_guard", replace(CANN, guard=None)), "amla",
                                     ("bf16", "fp16"), "AMLA without the |O| > 1e10 -> 0 guard"),
}
