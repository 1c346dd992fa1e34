"""Paged KV cache: a block table maps each sequence's logical pages onto physical cache blocks.

Normative source: FlashMLA ``flash_mla_with_kvcache`` (deepseek-ai/FlashMLA @ 9241ae3):
``k_cache`` is (num_blocks, page_block_size, h_kv, d); ``block_table`` (B, max_blocks) holds
int32 physical block ids; ``cache_seqlens`` (B,) the number of valid tokens. Token t of
sequence b lives at ``k_cache[block_table[b, t // page], t % page]``.

Only the entries that cover [0, cache_seqlens[b]) are read, and only those are validated.
The remaining table entries (FlashMLA's tests set them to 2147480000) and every unused slot
of the cache (its tests fill them with NaN) are never read: the dense view zeroes them, and
the attention problem ignores everything at or beyond the sequence length.
"""

from __future__ import annotations

import numpy as np

from .errors import ShapeError, require
from .formats import as_float64


def gather_paged(cache, block_table, cache_seqlens) -> tuple[np.ndarray, np.ndarray]:
    """Return (dense (B, H, S_max, D), lengths (B,)) for a paged cache (num_blocks, page, H, D).

    S_max is max_blocks * page, so that every length the table can describe fits.
    """
    c = as_float64(cache, "cache")
    require(c.ndim == 4, ShapeError, f"cache: expected rank 4 (num_blocks, page, H, D), got shape {c.shape}")
    num_blocks, page, heads, width = c.shape
    require(page >= 1, ShapeError, f"cache: expected a page size >= 1, got {page}")
    table = np.asarray(block_table)
    require(np.issubdtype(table.dtype, np.integer), ShapeError,
            f"block_table: expected integers, got dtype {table.dtype}")
    require(table.ndim == 2, ShapeError, f"block_table: expected rank 2 (B, max_blocks), got shape {table.shape}")
    batch, max_blocks = table.shape
    lengths = np.asarray(cache_seqlens)
    require(np.issubdtype(lengths.dtype, np.integer), ShapeError,
            f"cache_seqlens: expected integers, got dtype {lengths.dtype}")
    require(lengths.shape == (batch,), ShapeError, f"cache_seqlens: expected shape ({batch},), got {lengths.shape}")
    require(np.all(lengths >= 0), ShapeError, f"cache_seqlens: expected lengths >= 0, got {lengths.tolist()}")
    capacity = max_blocks * page
    require(np.all(lengths <= capacity), ShapeError,
            f"cache_seqlens: expected lengths <= max_blocks * page = {capacity}, got {lengths.tolist()}")

    dense = np.zeros((batch, heads, capacity, width))  # (B, H, S_max, D)
    for b in range(batch):
        used = -(-int(lengths[b]) // page)  # pages that hold at least one valid token
        ids = table[b, :used].astype(np.int64)
        require(np.all((ids >= 0) & (ids < num_blocks)), ShapeError,
                f"block_table[{b}, :{used}]: expected block ids in [0, {num_blocks}), got {ids.tolist()}")
        if used == 0:
            continue
        tokens = c[ids].reshape(used * page, heads, width)[: lengths[b]]  # (len, H, D)
        dense[b, :, : lengths[b]] = np.transpose(tokens, (1, 0, 2))
    return dense, lengths.astype(np.int64)
