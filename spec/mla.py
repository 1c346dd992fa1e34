"""Multi-head latent attention (MLA) of DeepSeek-V2/V3: the naive form, the absorbed form, the kernel view.

Normative sources:
- deepseek-ai/DeepSeek-V3 @ 9b4e978 ``inference/model.py`` (``ModelArgs``, ``MLA.__init__``,
  ``MLA.forward`` with ``attn_impl = "naive"`` and ``"absorb"``) and
  ``inference/configs/config_671B.json``.
- DeepSeek-V2 technical report, arXiv 2405.04434, §2.1 (low-rank key-value joint compression,
  decoupled RoPE, and the absorption of W_UK into the query and of W_UV into the output).
- deepseek-ai/FlashMLA @ 9241ae3 ``flash_mla/flash_mla_interface.py`` (``flash_mla_with_kvcache``)
  and ``tests/test_flash_mla_dense_decoding.py`` (``reference_torch``): the kernel view.

Algorithm (per token t, head h; weights in torch's Linear layout (out, in), y = W x):

    c_q     = RMSNorm(W_qa x)                 (no compression when q_lora_rank = 0: W_qb x)
    [q_nope^h ; q_pe^h] = W_qb c_q            (qk_nope | qk_rope per head)
    [c ; k_pe] = W_kva x,  c = RMSNorm(c)     (one latent c and one RoPE key per token, all heads)
    q_pe, k_pe = RoPE(., t)                   (spec.rope: interleaved pairs, YaRN)
    W_UK^h = W_kvb[h, :nope, :],  W_UV^h = W_kvb[h, nope:, :]      (W_kvb viewed (H, nope + v, r))
    naive     k^h_t = [W_UK^h c_t ; k_pe_t],  v^h_t = W_UV^h c_t
              o^h = Attention([q_nope^h ; q_pe^h], k^h, v^h)
    absorbed  q~^h = (W_UK^h)^T q_nope^h                          (r = kv_lora_rank wide)
              o~^h = Attention([q~^h ; q_pe^h], [c_t ; k_pe_t], c_t)   MQA, one 576-wide kv head
              o^h = W_UV^h o~^h
    y = W_o concat_h o^h
    scale = qk_head_dim^-1/2 * mscale^2,  mscale = 0.1 * mscale_arg * ln(rope_factor) + 1
            when max_seq_len > original_seq_len (else mscale = 1)

The two forms are equal in real arithmetic, since q_nope . (W_UK c) = (W_UK^T q_nope) . c and
sum_t P_t W_UV c_t = W_UV sum_t P_t c_t (proved in ``proofs/mla_absorption.py``); they
differ only by rounding. The *kernel view* is the attention of the absorbed form alone: q
(B, s_q, h_q, 576) against one latent cache of rows [c_t ; k_pe_t], with V the first 512
channels of K. That is what FlashMLA and AMLA compute, and what :func:`mla_decode` defines.

Rounding points under a policy (a model of DeepSeek-V3's BF16 run): every Linear and the
absorption einsums cast their operands to ``matmul_input``, round the dot products into
``accumulate`` and store the result in ``matmul_input`` (the activation dtype); RMSNorm is
evaluated in binary64 and rounded once into ``matmul_input``; RoPE is evaluated in the
``softmax`` (vector) format, as DeepSeek-V3 does in FP32; attention rounds as
:mod:`spec.attention` says (DeepSeek-V3's FP32 softmax cast to BF16 before P.V is
softmax=FP32, matmul_input=BF16).

Conventions (DeepSeek-V3 / FlashMLA / attnspec):

==================  ===========================  ===============================  ==========================
convention          DeepSeek-V3 @ 9b4e978        FlashMLA @ 9241ae3               attnspec
==================  ===========================  ===============================  ==========================
softmax scale       192^-1/2 mscale^2 ~0.135234  ``q.shape[-1] ** -0.5`` = 1/24   config.softmax_scale
causal              top-left ``triu(1)``, only   ``causal=False`` default;        bottom-right (equal to
                    for prefill from position 0  bottom-right ``tril(s_k - s_q)``  top-left when Sq = Sk)
empty row (O, LSE)  n/a                          (0, +inf) "lonely queries"       (0, ``empty_lse`` = -inf)
GQA heads           n/a (one latent head)        q head i -> kv head i // g       the same
V                   W_UV^h c_t                   ``k_cache[..., :head_dim_v]``    the first 512 channels
LSE                 n/a                          natural log, FP32                natural log
==================  ===========================  ===============================  ==========================

Decision (2026-11-28): :func:`mla_decode` scales by ``config.softmax_scale`` when ``scale``
is None, because the spec is of DeepSeek's model. FlashMLA defaults to 1/sqrt(576) instead,
which is wrong for DeepSeek-V3 by a factor of ~3.2; its callers pass the scale explicitly.
Pass ``scale=576 ** -0.5`` to reproduce FlashMLA's default.

Decision (2026-11-28): ``causal`` defaults to False, as in ``flash_mla_with_kvcache``. With
``causal=True`` and s_q > 1 (multi-token prediction), query i of a sequence of length L
attends keys j <= L - s_q + i (FlashMLA's ``tril(diagonal=s_k - s_q)``); a query with
L - s_q + i < 0 has no key and gets O = 0 and LSE = ``empty_lse``.

Known deviations from the sources:
- DeepSeek-V3 builds its (seqlen, seqlen) prefill mask without ``start_pos``, which cannot
  broadcast against the (seqlen, end_pos) scores of a chunked prefill (start_pos > 0 and
  seqlen > 1); attnspec defines that case by bottom-right causal masking.
- DeepSeek-V3 stores FP8 weights with block scales and dequantises ``wkv_b`` before the
  absorption; attnspec takes dequantised weights.
- FlashMLA's test reference adds the causal -inf bias *before* scaling; scaling a -inf by a
  positive scale changes nothing, so the definitions agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .attention import POLICY_FP64, AttentionResult, softmax_attention
from .errors import ConventionError, DomainError, ShapeError, require
from .flash import flash_from_problem
from .formats import Format, as_float64, require_finite, round_to
from .paged import gather_paged
from .policy import PrecisionPolicy, require_policy
from .problem import AttentionProblem, attention_problem
from .rope import Yarn, apply_rope, rope_angles, rope_frequencies

ALGORITHMS = ("attention", "flash")


@dataclass(frozen=True)
class MLAConfig:
    """MLA hyper-parameters; the defaults are DeepSeek-V3 671B (``config_671B.json`` over ``ModelArgs``)."""

    hidden: int = 7168
    n_heads: int = 128
    q_lora_rank: int = 1536  # 0: no query compression (DeepSeek-V2-Lite)
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    original_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_factor: float = 40.0
    beta_fast: int = 32
    beta_slow: int = 1
    mscale: float = 1.0
    max_seq_len: int = 16384
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("hidden", "n_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                     "original_seq_len", "max_seq_len"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, ShapeError,
                    f"{name}: expected a positive int, got {value!r}")
        require(isinstance(self.q_lora_rank, int) and self.q_lora_rank >= 0, ShapeError,
                f"q_lora_rank: expected an int >= 0, got {self.q_lora_rank!r}")
        require(self.qk_rope_head_dim % 2 == 0, ShapeError,
                f"qk_rope_head_dim: expected an even int (RoPE rotates pairs), got {self.qk_rope_head_dim}")
        require(math.isfinite(self.mscale), DomainError, f"mscale: expected a finite number, got {self.mscale!r}")
        require(math.isfinite(self.norm_eps) and self.norm_eps > 0, DomainError,
                f"norm_eps: expected a finite positive number, got {self.norm_eps!r}")
        Yarn(self.rope_factor, self.original_seq_len, self.beta_fast, self.beta_slow)  # raises on bad YaRN values
        rope_frequencies(self.qk_rope_head_dim, self.rope_theta)  # raises on a bad rope_theta

    @property
    def qk_head_dim(self) -> int:
        """Return qk_nope_head_dim + qk_rope_head_dim (192 for DeepSeek-V3)."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Return the width of one latent cache row [c ; k_pe]: kv_lora_rank + qk_rope_head_dim (576)."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def yarn(self) -> Yarn | None:
        """Return YaRN's parameters when it is on (max_seq_len > original_seq_len), else None."""
        params = Yarn(self.rope_factor, self.original_seq_len, self.beta_fast, self.beta_slow)
        return params if self.max_seq_len > self.original_seq_len else None

    @property
    def attention_mscale(self) -> float:
        """Return YaRN's mscale = 0.1 * mscale * ln(rope_factor) + 1 (1 without YaRN)."""
        return 0.1 * self.mscale * math.log(self.rope_factor) + 1.0 if self.yarn else 1.0

    @property
    def softmax_scale(self) -> float:
        """Return qk_head_dim^-1/2 * mscale^2 (~0.135234 for DeepSeek-V3 671B), as MLA.__init__ computes it."""
        m = self.attention_mscale
        return self.qk_head_dim ** -0.5 * m * m

    def rope_frequencies(self, fmt: Format = Format.FP64) -> np.ndarray:
        """Return the (qk_rope_head_dim / 2,) RoPE frequencies of this config (precompute_freqs_cis)."""
        return rope_frequencies(self.qk_rope_head_dim, self.rope_theta, self.yarn, fmt=fmt)


#: DeepSeek-V3 671B (also R1).
DEEPSEEK_V3 = MLAConfig()


@dataclass(frozen=True)
class MLAWeights:
    """The weights of one MLA layer, float64 arrays in torch's Linear layout (out_features, in_features)."""

    wq_a: np.ndarray | None  # (q_lora_rank, hidden); None when q_lora_rank = 0
    q_norm: np.ndarray | None  # (q_lora_rank,)
    wq_b: np.ndarray  # (H * qk_head_dim, q_lora_rank or hidden)
    wkv_a: np.ndarray  # (kv_lora_rank + qk_rope_head_dim, hidden)
    kv_norm: np.ndarray  # (kv_lora_rank,)
    wkv_b: np.ndarray  # (H * (qk_nope_head_dim + v_head_dim), kv_lora_rank)
    wo: np.ndarray  # (hidden, H * v_head_dim)

    @classmethod
    def random(cls, config: MLAConfig, seed: int, *, fmt: Format = Format.FP64) -> "MLAWeights":
        """Return seeded random weights of ``config`` (N(0, 1/fan_in), norms in [0.5, 1.5]) as values of ``fmt``."""
        rng = np.random.default_rng(seed)
        shapes = weight_shapes(config)

        def draw(name: str) -> np.ndarray | None:
            shape = shapes[name]
            if shape is None:
                return None
            if name.endswith("norm"):
                return round_to(rng.uniform(0.5, 1.5, size=shape), fmt)
            return round_to(rng.standard_normal(shape) / math.sqrt(shape[1]), fmt)

        return cls(**{name: draw(name) for name in shapes})

    def w_uk(self, config: MLAConfig) -> np.ndarray:
        """Return W_UK, (H, qk_nope_head_dim, kv_lora_rank): wkv_b viewed (H, nope + v, r)[:, :nope]."""
        return self.wkv_b.reshape(config.n_heads, -1, config.kv_lora_rank)[:, :config.qk_nope_head_dim]

    def w_uv(self, config: MLAConfig) -> np.ndarray:
        """Return W_UV, (H, v_head_dim, kv_lora_rank): wkv_b viewed (H, nope + v, r)[:, nope:]."""
        return self.wkv_b.reshape(config.n_heads, -1, config.kv_lora_rank)[:, config.qk_nope_head_dim:]


def weight_shapes(config: MLAConfig) -> dict[str, tuple[int, ...] | None]:
    """Return the shape of each weight of ``config`` (None for the absent query compression)."""
    c = config
    compressed = c.q_lora_rank > 0
    return {"wq_a": (c.q_lora_rank, c.hidden) if compressed else None,
            "q_norm": (c.q_lora_rank,) if compressed else None,
            "wq_b": (c.n_heads * c.qk_head_dim, c.q_lora_rank if compressed else c.hidden),
            "wkv_a": (c.latent_dim, c.hidden),
            "kv_norm": (c.kv_lora_rank,),
            "wkv_b": (c.n_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank),
            "wo": (c.hidden, c.n_heads * c.v_head_dim)}


def check_weights(weights: MLAWeights, config: MLAConfig) -> None:
    """Raise ShapeError or DomainError unless ``weights`` fit ``config`` and are finite."""
    for name, shape in weight_shapes(config).items():
        value = getattr(weights, name)
        if shape is None:
            require(value is None, ShapeError, f"{name}: expected None (q_lora_rank = 0), got an array")
            continue
        require(value is not None and np.shape(value) == shape, ShapeError,
                f"{name}: expected shape {shape} for this config, got {None if value is None else np.shape(value)}")
        require_finite(as_float64(value, name), name)


# ----------------------------------------------------------------------------------------------
# Projections (MLA.forward up to the attention)
# ----------------------------------------------------------------------------------------------

def gemm(a, b, policy: PrecisionPolicy) -> np.ndarray:
    """Return a @ b as a stored activation: operands cast to matmul_input, dots rounded into accumulate, result cast back."""
    require_policy(policy)
    return policy.to_input(policy.matmul(policy.to_input(a), policy.to_input(b)))


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, policy: PrecisionPolicy) -> np.ndarray:
    """Return x / sqrt(mean(x^2) + eps) * weight over the last axis (torch's F.rms_norm), rounded into matmul_input."""
    return policy.to_input(x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight)


def validate_tokens(x, config: MLAConfig, positions) -> tuple[np.ndarray, np.ndarray]:
    """Return (x (B, S, hidden) float64, positions (B, S) int64), validated."""
    x = as_float64(x, "x")
    require(x.ndim == 3 and x.shape[2] == config.hidden, ShapeError,
            f"x: expected shape (B, S, hidden={config.hidden}), got {x.shape}")
    require_finite(x, "x")
    b, s, _ = x.shape
    pos = np.arange(s) if positions is None else np.asarray(positions)
    require(np.issubdtype(pos.dtype, np.integer) and pos.shape in ((s,), (b, s)), ShapeError,
            f"positions: expected integers of shape ({s},) or ({b}, {s}), got {pos.dtype} {pos.shape}")
    require(np.all((pos >= 0) & (pos < config.max_seq_len)), DomainError,
            f"positions: expected values in [0, max_seq_len={config.max_seq_len}), got {pos.min(initial=0)}.."
            f"{pos.max(initial=0)}")
    return x, np.broadcast_to(pos, (b, s)).astype(np.int64)


def rope_rotate(x: np.ndarray, positions: np.ndarray, config: MLAConfig, policy: PrecisionPolicy) -> np.ndarray:
    """Return x (B, S, ..., rope) rotated at ``positions`` (B, S), in the softmax (vector) format."""
    fmt = require_policy(policy).softmax
    angles = rope_angles(positions, config.rope_frequencies(fmt), fmt=fmt)  # (B, S, rope/2)
    angles = angles.reshape(angles.shape[:2] + (1,) * (x.ndim - 3) + angles.shape[2:])  # broadcast over heads
    return policy.to_input(apply_rope(policy.to_softmax(x), angles, fmt=fmt))


def mla_queries(x, weights: MLAWeights, config: MLAConfig = DEEPSEEK_V3, *, positions=None,
                policy: PrecisionPolicy = POLICY_FP64) -> tuple[np.ndarray, np.ndarray]:
    """Return (q_nope (B, S, H, qk_nope), q_pe (B, S, H, qk_rope) rotated) of tokens x (B, S, hidden)."""
    check_weights(weights, config)
    x, pos = validate_tokens(x, config, positions)
    if config.q_lora_rank > 0:  # DeepSeek-V3: wq_b(q_norm(wq_a(x)))
        x = rms_norm(gemm(x, weights.wq_a.T, policy), weights.q_norm, config.norm_eps, policy)
    q = gemm(x, weights.wq_b.T, policy).reshape(x.shape[:2] + (config.n_heads, config.qk_head_dim))  # (B, S, H, 192)
    q_nope, q_pe = q[..., :config.qk_nope_head_dim], q[..., config.qk_nope_head_dim:]
    return q_nope, rope_rotate(q_pe, pos, config, policy)


def mla_latents(x, weights: MLAWeights, config: MLAConfig = DEEPSEEK_V3, *, positions=None,
                policy: PrecisionPolicy = POLICY_FP64) -> tuple[np.ndarray, np.ndarray]:
    """Return (c (B, T, kv_lora_rank) normalised, k_pe (B, T, qk_rope) rotated): what the absorbed form caches."""
    check_weights(weights, config)
    x, pos = validate_tokens(x, config, positions)
    kv = gemm(x, weights.wkv_a.T, policy)  # (B, T, r + rope)
    c = rms_norm(kv[..., :config.kv_lora_rank], weights.kv_norm, config.norm_eps, policy)
    return c, rope_rotate(kv[..., config.kv_lora_rank:], pos, config, policy)


# ----------------------------------------------------------------------------------------------
# The two forms of the attention
# ----------------------------------------------------------------------------------------------

def _check_projected(q_nope, q_pe, c, k_pe, config: MLAConfig) -> tuple[np.ndarray, ...]:
    """Return the four projected inputs as float64, after checking their shapes against ``config``."""
    q_nope, q_pe, c, k_pe = (as_float64(a, n) for a, n in ((q_nope, "q_nope"), (q_pe, "q_pe"), (c, "c"), (k_pe, "k_pe")))
    require(q_nope.ndim == 4 and q_nope.shape[2:] == (config.n_heads, config.qk_nope_head_dim), ShapeError,
            f"q_nope: expected (B, S, n_heads={config.n_heads}, qk_nope_head_dim={config.qk_nope_head_dim}), "
            f"got {q_nope.shape}")
    require(q_pe.shape == q_nope.shape[:3] + (config.qk_rope_head_dim,), ShapeError,
            f"q_pe: expected {q_nope.shape[:3] + (config.qk_rope_head_dim,)}, got {q_pe.shape}")
    require(c.ndim == 3 and c.shape[0] == q_nope.shape[0] and c.shape[2] == config.kv_lora_rank, ShapeError,
            f"c: expected (B={q_nope.shape[0]}, T, kv_lora_rank={config.kv_lora_rank}), got {c.shape}")
    require(k_pe.shape == c.shape[:2] + (config.qk_rope_head_dim,), ShapeError,
            f"k_pe: expected {c.shape[:2] + (config.qk_rope_head_dim,)}, got {k_pe.shape}")
    return q_nope, q_pe, c, k_pe


def naive_problem(q_nope, q_pe, c, k_pe, weights: MLAWeights, config: MLAConfig = DEEPSEEK_V3, *,
                  scale: float | None = None, policy: PrecisionPolicy = POLICY_FP64, **conventions) -> AttentionProblem:
    """Return the per-head attention problem of the naive form: K = [W_UK c ; k_pe], V = W_UV c (H kv heads)."""
    check_weights(weights, config)
    q_nope, q_pe, c, k_pe = _check_projected(q_nope, q_pe, c, k_pe, config)
    latent = c[:, None]  # (B, 1, T, r)
    k_nope = gemm(latent, np.swapaxes(weights.w_uk(config), 1, 2), policy)  # (B, H, T, nope)  wkv_b(kv)
    v = gemm(latent, np.swapaxes(weights.w_uv(config), 1, 2), policy)  # (B, H, T, v)
    k_rope = np.broadcast_to(k_pe[:, None], k_nope.shape[:3] + (config.qk_rope_head_dim,))  # (B, H, T, rope)
    q = np.swapaxes(np.concatenate([q_nope, q_pe], axis=-1), 1, 2)  # (B, H, S, 192)
    k = np.concatenate([k_nope, k_rope], axis=-1)  # (B, H, T, 192)
    return attention_problem(q, k, v, scale=config.softmax_scale if scale is None else scale, **conventions)


def kernel_inputs(q_nope, q_pe, c, k_pe, weights: MLAWeights, config: MLAConfig = DEEPSEEK_V3, *,
                  policy: PrecisionPolicy = POLICY_FP64) -> tuple[np.ndarray, np.ndarray]:
    """Return the kernel view's inputs: q = [W_UK^T q_nope ; q_pe] (B, S, H, 576) and the cache [c ; k_pe] (B, T, 1, 576)."""
    check_weights(weights, config)
    q_nope, q_pe, c, k_pe = _check_projected(q_nope, q_pe, c, k_pe, config)
    q_nope = np.swapaxes(q_nope, 1, 2)  # (B, H, S, nope)
    q_latent = np.swapaxes(gemm(q_nope, weights.w_uk(config), policy), 1, 2)  # (B, S, H, r)  einsum bshd,hdc->bshc
    q = np.concatenate([q_latent, q_pe], axis=-1)  # (B, S, H, 576)
    cache = np.concatenate([c, k_pe], axis=-1)[:, :, None]  # (B, T, 1, 576)
    return q, cache


def absorbed_problem(q_nope, q_pe, c, k_pe, weights: MLAWeights, config: MLAConfig = DEEPSEEK_V3, *,
                     scale: float | None = None, policy: PrecisionPolicy = POLICY_FP64,
                     **conventions) -> AttentionProblem:
    """Return the MQA problem of the absorbed form: one kv head K = [c ; k_pe], V = c (the first kv_lora_rank channels)."""
    q, cache = kernel_inputs(q_nope, q_pe, c, k_pe, weights, config, policy=policy)
    k = np.swapaxes(cache, 1, 2)  # (B, 1, T, 576)
    return attention_problem(np.swapaxes(q, 1, 2), k, k[..., :config.kv_lora_rank],
                             scale=config.softmax_scale if scale is None else scale, **conventions)


def mla_attention(q_nope, q_pe, c, k_pe, weights: MLAWeights, config: MLAConfig = DEEPSEEK_V3, *,
                  form: str = "absorbed", scale: float | None = None, policy: PrecisionPolicy = POLICY_FP64,
                  **conventions) -> AttentionResult:
    """Return the per-head outputs o^h (B, H, S, v_head_dim) and LSE (B, H, S) of either form.

    ``conventions`` are those of :func:`spec.problem.attention_problem` (``causal``,
    ``causal_alignment``, ``q_seqlens``, ``kv_seqlens``, ``empty_lse``, ...); ``scale``
    defaults to ``config.softmax_scale``.
    """
    require(form in ("naive", "absorbed"), ConventionError, f"form: expected 'naive' or 'absorbed', got {form!r}")
    if form == "naive":
        return softmax_attention(naive_problem(q_nope, q_pe, c, k_pe, weights, config, scale=scale, policy=policy,
                                               **conventions), policy)
    problem = absorbed_problem(q_nope, q_pe, c, k_pe, weights, config, scale=scale, policy=policy, **conventions)
    latent = softmax_attention(problem, policy)  # o~ (B, H, S, r)
    out = gemm(latent.out, np.swapaxes(weights.w_uv(config), 1, 2), policy)  # (B, H, S, v)  einsum bshc,hdc->bshd
    return AttentionResult(out=out, lse=latent.lse)


def mla_forward(x, weights: MLAWeights, config: MLAConfig = DEEPSEEK_V3, *, form: str = "absorbed",
                policy: PrecisionPolicy = POLICY_FP64) -> np.ndarray:
    """Return MLA's output y (B, S, hidden) for a prefill of tokens x (B, S, hidden) at positions 0..S-1 (causal)."""
    q_nope, q_pe = mla_queries(x, weights, config, policy=policy)
    c, k_pe = mla_latents(x, weights, config, policy=policy)
    heads = mla_attention(q_nope, q_pe, c, k_pe, weights, config, form=form, policy=policy, causal=True).out
    b, h, s, v = heads.shape
    flat = np.swapaxes(heads, 1, 2).reshape(b, s, h * v)  # (B, S, H * v)  x.flatten(2)
    return gemm(flat, weights.wo.T, policy)


# ----------------------------------------------------------------------------------------------
# The kernel view (FlashMLA / AMLA decode)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeResult:
    """FlashMLA's outputs: O (B, s_q, h_q, dv) and LSE (B, h_q, s_q), float64 arrays of their formats."""

    out: np.ndarray
    lse: np.ndarray


def decode_problem(q, kv_cache, *, block_table=None, cache_seqlens=None, scale: float | None = None,
                   causal: bool = False, config: MLAConfig = DEEPSEEK_V3, empty_lse: float = -np.inf) -> AttentionProblem:
    """Return the MQA problem of the kernel view: q (B, h_q, s_q, 576) against the cache, V its first kv_lora_rank channels.

    Inputs as in :func:`mla_decode`. Every kernel of the MLA kernel view (FlashMLA, AMLA)
    starts from this problem, so the layout and the masking conventions are decided here once.
    """
    width = config.latent_dim
    q = as_float64(q, "q")
    require(q.ndim == 4 and q.shape[3] == width, ShapeError,
            f"q: expected (B, s_q, h_q, kv_lora_rank + qk_rope_head_dim = {width}), got {q.shape}")
    cache = as_float64(kv_cache, "kv_cache")
    layout = "(num_blocks, page, h_kv" if block_table is not None else "(B, S, h_kv"
    require(cache.ndim == 4 and cache.shape[3] == width, ShapeError,
            f"kv_cache: expected {layout}, kv_lora_rank + qk_rope_head_dim = {width}), got {cache.shape}")
    batch = q.shape[0]
    if block_table is None:  # a dense cache is a paged one with one page per sequence
        require(cache.shape[0] == batch and cache.shape[1] >= 1, ShapeError,
                f"kv_cache: expected a dense (B={batch}, S >= 1, h_kv, {width}) cache, got {cache.shape}")
        lengths = np.full(batch, cache.shape[1]) if cache_seqlens is None else cache_seqlens
        block_table = np.arange(batch)[:, None]
    else:
        require(cache_seqlens is not None, ShapeError, "cache_seqlens: expected (B,) lengths with a block_table, got None")
        lengths = cache_seqlens
        require(np.ndim(block_table) == 2 and np.shape(block_table)[0] == batch, ShapeError,
                f"block_table: expected (B={batch}, max_blocks), got shape {np.shape(block_table)}")
    k, lengths = gather_paged(cache, block_table, lengths)  # (B, h_kv, S_max, 576)
    return attention_problem(np.swapaxes(q, 1, 2), k, k[..., :config.kv_lora_rank],  # q (B, h_q, s_q, 576)
                             scale=config.softmax_scale if scale is None else scale, causal=causal,
                             causal_alignment="bottom_right", kv_seqlens=lengths, empty_lse=empty_lse)


def mla_decode(q, kv_cache, *, block_table=None, cache_seqlens=None, scale: float | None = None,
               causal: bool = False, dv: int | None = None, config: MLAConfig = DEEPSEEK_V3,
               policy: PrecisionPolicy = POLICY_FP64, algorithm: str = "attention", block_k: int = 64,
               empty_lse: float = -np.inf) -> DecodeResult:
    """Return the MLA kernel view: q (B, s_q, h_q, 576) against a latent cache, V = its first ``dv`` channels.

    ``kv_cache`` is paged, (num_blocks, page, h_kv, 576) with ``block_table`` (B, max_blocks)
    and ``cache_seqlens`` (B,) as in ``flash_mla_with_kvcache``, or dense, (B, S, h_kv, 576)
    with optional ``cache_seqlens`` (default S). Cache slots at or beyond a sequence's length,
    and block-table entries past its last page, are never read. ``dv`` must be kv_lora_rank
    (FlashMLA's ``head_dim_v`` "must be 512"). ``scale`` defaults to ``config.softmax_scale``
    (FlashMLA's own default is 1/sqrt(576); see the module docstring). ``algorithm`` is
    "attention" (the definition) or "flash" (spec.flash, ``block_k`` keys per block,
    FlashMLA's page size 64 by default).
    """
    dv = config.kv_lora_rank if dv is None else dv
    require(dv == config.kv_lora_rank, ShapeError,
            f"dv: expected kv_lora_rank = {config.kv_lora_rank} (V is the latent c, the first kv_lora_rank channels), "
            f"got {dv!r}")
    require(algorithm in ALGORITHMS, ConventionError, f"algorithm: expected one of {ALGORITHMS}, got {algorithm!r}")
    problem = decode_problem(q, kv_cache, block_table=block_table, cache_seqlens=cache_seqlens, scale=scale,
                             causal=causal, config=config, empty_lse=empty_lse)
    if algorithm == "flash":
        result = flash_from_problem(problem, policy, block_k)
    else:
        result = softmax_attention(problem, policy)
    return DecodeResult(out=np.swapaxes(result.out, 1, 2), lse=result.lse)  # out (B, s_q, h_q, dv)
