"""spec.formats.round_to: the bit-pattern implementation against the previous, quantum-scaling one.

``round_to`` rounds the binary64 significand on its bit pattern (an optimisation for speed);
the implementation it replaced, which scales by the quantum with frexp/ldexp and rounds with
``np.rint``, is kept here verbatim as the reference. Both must return the same bits for every
input: a structured sweep over every binade of every format (its values, the midpoints
between them, and the binary64 neighbours of both), the format boundaries (2**emin, the
subnormal quantum, max_finite and the overflow threshold), binary64's specials and
subnormals, and a million random binary64 bit patterns, for both tie rules and with and
without saturation. NaN inputs must give NaN (their payload is not compared).
"""

import numpy as np
import pytest

from attnspec.spec.formats import Format, as_float64, get_format, round_to

FORMATS = [f for f in Format if f is not Format.FP64]


def reference_round_to(x, fmt, *, saturate=False, ties="even"):
    """The quantum-scaling round_to that the bit-pattern version replaced (spec/formats.py before 2026-11-30)."""
    info = get_format(fmt).info
    a = as_float64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        _, e_plus_1 = np.frexp(a)
        quantum_exp = np.maximum(e_plus_1 - 1, info.emin) - (info.p - 1)
        scaled = np.ldexp(a, -quantum_exp)
        integral = np.rint(scaled) if ties == "even" else np.copysign(np.floor(np.abs(scaled) + 0.5), scaled)
        rounded = np.ldexp(integral, quantum_exp)
        overflow = np.abs(rounded) > info.max_finite
        if saturate:
            rounded = np.where(overflow, np.copysign(info.max_finite, a), rounded)
        elif info.has_inf:
            rounded = np.where(overflow, np.copysign(np.inf, a), rounded)
        else:
            rounded = np.where(overflow | np.isinf(a), np.nan, rounded)
    return rounded


def sweep(fmt: Format, seed: int = 0) -> np.ndarray:
    """Return the structured inputs for ``fmt``: every binade's values, midpoints and their binary64 neighbours."""
    info = fmt.info
    rng = np.random.default_rng(seed)
    values = []
    for e in range(info.emin - info.p - 2, info.emax + 2):
        quantum = 2.0 ** (max(e, info.emin) - info.p + 1)
        k = np.concatenate([rng.integers(0, 2 ** (info.p - 1), 64), [0, 1, 2 ** (info.p - 1) - 1]])
        grid = (2.0**e if e >= info.emin else 0.0) + k * quantum
        for base in (grid, grid + quantum / 2):
            values += [base, np.nextafter(base, np.inf), np.nextafter(base, -np.inf)]
        values.append(rng.uniform(2.0**e, 2.0 ** (e + 1), 64))
    top = info.max_finite
    threshold = top + 2.0 ** (info.emax - info.p)
    edges = [2.0**info.emin, 2.0 ** (info.emin - info.p + 1), 2.0 ** (info.emin - info.p), top, threshold, 2 * top]
    values.append(np.array([np.nextafter(x, d) for x in edges for d in (np.inf, -np.inf)] + edges))
    specials = [0.0, -0.0, np.inf, -np.inf, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, np.nan]
    x = np.concatenate(values + [np.array(specials)])
    return np.concatenate([x, -x])


def random_bit_patterns(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, count, dtype=np.uint64).view(np.float64)


def assert_same(x: np.ndarray, fmt: Format, rounding=round_to, **options) -> None:
    got, want = rounding(x, fmt, **options), reference_round_to(x, fmt, **options)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"NaN differs [{fmt}, {options}]"
    bad = got[~nan].view(np.uint64) != want[~nan].view(np.uint64)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        xi = x[~nan][i]
        raise AssertionError(f"round_to({xi!r}) = {got[~nan][i]!r}, but should be {want[~nan][i]!r} [{fmt}, {options}]")


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("ties", ["even", "away"])
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_round_to_matches_the_reference_on_the_sweep(fmt, ties, saturate):
    assert_same(sweep(fmt), fmt, ties=ties, saturate=saturate)


@pytest.mark.parametrize("ties", ["even", "away"])
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_round_to_matches_the_reference_on_random_bit_patterns(fmt, ties):
    assert_same(random_bit_patterns(1 << 17), fmt, ties=ties)


def test_round_to_keeps_shape_and_layout():
    x = sweep(Format.BF16)[:120].reshape(4, 5, 6)
    for view in (x, x.transpose(2, 0, 1), x[:, ::2], np.float64(1.25), 0.3):
        np.testing.assert_array_equal(round_to(view, "bf16"), reference_round_to(view, "bf16"))
        assert np.shape(round_to(view, "bf16")) == np.shape(view)


def test_a_mutant_rounding_is_caught():
    """The harness's known-bad input: clearing the dropped bits without the carry (truncation) is reported."""
    def truncation(x, fmt, **options):
        drop = 53 - get_format(fmt).info.p
        return (np.asarray(x, dtype=np.float64).view(np.uint64) & np.uint64(~((1 << drop) - 1) & (2**64 - 1))).view(
            np.float64)

    with pytest.raises(AssertionError, match="but should be"):
        assert_same(sweep(Format.FP16), Format.FP16, rounding=truncation)
