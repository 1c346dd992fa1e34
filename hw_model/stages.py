"""Stage costs of one MLA decode task on one Ascend AI core (1 AIC + 2 AIV): C1, V1, nUpdate, C2, V2.

A *task* is one row group (M = min(256, 128 x s_q) rows of the G = 128 heads x s_q query
tokens that share the latent KV head) against one KV block of 512 tokens, as the CANN
tiler cuts it (cann-fia ``fia_tiling_nonquant_mla.cpp``: s2 base 512, m base 256). Each stage
is priced per hardware pipe, from the tile loops of the shipped kernel:

- Cube (cann-fia ``fia_block_cube_nonquant_mla.h``): MMAD (MACs / 4096 per cycle / the
  calibrated sustained efficiency), MTE2 (GM->L1 at the per-core HBM or L2 rate), MTE1
  (L1->L0A/L0B), FIXPIPE (L0C->GM). The L1 ring (4 QP + 3 KV buffers of 72 KB), the L0A/L0B
  halves and the L0C ping-pong let the pipes overlap, and the next stage's first tiles load
  while this stage's last MMADs run, so a Cube stage costs the busiest pipe.
- Vector (cann-fia ``fia_block_vec_nonquant_mla.h`` for AMLA; ops-transformer@c29bc10
  ``incre_flash_attention_preload_mla.h``, ``AMLAMODE::NORMAL`` branch, for the baseline):
  each AIV takes half the rows in chunks of 8,192 FP32 (32 KB: 16 rows x 512 columns of S,
  16 rows x 512 of O). A full-chunk vector op costs one pass, 8,192 x 4 B / 256 B per cycle =
  128 cycles. Each
  synchronous GM transfer (a DataCopy the code waits on before computing) also pays the
  calibrated GM latency. Where the code ping-pongs a buffer, transfer and compute overlap
  chunk by chunk; where it does not (the baseline's O rescale), they add.

Sources for every constant are in :mod:`attnspec.hw_model.machines`.

Decision (2026-11-28): V is the latent part of K (cann-fia: ``valueGm`` and ``keyGm`` are
the same cache), so C2 re-reads from L2 what C1 read from HBM one stage earlier; Q, S, P~
and O live in the per-core GM workspace and are served by L2 (192 MB per die holds the
workspace of all 24 cores: 2 x (S + P~ + O) x 256 rows is under 2 MB per core). Reading them
at the HBM rate instead would make AMLA's own 614 TFLOPS exceed the die's HBM bandwidth.

Decision (2026-11-28): K is read from HBM once per row group and block. With s_q = 4 the two
row groups of one sequence may run on different cores at different times, so the model
does not assume the second read hits L2 (pessimistic by at most the Q-load share).

Known deviations from the shipped kernel (catalogue):

- Per-row scalar work (n_i, r~_i, c_i, N_i on 16-row vectors) and PipeBarrier latencies are
  not priced; their cost sits inside the calibrated GM latency.
- The flash-decode combine that follows a row group split across cores is not priced.
- The attention mask (MTP causal mask, Select per chunk) is not priced; decode with s_q <= 4
  masks at most 3 columns of the last block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil
from typing import Literal

from attnspec.hw_model.machines import ASCEND_910C_DIE, CALIBRATION, AscendDie, Calibration
from attnspec.spec.errors import ConventionError, ShapeError, require

Kernel = Literal["amla", "fa_gm"]
Position = Literal["first", "middle", "last", "only"]
KERNELS: tuple[Kernel, ...] = ("amla", "fa_gm")

BF16_BYTES = 2
FP32_BYTES = 4
CHUNK_ELEMENTS = 8192  # cann-fia: BASE_BLOCK_MAX_ELEMENT_NUM, FP32 elements (32 KB) per vector chunk
L1_TILE = 128  # cann-fia: M_L1_SPLIT_SIZE = N_L1_SPLIT_SIZE = 128
NUPDATE_ROWS = 64  # cann-fia ProcessAmlaNupdate: mSplitSize = 64 rows per int32 broadcast
NUPDATE_GROUP = 128  # cann-fia ProcessAmlaNupdate: dGroupSize = 128 int32 per row per DataCopy


@dataclass(frozen=True)
class MlaShape:
    """One MLA decode launch in the absorbed (MQA) form: 128 query heads share one latent KV head."""

    batch: int
    s_q: int
    s_k: int
    heads: int = 128
    d_k: int = 576
    d_v: int = 512
    block: int = 512
    m_base: int = 256

    def __post_init__(self) -> None:
        for name in ("batch", "s_q", "s_k", "heads", "d_k", "d_v", "block", "m_base"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, ShapeError, f"{name}: expected a positive int, got {value!r}")
        require(self.s_k % self.block == 0, ShapeError,
                f"s_k: expected a multiple of the KV block {self.block}, got {self.s_k}")
        require(self.d_v <= self.d_k, ShapeError, f"d_v: expected <= d_k = {self.d_k} (V is a slice of K), got {self.d_v}")
        for name in ("block", "d_v"):
            require(CHUNK_ELEMENTS % getattr(self, name) == 0, ShapeError,
                    f"{name}: expected a divisor of the {CHUNK_ELEMENTS}-element vector chunk, got {getattr(self, name)}")

    @property
    def rows(self) -> int:
        """Return M for the whole sequence: heads x s_q rows share each KV block."""
        return self.heads * self.s_q

    @property
    def row_groups(self) -> list[int]:
        """Return the row counts of the tasks one sequence is cut into (m base 256, tail last)."""
        full, tail = divmod(self.rows, self.m_base)
        return [self.m_base] * full + ([tail] if tail else [])

    @property
    def blocks(self) -> int:
        """Return the number of KV blocks per sequence."""
        return self.s_k // self.block

    @property
    def flops(self) -> float:
        """Return FlashMLA's FLOP count, 2 B s_q h_q S_k (d_k + d_v) (flashmla bench_flash_mla.py)."""
        return 2.0 * self.batch * self.s_q * self.heads * self.s_k * (self.d_k + self.d_v)

    @property
    def kv_bytes(self) -> float:
        """Return the KV-cache bytes read once per sequence (BF16, d_k per token)."""
        return float(self.batch * self.s_k * self.d_k * BF16_BYTES)


@dataclass(frozen=True)
class StageCost:
    """The busy cycles of each pipe in one stage, and the stage's cost (the sum of its phases)."""

    name: str
    unit: Literal["cube", "vector"]
    pipes: dict[str, float] = field(default_factory=dict)
    cycles: float = 0.0

    @property
    def bound(self) -> str:
        """Return the pipe with the most busy cycles ('-' for an empty stage)."""
        return max(self.pipes, key=self.pipes.__getitem__) if self.cycles > 0 else "-"


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


def _vector_rows(rows: int) -> int:
    """Return the rows of the busier AIV: cann-fia ProcessVec1L gives AIV 0 ceil(ceil(M/16)/2) x 16 rows."""
    return rows if rows <= 16 else (ceil(rows / 16) + 1) // 2 * 16


def c1_cost(rows: int, shape: MlaShape, die: AscendDie = ASCEND_910C_DIE, cal: Calibration = CALIBRATION) -> StageCost:
    """Return the cost of C1, S = Q K^T at width d_k, for one task of ``rows`` rows."""
    m = _align(rows, 16)
    n, k = shape.block, shape.d_k
    m_tiles = ceil(m / L1_TILE)
    pipes = {
        "mmad": m * n * k / die.cube_mac_bf16 / cal.mmad_efficiency,  # cann-fia ComputeMm1: 4 n x 2 k x m tiles
        "mte2": n * k * BF16_BYTES / die.hbm_rate + m * k * BF16_BYTES / die.l2_read_rate,  # K from HBM, Q from L2
        # cann-fia MatmulKPP per (n, k, m): A (Q) reloaded per n-tile, B (K) per m-tile
        "mte1": (n // L1_TILE) * m * k * BF16_BYTES / die.l1_to_l0a_rate + m_tiles * n * k * BF16_BYTES / die.l1_to_l0b_rate,
        "fixpipe": m * n * FP32_BYTES / die.l2_write_rate,  # S in FP32 to the mm1Res workspace
    }
    return StageCost("C1", "cube", pipes, max(pipes.values()))


def c2_cost(rows: int, shape: MlaShape, die: AscendDie = ASCEND_910C_DIE, cal: Calibration = CALIBRATION) -> StageCost:
    """Return the cost of C2, P~ V at width d_v (FP32 atomic add into O for AMLA), for one task."""
    m = _align(rows, 16)
    n, k = shape.d_v, shape.block
    m_tiles = ceil(m / L1_TILE)
    pipes = {
        "mmad": m * n * k / die.cube_mac_bf16 / cal.mmad_efficiency,  # cann-fia ComputeMm2: 4 n x 2 k x m tiles
        "mte2": (k * n + m * k) * BF16_BYTES / die.l2_read_rate,  # V re-read and P~ from L2
        "mte1": (n // L1_TILE) * m * k * BF16_BYTES / die.l1_to_l0a_rate + m_tiles * k * n * BF16_BYTES / die.l1_to_l0b_rate,
        "fixpipe": m * n * FP32_BYTES / die.l2_write_rate,  # O tile, AtomicAdd<float> except on the first block
    }
    return StageCost("C2", "cube", pipes, max(pipes.values()))


def _flow(load: float, vector: float, store: float, chunks: int) -> float:
    """Return the cycles of ``chunks`` chunks through load -> vector -> store with double-buffered overlap.

    The first chunk pays all three phases; every further chunk adds the slowest phase.
    """
    return load + vector + store + (chunks - 1) * max(load, vector, store)


def _pass_cycles(elements: int, die: AscendDie) -> float:
    return elements * FP32_BYTES / die.vector_bytes


def v1_cost(rows: int, kernel: Kernel, shape: MlaShape, die: AscendDie = ASCEND_910C_DIE,
            cal: Calibration = CALIBRATION) -> StageCost:
    """Return the cost of V1 (scale, online softmax, and for AMLA the r~ rescale of P) for one task.

    Input ping-pong overlaps the S load of chunk j+1 with the vector work of chunk j, and
    the single output buffer overlaps P~'s store with the next chunk's work (:func:`_flow`).
    """
    _require_kernel(kernel)
    r = _vector_rows(rows)
    chunk_rows = CHUNK_ELEMENTS // shape.block
    elements = chunk_rows * shape.block
    passes = 1 + 4 + 1  # cann-fia ElewiseCompute Muls; SoftmaxFlashV2 max, sub, exp, sum; Cast to BF16
    if kernel == "amla":
        passes += 1  # cann-fia AmlaVecCompute: RowMuls(mmResUb, r~)  # [variant: amla]
    vector = passes * _pass_cycles(elements, die)
    load = elements * FP32_BYTES / die.l2_read_rate + cal.gm_latency_cycles
    store = elements * BF16_BYTES / die.ub_to_gm_rate + cal.gm_latency_cycles
    chunks = ceil(r / chunk_rows)
    pipes = {"vector": chunks * vector, "mte2": chunks * load, "mte3": chunks * store}
    return StageCost("V1", "vector", pipes, _flow(load, vector, store, chunks))


def nupdate_cost(rows: int, position: Position, shape: MlaShape, die: AscendDie = ASCEND_910C_DIE,
                 cal: Calibration = CALIBRATION) -> StageCost:
    """Return the cost of AMLA's nUpdate: int32 atomic add of N_i onto O in GM (none on a task's first block)."""
    if position in ("first", "only"):
        return StageCost("nUpdate", "vector", {"vector": 0.0, "mte3": 0.0}, 0.0)  # cann-fia: isFirstSInnerLoop returns
    r = _vector_rows(rows)
    loops = ceil(r / NUPDATE_ROWS)
    broadcast = _pass_cycles(NUPDATE_ROWS * NUPDATE_GROUP, die)  # Brcb (m,1) -> (m,128) int32
    # cann-fia: 4 DataCopy of (64 rows x 128 int32) under SetAtomicAdd<int32_t>, d_v / 128 of them
    store = (shape.d_v // NUPDATE_GROUP) * NUPDATE_ROWS * NUPDATE_GROUP * 4 / die.ub_to_gm_rate + cal.gm_latency_cycles
    pipes = {"vector": loops * broadcast, "mte3": loops * store}
    return StageCost("nUpdate", "vector", pipes, loops * (broadcast + store))


def v2_cost(rows: int, kernel: Kernel, position: Position, shape: MlaShape, die: AscendDie = ASCEND_910C_DIE,
            cal: Calibration = CALIBRATION) -> StageCost:
    """Return the cost of V2 for one task at ``position`` in its row group's sequence of blocks.

    AMLA: nothing until the last block, then the final normalisation (load O, zero |O| > 1e10,
    divide by l r~, cast, store). Baseline FA: every block loads P V; every block but the first
    also loads O, rescales it by exp(m_{i-1} - m_i) and adds; every block but the last stores
    O back to GM; the last divides by l and stores BF16. These phases run one after another
    (``incre_flash_attention_preload_mla.h`` EnQue/DeQue waits and the MTE3->MTE2 event).
    """
    _require_kernel(kernel)
    r = _vector_rows(rows)
    chunk_rows = CHUNK_ELEMENTS // shape.d_v  # BASE_BLOCK_MAX_ELEMENT_NUM / headDimAlign rows per chunk
    chunks = ceil(r / chunk_rows)
    elements = chunk_rows * shape.d_v
    one_sweep = _pass_cycles(elements, die)
    load = elements * FP32_BYTES / die.l2_read_rate + cal.gm_latency_cycles
    store_fp32 = elements * FP32_BYTES / die.ub_to_gm_rate + cal.gm_latency_cycles
    store_bf16 = elements * BF16_BYTES / die.ub_to_gm_rate + cal.gm_latency_cycles
    last = position in ("last", "only")
    if kernel == "amla":
        if not last:
            return StageCost("V2", "vector", {"vector": 0.0, "mte2": 0.0, "mte3": 0.0}, 0.0)
        vector = 6 * one_sweep  # cann-fia DealBmm2ResBaseBlock: Abs, CompareScalar, Select, RowDivs, Cast (+Brcb)
        pipes = {"vector": chunks * vector, "mte2": chunks * load, "mte3": chunks * store_bf16}
        return StageCost("V2", "vector", pipes, _flow(load, vector, store_bf16, chunks))
    rescale = position in ("middle", "last")  # [variant: fa_gm] O_{i-1} exists
    vector = one_sweep * (1 + (2 if rescale else 0) + (2 if last else 1))  # copy; RowMuls+Add; RowDivs+Cast or copy-out
    mte2 = load * (2 if rescale else 1)  # P V partial, then O_{i-1}
    mte3 = store_bf16 if last else store_fp32
    pipes = {"vector": chunks * vector, "mte2": chunks * mte2, "mte3": chunks * mte3}
    return StageCost("V2", "vector", pipes, chunks * (vector + mte2 + mte3))


def _require_kernel(kernel: str) -> None:
    require(kernel in KERNELS, ConventionError, f"kernel: expected one of {KERNELS}, got {kernel!r}")


@dataclass(frozen=True)
class TaskTimes:
    """The five stage costs of one task, in cycles, with their per-pipe breakdown."""

    c1: StageCost
    c2: StageCost
    v1: StageCost
    vn: StageCost
    v2: StageCost

    def seconds(self, die: AscendDie = ASCEND_910C_DIE) -> dict[str, float]:
        """Return the stage durations in seconds at the die's clock."""
        return {s.name: s.cycles / die.clock_hz for s in (self.c1, self.c2, self.v1, self.vn, self.v2)}

    @property
    def cube(self) -> float:
        """Return the Cube cycles of the task, C1 + C2."""
        return self.c1.cycles + self.c2.cycles

    @property
    def vector(self) -> float:
        """Return the Vector cycles of the task, V1 + nUpdate + V2."""
        return self.v1.cycles + self.vn.cycles + self.v2.cycles


def task_times(rows: int, kernel: Kernel, position: Position, shape: MlaShape, die: AscendDie = ASCEND_910C_DIE,
               cal: Calibration = CALIBRATION) -> TaskTimes:
    """Return the stage costs of one task of ``rows`` rows at ``position`` within its row group."""
    require(1 <= rows <= shape.m_base, ShapeError, f"rows: expected 1..{shape.m_base}, got {rows}")
    require(position in ("first", "middle", "last", "only"), ConventionError,
            f"position: expected first, middle, last or only, got {position!r}")
    vn = nupdate_cost(rows, position, shape, die, cal) if kernel == "amla" else StageCost("nUpdate", "vector")
    return TaskTimes(c1_cost(rows, shape, die, cal), c2_cost(rows, shape, die, cal),
                     v1_cost(rows, kernel, shape, die, cal), vn, v2_cost(rows, kernel, position, shape, die, cal))


def positions(blocks: int) -> list[Position]:
    """Return the position of each block of a row group: 'only', or 'first', 'middle'..., 'last'."""
    require(blocks >= 1, ShapeError, f"blocks: expected >= 1, got {blocks}")
    if blocks == 1:
        return ["only"]
    return ["first"] + ["middle"] * (blocks - 2) + ["last"]
