"""Which keys a query may attend: causal alignment, sliding window, sequence lengths.

Normative sources:
- FlashAttention README §"2.1: Change behavior of causal flag" and ``construct_local_mask``
  (Dao-AILab/flash-attention @ 0251105): causal and local masks aligned to the bottom-right
  corner, query i attends key j iff  i + Sk - Sq - left <= j <= i + Sk - Sq + right.
- PyTorch ``scaled_dot_product_attention(is_causal=True)``: ``tril(ones(L, S))``, aligned to
  the top-left corner.
- ONNX Attention (opset 25, after onnx/onnx#8068): bottom-right, offset-aware.

Decision (2026-11-28): ``bottom_right`` is the default alignment, as in FlashAttention,
FlashMLA and ONNX today. With per-batch lengths the offset is taken per batch:
offset_b = kv_len_b - q_len_b (bottom_right) or 0 (top_left). A negative offset leaves the
first rows empty; those rows follow the fully-masked-row convention of ``spec.attention``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import ConventionError, MaskError, require

CausalAlignment = Literal["bottom_right", "top_left"]
CAUSAL_ALIGNMENTS: tuple[str, ...] = ("bottom_right", "top_left")


def alignment_offset(q_len: int, kv_len: int, alignment: CausalAlignment) -> int:
    """Return the diagonal offset: query i's own position is key i + offset."""
    require(alignment in CAUSAL_ALIGNMENTS, ConventionError,
            f"causal_alignment: expected one of {CAUSAL_ALIGNMENTS}, got {alignment!r}")
    return kv_len - q_len if alignment == "bottom_right" else 0


def allowed_keys(sq: int, sk: int, *, q_len: int, kv_len: int, causal: bool,
                 alignment: CausalAlignment, window: tuple[int | None, int | None] | None) -> np.ndarray:
    """Return the (sq, sk) boolean matrix of (query, key) pairs that may interact.

    ``q_len <= sq`` and ``kv_len <= sk`` are the valid lengths; padded rows and columns are False.
    ``window = (left, right)``: query i sees keys in [i + offset - left, i + offset + right];
    ``None`` on a side means unbounded. ``causal`` adds j <= i + offset.
    """
    i = np.arange(sq)[:, None]  # (sq, 1)
    j = np.arange(sk)[None, :]  # (1, sk)
    offset = alignment_offset(q_len, kv_len, alignment)
    ok = (i < q_len) & (j < kv_len)
    if causal:
        ok &= j <= i + offset
    if window is not None:
        left, right = window
        if left is not None:
            ok &= j >= i + offset - left
        if right is not None:
            ok &= j <= i + offset + right
    return ok


def validate_window(window) -> tuple[int | None, int | None] | None:
    """Return ``window`` as a (left, right) pair of non-negative ints or None, or raise MaskError."""
    if window is None:
        return None
    require(isinstance(window, (tuple, list)) and len(window) == 2, MaskError,
            f"window: expected a (left, right) pair, got {window!r}")
    sides = []
    for side, value in zip(("left", "right"), window):
        if value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value == -1):
            sides.append(None)  # FlashAttention spells "unbounded" as -1
            continue
        require(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0, MaskError,
                f"window[{side}]: expected a non-negative int, -1 or None, got {value!r}")
        sides.append(int(value))
    return sides[0], sides[1]
