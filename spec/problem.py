"""One attention problem, validated: shapes, GQA mapping, masks, lengths, scale, softcap.

Every attention-like algorithm in ``spec/`` (the definition, FlashAttention, split-KV, the
MLA kernel view, AMLA, PASA) and the oracle in ``reference/`` start from
:func:`attention_problem`, so a convention is decided in exactly one place.

Conventions pinned here (see the README's conventions table for the other anchors):

- Layout: Q (B, Hq, Sq, Dk), K (B, Hkv, Sk, Dk), V (B, Hkv, Sk, Dv); Dk != Dv is allowed.
- GQA/MQA: query head h uses kv head h // (Hq / Hkv) (FlashAttention, FlashMLA, ONNX
  ``np.repeat``, PyTorch ``repeat_interleave``). Hq must be a multiple of Hkv.
- Scale: 1/sqrt(Dk) by default; any finite non-zero real (negative allowed, as in PyTorch).
  Zero is rejected: it silently turns attention into a plain mean, and is almost always a bug.
- Logits: S = scale * Q K^T, then softcap (S -> c*tanh(S/c)), then the additive mask, then
  the boolean restrictions (causal, window, boolean mask, lengths) set S to -inf.
  Softcap comes before the mask (FlashAttention; ONNX after onnx/onnx#7867).
- Boolean mask: True means "may attend" (ONNX, PyTorch). Float mask: added to the logits;
  -inf allowed, NaN and +inf rejected. Either broadcasts to (B, Hq, Sq, Sk). An integer
  mask is rejected: 0/1 could mean either.
- Variable lengths: ``q_seqlens`` / ``kv_seqlens`` (B,) give the valid prefix of each batch's
  queries / keys. Slots beyond them are never read: they may hold anything, NaN included.
- Non-finite Q, K or V inside the valid region raise DomainError.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .errors import ConventionError, DomainError, MaskError, ShapeError, require
from .formats import as_float64, require_finite
from .masks import CausalAlignment, allowed_keys, validate_window


@dataclass(frozen=True)
class AttentionProblem:
    """A validated attention problem. Arrays are float64; padded slots are zeroed."""

    q: np.ndarray  # (B, Hq, Sq, Dk)
    k: np.ndarray  # (B, Hkv, Sk, Dk)
    v: np.ndarray  # (B, Hkv, Sk, Dv)
    scale: float
    softcap: float | None
    bias: np.ndarray | None  # additive mask broadcastable to (B, Hq, Sq, Sk), or None
    allowed: np.ndarray  # (B, Hq, Sq, Sk) bool: pairs that may interact
    q_lens: np.ndarray  # (B,) int64
    kv_lens: np.ndarray  # (B,) int64
    empty_lse: float  # LSE reported for a row with no admissible key
    scale_is_default: bool = False  # True: the exact scale is the real 1/sqrt(Dk), of which ``scale`` is the float64

    @property
    def batch(self) -> int:
        return self.q.shape[0]

    @property
    def q_heads(self) -> int:
        return self.q.shape[1]

    @property
    def kv_heads(self) -> int:
        return self.k.shape[1]

    @property
    def kv_head_of_q(self) -> np.ndarray:
        """Return the kv head used by each query head: h // (Hq / Hkv)."""
        return np.arange(self.q_heads) // (self.q_heads // self.kv_heads)

    def k_per_q_head(self) -> np.ndarray:
        """Return K repeated onto the query heads, (B, Hq, Sk, Dk)."""
        return self.k[:, self.kv_head_of_q]

    def v_per_q_head(self) -> np.ndarray:
        """Return V repeated onto the query heads, (B, Hq, Sk, Dv)."""
        return self.v[:, self.kv_head_of_q]

    def bias_full(self) -> np.ndarray:
        """Return the additive mask broadcast to (B, Hq, Sq, Sk) (zeros when there is none)."""
        shape = self.allowed.shape
        return np.zeros(shape) if self.bias is None else np.broadcast_to(self.bias, shape)

    def key_slice(self, start: int, stop: int) -> "AttentionProblem":
        """Return the same problem restricted to keys [start, stop) (positions stay global)."""
        bias = None
        if self.bias is not None:
            bias = np.broadcast_to(self.bias, self.allowed.shape)[..., start:stop]
        return replace(self, k=self.k[:, :, start:stop], v=self.v[:, :, start:stop], bias=bias,
                       allowed=self.allowed[..., start:stop])


def attention_problem(q, k, v, *, scale: float | None = None, causal: bool = False,
                      causal_alignment: CausalAlignment = "bottom_right", mask=None,
                      window: tuple[int | None, int | None] | None = None, softcap: float | None = None,
                      q_seqlens=None, kv_seqlens=None, empty_lse: float = -np.inf) -> AttentionProblem:
    """Return the validated :class:`AttentionProblem` for these inputs and conventions."""
    q = as_float64(q, "q")
    k = as_float64(k, "k")
    v = as_float64(v, "v")
    for name, arr in (("q", q), ("k", k), ("v", v)):
        require(arr.ndim == 4, ShapeError, f"{name}: expected rank 4 (B, H, S, D), got shape {arr.shape}")
    b, hq, sq, dk = q.shape
    _, hkv, sk, _ = k.shape
    dv = v.shape[3]
    require(k.shape[0] == b and v.shape[0] == b, ShapeError,
            f"k, v: expected batch {b} (from q), got {k.shape[0]} and {v.shape[0]}")
    require(k.shape[3] == dk, ShapeError, f"k: expected head width Dk={dk} (from q), got {k.shape[3]}")
    require(v.shape[1] == hkv and v.shape[2] == sk, ShapeError,
            f"v: expected (B, Hkv, Sk) = ({b}, {hkv}, {sk}) (from k), got {v.shape[:3]}")
    require(dk >= 1 and dv >= 1, ShapeError, f"q, v: expected head widths >= 1, got Dk={dk}, Dv={dv}")
    require(hkv >= 1, ShapeError, f"k: expected at least one kv head, got {hkv}")
    require(hq % hkv == 0, ShapeError,
            f"q: expected a query-head count divisible by the kv-head count {hkv}, got {hq}")

    scale_is_default = scale is None
    if scale is None:
        scale = 1.0 / np.sqrt(dk)
    require(isinstance(scale, (int, float, np.floating, np.integer)) and not isinstance(scale, bool),
            DomainError, f"scale: expected a real number, got {scale!r}")
    scale = float(scale)
    require(np.isfinite(scale) and scale != 0.0, DomainError,
            f"scale: expected a finite non-zero number, got {scale!r}")
    require(isinstance(causal, (bool, np.bool_)), ConventionError, f"causal: expected True or False, got {causal!r}")
    if softcap is not None:
        require(isinstance(softcap, (int, float, np.floating, np.integer)) and not isinstance(softcap, bool)
                and np.isfinite(softcap)
                and softcap > 0, DomainError, f"softcap: expected None or a finite positive number, got {softcap!r}")
        softcap = float(softcap)
    require(empty_lse in (-np.inf, np.inf) or np.isnan(empty_lse), DomainError,
            f"empty_lse: expected -inf, +inf or nan, got {empty_lse!r}")

    q_lens = _lengths(q_seqlens, b, sq, "q_seqlens")
    kv_lens = _lengths(kv_seqlens, b, sk, "kv_seqlens")

    # Padded slots are never read: zero them before the finiteness check and the matmuls
    # (without padding there is nothing to zero, and the inputs are used as they are).
    if np.any(q_lens < sq):
        q = np.where(np.arange(sq)[None, None, :, None] < q_lens[:, None, None, None], q, 0.0)
    if np.any(kv_lens < sk):
        k = np.where(np.arange(sk)[None, None, :, None] < kv_lens[:, None, None, None], k, 0.0)
        v = np.where(np.arange(sk)[None, None, :, None] < kv_lens[:, None, None, None], v, 0.0)
    require_finite(q, "q")
    require_finite(k, "k")
    require_finite(v, "v")

    window = validate_window(window)
    allowed = np.stack([allowed_keys(sq, sk, q_len=int(q_lens[i]), kv_len=int(kv_lens[i]), causal=causal,
                                     alignment=causal_alignment, window=window) for i in range(b)]) \
        if b else np.zeros((0, sq, sk), dtype=bool)
    allowed = np.broadcast_to(allowed[:, None], (b, hq, sq, sk))  # (B, Hq, Sq, Sk)

    bias = None
    if mask is not None:
        m = np.asarray(mask)
        require(m.ndim <= 4, MaskError, f"mask: expected rank <= 4, got shape {m.shape}")
        try:
            np.broadcast_shapes(m.shape, (b, hq, sq, sk))
            fits = np.broadcast_shapes(m.shape, (b, hq, sq, sk)) == (b, hq, sq, sk)
        except ValueError:
            fits = False
        require(fits, MaskError, f"mask: expected a shape broadcastable to (B, Hq, Sq, Sk) = "
                                 f"{(b, hq, sq, sk)}, got {m.shape}")
        if m.dtype == np.bool_:
            allowed = allowed & m
        else:
            # An integer 0/1 mask is ambiguous (boolean or additive?); ONNX and PyTorch take bool or float only.
            require(not np.issubdtype(m.dtype, np.integer), MaskError,
                    f"mask: expected a bool mask (True = may attend) or a floating-point additive mask, got dtype {m.dtype}")
            m = as_float64(m, "mask")
            require(not np.any(np.isnan(m)) and not np.any(m == np.inf), MaskError,
                    "mask: an additive mask may hold finite values and -inf, got NaN or +inf")
            bias = m
    return AttentionProblem(q=q, k=k, v=v, scale=scale, softcap=softcap, bias=bias,
                            allowed=np.ascontiguousarray(allowed), q_lens=q_lens, kv_lens=kv_lens,
                            empty_lse=float(empty_lse), scale_is_default=scale_is_default)


def _lengths(lengths, batch: int, limit: int, name: str) -> np.ndarray:
    """Return validated per-batch lengths (B,) in [0, limit]; None means all of ``limit``."""
    if lengths is None:
        return np.full(batch, limit, dtype=np.int64)
    arr = np.asarray(lengths)
    require(np.issubdtype(arr.dtype, np.integer), ShapeError, f"{name}: expected integers, got dtype {arr.dtype}")
    require(arr.shape == (batch,), ShapeError, f"{name}: expected shape ({batch},), got {arr.shape}")
    require(np.all(arr >= 0), ShapeError, f"{name}: expected lengths >= 0, got {arr.tolist()}")
    require(np.all(arr <= limit), ShapeError,
            f"{name}: expected lengths <= {limit} (the padded length), got {arr.tolist()}")
    return arr.astype(np.int64)
