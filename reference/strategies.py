"""Hypothesis strategies for attention problems, in Hypothesis's house style.

Exported for users' own property tests, e.g.::

    from hypothesis import given
    from attnspec.reference.strategies import attention_inputs

    @given(attention_inputs(max_seq=64))
    def test_my_kernel(case): ...

Strategies have plural names and keyword-only ``min_*``/``max_*`` bounds, and draw values
that are exactly representable in the requested format. The two profiles used by the test
suite are registered by :func:`register_profiles`: ``ci`` (fast, derandomized, no example
database, so every run of the suite is identical) and ``thorough`` (many more examples).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from attnspec.spec.formats import Format, get_format, round_to

PROFILE_ENV = "ATTNSPEC_HYPOTHESIS_PROFILE"


def register_profiles() -> str:
    """Register the ``ci`` and ``thorough`` profiles and load the one named by $ATTNSPEC_HYPOTHESIS_PROFILE.

    Return the loaded profile's name (``ci`` when the variable is unset).
    """
    common = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
    settings.register_profile("ci", max_examples=25, derandomize=True, database=None, **common)
    settings.register_profile("thorough", max_examples=1000, **common)
    name = os.environ.get(PROFILE_ENV, "ci")
    if name not in ("ci", "thorough"):
        raise ValueError(f"{PROFILE_ENV}: expected 'ci' or 'thorough', got {name!r}")
    settings.load_profile(name)
    return name


@dataclass(frozen=True)
class AttentionCase:
    """Inputs plus conventions, ready for ``attention(case.q, case.k, case.v, **case.conventions)``."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    conventions: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"q{self.q.shape} k{self.k.shape} v{self.v.shape} {self.conventions}"


def format_arrays(shape: tuple[int, ...], *, fmt: "Format | str" = Format.FP32, min_value: float = -4.0,
                  max_value: float = 4.0) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``shape`` whose elements are values of ``fmt`` in [min_value, max_value].

    Elements come from a seeded generator (the seed is drawn), mixed with a few drawn edge
    values (zero, the bounds, a spike), so that shrinking still reaches small cases.
    """
    f = get_format(fmt)

    @st.composite
    def build(draw):
        seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
        rng = np.random.default_rng(seed)
        arr = round_to(rng.uniform(min_value, max_value, size=shape), f)
        n_edges = draw(st.integers(min_value=0, max_value=min(3, int(np.prod(shape)))))
        for _ in range(n_edges):
            flat = draw(st.integers(min_value=0, max_value=int(np.prod(shape)) - 1))
            value = draw(st.sampled_from([0.0, min_value, max_value]))
            arr.reshape(-1)[flat] = round_to(value, f)
        return arr

    return build()


@st.composite
def attention_inputs(draw, *, fmt: "Format | str" = Format.FP32, min_batch: int = 1, max_batch: int = 2,
                     max_heads: int = 4, min_seq: int = 0, max_seq: int = 24, max_dim: int = 16,
                     min_value: float = -4.0, max_value: float = 4.0, masks: bool = True,
                     varlen: bool = True) -> AttentionCase:
    """Draw a complete attention case: shapes (GQA included), values of ``fmt``, and conventions."""
    b = draw(st.integers(min_value=min_batch, max_value=max_batch))
    hkv = draw(st.integers(min_value=1, max_value=max(1, max_heads // 2)))
    group = draw(st.integers(min_value=1, max_value=max(1, max_heads // hkv)))
    hq = hkv * group
    sq = draw(st.integers(min_value=max(1, min_seq), max_value=max(1, min(max_seq, 8))))
    sk = draw(st.integers(min_value=min_seq, max_value=max_seq))
    dk = draw(st.integers(min_value=1, max_value=max_dim))
    dv = draw(st.integers(min_value=1, max_value=max_dim))
    arrays = dict(fmt=fmt, min_value=min_value, max_value=max_value)
    q = draw(format_arrays((b, hq, sq, dk), **arrays))
    k = draw(format_arrays((b, hkv, sk, dk), **arrays))
    v = draw(format_arrays((b, hkv, sk, dv), **arrays))
    conventions: dict = {}
    if masks:
        conventions["causal"] = draw(st.booleans())
        conventions["causal_alignment"] = draw(st.sampled_from(["bottom_right", "top_left"]))
        if draw(st.booleans()):
            left = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=max(0, sk))))
            right = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=max(0, sk))))
            conventions["window"] = (left, right)
        if draw(st.booleans()):
            conventions["softcap"] = draw(st.sampled_from([5.0, 20.0, 50.0]))
    if varlen and draw(st.booleans()):
        conventions["kv_seqlens"] = np.array(draw(st.lists(st.integers(min_value=0, max_value=sk),
                                                           min_size=b, max_size=b)), dtype=np.int64)
    return AttentionCase(q, k, v, conventions)


def find_failure(strategy: st.SearchStrategy, fails, *, max_examples: int = 500):
    """Return an example of ``strategy`` on which ``fails(example)`` is true, or raise AssertionError.

    This is how a test shows that a property catches a mutant: the property must fail on
    some generated case. The search is deterministic (derandomized), skips shrinking (the
    witness only has to exist) and treats an exception raised by ``fails`` as a failure of
    the mutant, since a crashing kernel is a detected kernel.
    """
    from hypothesis import Phase, find
    from hypothesis.errors import NoSuchExample

    def failing(example) -> bool:
        try:
            return bool(fails(example))
        except Exception:  # the mutant crashed on this input: that is a detection
            return True

    try:
        return find(strategy, failing, settings=settings(max_examples=max_examples, derandomize=True, database=None,
                                                         phases=[Phase.generate], deadline=None))
    except NoSuchExample:
        raise AssertionError(f"no failing example in {max_examples} cases: the property did not catch the mutant") \
            from None
