"""Binary floating-point formats, correctly rounded conversion, and bit views.

Normative source: IEEE 754-2019 §3 (binary formats, parameters p, emin, emax) and §4.3.1
(roundTiesToEven); the OCP 8-bit floating point specification v1.0 (E4M3 / E5M2).

Representation convention used throughout ``spec/``: a value "in format F" is carried as a
``float64`` array whose every element is exactly representable in F. Every format used here
is a subset of binary64, so this loses nothing, and it lets the arithmetic of every emulated
algorithm read the same way: compute one operation in float64, then :func:`round_to` the
target format. For +, -, * and / of two F-values this double evaluation is *innocuous*
(53 >= 2p + 2 for every p <= 24 used here), i.e. it equals the correctly rounded F operation.

Why not ``ml_dtypes`` for rounding: ``ml_dtypes`` converts float64 to bfloat16 and to the FP8
formats *through float32*, which double-rounds (1 + 2^-8 + 2^-40 becomes 1.0 in bfloat16
instead of 1 + 2^-7). :func:`round_to` rounds once, from the exact binary64 value.
``ml_dtypes`` is used only as the storage type behind the bit views, and as an independent
cross-check in the tests (from float32, where it rounds once).

Decision (2026-11-28): ``round_to`` overflow follows IEEE for formats with infinities
(|x| past the rounding threshold becomes +-inf). FP8 E4M3 (the "fn" variant: no
infinities, one NaN pattern per sign) maps overflow to NaN, as ``ml_dtypes`` and the OCP
non-saturating mode do; ``saturate=True`` clamps to +-max_finite instead.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import ml_dtypes
import numpy as np

from .errors import DomainError, FormatError, ShapeError, require

Ties = Literal["even", "away"]
TIES: tuple[str, ...] = ("even", "away")


@dataclass(frozen=True)
class FormatInfo:
    """Parameters of one binary format, in IEEE 754 terms."""

    name: str
    p: int  # precision in bits, including the implicit leading bit
    emin: int  # exponent of the smallest normal number, 2**emin
    emax: int  # exponent of the largest binade
    bits: int  # storage width
    has_inf: bool
    max_finite: float
    storage: np.dtype  # numpy / ml_dtypes storage type
    uint: np.dtype  # unsigned integer of the same width

    @property
    def bias(self) -> int:
        return 1 - self.emin

    @property
    def mantissa_bits(self) -> int:
        return self.p - 1

    @property
    def exponent_bits(self) -> int:
        return self.bits - self.p

    @property
    def unit_roundoff(self) -> float:
        """u = 2**-p: the relative error bound of one round-to-nearest operation."""
        return 2.0 ** -self.p

    @property
    def epsilon(self) -> float:
        """Machine epsilon 2**(1-p): the gap between 1 and the next larger number."""
        return 2.0 ** (1 - self.p)

    @property
    def min_normal(self) -> float:
        return 2.0 ** self.emin

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.p + 1)


class Format(enum.Enum):
    """The formats attnspec emulates. ``Format.BF16.info.p == 8`` and so on."""

    FP64 = FormatInfo("fp64", 53, -1022, 1023, 64, True, float(np.finfo(np.float64).max),
                      np.dtype(np.float64), np.dtype(np.uint64))
    FP32 = FormatInfo("fp32", 24, -126, 127, 32, True, float(np.finfo(np.float32).max),
                      np.dtype(np.float32), np.dtype(np.uint32))
    BF16 = FormatInfo("bf16", 8, -126, 127, 16, True, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max),
                      np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint16))
    FP16 = FormatInfo("fp16", 11, -14, 15, 16, True, 65504.0,
                      np.dtype(np.float16), np.dtype(np.uint16))
    FP8_E4M3 = FormatInfo("fp8_e4m3", 4, -6, 8, 8, False, 448.0,
                          np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(np.uint8))
    FP8_E5M2 = FormatInfo("fp8_e5m2", 3, -14, 15, 8, True, 57344.0,
                          np.dtype(ml_dtypes.float8_e5m2), np.dtype(np.uint8))

    @property
    def info(self) -> FormatInfo:
        return self.value

    def __str__(self) -> str:
        return self.value.name


_BY_NAME = {f.info.name: f for f in Format}
_BY_NAME.update({"float64": Format.FP64, "float32": Format.FP32, "bfloat16": Format.BF16,
                 "float16": Format.FP16, "half": Format.FP16, "e4m3": Format.FP8_E4M3,
                 "e5m2": Format.FP8_E5M2})
_BY_DTYPE = {f.info.storage: f for f in Format}


def get_format(fmt: "Format | str | np.dtype | type") -> Format:
    """Return the :class:`Format` named by ``fmt`` (a Format, a name such as 'bf16', or a dtype)."""
    if isinstance(fmt, Format):
        return fmt
    if isinstance(fmt, str):
        key = fmt.strip().lower()
        require(key in _BY_NAME, FormatError,
                f"format: expected one of {sorted(f.info.name for f in Format)}, got {fmt!r}")
        return _BY_NAME[key]
    require(fmt is not None, FormatError,  # np.dtype(None) would silently mean float64
            "format: expected a Format, a format name or a float dtype, got None")
    try:
        dtype = np.dtype(fmt)
    except TypeError:
        raise FormatError(f"format: expected a Format, a format name or a float dtype, got {fmt!r}") from None
    require(dtype in _BY_DTYPE, FormatError,
            f"format: dtype {dtype} is not one of the supported float formats "
            f"{sorted(f.info.name for f in Format)}")
    return _BY_DTYPE[dtype]


def format_of_dtype(dtype: np.dtype) -> Format | None:
    """Return the Format stored by ``dtype``, or None when it is not a supported float dtype."""
    return _BY_DTYPE.get(np.dtype(dtype))


def as_float64(x, name: str = "x") -> np.ndarray:
    """Return ``x`` as a float64 array; every supported float dtype converts exactly.

    Integer arrays are accepted when every element is exactly representable (|x| <= 2**53).
    """
    try:
        a = np.asarray(x)
    except ValueError as exc:  # a ragged nested list
        raise ShapeError(f"{name}: expected a rectangular array, got {type(x).__name__} ({exc})") from None
    if a.dtype == np.float64:
        return a
    if a.dtype in _BY_DTYPE or a.dtype == np.bool_:
        return a.astype(np.float64)
    if np.issubdtype(a.dtype, np.integer):
        require(a.size == 0 or int(np.max(np.abs(a.astype(object)))) <= 2**53, FormatError,
                f"{name}: integers beyond 2**53 cannot be converted to float64 exactly")
        return a.astype(np.float64)
    raise FormatError(f"{name}: expected a floating-point array, got dtype {a.dtype}")


# ----------------------------------------------------------------------------------------------
# Rounding (IEEE 754 §4.3.1 roundTiesToEven, and roundTiesToAway on request)
# ----------------------------------------------------------------------------------------------

_ONE = np.uint64(1)
#: Per format: (binary64 significand bits below its last place, half a unit of that place, the mask of the kept bits).
_ROUNDING_BITS = {f: (np.uint64(53 - f.info.p), np.uint64(1 << (52 - f.info.p)), np.uint64(~((1 << (53 - f.info.p)) - 1)
                                                                                          & (2**64 - 1)))
                  for f in Format if f is not Format.FP64}


def round_to(x, fmt: "Format | str", *, saturate: bool = False, ties: Ties = "even") -> np.ndarray:
    """Return ``x`` rounded to nearest in ``fmt``, carried as float64.

    The quantum of a value x with exponent e = floor(log2|x|) is 2**(max(e, emin) - p + 1);
    below 2**emin the quantum stops shrinking, which yields gradual underflow (subnormals).
    From |x| = 2**emin up, rounding to that quantum keeps the leading p of binary64's 53
    significand bits: an integer operation on the bit pattern, which adds half a unit of the
    last kept place (for ties to even: half minus one, plus the last kept bit; IEEE
    roundTiesToEven) or exactly half (IEEE roundTiesToAway; Ascend's ``CAST_ROUND``) and
    clears the dropped bits. A carry out of the significand steps into the next binade, as the
    rounding does. Below 2**emin, dividing by the fixed quantum is an exact power-of-two
    scaling, so the integer rounding that follows (``np.rint``, or truncation of |y| + 1/2)
    is the one and only rounding.
    """
    f = get_format(fmt)
    info = f.info
    require(ties in TIES, FormatError, f"ties: expected one of {TIES}, got {ties!r}")
    a = as_float64(x)
    if f is Format.FP64:
        return np.array(a, dtype=np.float64, copy=True)
    drop, half, kept = _ROUNDING_BITS[f]
    bits = np.ascontiguousarray(a).view(np.uint64)
    if ties == "even":
        carried = bits >> drop
        carried &= _ONE  # the last kept bit
        carried += half - _ONE
        carried += bits
    else:
        carried = bits + half
    carried &= kept
    rounded = carried.view(np.float64).reshape(a.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = np.abs(a)
        if np.fmin.reduce(magnitude, axis=None, initial=np.inf) < 2.0**info.emin:  # below the normal range: fixed quantum
            small = magnitude < 2.0**info.emin
            quantum_exp = info.emin - info.p + 1
            scaled = a[small] * 2.0**-quantum_exp
            integral = np.rint(scaled) if ties == "even" else np.copysign(np.floor(np.abs(scaled) + 0.5), scaled)
            rounded[small] = integral * 2.0**quantum_exp
        if not np.max(magnitude, initial=0.0) < info.max_finite:  # NaN, infinities, the top binade
            rounded = np.where(np.isnan(a), a, rounded)  # the carry may turn a NaN's pattern into an infinity
            overflow = np.abs(rounded) > info.max_finite
            if saturate:
                rounded = np.where(overflow, np.copysign(info.max_finite, a), rounded)
            elif info.has_inf:
                rounded = np.where(overflow, np.copysign(np.inf, a), rounded)
            else:
                rounded = np.where(overflow, np.nan, rounded)
    return rounded


def round_exact(value: "Fraction | int", fmt: "Format | str", *, saturate: bool = False, ties: Ties = "even") -> float:
    """Return the exact rational ``value`` rounded to nearest in ``fmt`` (ties as in :func:`round_to`), as a float.

    Integer arithmetic only; this is the definition :func:`round_to` is tested against, and
    the way the high-precision oracle rounds its results without a second rounding.
    """
    info = get_format(fmt).info
    require(ties in TIES, FormatError, f"ties: expected one of {TIES}, got {ties!r}")
    require(not isinstance(value, float) or math.isfinite(value), DomainError,
            f"value: expected a finite rational, got {value!r}")
    v = Fraction(value)
    if v == 0:
        return 0.0
    sign = -1 if v < 0 else 1
    v = abs(v)
    e = v.numerator.bit_length() - v.denominator.bit_length()  # floor(log2 v) or one more
    if Fraction(2) ** e > v:
        e -= 1
    q = max(e, info.emin) - (info.p - 1)
    scaled = v / Fraction(2) ** q
    n = scaled.numerator // scaled.denominator
    rest = scaled - n
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and (ties == "away" or n % 2 == 1)):
        n += 1
    result = Fraction(n) * Fraction(2) ** q
    if result > Fraction(info.max_finite):
        if saturate:
            return sign * info.max_finite
        return sign * float("inf") if info.has_inf else float("nan")
    return sign * float(result)


def is_representable(x, fmt: "Format | str") -> np.ndarray:
    """Return a boolean array: True where x is exactly a value of ``fmt`` (NaN counts as representable)."""
    a = as_float64(x)
    r = round_to(a, fmt)
    return (r == a) | (np.isnan(a) & np.isnan(r)) | (np.isinf(a) & (r == a))


def require_representable(x, fmt: "Format | str", name: str) -> np.ndarray:
    """Return ``x`` as float64 after checking that every element is a value of ``fmt`` (strict mode)."""
    a = as_float64(x, name)
    ok = is_representable(a, fmt)
    if not np.all(ok):
        idx = tuple(int(i) for i in np.argwhere(~ok)[0])
        raise FormatError(f"{name}: expected values exactly representable in {get_format(fmt)}, "
                          f"got {a[idx]!r} at index {idx}")
    return a


# ----------------------------------------------------------------------------------------------
# Bit views
# ----------------------------------------------------------------------------------------------

def to_bits(x, fmt: "Format | str") -> np.ndarray:
    """Return the unsigned-integer encoding of values that are exactly representable in ``fmt``."""
    f = get_format(fmt)
    a = require_representable(x, f, "x")
    with np.errstate(invalid="ignore", over="ignore"):
        return a.astype(f.info.storage).view(f.info.uint)


def from_bits(bits, fmt: "Format | str") -> np.ndarray:
    """Return the values (as float64) encoded by the unsigned integers ``bits`` in ``fmt``."""
    f = get_format(fmt)
    b = np.asarray(bits)
    require(np.issubdtype(b.dtype, np.integer), FormatError, f"bits: expected an integer array, got {b.dtype}")
    limit = 1 << f.info.bits
    require(b.size == 0 or (int(b.min()) >= 0 and int(b.max()) < limit), FormatError,
            f"bits: expected integers in [0, 2**{f.info.bits}), got range [{b.min()}, {b.max()}]")
    with np.errstate(invalid="ignore"):  # NaN encodings convert to NaN, as intended
        return b.astype(f.info.uint).view(f.info.storage).astype(np.float64)


def fp32_as_int32(x) -> np.ndarray:
    """Return the FP32 encodings of ``x`` (FP32 values) reinterpreted as signed int32."""
    return to_bits(x, Format.FP32).view(np.int32)


def fp32_as_uint32(x) -> np.ndarray:
    """Return the FP32 encodings of ``x`` (FP32 values) as uint32."""
    return to_bits(x, Format.FP32)


def int32_as_fp32(i) -> np.ndarray:
    """Return the FP32 values (as float64) whose encodings are the int32 (or uint32) words ``i``."""
    a = np.asarray(i)
    require(a.dtype in (np.dtype(np.int32), np.dtype(np.uint32)), FormatError,
            f"i: expected an int32 or uint32 array, got {a.dtype}")
    return a.view(np.float32).astype(np.float64)


def sign_bit(x, fmt: "Format | str") -> np.ndarray:
    """Return the sign bit (0 or 1) of each value's encoding."""
    f = get_format(fmt)
    return (to_bits(x, f) >> (f.info.bits - 1)).astype(np.int64)


def exponent_field(x, fmt: "Format | str") -> np.ndarray:
    """Return the biased exponent field (0 for zeros and subnormals, all ones for Inf/NaN)."""
    info = get_format(fmt).info
    bits = to_bits(x, fmt).astype(np.int64)
    return (bits >> info.mantissa_bits) & ((1 << info.exponent_bits) - 1)


def mantissa_field(x, fmt: "Format | str") -> np.ndarray:
    """Return the trailing significand field (the stored mantissa bits, without the hidden bit)."""
    info = get_format(fmt).info
    return to_bits(x, fmt).astype(np.int64) & ((1 << info.mantissa_bits) - 1)


# ----------------------------------------------------------------------------------------------
# ulp and neighbours
# ----------------------------------------------------------------------------------------------

def ulp(x, fmt: "Format | str") -> np.ndarray:
    """Return ulp(x) = 2**(max(floor(log2|x|), emin) - p + 1), the quantum of x in ``fmt``.

    This is the IEEE "quantum" (Goldberg's ulp): for a power of two it is the gap *above*.
    ulp(0) is the smallest subnormal; ulp of Inf or NaN is NaN. ``x`` need not be
    representable; the ulp of the binade that contains x is returned.
    """
    info = get_format(fmt).info
    a = as_float64(x)
    with np.errstate(invalid="ignore"):
        _, e_plus_1 = np.frexp(a)
        q = np.maximum(e_plus_1 - 1, info.emin) - (info.p - 1)
        q = np.where(a == 0, info.emin - (info.p - 1), q)  # frexp(0) reports exponent 0
        out = np.ldexp(1.0, q)
    return np.where(np.isfinite(a), out, np.nan)


def next_up(x, fmt: "Format | str") -> np.ndarray:
    """Return the least value of ``fmt`` greater than x (IEEE nextUp), for representable x.

    nextUp(+-0) is the smallest subnormal, nextUp(max_finite) is +Inf (NaN for E4M3, which
    has no infinity), nextUp(-Inf) is -max_finite, nextUp(+Inf) is +Inf.
    """
    f = get_format(fmt)
    info = f.info
    a = require_representable(x, f, "x")
    up = np.where(a >= 0, a + ulp(a, f), 0.0)
    # Below zero the gap under |a| matters: it halves when |a| is a power of two (above 2**emin).
    mag = -a
    below = np.where((mag > info.min_normal) & (np.frexp(mag)[0] == 0.5), ulp(mag, f) / 2, ulp(mag, f))
    down_mag = mag - below
    up = np.where(a < 0, -down_mag, up)
    up = np.where(a == 0, info.min_subnormal, up)
    over = np.isfinite(a) & (up > info.max_finite)
    up = np.where(over, np.inf if info.has_inf else np.nan, up)
    up = np.where(a == -np.inf, -info.max_finite, up)
    up = np.where(a == np.inf, np.inf, up)
    return np.where(np.isnan(a), np.nan, up)


def next_down(x, fmt: "Format | str") -> np.ndarray:
    """Return the greatest value of ``fmt`` less than x (IEEE nextDown = -nextUp(-x))."""
    return -next_up(-require_representable(x, fmt, "x"), fmt)  # checked before negating: the message shows x


def require_finite(x: np.ndarray, name: str) -> None:
    """Raise DomainError naming the first NaN or Inf element of ``x``."""
    bad = ~np.isfinite(x)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DomainError(f"{name}: expected finite values, got {x[idx]!r} at index {idx}")
