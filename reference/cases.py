"""Conformance cases: seeded builders, hypothesis strategies over them, and the vector table.

A case is fully determined by its *family* and a small JSON-able ``params`` dict whose
``seed`` drives a numpy generator; :func:`build_case` turns the pair into arrays, so a case
can be named, saved and rebuilt anywhere (``<family>(seed=..., ...)``). The hypothesis
strategies (:func:`conformance_cases`) draw only the params, and the vector table
(:func:`vector_params`) lists them explicitly: "a test is also a vector".

Families (values are exactly representable in the case's format):

==================  ===========================================================================
uniform             U[-a, a] inputs with a in {0.5, 2, 4}; GQA, masks, windows, softcap, varlen
growing_max         logits that grow along the keys by G in {10, 40}: every block raises the max
block_edges         Sk at the edges of common tiles: 1, b - 1, b, b + 1 for b in {16, 32, 64, 128}
fully_masked        rows with no admissible key (kv length 0, Sq > Sk bottom-right causal,
                    an all-False mask row, an empty window, or Sk = 0)
pasa_bias           PASA's benchmark grid (Cheng et al., arXiv 2503.01873; chenglong92/PASA
                    @ 14f5c6f): U(b - A, b + A) with bias b in {0, 10, 20, 30}, amplitude
                    A in {0.5, 5, 10, 20}, or N(b, 1) + Bernoulli(0.001) N(0, A) ("hybrid")
resonant            PASA's resonance: Q and K share a pattern along the head dimension, in
                    phase or 180 degrees out of phase, so |S| is large with either sign
flashmla            FlashMLA's decode test (deepseek-ai/FlashMLA @ 9241ae3
                    ``test_flash_mla_dense_decoding.py``): h_q in {1, 3, 16, 64, 128}, s_q in
                    1..4, one latent kv head, V the first Dv channels of K, randn/10 clamped to
                    [-1, 1], varlen with lengths 0 and page edges, a randomly permuted block
                    table whose unused entries are 2147480000, unused cache slots NaN
mla_growing_max     the paged layout with logits growing along the cache (the RoPE channels)
amla_zero_hole      paged, two AMLA blocks of 512 keys: some V channels are exactly 0 in the
                    first block and the max grows in the second (spec/amla.py's zero hole)
==================  ===========================================================================

Cases respect what a kernel declares (:class:`reference.conformance.Kernel`): a convention
it does not take is never set, its causal alignment is used, GQA only when ``gqa``, Sk = 0
only when ``empty_kv``, its ``head_dims`` for paged cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.spec.errors import ConventionError, require
from attnspec.spec.formats import Format, get_format, round_to
from attnspec.spec.paged import gather_paged
from attnspec.spec.problem import AttentionProblem, attention_problem

from .conformance import Kernel

DENSE_FAMILIES = ("uniform", "growing_max", "block_edges", "fully_masked", "pasa_bias", "resonant")
PAGED_FAMILIES = ("flashmla", "mla_growing_max", "amla_zero_hole")
FAMILIES = DENSE_FAMILIES + PAGED_FAMILIES
OPS = ("attention", "flash", "mla", "amla", "pasa")

#: The families each op draws from by default.
OP_FAMILIES = {
    "attention": ("uniform", "growing_max", "block_edges", "fully_masked", "pasa_bias", "resonant"),
    "flash": ("uniform", "growing_max", "block_edges", "fully_masked", "resonant"),
    "mla": ("flashmla", "mla_growing_max"),
    "amla": ("flashmla", "mla_growing_max", "amla_zero_hole"),
    "pasa": ("pasa_bias", "resonant", "growing_max", "fully_masked"),
}

EDGE_LENGTHS = (1, 15, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129)
DIMS = (3, 8, 16, 24, 59, 64)
PASA_BIASES = (0.0, 10.0, 20.0, 30.0)
PASA_AMPLITUDES = (0.5, 5.0, 10.0, 20.0)
MLA_HEADS = (1, 3, 16, 64, 128)
FLASHMLA_TABLE_FILL = 2147480000  # test_flash_mla_dense_decoding.py: unused block-table entries
FLASHMLA_PAGE = 64


@dataclass(frozen=True)
class PagedInputs:
    """FlashMLA's decode inputs: q (B, s_q, h_q, Dk), k_cache (blocks, page, h_kv, Dk), table, lengths."""

    q: np.ndarray
    k_cache: np.ndarray  # unused slots hold NaN
    block_table: np.ndarray  # int32 (B, max_blocks); unused entries FLASHMLA_TABLE_FILL
    cache_seqlens: np.ndarray  # int32 (B,)
    head_dim_v: int


@dataclass(frozen=True)
class Case:
    """One conformance case: dense inputs in attnspec's layout, conventions, and the paged view if any."""

    family: str
    params: dict
    fmt: Format
    q: np.ndarray  # (B, Hq, Sq, Dk), values of fmt
    k: np.ndarray  # (B, Hkv, Sk, Dk); slots past kv_seqlens may hold NaN
    v: np.ndarray  # (B, Hkv, Sk, Dv)
    conventions: dict = field(default_factory=dict)
    paged: PagedInputs | None = None

    @property
    def name(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.family}[{self.fmt}]({shown})"

    def problem(self, empty_lse: float = -np.inf) -> AttentionProblem:
        """Return the validated problem this case poses, with ``empty_lse`` for rows without a key."""
        return attention_problem(self.q, self.k, self.v, empty_lse=empty_lse, **self.conventions)


# ----------------------------------------------------------------------------------------------
# Builders: (family, fmt, params) -> Case, deterministic in params["seed"]
# ----------------------------------------------------------------------------------------------

def build_case(family: str, fmt: "Format | str", params: dict) -> Case:
    """Return the case of ``family`` in ``fmt`` described by ``params`` (see the module docstring)."""
    require(family in FAMILIES, ConventionError, f"family: expected one of {FAMILIES}, got {family!r}")
    f = get_format(fmt)
    rng = np.random.default_rng(int(params["seed"]))
    if family in PAGED_FAMILIES:
        return _build_paged(family, f, dict(params), rng)
    return _build_dense(family, f, dict(params), rng)


def _round(x: np.ndarray, fmt: Format) -> np.ndarray:
    """Return x rounded to fmt, clipped first so that no value overflows the format."""
    limit = fmt.info.max_finite
    return round_to(np.clip(x, -limit, limit), fmt)


def _values(family: str, p: dict, shape: tuple, rng: np.random.Generator, which: str) -> np.ndarray:
    """Return raw (unrounded) values of one input tensor for a dense family."""
    if family == "pasa_bias":
        b, a = p["bias"], p["amplitude"]
        if p.get("distribution", "uniform") == "hybrid":  # PASA_Verification.py: N(mean, 1) + N(0, Am) Bernoulli(0.001)
            return rng.normal(b, 1.0, shape) + rng.normal(0.0, a, shape) * (rng.random(shape) < 0.001)
        return (rng.random(shape) - 0.5) * 2 * a + b  # (U[0,1) - 0.5) * 2 Am + mean_val
    amplitude = p.get("amplitude", 1.0)
    return rng.uniform(-amplitude, amplitude, shape)


def _build_dense(family: str, fmt: Format, p: dict, rng: np.random.Generator) -> Case:
    b, hkv, group, sq, sk, dk, dv = (int(p[n]) for n in ("b", "hkv", "group", "sq", "sk", "dk", "dv"))
    hq = hkv * group
    q = _values(family, p, (b, hq, sq, dk), rng, "q")
    k = _values(family, p, (b, hkv, sk, dk), rng, "k")
    v = _values(family, p, (b, hkv, sk, dv), rng, "v")
    scale = float(p["scale_factor"]) / math.sqrt(dk)
    if family == "growing_max":  # s_ij ~ (j + 1) / Sk * G: the max rises with every key block
        q = 1.0 + 0.1 * q
        ramp = (np.arange(sk) + 1.0) / max(sk, 1) * float(p["growth"]) / (scale * dk)
        k = ramp[None, None, :, None] + 0.3 * k
    elif family == "resonant":  # q_i = a w + noise, k_j = +-a w + noise, w a wave along the head dim
        w = np.cos(2 * np.pi * float(p["frequency"]) * np.arange(dk) / dk + float(p["phase"]))
        a = float(p["amplitude"])
        signs = rng.choice([-1.0, 1.0], size=(b, hkv, sk, 1))
        q = a * w + 0.1 * q
        k = signs * a * w + 0.1 * k
    conventions = _dense_conventions(p, scale, b, sq, sk)
    q, k, v = _round(q, fmt), _round(k, fmt), _round(v, fmt)
    lengths = conventions.get("kv_seqlens")
    if lengths is not None:  # slots past a sequence's length are garbage and must not be read
        pad = np.arange(sk)[None, None, :, None] >= lengths[:, None, None, None]
        k, v = np.where(pad, np.nan, k), np.where(pad, np.nan, v)
    return Case(family, p, fmt, q, k, v, conventions)


def _dense_conventions(p: dict, scale: float, b: int, sq: int, sk: int) -> dict:
    """Return the conventions a dense case's params describe."""
    conventions: dict[str, Any] = {"scale": scale, "causal": bool(p.get("causal", False))}
    if "causal_alignment" in p:
        conventions["causal_alignment"] = p["causal_alignment"]
    if p.get("window") is not None:
        conventions["window"] = tuple(p["window"])
    if p.get("softcap") is not None:
        conventions["softcap"] = float(p["softcap"])
    if p.get("kv_seqlens") is not None:
        conventions["kv_seqlens"] = np.asarray(p["kv_seqlens"], dtype=np.int64)
    if p.get("q_seqlens") is not None:
        conventions["q_seqlens"] = np.asarray(p["q_seqlens"], dtype=np.int64)
    if p.get("mask_seed") is not None:
        mask_rng = np.random.default_rng(int(p["mask_seed"]))
        mask = mask_rng.random((b, 1, sq, sk)) < 0.8  # (B, 1, Sq, Sk), True = may attend
        if p.get("empty_mask_row") and sq:
            mask[0, 0, 0, :] = False
        conventions["mask"] = mask
    return conventions


def _build_paged(family: str, fmt: Format, p: dict, rng: np.random.Generator) -> Case:
    b, hq, hkv, sq, dk, dv, page = (int(p[n]) for n in ("b", "hq", "hkv", "sq", "dk", "dv", "page"))
    lengths = np.asarray(p["cache_seqlens"], dtype=np.int64)
    max_blocks = max(1, -(-int(lengths.max(initial=0)) // page))
    used = [-(-int(n) // page) for n in lengths]
    num_blocks = sum(used) + 2  # two spare physical blocks that no sequence uses (NaN)
    tokens = rng.standard_normal((b, max_blocks * page, hkv, dk)) / 10  # FlashMLA: randn / 10, clamped
    q = rng.standard_normal((b, sq, hq, dk)) / 10
    if family in ("mla_growing_max", "amla_zero_hole"):
        rope = slice(dv, dk) if dk > dv else slice(0, dk)  # grow through the RoPE channels, V stays FlashMLA's
        scale = float(p["scale"])
        width = rope.stop - rope.start
        q[..., rope] = np.abs(q[..., rope]) + 0.5
        t = np.arange(max_blocks * page)
        if family == "amla_zero_hole":  # the max jumps at the second 512-key block
            ramp = np.where(t >= 512, float(p["growth"]), 0.0)
            tokens[:, :512, :, :int(p["zero_channels"])] = 0.0  # exact zeros in P~ V of block 1
        else:
            ramp = (t + 1.0) / max(int(lengths.max(initial=1)), 1) * float(p["growth"])
        tokens[..., rope] = np.abs(tokens[..., rope]) * 0.1 + (ramp / (scale * width * 0.5))[None, :, None, None]
    tokens = _round(np.clip(tokens, -1.0, 1.0) if family == "flashmla" else tokens, fmt)
    q = _round(np.clip(q, -1.0, 1.0) if family == "flashmla" else q, fmt)
    cache = np.full((num_blocks, page, hkv, dk), np.nan)  # unused slots: NaN poison
    table = np.full((b, max_blocks), FLASHMLA_TABLE_FILL, dtype=np.int64)
    physical = rng.permutation(num_blocks)  # a randomly permuted block table
    cursor = 0
    for i in range(b):
        for blk in range(used[i]):
            phys = int(physical[cursor])
            cursor += 1
            table[i, blk] = phys
            first = blk * page
            valid = min(page, int(lengths[i]) - first)
            cache[phys, :valid] = tokens[i, first:first + valid]
    paged = PagedInputs(q=q, k_cache=cache, block_table=table.astype(np.int32), cache_seqlens=lengths.astype(np.int32),
                        head_dim_v=dv)
    return paged_case(family, p, fmt, paged, scale=float(p["scale"]), causal=bool(p["causal"]))


def paged_case(family: str, params: dict, fmt: Format, paged: PagedInputs, *, scale: float, causal: bool) -> Case:
    """Return the Case of paged inputs: the dense view gathered by spec.paged, V the first head_dim_v channels."""
    lengths = paged.cache_seqlens.astype(np.int64)
    dense, _ = gather_paged(np.nan_to_num(paged.k_cache, nan=0.0), paged.block_table, lengths)  # (B, h_kv, S_max, Dk)
    conventions = {"scale": scale, "causal": causal, "causal_alignment": "bottom_right", "kv_seqlens": lengths}
    return Case(family, params, fmt, np.swapaxes(paged.q, 1, 2), dense, dense[..., :paged.head_dim_v],  # q (B, h_q, s_q, Dk)
                conventions, paged)


# ----------------------------------------------------------------------------------------------
# Strategies (Hypothesis house style): they draw params, build_case builds
# ----------------------------------------------------------------------------------------------

def _seeds() -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def dense_params(draw, family: str, kernel: Kernel) -> dict:
    """Draw the params of a dense case of ``family`` that ``kernel`` can be given."""
    hkv = draw(st.integers(min_value=1, max_value=2))
    group = draw(st.integers(min_value=1, max_value=3)) if kernel.gqa else 1
    sq = draw(st.integers(min_value=1, max_value=8))
    min_sk = 0 if kernel.empty_kv else 1
    if family == "block_edges":
        sk = draw(st.sampled_from(EDGE_LENGTHS))
    elif family == "fully_masked":  # short keys, so that Sq > Sk empties the first rows under bottom-right causal
        sk = draw(st.integers(min_value=min_sk, max_value=6))
    elif family in ("pasa_bias", "resonant"):
        sk = draw(st.integers(min_value=max(min_sk, 1), max_value=300))
    else:
        sk = draw(st.integers(min_value=max(min_sk, 17 if family == "growing_max" else 1), max_value=80))
    p: dict[str, Any] = {"seed": draw(_seeds()), "b": draw(st.integers(min_value=1, max_value=2)), "hkv": hkv,
                         "group": group, "sq": sq, "sk": sk, "dk": draw(st.sampled_from(DIMS)),
                         "dv": draw(st.sampled_from(DIMS)), "scale_factor": draw(st.sampled_from([0.5, 1.0, 2.0]))}
    if family == "uniform":
        p["amplitude"] = draw(st.sampled_from([0.5, 2.0, 4.0]))
    elif family == "growing_max":
        p["growth"] = draw(st.sampled_from([10.0, 40.0]))
    elif family == "pasa_bias":
        p["bias"] = draw(st.sampled_from(PASA_BIASES))
        p["amplitude"] = draw(st.sampled_from(PASA_AMPLITUDES))
        p["distribution"] = draw(st.sampled_from(["uniform", "hybrid"]))
        p["dk"] = draw(st.sampled_from([16, 64, 128]))
    elif family == "resonant":
        p["amplitude"] = draw(st.sampled_from([2.0, 4.0, 8.0]))
        p["frequency"] = draw(st.integers(min_value=0, max_value=4))
        p["phase"] = draw(st.sampled_from([0.0, 0.5]))
    p.update(draw(_convention_params(family, kernel, p["b"], sq, sk)))
    return p


@st.composite
def _convention_params(draw, family: str, kernel: Kernel, b: int, sq: int, sk: int) -> dict:
    """Draw the convention params the kernel takes; ``fully_masked`` forces at least one empty row."""
    c: dict[str, Any] = {}
    if kernel.supports("causal"):
        c["causal"] = draw(st.booleans())
        if kernel.supports("causal_alignment"):
            c["causal_alignment"] = draw(st.sampled_from(["bottom_right", "top_left"]))
        else:
            c["causal_alignment"] = kernel.causal_alignment
    if kernel.supports("window") and draw(st.integers(min_value=0, max_value=4)) == 0:
        c["window"] = [draw(st.one_of(st.none(), st.integers(min_value=0, max_value=sk))),
                       draw(st.one_of(st.none(), st.integers(min_value=0, max_value=sk)))]
    if kernel.supports("softcap") and family != "pasa_bias" and draw(st.integers(min_value=0, max_value=4)) == 0:
        c["softcap"] = draw(st.sampled_from([5.0, 20.0, 50.0]))
    if kernel.supports("mask") and draw(st.integers(min_value=0, max_value=4)) == 0:
        c["mask_seed"] = draw(_seeds())
    if kernel.supports("kv_seqlens") and draw(st.booleans()):
        c["kv_seqlens"] = draw(st.lists(st.integers(min_value=0, max_value=sk), min_size=b, max_size=b))
    if family == "fully_masked":
        c.update(draw(_empty_row_params(kernel, b, sq, sk)))
    return c


@st.composite
def _empty_row_params(draw, kernel: Kernel, b: int, sq: int, sk: int) -> dict:
    """Draw conventions that leave at least one row without an admissible key, by a mechanism the kernel has."""
    ways = []
    if kernel.supports("kv_seqlens"):
        ways.append({"kv_seqlens": [0] + [sk] * (b - 1)})
    if kernel.supports("mask"):
        ways.append({"mask_seed": draw(_seeds()), "empty_mask_row": True})
    if kernel.supports("causal") and sq > sk and kernel.causal_alignment == "bottom_right" \
            or kernel.supports("causal_alignment") and sq > sk:
        ways.append({"causal": True, "causal_alignment": "bottom_right"})
    if kernel.supports("window") and kernel.supports("causal"):
        ways.append({"window": [0, 0], "causal": False, "kv_seqlens": None})
    if not ways:
        return {}
    return draw(st.sampled_from(ways))


@st.composite
def paged_params(draw, family: str, kernel: Kernel) -> dict:
    """Draw the params of a paged (FlashMLA-style) case of ``family``."""
    dk, dv = kernel.head_dims or (576, 512)
    b = draw(st.integers(min_value=1, max_value=2))
    sq = draw(st.integers(min_value=1, max_value=4))
    hq = draw(st.sampled_from(MLA_HEADS if family != "amla_zero_hole" else (1, 3, 16)))
    if family == "amla_zero_hole":
        lengths = draw(st.lists(st.integers(min_value=513, max_value=640), min_size=b, max_size=b))
    else:
        edges = st.sampled_from([0, 1, FLASHMLA_PAGE - 1, FLASHMLA_PAGE, FLASHMLA_PAGE + 1, 2 * FLASHMLA_PAGE + 1])
        lengths = draw(st.lists(st.one_of(edges, st.integers(min_value=0, max_value=200)), min_size=b, max_size=b))
    p: dict[str, Any] = {"seed": draw(_seeds()), "b": b, "hq": hq, "hkv": 1, "sq": sq, "dk": dk, "dv": dv,
                         "page": FLASHMLA_PAGE, "cache_seqlens": lengths,
                         "scale": draw(st.sampled_from([dk ** -0.5, 0.135234])),  # FlashMLA default; DeepSeek-V3
                         "causal": draw(st.booleans()) if kernel.supports("causal") else False}
    if family == "mla_growing_max":
        p["growth"] = draw(st.sampled_from([10.0, 40.0]))
    if family == "amla_zero_hole":
        p["growth"] = draw(st.sampled_from([4.0, 20.0]))
        p["zero_channels"] = draw(st.integers(min_value=1, max_value=dv))
    return p


def families_for(op: str, kernel: Kernel) -> tuple[str, ...]:
    """Return the families ``op`` draws for ``kernel`` (paged families only for mla-signature kernels)."""
    require(op in OPS, ConventionError, f"op: expected one of {OPS}, got {op!r}")
    paged = kernel.signature == "mla"
    chosen = tuple(f for f in OP_FAMILIES[op] if (f in PAGED_FAMILIES) == paged)
    require(chosen, ConventionError,
            f"op {op!r}: no case family fits a kernel of signature {kernel.signature!r}; "
            f"use a {'paged' if not paged else 'dense'} op")
    return chosen


def conformance_cases(op: str, kernel: Kernel, fmt: "Format | str") -> st.SearchStrategy[Case]:
    """Cases of ``op`` in ``fmt`` that ``kernel`` can be given (a strategy of :class:`Case`)."""
    f = get_format(fmt)
    strategies = []
    for family in families_for(op, kernel):
        draw_params = paged_params if family in PAGED_FAMILIES else dense_params
        strategies.append(draw_params(family, kernel).map(lambda p, fam=family: build_case(fam, f, p)))
    return st.one_of(strategies)


# ----------------------------------------------------------------------------------------------
# The edge table: fixed cases every check runs before its random draws
# ----------------------------------------------------------------------------------------------

def _dense(seed: int, **overrides) -> dict:
    p = {"seed": seed, "b": 1, "hkv": 1, "group": 2, "sq": 3, "sk": 20, "dk": 8, "dv": 8, "scale_factor": 1.0,
         "causal": False, "causal_alignment": "bottom_right"}
    p.update(overrides)
    return p



def fit_params(params: dict, kernel: Kernel) -> dict:
    """Return dense ``params`` with every convention the kernel does not take removed or replaced by its own."""
    p = dict(params)
    if not kernel.supports("causal"):
        p["causal"] = False
    if not kernel.supports("causal_alignment"):
        p["causal_alignment"] = kernel.causal_alignment
    for convention, keys in (("window", ("window",)), ("softcap", ("softcap",)), ("mask", ("mask_seed", "empty_mask_row")),
                             ("kv_seqlens", ("kv_seqlens",)), ("q_seqlens", ("q_seqlens",))):
        if not kernel.supports(convention):
            for key in keys:
                p.pop(key, None)
    if not kernel.gqa:
        p["group"] = 1
    return p


_DENSE_EDGES = (
    ("uniform", _dense(11, b=2, hkv=2, group=2, sq=5, sk=37, dk=16, causal=True, kv_seqlens=[37, 23], amplitude=2.0)),
    ("uniform", _dense(12, b=2, hkv=2, group=2, sq=5, sk=37, dk=16, causal=True, causal_alignment="top_left",
                       amplitude=2.0)),
    ("growing_max", _dense(13, sq=3, sk=50, dk=16, dv=16, growth=40.0)),
    ("fully_masked", _dense(14, b=2, sq=6, sk=3, causal=True, amplitude=1.0)),
    ("fully_masked", _dense(15, b=2, sq=2, sk=5, kv_seqlens=[0, 5], mask_seed=15, empty_mask_row=True,
                            amplitude=1.0)),
    ("block_edges", _dense(16, sq=4, sk=17, dk=24, softcap=5.0, window=[4, 0], mask_seed=16, amplitude=2.0)),
    ("uniform", _dense(17, group=1, sq=4, sk=64, dk=64, dv=64, amplitude=4.0)),
    ("pasa_bias", _dense(18, sk=40, dk=64, dv=16, bias=30.0, amplitude=5.0, distribution="uniform")),
    ("resonant", _dense(19, sk=48, dk=32, amplitude=4.0, frequency=1, phase=0.0)),
)
_PASA_EDGES = (
    ("pasa_bias", _dense(21, group=1, sq=2, sk=300, dk=64, dv=16, bias=30.0, amplitude=0.5, causal=True,
                         distribution="uniform")),
    ("pasa_bias", _dense(22, group=1, sq=2, sk=200, dk=64, dv=16, bias=20.0, amplitude=20.0, kv_seqlens=[150],
                         distribution="uniform")),
    ("pasa_bias", _dense(23, sq=3, sk=130, dk=32, bias=10.0, amplitude=5.0, distribution="hybrid")),
)
_PAGED_EDGES = (
    ("flashmla", {"seed": 31, "b": 2, "hq": 16, "hkv": 1, "sq": 2, "dk": 576, "dv": 512, "page": FLASHMLA_PAGE,
                  "cache_seqlens": [65, 0], "scale": 0.135234, "causal": True}),
    ("flashmla", {"seed": 32, "b": 1, "hq": 3, "hkv": 1, "sq": 1, "dk": 576, "dv": 512, "page": FLASHMLA_PAGE,
                  "cache_seqlens": [129], "scale": 576 ** -0.5, "causal": False}),
    ("mla_growing_max", {"seed": 33, "b": 1, "hq": 3, "hkv": 1, "sq": 4, "dk": 576, "dv": 512, "page": FLASHMLA_PAGE,
                         "cache_seqlens": [150], "scale": 0.135234, "causal": True, "growth": 40.0}),
)
_AMLA_EDGES = (
    ("amla_zero_hole", {"seed": 34, "b": 1, "hq": 1, "hkv": 1, "sq": 1, "dk": 576, "dv": 512, "page": FLASHMLA_PAGE,
                        "cache_seqlens": [520], "scale": 0.135234, "causal": False, "growth": 20.0,
                        "zero_channels": 64}),
)


def edge_params(op: str, kernel: Kernel) -> list[tuple[str, dict]]:
    """Return the op's edge cases as (family, params), fitted to what ``kernel`` takes, without duplicates."""
    families = families_for(op, kernel)
    if kernel.signature == "mla":
        table = _PAGED_EDGES + (_AMLA_EDGES if op == "amla" else ())
        dims = kernel.head_dims or (576, 512)
        rows = [(f, {**p, "dk": dims[0], "dv": dims[1], "causal": p["causal"] and kernel.supports("causal")})
                for f, p in table]
    else:
        table = (_PASA_EDGES if op == "pasa" else ()) + _DENSE_EDGES
        rows = [(f, fit_params(p, kernel)) for f, p in table
                if f in families and (kernel.empty_kv or p["sk"] > 0)]
    seen, unique = set(), []
    for family, p in rows:
        key = (family, repr(sorted(p.items())))
        if key not in seen:
            seen.add(key)
            unique.append((family, p))
    return unique


# ----------------------------------------------------------------------------------------------
# The vector table: explicit params, seeds in the names
# ----------------------------------------------------------------------------------------------

def vector_params(level: int = 1) -> list[tuple[str, str, str, dict]]:
    """Return the vector set's (op, format, family, params) rows; level 2 adds seeds.

    Small on purpose: every expected value comes from the mpmath oracle.
    """
    require(level in (1, 2), ConventionError, f"level: expected 1 or 2, got {level!r}")
    rows: list[tuple[str, str, str, dict]] = []
    seeds = (1, 2) if level == 1 else (1, 2, 3, 4, 5)
    for fmt in ("fp32", "bf16", "fp16"):
        for seed in seeds:
            rows += [
                ("attention", fmt, "uniform", _dense(seed, amplitude=2.0)),
                ("attention", fmt, "uniform", _dense(seed, hkv=2, sq=4, sk=9, causal=True, kv_seqlens=[7],
                                                     amplitude=2.0)),
                ("attention", fmt, "growing_max", _dense(seed, sk=33, growth=10.0)),
                ("attention", fmt, "block_edges", _dense(seed, sk=17, causal=True, causal_alignment="top_left")),
                ("attention", fmt, "fully_masked", _dense(seed, b=2, sq=4, sk=2, causal=True, kv_seqlens=[0, 2])),
                ("attention", fmt, "resonant", _dense(seed, sk=12, amplitude=4.0, frequency=2, phase=0.0)),
            ]
        rows.append(("pasa", fmt, "pasa_bias", _dense(1, sk=24, dk=16, dv=16, bias=20.0, amplitude=5.0,
                                                      distribution="uniform")))
        rows.append(("mla", fmt, "flashmla", {"seed": 1, "b": 2, "hq": 3, "hkv": 1, "sq": 2, "dk": 576, "dv": 512,
                                              "page": FLASHMLA_PAGE, "cache_seqlens": [9, 0], "scale": 0.135234,
                                              "causal": True}))
    return rows
