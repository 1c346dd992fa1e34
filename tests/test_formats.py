"""spec.formats: rounding, bit views, fields, ulp and neighbours.

Each property is checked against an independent definition (exact rationals, numpy's own
float16/float32 conversions, ml_dtypes from float32 where it rounds once, np.nextafter),
and each has a mutant that it must catch.
"""

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnspec.reference.strategies import find_failure
from attnspec.spec.errors import FormatError
from attnspec.spec.formats import (Format, exponent_field, fp32_as_int32, from_bits, get_format, int32_as_fp32,
                                   is_representable, mantissa_field, next_down, next_up, round_exact, round_to,
                                   sign_bit, to_bits, ulp)

LOW = [Format.FP32, Format.BF16, Format.FP16, Format.FP8_E4M3, Format.FP8_E5M2]
finite64 = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _rounds_like_exact(fmt, x: float, rounding=round_to, ties="even") -> bool:
    got = float(rounding(np.array([x]), fmt, ties=ties)[0]) if rounding is round_to else float(rounding(np.array([x]), fmt)[0])
    want = round_exact(Fraction(x), fmt, ties=ties)
    if want == 0:  # a rational has no signed zero: rounding to zero keeps the sign of x
        return got == 0 and np.signbit(got) == np.signbit(x)
    return got == want or (np.isnan(got) and np.isnan(want))


@pytest.mark.parametrize("fmt", LOW, ids=str)
@given(x=finite64)
def test_round_to_equals_exact_rational_rounding(fmt, x):
    assert _rounds_like_exact(fmt, x), f"round_to({x!r}, {fmt}) disagrees with exact rounding"


@pytest.mark.parametrize("ties", ["even", "away"])
@pytest.mark.parametrize("fmt", LOW, ids=str)
def test_round_to_on_midpoints_and_neighbours(fmt, ties):
    """Every midpoint between consecutive values near 1, the max, and the subnormal range, plus/minus a hair."""
    info = fmt.info
    anchors = [1.0, info.max_finite / 2, info.min_normal, info.min_subnormal * 3, 2.0 ** (info.emax - 1)]
    for a in anchors:
        lo, hi = a, float(next_up(np.array([a]), fmt)[0])
        if not np.isfinite(hi):
            continue
        mid = (lo + hi) / 2  # exact in binary64
        for x in (mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf), -mid):
            assert _rounds_like_exact(fmt, float(x), ties=ties), (fmt, x, ties)


def _round_half_away(x, fmt):
    """Mutant: ties away from zero instead of to even."""
    info = get_format(fmt).info
    a = np.asarray(x, dtype=np.float64)
    _, e = np.frexp(a)
    q = np.maximum(e - 1, info.emin) - (info.p - 1)
    return np.ldexp(np.trunc(np.ldexp(a, -q) + np.copysign(0.5, a)), q)


def test_ties_away_examples():
    """Ascend CAST_ROUND: 2.5 -> 3 in integers; 1 + 3*2^-8 (a bf16 midpoint) goes up, 1 + 2^-8 too."""
    assert round_to([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -(1 + 2.0 ** -8)], Format.BF16, ties="away").tolist() == \
        [1 + 2.0 ** -7, 1 + 2.0 ** -6, -(1 + 2.0 ** -7)]
    assert round_to([1 + 2.0 ** -8], Format.BF16).tolist() == [1.0]
    with pytest.raises(FormatError, match="ties: expected one of"):
        round_to([1.0], Format.BF16, ties="up")


def test_mutant_round_half_away_is_caught():
    """The midpoint test above must see the difference between ties-to-even and ties-away."""
    find_failure(st.sampled_from([1 + 2.0 ** -24, 1 + 3 * 2.0 ** -24, 2.5, 0.5 + 2.0 ** -25]),
                 lambda x: not _rounds_like_exact(Format.FP32, x, rounding=_round_half_away))


def test_ml_dtypes_double_rounding_is_avoided():
    """1 + 2^-8 + 2^-40 is above the bf16 midpoint: it rounds up (ml_dtypes from float64 gets 1.0)."""
    x = np.array([1 + 2.0 ** -8 + 2.0 ** -40])
    assert round_to(x, Format.BF16)[0] == 1 + 2.0 ** -7
    assert x.astype(ml_dtypes.bfloat16).astype(np.float64)[0] == 1.0  # the reason round_to exists


@pytest.mark.parametrize("fmt, dtype", [(Format.BF16, ml_dtypes.bfloat16), (Format.FP8_E4M3, ml_dtypes.float8_e4m3fn),
                                        (Format.FP8_E5M2, ml_dtypes.float8_e5m2), (Format.FP16, np.float16)], ids=str)
def test_round_from_float32_matches_ml_dtypes_and_numpy(fmt, dtype):
    """From float32 ml_dtypes and numpy round once; compare on random bit patterns plus edges."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    with np.errstate(over="ignore", invalid="ignore"):
        reference = x.astype(dtype).astype(np.float64)
    ours = round_to(x, fmt)
    same = (ours == reference) | (np.isnan(ours) & np.isnan(reference))
    assert same.all(), f"first mismatch at {x[~same][:3]}: ours {ours[~same][:3]}, reference {reference[~same][:3]}"


def test_round_float64_to_fp16_matches_numpy():
    """numpy converts float64 to float16 directly (one rounding): an independent oracle."""
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.standard_normal(100_000) * 10.0 ** rng.integers(-9, 6, 100_000),
                        [65504.0, 65519.99, 65520.0, 2.0 ** -25, 2.0 ** -24 * 1.5]])
    with np.errstate(over="ignore"):
        assert np.array_equal(round_to(x, Format.FP16), x.astype(np.float16).astype(np.float64))


@pytest.mark.parametrize("fmt", [Format.BF16, Format.FP16, Format.FP8_E4M3, Format.FP8_E5M2], ids=str)
def test_bit_views_round_trip_exhaustively(fmt):
    """Every encoding decodes to a value that encodes back to itself (NaNs compared as NaN)."""
    n = 1 << fmt.info.bits
    values = from_bits(np.arange(n, dtype=np.uint64).astype(fmt.info.uint), fmt)
    finite = ~np.isnan(values)
    assert np.array_equal(to_bits(values[finite], fmt), np.arange(n)[finite].astype(fmt.info.uint))
    assert is_representable(values, fmt).all()


def test_fp32_int32_views_and_fields():
    x = np.array([1.0, -2.0, 0.0, -0.0, 2.0 ** -149, np.inf, 3.0 * 2 ** 100])
    i = fp32_as_int32(x)
    assert i.dtype == np.int32 and i[0] == 0x3F800000 and i[1] == np.int32(-0x40000000)
    assert np.array_equal(int32_as_fp32(i), x)
    assert list(exponent_field(x, Format.FP32)) == [127, 128, 0, 0, 0, 255, 228]
    assert list(mantissa_field(x, Format.FP32)) == [0, 0, 0, 0, 1, 0, 1 << 22]
    assert list(sign_bit(x, Format.FP32)) == [0, 1, 0, 1, 0, 0, 0]


@pytest.mark.parametrize("fmt, dtype", [(Format.FP32, np.float32), (Format.FP16, np.float16)], ids=str)
def test_next_up_down_match_nextafter(fmt, dtype):
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.integers(0, 2 ** fmt.info.bits, 50_000, dtype=np.uint64).astype(fmt.info.uint)
                        .view(dtype), np.array([0, -0.0, np.inf, -np.inf], dtype=dtype)])
    x = x[~np.isnan(x)]
    with np.errstate(over="ignore"):
        assert np.array_equal(next_up(x.astype(np.float64), fmt), np.nextafter(x, dtype(np.inf)).astype(np.float64))
        assert np.array_equal(next_down(x.astype(np.float64), fmt), np.nextafter(x, dtype(-np.inf)).astype(np.float64))


def test_ulp_definition():
    assert ulp(np.array([1.0]), Format.FP32)[0] == 2.0 ** -23
    assert ulp(np.array([0.0]), Format.FP32)[0] == 2.0 ** -149
    assert ulp(np.array([2.0 ** -130]), Format.FP32)[0] == 2.0 ** -149  # subnormal range: fixed quantum
    assert ulp(np.array([1.0]), Format.BF16)[0] == 2.0 ** -7
    assert np.isnan(ulp(np.array([np.inf]), Format.FP16)[0])


def test_overflow_conventions():
    assert round_to([65520.0], Format.FP16)[0] == np.inf  # the IEEE threshold max + ulp/2 rounds to even = inf
    assert round_to([65519.99], Format.FP16)[0] == 65504.0
    assert np.isnan(round_to([500.0], Format.FP8_E4M3)[0])  # no infinity in E4M3
    assert round_to([464.0], Format.FP8_E4M3)[0] == 448.0  # tie between 448 and the NaN slot: to even
    assert round_to([1e6], Format.FP8_E4M3, saturate=True)[0] == 448.0


def test_bad_format_names_and_values():
    with pytest.raises(FormatError, match="format: expected one of"):
        get_format("fp12")
    with pytest.raises(FormatError, match="exactly representable in bf16"):
        to_bits([1 + 2.0 ** -10], Format.BF16)
    with pytest.raises(FormatError, match="integer array"):
        from_bits(np.array([1.5]), Format.FP16)
    with pytest.raises(FormatError, match="floating-point array"):
        round_to(np.array(["a"]), Format.FP32)


@settings(max_examples=10)
@given(x=st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_round_exact_fp64_is_identity_on_floats(x):
    assert round_exact(Fraction(x), Format.FP64) == x or x == 0
