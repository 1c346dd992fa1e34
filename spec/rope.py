"""Rotary position embedding (RoPE) on interleaved pairs, with YaRN's frequency correction.

Normative sources:
- deepseek-ai/DeepSeek-V3 @ 9b4e978 ``inference/model.py``: ``precompute_freqs_cis`` (the
  frequencies, YaRN's correction range and linear ramp) and ``apply_rotary_emb`` (adjacent
  pairs (x0, x1), (x2, x3), ... taken as complex numbers, the "GPT-J" layout, multiplied by
  e^{i t f_j}).
- YaRN: B. Peng et al., "YaRN: Efficient Context Window Extension of Large Language Models",
  arXiv 2309.00071, §3.2 ("NTK-by-parts"): dimensions that turn fewer than ``beta_slow`` times
  over the original context are interpolated (f / factor), those that turn more than
  ``beta_fast`` times are kept (f), and a linear ramp blends the two in between.

For a pair j of a ``dim``-wide rotary slice (j = 0 .. dim/2 - 1) and position t:

    f_j      = theta^(-2j/dim)                                        precompute_freqs_cis
    d(r)     = dim * ln(L / (2 pi r)) / (2 ln theta)   (L = original_seq_len; the pair index
                                                         whose wavelength fits r times in L)
    low      = max(floor(d(beta_fast)), 0),  high = min(ceil(d(beta_slow)), dim - 1)
    ramp_j   = clamp((j - low) / (high - low), 0, 1)   (high += 0.001 when high == low)
    f_j     <- f_j / factor * ramp_j + f_j * (1 - ramp_j)              YaRN only
    (y_2j, y_2j+1) = (x_2j cos(t f_j) - x_2j+1 sin(t f_j),  x_2j sin(t f_j) + x_2j+1 cos(t f_j))

DeepSeek-V3 applies the correction only when ``max_seq_len > original_seq_len`` (the caller,
:class:`spec.mla.MLAConfig`, decides; here it is the ``yarn`` argument).

Precision. ``fmt`` (default FP64) is the format every step above rounds into. DeepSeek-V3
evaluates the table and the rotation in FP32 (``torch.float32`` frequencies, angles, cos/sin
and complex product) and casts the result to the activation dtype; ``fmt=Format.FP32``
models that, up to the accuracy of torch's pow/cos/sin (within an ulp, not correctly
rounded) and the FMA a GPU may use in the complex product.

Known deviations of DeepSeek-V3 @ 9b4e978 from this text:
- ``high`` is clamped to ``dim - 1`` although pair indices stop at ``dim/2 - 1``; a clamp at
  ``dim/2 - 1`` would change the ramp for configs whose ``d(beta_slow)`` lies in between.
  We follow the code. (For the 671B config d(beta_slow) = 22.5, so high = 23 < 31.)
- Angles t * f_j are formed in FP32, so at t = 16383 an angle carries an absolute error up
  to ~2**-11 rad; the FP64 default is the intended real-number rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import DomainError, ShapeError, require
from .formats import Format, as_float64, round_to


@dataclass(frozen=True)
class Yarn:
    """YaRN's parameters (DeepSeek-V3 ``ModelArgs``: rope_factor, original_seq_len, beta_fast, beta_slow)."""

    factor: float
    original_seq_len: int
    beta_fast: float
    beta_slow: float

    def __post_init__(self) -> None:
        require(math.isfinite(self.factor) and self.factor > 0, DomainError,
                f"rope_factor: expected a finite positive number, got {self.factor!r}")
        require(isinstance(self.original_seq_len, int) and self.original_seq_len >= 1, DomainError,
                f"original_seq_len: expected a positive int, got {self.original_seq_len!r}")
        require(0 < self.beta_slow < self.beta_fast and math.isfinite(self.beta_fast), DomainError,
                f"beta_fast, beta_slow: expected 0 < beta_slow < beta_fast, got {self.beta_fast!r}, {self.beta_slow!r}")


def correction_range(dim: int, theta: float, yarn: Yarn) -> tuple[int, int]:
    """Return YaRN's (low, high) pair indices for a ``dim``-wide rotary slice (DeepSeek-V3's clamps)."""

    def correction_dim(rotations: float) -> float:  # find_correction_dim
        return dim * math.log(yarn.original_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = math.floor(correction_dim(yarn.beta_fast))
    high = math.ceil(correction_dim(yarn.beta_slow))
    return max(low, 0), min(high, dim - 1)


def rope_frequencies(dim: int, theta: float, yarn: Yarn | None = None, *, fmt: Format = Format.FP64) -> np.ndarray:
    """Return the (dim/2,) rotation frequencies f_j, YaRN-corrected when ``yarn`` is given."""
    require(isinstance(dim, int) and dim >= 2 and dim % 2 == 0, ShapeError,
            f"qk_rope_head_dim: expected an even int >= 2 (pairs are rotated), got {dim!r}")
    require(math.isfinite(theta) and theta > 1, DomainError, f"rope_theta: expected a finite number > 1, got {theta!r}")
    j = np.arange(dim // 2, dtype=np.float64)
    freqs = round_to(1.0 / round_to(theta ** round_to(2 * j / dim, fmt), fmt), fmt)  # 1 / theta^(2j/dim)
    if yarn is None:
        return freqs
    low, high = correction_range(dim, theta, yarn)
    width = high - low if high != low else 0.001  # linear_ramp_factor: max += 0.001 when min == max
    ramp = np.clip(round_to(round_to(j - low, fmt) / round_to(width, fmt), fmt), 0.0, 1.0)
    smooth = round_to(1.0 - ramp, fmt)
    interpolated = round_to(round_to(freqs / round_to(yarn.factor, fmt), fmt) * round_to(1.0 - smooth, fmt), fmt)
    return round_to(interpolated + round_to(freqs * smooth, fmt), fmt)  # f/factor*(1-smooth) + f*smooth


def rope_angles(positions, freqs: np.ndarray, *, fmt: Format = Format.FP64) -> np.ndarray:
    """Return the angles t * f_j, shape positions.shape + (dim/2,), rounded into ``fmt``."""
    pos = np.asarray(positions)
    require(np.issubdtype(pos.dtype, np.integer), ShapeError, f"positions: expected integers, got dtype {pos.dtype}")
    require(np.all(pos >= 0), DomainError, f"positions: expected positions >= 0, got min {pos.min(initial=0)}")
    return round_to(pos.astype(np.float64)[..., None] * freqs, fmt)


def apply_rope(x, angles: np.ndarray, *, fmt: Format = Format.FP64) -> np.ndarray:
    """Return x (..., dim) with each adjacent pair (x_2j, x_2j+1) rotated by ``angles`` (..., dim/2).

    ``angles`` broadcasts against x's leading axes (e.g. (S, 1, dim/2) against (B, S, H, dim)).
    """
    x = as_float64(x, "x")
    require(x.ndim >= 1 and x.shape[-1] % 2 == 0 and x.shape[-1] == 2 * angles.shape[-1], ShapeError,
            f"x: expected a last axis of 2 * {angles.shape[-1]} (one pair per angle), got shape {x.shape}")
    cos = round_to(np.cos(angles), fmt)  # torch.polar
    sin = round_to(np.sin(angles), fmt)
    x0, x1 = x[..., 0::2], x[..., 1::2]  # view_as_complex: adjacent pairs are (re, im)
    y0 = round_to(round_to(x0 * cos, fmt) - round_to(x1 * sin, fmt), fmt)
    y1 = round_to(round_to(x0 * sin, fmt) + round_to(x1 * cos, fmt), fmt)
    return np.stack([y0, y1], axis=-1).reshape(y0.shape[:-1] + (2 * y0.shape[-1],))  # pairs back to (..., dim)
