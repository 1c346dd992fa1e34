"""Every documented bad input of the foundation API raises its documented error.

One row per (function, bad input): the call, the exception class, and a fragment of the
message, which must name the argument and what was expected.
"""

import re

import numpy as np
import pytest

from attnspec.reference.oracle import attention_oracle
from attnspec.spec.attention import attention
from attnspec.spec.errors import ConventionError, DomainError, FormatError, MaskError, ShapeError
from attnspec.spec.flash import flash_attention
from attnspec.spec.paged import gather_paged
from attnspec.spec.policy import PrecisionPolicy
from attnspec.spec.split_kv import split_kv_attention

Q = np.ones((2, 4, 3, 8))
K = np.ones((2, 2, 5, 8))
V = np.ones((2, 2, 5, 6))
CACHE = np.ones((4, 2, 1, 3))
TABLE = np.array([[0, 1], [2, 3]])

ENTRY_POINTS = {"attention": attention, "flash": flash_attention, "split_kv": split_kv_attention,
                "oracle": attention_oracle}

ROWS = [
    # (id, kwargs for the attention-like call, error, message fragment)
    ("q rank 3", dict(q=Q[0]), ShapeError, "q: expected rank 4"),
    ("k rank 5", dict(k=K[None]), ShapeError, "k: expected rank 4"),
    ("batch mismatch", dict(k=K[:1], v=V[:1]), ShapeError, "expected batch 2"),
    ("Dk mismatch", dict(k=K[..., :7]), ShapeError, "k: expected head width Dk=8"),
    ("v length mismatch", dict(v=V[:, :, :4]), ShapeError, "v: expected (B, Hkv, Sk)"),
    ("heads not divisible", dict(q=np.ones((2, 3, 3, 8))), ShapeError, "divisible by the kv-head count 2"),
    ("Dk zero", dict(q=Q[..., :0], k=K[..., :0]), ShapeError, "expected head widths >= 1"),
    ("NaN in q", dict(q=np.where(np.arange(8) == 3, np.nan, Q)), DomainError, "q: expected finite values"),
    ("Inf in v", dict(v=np.where(np.arange(6) == 0, np.inf, V)), DomainError, "v: expected finite values"),
    ("object dtype", dict(q=np.ones((2, 4, 3, 8), dtype=object)), FormatError, "q: expected a floating-point"),
    ("zero scale", dict(scale=0.0), DomainError, "scale: expected a finite non-zero"),
    ("nan scale", dict(scale=float("nan")), DomainError, "scale: expected a finite non-zero"),
    ("string scale", dict(scale="0.1"), DomainError, "scale: expected a real number"),
    ("negative softcap", dict(softcap=-1.0), DomainError, "softcap: expected None or a finite positive"),
    ("bad alignment", dict(causal=True, causal_alignment="upper_left"), ConventionError, "causal_alignment"),
    ("mask shape", dict(mask=np.ones((3, 4), dtype=bool)), MaskError, "mask: expected a shape broadcastable"),
    ("mask rank", dict(mask=np.ones((1, 1, 1, 3, 5), dtype=bool)), MaskError, "mask: expected rank <= 4"),
    ("mask NaN", dict(mask=np.full((3, 5), np.nan)), MaskError, "an additive mask may hold"),
    ("mask +inf", dict(mask=np.full((3, 5), np.inf)), MaskError, "an additive mask may hold"),
    ("window triple", dict(window=(1, 2, 3)), MaskError, "window: expected a (left, right) pair"),
    ("window negative", dict(window=(-2, 0)), MaskError, "window[left]: expected a non-negative int"),
    ("negative length", dict(kv_seqlens=np.array([3, -1])), ShapeError, "kv_seqlens: expected lengths >= 0"),
    ("length beyond cache", dict(kv_seqlens=np.array([3, 6])), ShapeError, "kv_seqlens: expected lengths <= 5"),
    ("length shape", dict(q_seqlens=np.array([1, 2, 3])), ShapeError, "q_seqlens: expected shape (2,)"),
    ("float lengths", dict(kv_seqlens=np.array([1.0, 2.0])), ShapeError, "kv_seqlens: expected integers"),
    ("empty_lse", dict(empty_lse=0.0), DomainError, "empty_lse: expected -inf, +inf or nan"),
]


@pytest.mark.parametrize("entry", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
@pytest.mark.parametrize("row_id, kwargs, error, fragment", ROWS, ids=[r[0] for r in ROWS])
def test_attention_bad_inputs(entry, row_id, kwargs, error, fragment):
    args = dict(q=Q, k=K, v=V)
    args.update(kwargs)
    with pytest.raises(error, match=re.escape(fragment)):
        entry(args.pop("q"), args.pop("k"), args.pop("v"), **args)


@pytest.mark.parametrize("entry", [attention, flash_attention], ids=["attention", "flash"])
def test_strict_mode_rejects_values_outside_the_input_format(entry):
    policy = PrecisionPolicy("bf16", "fp32", "fp32", "bf16")
    q = np.full((1, 1, 1, 2), 1 + 2.0 ** -10)
    with pytest.raises(FormatError, match="q: expected values exactly representable in bf16"):
        entry(q, np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 1)), policy=policy, strict=True)


PAGED_ROWS = [
    ("cache rank", dict(cache=CACHE[0]), ShapeError, "cache: expected rank 4"),
    ("table rank", dict(block_table=TABLE[0]), ShapeError, "block_table: expected rank 2"),
    ("table dtype", dict(block_table=TABLE.astype(float)), ShapeError, "block_table: expected integers"),
    ("block id too large", dict(block_table=np.array([[0, 9], [2, 3]])), ShapeError, "expected block ids in [0, 4)"),
    ("negative block id", dict(block_table=np.array([[-1, 1], [2, 3]])), ShapeError, "expected block ids in [0, 4)"),
    ("length beyond table", dict(cache_seqlens=np.array([5, 1])), ShapeError, "lengths <= max_blocks * page = 4"),
    ("negative length", dict(cache_seqlens=np.array([-1, 1])), ShapeError, "cache_seqlens: expected lengths >= 0"),
    ("lengths shape", dict(cache_seqlens=np.array([1])), ShapeError, "cache_seqlens: expected shape (2,)"),
]


@pytest.mark.parametrize("row_id, kwargs, error, fragment", PAGED_ROWS, ids=[r[0] for r in PAGED_ROWS])
def test_paged_bad_inputs(row_id, kwargs, error, fragment):
    args = dict(cache=CACHE, block_table=TABLE, cache_seqlens=np.array([3, 4]))
    args.update(kwargs)
    with pytest.raises(error, match=re.escape(fragment)):
        gather_paged(**args)


def test_unused_table_entries_are_not_validated():
    """Entries past a sequence's pages are never read (FlashMLA fills them with 2147480000)."""
    dense, lengths = gather_paged(CACHE, np.array([[0, 2147480000], [2, 3]]), np.array([2, 4]))
    assert dense.shape == (2, 1, 4, 3) and lengths.tolist() == [2, 4]


def test_flash_block_and_split_arguments():
    with pytest.raises(ShapeError, match="block_k: expected a positive int"):
        flash_attention(Q, K, V, block_k=0)
    with pytest.raises(ShapeError, match="num_splits: expected a positive int"):
        split_kv_attention(Q, K, V, num_splits=0)
