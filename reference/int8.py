"""INT8 W8A8 quantisation of CloudMatrix-Infer: the reference (simple, exact, slow).

Normative source: Zuo et al., "Serving Large Language Models on Huawei CloudMatrix384",
arXiv:2506.12708v3, §4.5 (the five-part INT8 scheme) and §5.5.3 (INT8 in, INT32
accumulate, BF16 out). The paper leaves the details open; these shipped forms pin them:
hicann/ops-transformer@c29bc10 ``mc2/moe_distribute_dispatch/op_kernel/moe_distribute_dispatch.h``
(``QuantProcess``: per-token dynamic INT8, quantMode 2) and ``attention/mla_prolog/README.md``
(``weight_uq_qr`` INT8 with a per-channel dequant scale, ``weight_uk`` BF16).

The scheme, offline steps first (§4.5 part 2, 5, 4), then the runtime GEMM:

    offline  s*    = argmin_s ||Q(W s)(s^-1 X) - W X||    s over SMOOTHING candidates  (part 2)
             alpha = argmin_a ||X W_b^T - X Q(W_b; a)^T||  per block b, a in CLIP_GRID (part 5)
             s_w[o] = fl32(alpha max_k |W'[o,k]| / 127),  Wq = Q(W' / s_w)             (part 4)
    runtime  x'    = x * m,  m = 1/s* (a power of two; CANN's "smooth scales")
             s_x[t] = fl32(max_k |x'[t,k]| / 127),  Xq = Q(x' / s_x)                 (part 4)
             acc   = sum_k Xq[t,k] Wq[o,k]  in INT32
             Y     = s_x[t] s_w[o] acc, rounded once into BF16
    Q(v)   = clip(RNE(v), -127, 127)

Conventions (pinned defaults, with their sources):

=====================  =====================================  ======================================
convention             default                                source
=====================  =====================================  ======================================
activation scale       per token, dynamic, max|x|/127          §4.5 part 4; QuantProcess
weight scale           per output channel, static              §4.5 part 4; MlaProlog (1, N(D+Dr))
rounding               round half to even                      QuantProcess ``CAST_RINT``
range                  symmetric [-127, 127]; -128 unused      one FP32 scale, no zero point (§4.2.1)
scale format           FP32                                    QuantProcess stores ``1/dynamicScale``
accumulator            INT32; overflow raises (or wraps)       §5.5.3
dequantisation         one rounding of s_x s_w acc to BF16     §4.5 part 4, §5.5.3 (BF16 out)
input formats          x: BF16, W: any FP32 value              §4.2.1 (BF16 hidden states)
=====================  =====================================  ======================================

Lemma (RNE through binary64). For an FP32 value v and an FP32 scale s, ``np.rint(v / s)``
(one binary64 division, then ties to even) equals RNE of the exact quotient. Near a
half-integer h (|h| >= 1/2), 2v - (2n+1)s is a non-zero multiple of 2^min(e_v - 22, e_s - 23)
with e_v >= e_s - 2, so |v/s - h| > 2**-26, while the division errs by at most 2**-46 for
|v/s| <= 128 (beyond that Q saturates). Every v quantised here is an FP32 value (x' = x m
and W' = W / m, m a power of two); the tests check the lemma against exact rational rounding.

MLAProlog (§4.2.2; ops-transformer@c29bc10 ``attention/mla_prolog/README.md``):
:func:`mla_prolog` computes c_q = RMSNorm(x W_dq) in BF16, q = W8A8(c_q, W_uq_qr) (the INT8
weight_uq_qr with its per-channel dequant scale), RoPE on q_pe, and the absorbed query
W_UK^T q_nope with W_UK in BF16, using ``spec.mla`` for every step but the INT8 GEMM;
``uq_qr=None`` is the all-BF16 path it is compared with.

Decision (2026-11-28): the smoothing factors are powers of two. SmoothQuant's
s_j = a_j^beta / b_j^(1-beta) (a_j = max_t |X[t,j]|, b_j = max_o |W[o,j]|) is evaluated on
the binary exponents, log2 s_j = floor(beta floor(log2 a_j) - (1-beta) floor(log2 b_j)), so
that X/s and W s are exact: the migration preserves X W^T bit for bit, all of the error is
the quantiser's, and the grid is the same on every platform. The cost is a factor-of-two
granularity. The candidates are s = 1 (first, so the search is never worse than no
smoothing) and s(beta) for beta in MIGRATION_GRID = {0, 0.05, ..., 1}.

Decision (2026-11-28): a clipping block is BLOCK_ROWS = 128 consecutive output channels
(whole rows), so that every channel keeps one static scale; alpha scales each channel's
range inside the block: [-alpha max|W[o]|, alpha max|W[o]|]. The paper writes
[alpha min(W_blk), alpha max(W_blk)], which is the same range for a symmetric quantiser.
CLIP_GRID = {1, 0.975, ..., 0.5}; alpha = 1 comes first. The objective follows the paper's
||Block(X; W) - Block(X; Q(W; alpha))|| with X unquantised.

Decision (2026-11-28): an all-zero activation row has no per-token scale (max|x| = 0).
``zero_rows="raise"`` (default) raises DomainError; ``"unit_scale"`` quantises it to 0 with
scale 1, which dequantises to exact zeros. CANN computes 127 / 0 and produces NaN.

Known deviations from the sources:
- §4.5 part 3 (outlier-suppressing "structural transformations") and the "error
  compensation" of part 5 are not specified by the paper (no form, calibration data, block
  size or grid is disclosed); they are not modelled. The grids above are ours.
- ``variant="cann"`` is QuantProcess's arithmetic: inv = fl32(127 / max|x|), Xq =
  RNE(fl32(x inv)), scale = fl32(1 / inv). It can differ from "ideal" by one step of Xq.
- ``dequant="fp32_chain"`` rounds acc to FP32, then the products by s_w and by s_x to FP32,
  before the output rounding, as a fixed-function dequant followed by a vector multiply does.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from attnspec.registry import Outcome, check, tool
from attnspec.spec.errors import ConventionError, DomainError, FormatError, ShapeError, require
from attnspec.spec.formats import Format, as_float64, get_format, is_representable, require_finite, \
    require_representable, round_exact, round_to, ulp
from attnspec.spec.mla import DEEPSEEK_V3, MLAConfig, MLAWeights, rope_rotate, validate_tokens, gemm, kernel_inputs, \
    mla_latents, rms_norm
from attnspec.spec.policy import PrecisionPolicy, matmul_rounded

QMIN, QMAX = -127, 127
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
#: The largest K for which K products of values in [-127, 127] cannot overflow INT32: 133,144
#: (proved for every prefix sum in ``proofs/int8_accumulation.py``).
INT32_SAFE_K = INT32_MAX // QMAX**2
SCALE_FORMAT = Format.FP32
MIGRATION_GRID = tuple(i / 20 for i in range(21))
CLIP_GRID = tuple(1 - i / 40 for i in range(21))
BLOCK_ROWS = 128
_U32 = Format.FP32.info.unit_roundoff

Variant = Literal["ideal", "cann"]
Dequant = Literal["exact", "fp32_chain"]


# ----------------------------------------------------------------------------------------------
# The quantiser Q
# ----------------------------------------------------------------------------------------------

def round_half_even(v: np.ndarray) -> np.ndarray:
    """Return v rounded to the nearest integer, ties to even (QuantProcess ``CAST_RINT``)."""
    return np.rint(v)


def saturate(r: np.ndarray) -> np.ndarray:
    """Return r clipped to the symmetric INT8 range [QMIN, QMAX] = [-127, 127]."""
    return np.clip(r, QMIN, QMAX)


def absmax_rows(v: np.ndarray) -> np.ndarray:
    """Return max_k |v[..., k]|: the range a per-row (per-token, per-channel) scale covers."""
    return np.max(np.abs(v), axis=-1)


def require_scales(scale, name: str, length: int) -> np.ndarray:
    """Return ``scale`` as float64 after checking it is (length,) FP32 values that are finite and > 0."""
    s = as_float64(scale, name)
    require(s.shape == (length,), ShapeError, f"{name}: expected shape ({length},), got {s.shape}")
    require_finite(s, name)
    if np.any(s <= 0):
        idx = int(np.argmax(s <= 0))
        raise DomainError(f"{name}: expected scales > 0, got {s[idx]!r} at index {idx} (a zero scale divides by zero)")
    return require_representable(s, SCALE_FORMAT, name)


def quantize_rows(v: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Return Q(v / scale) = clip(RNE(v / scale), -127, 127) as int8, one scale per row of v (T, K).

    Domain: v with at most 24 significant bits (FP32 values, or FP32 values times powers of
    two), scale (T,) finite positive FP32 values; on it the rounding is exact (module lemma).
    """
    s = require_scales(scale, "scale", v.shape[0])
    return saturate(round_half_even(v / s[:, None])).astype(np.int8)  # RNE exact: module lemma


INPUT_FORMATS = (Format.BF16, Format.FP16, Format.FP32)


def _matrix(x, name: str, fmt: Format) -> np.ndarray:
    """Return x as a finite float64 (rows, K) array of values of ``fmt`` (BF16, FP16 or FP32: the RNE lemma)."""
    fmt = get_format(fmt)
    require(fmt in INPUT_FORMATS, FormatError, f"{name}: expected a format of at most 24 bits "
                                               f"(BF16, FP16 or FP32), got {fmt}")
    a = as_float64(x, name)
    require(a.ndim == 2 and a.shape[0] >= 1 and a.shape[1] >= 1, ShapeError,
            f"{name}: expected a 2-D (rows >= 1, K >= 1) array, got {a.shape}")
    require_finite(a, name)
    return require_representable(a, fmt, name)


@dataclass(frozen=True)
class QuantizedActivation:
    """Per-token INT8 activations: q (T, K) int8 and scale (T,) FP32 values, x ~ scale[:, None] * q."""

    q: np.ndarray
    scale: np.ndarray

    def dequantize(self) -> np.ndarray:
        """Return scale[t] * q[t, k] (exact in binary64: 24 + 8 bits)."""
        return self.scale[:, None] * self.q


def quantize_per_token(x, *, x_format: Format = Format.FP32, variant: Variant = "ideal",
                       zero_rows: Literal["raise", "unit_scale"] = "raise") -> QuantizedActivation:
    """Return the per-token dynamic INT8 quantisation of x (T, K) (§4.5 part 4, quantMode 2)."""
    require(variant in ("ideal", "cann"), ConventionError, f"variant: expected 'ideal' or 'cann', got {variant!r}")
    require(zero_rows in ("raise", "unit_scale"), ConventionError,
            f"zero_rows: expected 'raise' or 'unit_scale', got {zero_rows!r}")
    x = _matrix(x, "x", x_format)  # (T, K)
    amax = absmax_rows(x)  # (T,)
    zero = amax == 0
    if zero_rows == "raise" and np.any(zero):
        raise DomainError(f"x: row {int(np.argmax(zero))} is all zero, so its per-token scale max|x|/127 would be 0; "
                          "pass zero_rows='unit_scale' to quantise it to 0 with scale 1")
    amax = np.where(zero, 1.0, amax)
    with np.errstate(under="ignore"):
        if variant == "ideal":
            scale = round_to(amax / QMAX, SCALE_FORMAT)  # innocuous double rounding: p <= 24 operands
            require(np.all(scale > 0), DomainError,
                    f"x: max|x|/127 underflows FP32 to 0 in row {int(np.argmin(scale))}; the row has no INT8 scale")
            q = quantize_rows(x, scale)
        else:
            inv = round_to(QMAX / amax, SCALE_FORMAT)  # [variant: cann] dynamicScale = 127 / rowMax
            require(np.all(np.isfinite(inv)), DomainError,
                    f"x: 127/max|x| overflows FP32 in row {int(np.argmax(~np.isfinite(inv)))}")
            product = round_to(x * inv[:, None], Format.FP32)  # [variant: cann] Muls in FP32
            q = saturate(round_half_even(product)).astype(np.int8)  # [variant: cann] Cast CAST_RINT
            scale = round_to(1.0 / inv, SCALE_FORMAT)  # [variant: cann] SetValue(1.0 / dynamicScale)
    return QuantizedActivation(q=np.where(zero[:, None], 0, q).astype(np.int8), scale=np.where(zero, 1.0, scale))


# ----------------------------------------------------------------------------------------------
# Static per-channel weights
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantizedWeight:
    """A static INT8 weight in torch's Linear layout: W'[o, k] ~ scale[o] * q[o, k], W' = W / smooth.

    ``smooth`` (K,) multiplies the activations at runtime (CANN's smooth scales); powers of
    two only, so the migration is exact. ``alpha`` (O,) is each channel's clipping factor.
    """

    q: np.ndarray  # (O, K) int8
    scale: np.ndarray  # (O,) FP32 values
    smooth: np.ndarray  # (K,) powers of two
    alpha: np.ndarray  # (O,)

    def __post_init__(self) -> None:
        q = np.asarray(self.q)
        require(q.dtype == np.int8 and q.ndim == 2, FormatError,
                f"q: expected a 2-D int8 array, got {q.dtype} {q.shape}")
        require(np.all((q >= QMIN) & (q <= QMAX)), DomainError,
                f"q: expected values in [{QMIN}, {QMAX}], got {int(q.min())}..{int(q.max())}")
        require_scales(self.scale, "scale", q.shape[0])
        require_powers_of_two(self.smooth, "smooth", q.shape[1])
        a = as_float64(self.alpha, "alpha")
        require(a.shape == (q.shape[0],) and np.all((a > 0) & (a <= 1)), DomainError,
                f"alpha: expected ({q.shape[0]},) clipping factors in (0, 1], got {a}")

    def dequantize(self) -> np.ndarray:
        """Return scale[o] * q[o, k]: the weight the INT8 GEMM multiplies by (exact in binary64)."""
        return self.scale[:, None] * self.q


def require_powers_of_two(m, name: str, length: int) -> np.ndarray:
    """Return ``m`` as float64 after checking it is (length,) positive powers of two."""
    a = as_float64(m, name)
    require(a.shape == (length,), ShapeError, f"{name}: expected shape ({length},), got {a.shape}")
    require_finite(a, name)
    require(np.all((a > 0) & (np.frexp(a)[0] == 0.5)), DomainError,
            f"{name}: expected positive powers of two (so that smoothing is exact), got {a[np.frexp(a)[0] != 0.5][:3]}")
    return a


def quantize_weight(w, *, alpha=1.0, smooth=None) -> QuantizedWeight:
    """Return W (O, K) quantised per output channel: s_w[o] = fl32(alpha max|W'[o]| / 127), W' = W / smooth."""
    w = _matrix(w, "w", Format.FP32)  # (O, K)
    o, k = w.shape
    m = np.ones(k) if smooth is None else require_powers_of_two(smooth, "smooth", k)
    a = np.broadcast_to(as_float64(alpha, "alpha"), (o,)).astype(np.float64)
    w_smoothed = w / m  # exact: m is a power of two (W s, s = 1/m)
    require_finite(w_smoothed, "w / smooth")
    amax = absmax_rows(w_smoothed)  # (O,)
    require(np.all(amax > 0), DomainError,
            f"w: row {int(np.argmin(amax))} is all zero, so its per-channel scale would be 0")
    scale = round_to(a * amax / QMAX, SCALE_FORMAT)  # alpha < 1 clips: the quantiser saturates
    require(np.all(scale > 0), DomainError, f"w: row {int(np.argmin(scale))}: alpha max|w|/127 underflows FP32 to 0")
    return QuantizedWeight(q=quantize_rows(w_smoothed, scale), scale=scale, smooth=m, alpha=a)


# ----------------------------------------------------------------------------------------------
# INT32 accumulation and dequantisation
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Int32Accumulation:
    """acc (T, O): what an INT32 accumulator holds (two's complement); exact (T, O); overflow (T, O) bool."""

    acc: np.ndarray
    exact: np.ndarray
    overflow: np.ndarray


def int32_accumulate(xq: np.ndarray, wq: np.ndarray, *,
                     on_overflow: Literal["raise", "wrap"] = "raise") -> Int32Accumulation:
    """Return sum_k xq[t, k] wq[o, k] as an INT32 accumulator computes it, with overflow detected."""
    require(on_overflow in ("raise", "wrap"), ConventionError,
            f"on_overflow: expected 'raise' or 'wrap', got {on_overflow!r}")
    require(xq.ndim == 2 and wq.ndim == 2 and xq.shape[1] == wq.shape[1], ShapeError,
            f"xq, wq: expected (T, K) and (O, K), got {xq.shape} and {wq.shape}")
    # Exact in binary64 whatever the BLAS order: every partial sum is an integer below K 127^2 < 2^53.
    exact = (xq.astype(np.float64) @ wq.astype(np.float64).T).astype(np.int64)  # (T, O)
    overflow = (exact < INT32_MIN) | (exact > INT32_MAX)
    if on_overflow == "raise" and np.any(overflow):
        idx = tuple(int(i) for i in np.argwhere(overflow)[0])
        raise DomainError(f"acc: element {idx} = {int(exact[idx])} overflows INT32 (K = {xq.shape[1]} > "
                          f"INT32_SAFE_K = {INT32_SAFE_K}); pass on_overflow='wrap' for the wrapped value")
    wrapped = (exact - INT32_MIN) % 2**32 + INT32_MIN  # two's complement
    return Int32Accumulation(acc=wrapped, exact=exact, overflow=overflow)


def dequantize(acc: np.ndarray, s_x: np.ndarray, s_w: np.ndarray, *, out_format: Format = Format.BF16,
               dequant: Dequant = "exact") -> np.ndarray:
    """Return Y[t, o] = s_x[t] s_w[o] acc[t, o] in ``out_format`` (§4.5 part 4)."""
    require(dequant in ("exact", "fp32_chain"), ConventionError,
            f"dequant: expected 'exact' or 'fp32_chain', got {dequant!r}")
    t, o = acc.shape
    s_x = require_scales(s_x, "s_x", t)
    s_w = require_scales(s_w, "s_w", o)
    a = acc.astype(np.float64)  # exact: |acc| < 2^53
    if dequant == "exact":
        p = s_x[:, None] * s_w[None, :]  # (T, O), exact: two FP32 significands fit in binary64
        # One certified rounding of the exact product p * acc (a one-term dot product).
        return matmul_rounded(p[..., None, None], a[..., None, None], _output_format(out_format))[..., 0, 0]
    f = round_to(a, Format.FP32)  # [variant: fp32_chain] INT32 -> FP32
    g = round_to(f * s_w[None, :], Format.FP32)  # [variant: fp32_chain] per-channel dequant scale
    h = round_to(g * s_x[:, None], Format.FP32)  # [variant: fp32_chain] per-token scale
    return round_to(h, out_format)


def _output_format(fmt: Format) -> Format:
    """Return the output format, refusing FP8 (the GEMM writes BF16, FP16, FP32 or FP64)."""
    require(fmt in (Format.BF16, Format.FP16, Format.FP32, Format.FP64), FormatError,
            f"out_format: expected BF16, FP16, FP32 or FP64, got {fmt}")
    return fmt


@dataclass(frozen=True)
class Int8LinearResult:
    """Y (T, O) in out_format, and everything that produced it (for bounds and reports)."""

    y: np.ndarray
    x_smoothed: np.ndarray  # x * smooth, (T, K)
    activation: QuantizedActivation
    accumulation: Int32Accumulation
    variant: Variant
    dequant: Dequant
    out_format: Format


def int8_linear(x, weight: QuantizedWeight, *, x_format: Format = Format.BF16, out_format: Format = Format.BF16,
                variant: Variant = "ideal", dequant: Dequant = "exact",
                on_overflow: Literal["raise", "wrap"] = "raise",
                zero_rows: Literal["raise", "unit_scale"] = "raise") -> Int8LinearResult:
    """Return the W8A8 GEMM Y = x W^T of activations x (T, K) (values of ``x_format``) and an INT8 weight."""
    x = _matrix(x, "x", x_format)  # (T, K)
    require(x.shape[1] == weight.q.shape[1], ShapeError,
            f"x: expected K = {weight.q.shape[1]} columns (the weight's in_features), got {x.shape[1]}")
    x_smoothed = x * weight.smooth  # CANN QuantProcess: Mul by smooth scales in FP32
    require(bool(np.all(is_representable(x_smoothed, Format.FP32))), DomainError,
            "x * smooth: expected exact FP32 values; scaling by the smoothing powers of two under- or overflows")
    activation = quantize_per_token(x_smoothed, variant=variant, zero_rows=zero_rows)  # early quantisation
    accumulation = int32_accumulate(activation.q, weight.q, on_overflow=on_overflow)
    y = dequantize(accumulation.acc, activation.scale, weight.scale, out_format=out_format, dequant=dequant)
    return Int8LinearResult(y, x_smoothed, activation, accumulation, variant, dequant, out_format)


# ----------------------------------------------------------------------------------------------
# The derived error bound, and the exact oracle it is checked against
# ----------------------------------------------------------------------------------------------

def activation_error_bound(x_smoothed: np.ndarray, scale: np.ndarray, variant: Variant) -> np.ndarray:
    """Return E_x (T, K) >= |x' - s_x q| for the per-token quantisation of x'.

    ideal: |x'/s_x| <= 127 (1 + u32) < 127.5, so Q never saturates and |x' - s_x q| <= s_x / 2.
    cann:  v = x' inv (1 + d2), s_x = (1 + d3) / inv, so s_x q - x' = s_x (q - v) + x' ((1+d2)(1+d3) - 1):
           |.| <= s_x / 2 + |x'| (2 u32 + u32^2); |v| <= 127 (1 + u32)^2 < 127.5 (no saturation).
    """
    half = np.broadcast_to(scale[:, None] / 2, x_smoothed.shape)
    if variant == "cann":
        return half + np.abs(x_smoothed) * (2 * _U32 + _U32**2)
    return half


def weight_error_bound(w_smoothed: np.ndarray, weight: QuantizedWeight) -> np.ndarray:
    """Return E_w (O, K) >= |W' - s_w q|: s_w/2 inside the range, |W'| - 127 s_w where Q saturates."""
    s = weight.scale[:, None]
    return np.maximum(s / 2, np.abs(w_smoothed) - QMAX * s)


def int8_linear_error_bound(w, weight: QuantizedWeight, result: Int8LinearResult) -> np.ndarray:
    """Return B (T, O) with |Y - x W^T| <= B for the exact real x W^T (no INT32 overflow).

    Derivation. Smoothing is exact (x' W'^T = x W^T). With x^ = s_x q_x and W^ = s_w q_w,
    x' W' - x^ W^ = x' (W' - W^) + W^ (x' - x^), so the exact dequantised value
    z = sum_k x^ W^ obeys |z - x W^T| <= sum_k |x'| E_w + |W^| E_x (the two functions above).
    Dequantisation adds |Y - z| <= ulp_out(Y) / 2 ("exact": one rounding; ulp of Y's binade
    covers a z just below a power of two), or for "fp32_chain" (three FP32 roundings,
    h = z (1 + theta), |theta| <= gamma_3): ulp_out(Y)/2 + gamma_3/(1 - gamma_3) (|Y| + ulp_out(Y)/2)
    + 2**-149 (1 + s_x) for FP32 underflow. The float64 evaluation of the non-negative sums
    is covered by the factor 1 + (K + 2) 2**-52. Worst case, without clipping:
    B <= 127 (1 + u32) K s_x s_w + output rounding, i.e. about 1/127 of K max|x| max|W|.
    """
    require(not np.any(result.accumulation.overflow), DomainError,
            "result: the bound holds only without INT32 overflow, and this accumulation wrapped")
    w = _matrix(w, "w", Format.FP32)
    w_smoothed = w / weight.smooth
    x_hat_err = activation_error_bound(result.x_smoothed, result.activation.scale, result.variant)  # (T, K)
    w_hat = weight.dequantize()  # (O, K)
    k = w.shape[1]
    body = (np.abs(result.x_smoothed) @ weight_error_bound(w_smoothed, weight).T
            + x_hat_err @ np.abs(w_hat).T) * (1 + (k + 2) * 2.0**-52)  # (T, O)
    y = result.y
    half_ulp = ulp(y, result.out_format) / 2
    if result.dequant == "exact":
        return body + half_ulp
    gamma3 = 3 * _U32 / (1 - 3 * _U32)
    chain = gamma3 / (1 - gamma3) * (np.abs(y) + half_ulp) + 2.0**-149 * (1 + result.activation.scale[:, None])
    return body + half_ulp + chain


def gemm_oracle(x, w) -> np.ndarray:
    """Return x W^T correctly rounded to binary64: exact products (FP32 operands), ``math.fsum`` sums.

    Simple, exact and slow on purpose: the oracle the INT8 GEMM's error bound is checked against.
    """
    x = _matrix(x, "x", Format.FP32)
    w = _matrix(w, "w", Format.FP32)
    require(x.shape[1] == w.shape[1], ShapeError, f"x, w: expected the same K, got {x.shape} and {w.shape}")
    out = np.empty((x.shape[0], w.shape[0]))
    for t in range(x.shape[0]):
        for o in range(w.shape[0]):
            out[t, o] = math.fsum((x[t] * w[o]).tolist())  # each product is exact: 24 + 24 bits
    return out


# ----------------------------------------------------------------------------------------------
# Offline calibration: smoothing search (§4.5 part 2) and block clipping (§4.5 part 5)
# ----------------------------------------------------------------------------------------------

def _floor_log2(v: np.ndarray) -> np.ndarray:
    """Return floor(log2 v) of positive finite v, exactly (from the binary exponent)."""
    return np.frexp(v)[1] - 1


def smoothing_candidates(x_calib: np.ndarray, w: np.ndarray, grid=MIGRATION_GRID) -> list[np.ndarray]:
    """Return the candidate factors s (K,): s = 1, then the power-of-two SmoothQuant s(beta) for beta in grid."""
    a = absmax_rows(x_calib.T)  # (K,) max_t |X[t, j]|
    b = absmax_rows(w.T)  # (K,) max_o |W[o, j]|
    active = (a > 0) & (b > 0)
    ea = np.where(active, _floor_log2(np.where(active, a, 1.0)), 0)
    eb = np.where(active, _floor_log2(np.where(active, b, 1.0)), 0)
    candidates = [np.ones_like(a)]
    for beta in grid:
        num, den = _grid_fraction(beta)
        exponent = (num * ea - (den - num) * eb) // den  # floor(beta ea - (1 - beta) eb), exact
        candidates.append(np.where(active, np.ldexp(1.0, exponent), 1.0))
    return candidates


def _grid_fraction(beta: float) -> tuple[int, int]:
    """Return (numerator, denominator) of a grid value beta in [0, 1] (denominator <= 1000)."""
    require(0 <= beta <= 1, DomainError, f"beta: expected a migration strength in [0, 1], got {beta!r}")
    f = Fraction(beta).limit_denominator(1000)
    return f.numerator, f.denominator


def best_index(errors) -> int:
    """Return the index of the smallest error, the first one on ties (the grids list the no-op first)."""
    return int(np.argmin(errors))


@dataclass(frozen=True)
class SmoothingSearch:
    """The chosen smoothing (K,) powers of two multiplying x, its candidate index, and every candidate's error."""

    smooth: np.ndarray
    index: int
    errors: tuple[float, ...]


def search_smoothing(x_calib, w, *, grid=MIGRATION_GRID, x_format: Format = Format.BF16) -> SmoothingSearch:
    """Return s* = argmin_s ||Q(W s)(s^-1 X) - W X||_F over ``smoothing_candidates`` (first on ties).

    A candidate whose scaling of X or W leaves the formats (under- or overflow) gets error inf.
    ``W X`` is binary64 ``x @ w.T``; its rounding (< 2**-40 relative) only matters for exact ties.
    """
    x = _matrix(x_calib, "x_calib", x_format)
    w = _matrix(w, "w", Format.FP32)
    require(x.shape[1] == w.shape[1], ShapeError, f"x_calib, w: expected the same K, got {x.shape} and {w.shape}")
    reference = x @ w.T  # (T, O)
    candidates = smoothing_candidates(x, w, grid)
    errors = []
    for s in candidates:
        m = 1.0 / s  # exact: a power of two
        if not (np.all(is_representable(x * m, Format.FP32)) and np.all(is_representable(w * s, Format.FP32))):
            errors.append(math.inf)
            continue
        y = int8_linear(x, quantize_weight(w, smooth=m), x_format=x_format, out_format=Format.FP64,
                        zero_rows="unit_scale").y
        errors.append(float(np.linalg.norm(y - reference)))
    index = best_index(errors)
    return SmoothingSearch(smooth=1.0 / candidates[index], index=index, errors=tuple(errors))


@dataclass(frozen=True)
class ClippingSearch:
    """alpha (O,) per channel; per block, the chosen grid index and every alpha's error."""

    alpha: np.ndarray
    indices: tuple[int, ...]
    errors: tuple[tuple[float, ...], ...]


def search_clipping(x_calib, w, *, smooth=None, block_rows: int = BLOCK_ROWS, grid=CLIP_GRID,
                    x_format: Format = Format.BF16) -> ClippingSearch:
    """Return alpha* per block of ``block_rows`` output channels: argmin ||X' W'_b^T - X' Q(W'_b; alpha)^T||_F."""
    x = _matrix(x_calib, "x_calib", x_format)
    w = _matrix(w, "w", Format.FP32)
    require(isinstance(block_rows, int) and block_rows >= 1, ShapeError,
            f"block_rows: expected a positive int, got {block_rows!r}")
    require(len(grid) >= 1 and all(0 < a <= 1 for a in grid), DomainError,
            f"grid: expected clipping factors in (0, 1], got {grid}")
    m = np.ones(w.shape[1]) if smooth is None else require_powers_of_two(smooth, "smooth", w.shape[1])
    x_smoothed = x * m
    alpha = np.ones(w.shape[0])
    indices, errors = [], []
    for start in range(0, w.shape[0], block_rows):
        block = w[start:start + block_rows]  # (rows, K)
        block_errors = []
        for a in grid:
            weight = quantize_weight(block, alpha=a, smooth=m)
            diff = block / m - weight.dequantize()  # W'_b - Q(W'_b; alpha), exact per element
            block_errors.append(float(np.linalg.norm(x_smoothed @ diff.T)))
        index = best_index(block_errors)
        alpha[start:start + block_rows] = grid[index]
        indices.append(index)
        errors.append(tuple(block_errors))
    return ClippingSearch(alpha=alpha, indices=tuple(indices), errors=tuple(errors))


def calibrate_weight(x_calib, w, *, migration_grid=MIGRATION_GRID, clip_grid=CLIP_GRID,
                     block_rows: int = BLOCK_ROWS, x_format: Format = Format.BF16) -> QuantizedWeight:
    """Return W's offline INT8 form: the smoothing search, then block clipping, then per-channel quantisation."""
    smoothing = search_smoothing(x_calib, w, grid=migration_grid, x_format=x_format)
    clipping = search_clipping(x_calib, w, smooth=smoothing.smooth, block_rows=block_rows, grid=clip_grid,
                               x_format=x_format)
    return quantize_weight(w, alpha=clipping.alpha, smooth=smoothing.smooth)


# ----------------------------------------------------------------------------------------------
# The INT8 path of MLAProlog (§4.2.2; ops-transformer@c29bc10 attention/mla_prolog/README.md)
# ----------------------------------------------------------------------------------------------

#: MLAProlog's BF16 arithmetic: BF16 GEMM operands and outputs, FP32 accumulation and vector work (RoPE).
PROLOG_POLICY = PrecisionPolicy(Format.BF16, Format.FP32, Format.FP32, Format.BF16, name="mla_prolog")


@dataclass(frozen=True)
class PrologResult:
    """MLAProlog's outputs (query, query_rope, the kv_cache and kr_cache rows) and the q projection before RoPE."""

    query: np.ndarray  # (B, S, N, kv_lora_rank): W_UK^T q_nope, the absorbed query
    query_rope: np.ndarray  # (B, S, N, qk_rope_head_dim)
    c: np.ndarray  # (B, S, kv_lora_rank)
    k_pe: np.ndarray  # (B, S, qk_rope_head_dim)
    q: np.ndarray  # (B, S, N, qk_head_dim): c_q W_uq_qr^T, before RoPE
    q_proj: Int8LinearResult | None  # the INT8 GEMM, None on the BF16 path


def mla_prolog(x, weights: MLAWeights, config: MLAConfig = DEEPSEEK_V3, *, uq_qr: QuantizedWeight | None = None,
               positions=None, policy: PrecisionPolicy = PROLOG_POLICY, variant: Variant = "ideal",
               dequant: Dequant = "exact") -> PrologResult:
    """Return MLAProlog of tokens x (B, S, hidden): with ``uq_qr`` (INT8 weight_uq_qr) the query up-projection is
    the W8A8 GEMM with per-channel dequant scales; ``None`` gives the BF16 path. W_UK stays BF16 either way.

    ``uq_qr`` quantises ``weights.wq_b`` (torch layout (N (D + Dr), Hcq); CANN stores its transpose).
    """
    require(config.q_lora_rank > 0, ShapeError, "config: expected q_lora_rank > 0 (MLAProlog has weight_dq)")
    x, pos = validate_tokens(x, config, positions)  # (B, S, hidden), (B, S)
    b, s, _ = x.shape
    c_q = rms_norm(gemm(x, weights.wq_a.T, policy), weights.q_norm, config.norm_eps, policy)  # RmsNorm(x W_dq)
    if uq_qr is None:
        q_proj, q = None, gemm(c_q, weights.wq_b.T, policy)  # [variant: bf16] weight_uq_qr BF16
    else:
        q_proj = int8_linear(c_q.reshape(b * s, -1), uq_qr, x_format=policy.matmul_input,  # (B S, Hcq)
                             out_format=policy.matmul_input, variant=variant, dequant=dequant)
        q = q_proj.y  # weight_uq_qr INT8, dequant scale (1, N (D + Dr))
    q = q.reshape(b, s, config.n_heads, config.qk_head_dim)  # (B, S, N, D + Dr)
    q_nope, q_pe = q[..., :config.qk_nope_head_dim], q[..., config.qk_nope_head_dim:]
    c, k_pe = mla_latents(x, weights, config, positions=pos, policy=policy)  # kv_cache / kr_cache rows
    absorbed, _ = kernel_inputs(q_nope, rope_rotate(q_pe, pos, config, policy), c, k_pe, weights, config,
                                policy=policy)  # (B, S, N, r + Dr): W_UK^T q_nope in BF16
    r = config.kv_lora_rank
    return PrologResult(absorbed[..., :r], absorbed[..., r:], c, k_pe, q, q_proj)


def prolog_deviation_bound(int8_path: PrologResult, bf16_path: PrologResult, weights: MLAWeights,
                           uq_qr: QuantizedWeight, config: MLAConfig = DEEPSEEK_V3) -> tuple[np.ndarray, np.ndarray]:
    """Return bounds (query, query_rope) on |INT8 path - BF16 path| of MLAProlog under PROLOG_POLICY.

    Derivation (z = c_q W_uq_qr^T exactly; both paths share c_q bit for bit). The INT8 q obeys
    |q8 - z| <= B (:func:`int8_linear_error_bound`); the BF16 q = bf16(fl32(z)) obeys
    |q16 - z| <= e(q16), e(v) = ulp_bf16(v)/2 + 2^-24 (|v| + ulp_bf16(v)/2). So the inputs of
    the next steps differ by D <= B + e(q16). A BF16 GEMM out = bf16(fl32(sum_d a_d W_d)) of two
    inputs differs by at most sum_d |W_d| D_d + e(out_a) + e(out_b) (the absorption, W = W_UK).
    RoPE y0 = bf16(fl32(fl32(a0 c) - fl32(a1 s))), |c|, |s| <= 1: |y(a) - y(b)| <=
    D_0 + D_1 + gamma_2 (|a0| + |a1| + |b0| + |b1|) + ulp_bf16(y_a)/2 + ulp_bf16(y_b)/2, and the
    same for y1. The float64 evaluation of the non-negative sums is covered by 1 + 2^-40.
    """
    require(int8_path.q_proj is not None, ConventionError, "int8_path: expected mla_prolog's INT8 path (uq_qr given)")
    bf16 = Format.BF16
    u32 = _U32

    def e(v: np.ndarray) -> np.ndarray:
        half = ulp(v, bf16) / 2
        return half + u32 * (np.abs(v) + half)

    b, s = int8_path.q.shape[:2]
    w = weights.wq_b
    gemm_bound = int8_linear_error_bound(w, uq_qr, int8_path.q_proj).reshape(int8_path.q.shape)
    d = gemm_bound + e(bf16_path.q)  # (B, S, N, D + Dr)
    d_nope, d_pe = d[..., :config.qk_nope_head_dim], d[..., config.qk_nope_head_dim:]
    w_uk = np.abs(weights.w_uk(config))  # (N, D, r)
    spread = np.einsum("bshd,hdc->bshc", d_nope, w_uk)  # (B, S, N, r)
    query = (spread + e(int8_path.query) + e(bf16_path.query)) * (1 + 2.0**-40)
    gamma2 = 2 * u32 / (1 - 2 * u32)
    a, c_ = int8_path.q[..., config.qk_nope_head_dim:], bf16_path.q[..., config.qk_nope_head_dim:]
    pairs = d_pe[..., 0::2] + d_pe[..., 1::2] + gamma2 * (np.abs(a[..., 0::2]) + np.abs(a[..., 1::2])
                                                           + np.abs(c_[..., 0::2]) + np.abs(c_[..., 1::2]))
    rope = np.repeat(pairs, 2, axis=-1) + ulp(int8_path.query_rope, bf16) / 2 + ulp(bf16_path.query_rope, bf16) / 2
    return query, rope * (1 + 2.0**-40)


# ----------------------------------------------------------------------------------------------
# attnspec verify checks
# ----------------------------------------------------------------------------------------------

def outlier_problem(seed: int, tokens: int = 8, k: int = 64, out: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Return seeded BF16 (x (T, K), W (O, K)): outlier activation channels 0-2, large weights in quiet channel 3."""
    channels = " (outlier channels 0-2 and the quiet channel 3)"
    for name, value, least, why in (("tokens", tokens, 1, ""), ("k", k, 4, channels), ("out", out, 1, "")):
        require(isinstance(value, int) and not isinstance(value, bool) and value >= least, ShapeError,
                f"{name}: expected an int >= {least}{why}, got {value!r}")
    require(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, DomainError,
            f"seed: expected an int >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, k))
    x[:, :3] *= (40.0, 25.0, 10.0)  # SmoothQuant's systematic outlier channels
    x[:, 3] /= 64  # a quiet channel ...
    w = rng.standard_normal((out, k)) / 8
    w[:, 3] = 2.0  # ... whose large weights set every row's range: clipping them is cheap
    return round_to(x, Format.BF16), round_to(w, Format.BF16)


@check("int8.gemm_error_bound", "oracle")
def check_gemm_error_bound() -> Outcome:
    """The W8A8 GEMM is within the derived bound of the exact x W^T, for every variant, clipped and smoothed."""
    x, w = outlier_problem(0)
    oracle = gemm_oracle(x, w)
    smooth = np.ldexp(1.0, -np.random.default_rng(1).integers(0, 4, w.shape[1]))
    worst = 0.0
    for weight in (quantize_weight(w), quantize_weight(w, alpha=0.8, smooth=smooth)):
        for variant in ("ideal", "cann"):
            for dequant in ("exact", "fp32_chain"):
                result = int8_linear(x, weight, variant=variant, dequant=dequant)
                bound = int8_linear_error_bound(w, weight, result) + ulp(oracle, Format.FP64) / 2
                worst = max(worst, float(np.max(np.abs(result.y - oracle) / bound)))
    return Outcome.from_bool(worst <= 1, f"max |Y - x W^T| / bound = {worst:.3f} over 8 configurations",
                             {"max_ratio": worst})


@check("int8.on_grid_exact", "property")
def check_on_grid_exact() -> Outcome:
    """Inputs on the quantisation grid dequantise exactly, and the GEMM is then the correctly rounded x W^T."""
    rng = np.random.default_rng(2)
    s_x = round_to(rng.uniform(0.01, 1, 4), Format.BF16)
    s_w = round_to(rng.uniform(0.01, 1, 5), Format.BF16)
    n = rng.integers(-127, 128, (4, 32))
    n[:, 0] = 127  # the grid's scale is recovered from the row maximum
    m = rng.integers(-127, 128, (5, 32))
    m[:, 0] = -127
    x, w = s_x[:, None] * n, s_w[:, None] * m  # exact: 8 + 7 bits
    weight = quantize_weight(w)
    result = int8_linear(x, weight, x_format=Format.FP32, out_format=Format.BF16)
    exact = [[round_exact(Fraction(float(s_x[t])) * Fraction(float(s_w[o])) * int(n[t] @ m[o]), Format.BF16)
              for o in range(5)] for t in range(4)]
    ok = (np.array_equal(result.activation.dequantize(), x) and np.array_equal(weight.dequantize(), w)
          and np.array_equal(result.y, np.array(exact)))
    return Outcome.from_bool(ok, "dequantised x and W equal the inputs; Y equals the correctly rounded x W^T"
                             if ok else "an on-grid input did not dequantise exactly")


@check("int8.bad_scales_raise", "rule")
def check_bad_scales_raise() -> Outcome:
    """Zero, negative, NaN and Inf scales, NaN/Inf inputs and all-zero rows raise DomainError naming the argument."""
    q = np.ones((1, 2), dtype=np.int8)
    cases = {f"scale={v}": (lambda v=v: QuantizedWeight(q, np.array([v]), np.ones(2), np.ones(1)))
             for v in (0.0, -1.0, math.nan, math.inf)}
    cases.update({f"s_x={v}": (lambda v=v: dequantize(np.ones((1, 1), np.int64), np.array([v]), np.ones(1)))
                  for v in (0.0, math.nan, math.inf)})
    cases.update({f"x has {v}": (lambda v=v: quantize_per_token(np.array([[1.0, v]]))) for v in (math.nan, math.inf)})
    cases["zero row"] = lambda: quantize_per_token(np.zeros((1, 4)))
    failures = []
    for name, call in cases.items():
        try:
            call()
            failures.append(f"{name}: no error")
        except DomainError:
            pass
    return Outcome.from_bool(not failures, f"{len(cases)} bad inputs raise DomainError" if not failures
                             else "; ".join(failures))


@check("int8.calibration_never_worse", "property")
def check_calibration_never_worse() -> Outcome:
    """The smoothing and clipping searches pick their grid's minimum, never worse than no smoothing / alpha = 1."""
    x, w = outlier_problem(3)
    smoothing = search_smoothing(x, w)
    clip_alone = search_clipping(x, w, block_rows=4)
    clip_after = search_clipping(x, w, smooth=smoothing.smooth, block_rows=4)
    ok = smoothing.errors[smoothing.index] == min(smoothing.errors) <= smoothing.errors[0]
    for clipping in (clip_alone, clip_after):
        ok = ok and all(e[i] == min(e) <= e[0] for i, e in zip(clipping.indices, clipping.errors))
    gain = max(e[0] / min(e) for e in clip_alone.errors)
    return Outcome.from_bool(ok, f"smoothing: error {smoothing.errors[0]:.4g} -> {min(smoothing.errors):.4g}; "
                                 f"clipping alone: alphas {sorted(set(clip_alone.alpha.tolist()))} (up to {gain:.2f}x "
                                 f"smaller error); after smoothing: {sorted(set(clip_after.alpha.tolist()))}")


#: A scaled-down MLA (DeepSeek-V3's structure: compressed query, decoupled RoPE, YaRN on) for quick checks.
SMALL_MLA = MLAConfig(hidden=64, n_heads=4, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
                      v_head_dim=8, original_seq_len=32, max_seq_len=64)


@check("int8.mla_prolog_int8", "property")
def check_mla_prolog_int8() -> Outcome:
    """MLAProlog with INT8 weight_uq_qr stays within the derived bound of the BF16 path; the KV rows are unchanged."""
    weights = MLAWeights.random(SMALL_MLA, 0, fmt=Format.BF16)
    x = round_to(np.random.default_rng(1).standard_normal((2, 3, SMALL_MLA.hidden)), Format.BF16)
    uq_qr = quantize_weight(weights.wq_b)
    int8_path = mla_prolog(x, weights, SMALL_MLA, uq_qr=uq_qr)
    bf16_path = mla_prolog(x, weights, SMALL_MLA)
    query_bound, rope_bound = prolog_deviation_bound(int8_path, bf16_path, weights, uq_qr, SMALL_MLA)
    ratio = max(float(np.max(np.abs(int8_path.query - bf16_path.query) / query_bound)),
                float(np.max(np.abs(int8_path.query_rope - bf16_path.query_rope) / rope_bound)))
    same_kv = np.array_equal(int8_path.c, bf16_path.c) and np.array_equal(int8_path.k_pe, bf16_path.k_pe)
    return Outcome.from_bool(ratio <= 1 and same_kv, f"max |INT8 - BF16| / bound = {ratio:.3f}; KV rows identical: "
                                                     f"{same_kv}", {"max_ratio": ratio})


@tool("report", "int8", "W8A8 GEMM error against the exact product: plain, smoothed, smoothed and clipped")
def int8_report(argv: list[str]) -> int:
    """Print, for a seeded outlier problem, each quantisation's relative error and its largest error/bound ratio."""
    parser = argparse.ArgumentParser(prog="attnspec report int8")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--k", type=int, default=256, help="the reduction length (in_features)")
    parser.add_argument("--out", type=int, default=32, help="out_features")
    parser.add_argument("--block-rows", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    x, w = outlier_problem(args.seed, args.tokens, args.k, args.out)
    oracle = gemm_oracle(x, w)
    smoothing = search_smoothing(x, w)
    clipping = search_clipping(x, w, smooth=smoothing.smooth, block_rows=args.block_rows)
    weights = {"plain": quantize_weight(w), "clipped": quantize_weight(w, alpha=search_clipping(
        x, w, block_rows=args.block_rows).alpha), "smoothed": quantize_weight(w, smooth=smoothing.smooth),
        "smoothed+clipped": quantize_weight(w, alpha=clipping.alpha, smooth=smoothing.smooth)}
    rows = []
    for name, weight in weights.items():
        result = int8_linear(x, weight, out_format=Format.FP64)
        bound = int8_linear_error_bound(w, weight, result) + ulp(oracle, Format.FP64) / 2
        relative = float(np.linalg.norm(result.y - oracle) / np.linalg.norm(oracle))
        rows.append({"weight": name, "relative_error": relative,
                     "max_error_over_bound": float(np.max(np.abs(result.y - oracle) / bound))})
    if args.json:
        print(json.dumps({"problem": vars(args), "int32_safe_k": INT32_SAFE_K, "rows": rows}, indent=1))
        return 0
    print(f"x ({args.tokens}, {args.k}) with outlier channels, W ({args.out}, {args.k}); INT32 safe for K <= "
          f"{INT32_SAFE_K}; Y in FP64 against the exact x W^T")
    print("| weight | ||Y - xW^T|| / ||xW^T|| | max |Y - xW^T| / bound |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['weight']} | {row['relative_error']:.3e} | {row['max_error_over_bound']:.3f} |")
    return 0
