"""Tolerance rules of the conformance kit: when is a kernel's O (and LSE) close enough to the exact one?

Every rule compares the kernel with a *gold* result G of known accuracy: the exact value
correctly rounded to binary64 (the mpmath oracle) or the definition evaluated in binary64
with its a-priori error bound g (:func:`reference.bounds.attention_error_bound`, ~1e-14
relative). A measured error |x - G| is then within g of the true error, and every tolerance
below is widened by g where it is used, so the gold can never cause a false alarm.

The FlashAttention rule (the default; Dao-AILab/flash-attention ``tests/test_flash_attn.py``
and ``hopper/test_flash_attn.py`` @ 0251105, flash-attention#410)
    A kernel may be k times as inaccurate as a *naive same-format implementation* R of the
    same function, plus a floor:

        max |x - G|  <=  k * (max |R - G| + g) + f * ulp_F(max |G|) + g      over the whole O tensor

    R is :func:`spec.attention.softmax_attention` under ``PrecisionPolicy.uniform(F)``
    (every value held in the input format F; dot products rounded once for FP16/BF16, every
    addition rounded for FP32: :func:`naive_policy`), the same-format flash-decoding
    (``spec.split_kv``: 3 splits of 16-key FlashAttention-2 blocks and the LSE combine,
    whose weights exp(lse_s - lse) carry an error ~u |lse| that the definition does not
    have: a correct FP32 split-KV kernel is ~1.8x the naive error), and, where the naive
    overflows (FP16 with large logits: non-finite elements are ignored), the definition
    with an FP32 accumulator and vector unit (:func:`mixed_policy`); the largest error counts. An op may add its own algorithm as a further R: AMLA's and PASA's
    specs, whose errors are part of what those algorithms are (the AMLA zero hole, PASA's
    FP16 shift). k = 2 as in FlashAttention (FA2 ``test_flash_attn_output``). The floor is
    FA3's ``fwd_atol = 2 * max|(ref + 0.3 - 0.3) - ref|``, i.e. two round-trip errors at
    the output's magnitude; we write it f = 2 ulps of F at the row's largest |G|, without
    FA3's 0.3 offset, so that a row of tiny outputs is not excused by an O(1) floor.
    Why a floor at all: when R happens to be (nearly) correctly rounded, k * err(R) can be
    below the half ulp any kernel that rounds its output must incur
    (flash-attention#1849: 0.00244 against 2 * 0.00098 on B200).
    Per tensor, as FlashAttention does (``scope="tensor"``, the default); ``scope="row"``
    applies the rule to each query row (max over Dv), so that a row of small outputs is not
    excused by another row's budget. The row scope is stricter than FlashAttention's rule,
    and ONNX's reference evaluator exceeds it by a few percent on rows of large logits.
    Non-finite x where G is finite always fails.

The LSE rule (LSE is checked separately, against an a-priori bound)
    Kernels compute LSE in FP32 whatever their input format (FlashAttention, FlashMLA), and
    the naive same-format R would hold it in BF16, 2**16 times coarser; so LSE is judged by
    the rounding-error bound of the FlashAttention-2 recurrence with an FP32 (``lse_format``)
    accumulator and vector unit, any summation order and any tiling down to one key per
    block (:func:`lse_bound`, derived in :mod:`reference.bounds`):

        |lse - G_lse|  <=  k * B_lse + g_lse + ulp_{lse_format}(|G_lse|)

    with k = 2, which also absorbs hardware exp/log approximations up to about one more ulp
    per evaluation (PTX ``ex2.approx``). Rows without an admissible key must carry exactly
    the LSE the kernel declares (+inf, -inf or NaN).

The FlashMLA comparator (``rule="flashmla"``; deepseek-ai/FlashMLA @ 9241ae3
``tests/kernelkit/compare.py::check_is_allclose``)
    1. the positions of +inf, -inf and NaN must be equal in x and G; they are then set to 0;
    2. every element must have |x - G| < abs_tol or |x - G| / (|G| + 1e-6) < rel_tol;
    3. cos_diff = 1 - 2 sum(x G) / sum(x^2 + G^2) = ||x - G||^2 / (||x||^2 + ||G||^2) <= cos_diff_tol
       (0 when sum(G^2) < 1e-12, as FlashMLA does).
    FlashMLA's BF16 values (``test_flash_mla_dense_decoding.py``): out abs 8e-4, rel 2.01/128,
    cos 5e-6; lse abs 1e-6, rel 8.01/65536, cos 1e-7 (the default). :meth:`FlashMLAComparator.for_output`
    carries them to any format F with eps = 2**(1-p):
    rel = 2.01 eps (two ulps; exactly FlashMLA's 2.01/128 for BF16); cos = eps**2 / 12
    (the variance of a uniform rounding error of one ulp relative to the value's binade,
    5.09e-6 for BF16, which FlashMLA rounds to 5e-6); abs = eps max|V|: P rounded to F before
    P V adds at most u sum_j p_j |v_j| <= u max|V| and the output rounding u |O| <= u max|V|
    (u = eps/2). FlashMLA's 8e-4 = 0.1 eps_BF16 max|V| with its V clamped to [-1, 1] relies
    on randn/10 data, whose |v| is ~10x below the clamp; on cases with few keys and |V| near
    its maximum it rejects correct kernels (seen: 2.6e-3 error, 1.6e-3 allowed). The LSE
    values stay FlashMLA's, since its LSE is FP32 for every input format.

Every verdict's message has the house format ``max_err=..., but should be <= ... [where]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attnspec.reference.bounds import attention_error_bound
from attnspec.spec.errors import ConventionError, require
from attnspec.spec.formats import Format, get_format, ulp
from attnspec.spec.policy import PrecisionPolicy
from attnspec.spec.problem import AttentionProblem

RULES = ("flash", "flashmla")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one rule on one tensor."""

    ok: bool
    rule: str
    tensor: str  # "out" or "lse"
    err: float  # the worst measured error (where the ratio is worst)
    tol: float  # the tolerance there
    ratio: float  # worst err / tol; > 1 fails (inf for a non-finite mismatch)
    where: tuple | None  # index of the worst row (or element)
    message: str
    data: dict = field(default_factory=dict)


def naive_policy(fmt: "Format | str") -> PrecisionPolicy:
    """Return the naive same-format policy of the FlashAttention rule: every value held in ``fmt``.

    Decision (2026-11-28): a naive FP16/BF16 implementation's GEMMs accumulate in FP32 inside
    the GEMM (FlashAttention's ``out_pt`` is torch matmuls), which rounding the exact sum once
    models; a naive FP32 implementation's accumulator is FP32 itself, so every addition
    rounds ("sequential"). With "exact" FP32 the reference is more accurate than any FP32
    kernel, and a correct split-KV kernel fails (ratio ~1.8 seen).
    """
    f = get_format(fmt)
    return PrecisionPolicy.uniform(f, "sequential" if f is Format.FP32 else "exact")


def mixed_policy(fmt: "Format | str") -> PrecisionPolicy:
    """Return the same-format policy with an FP32 accumulator and vector unit (used where naive overflows)."""
    f = get_format(fmt)
    wide = Format.FP64 if f is Format.FP64 else Format.FP32
    return PrecisionPolicy(f, wide, wide, f, name=f"{f}/fp32-acc")


def lse_bound(problem: AttentionProblem, lse_format: "Format | str" = Format.FP32) -> np.ndarray:
    """Return B_lse (B, Hq, Sq): the LSE error bound of any ``lse_format``-internal FlashAttention of ``problem``.

    Inputs are exact in ``lse_format`` (every input format here is a subset of FP32), the
    accumulator and the vector unit round to it, in any summation order ("sequential"
    rounding: Higham's gamma_n holds for every order), with one key per block (the most
    rescales any tiling can do). Where the first-order bound breaks down (its error budget
    reaches 1, e.g. logits of magnitude ~1e7) it is +inf: such rows are not checkable.
    """
    wide = get_format(lse_format)
    bound = attention_error_bound(problem, PrecisionPolicy.uniform(wide, "sequential"), algorithm="flash", block_k=1)[1]
    return np.where(np.isfinite(bound) & (bound >= 0), bound, np.inf)


def _row_max(a: np.ndarray) -> np.ndarray:
    """Return the max over the last axis (0 for an empty axis)."""
    return np.max(a, axis=-1, initial=0.0)


def _where(index: np.ndarray, flat: int) -> tuple:
    return tuple(int(i) for i in np.unravel_index(flat, index.shape))


def _message(err: float, tol: float, detail: str, where: tuple | None) -> str:
    return f"max_err={err:.6g}, but should be <= {tol:.6g} ({detail}) [at {where}]"


@dataclass(frozen=True)
class FlashRule:
    """FlashAttention's rule with FA3's floor (see the module docstring)."""

    k: float = 2.0
    floor_ulps: float = 2.0
    scope: str = "tensor"

    def __post_init__(self) -> None:
        require(self.scope in ("row", "tensor"), ConventionError, f"scope: expected 'row' or 'tensor', got {self.scope!r}")
        require(self.k >= 1 and self.floor_ulps >= 0, ConventionError,
                f"k, floor_ulps: expected k >= 1 and floor_ulps >= 0, got {self.k}, {self.floor_ulps}")

    def tolerance(self, gold: np.ndarray, references: list[np.ndarray], fmt: Format,
                  gold_bound: np.ndarray) -> np.ndarray:
        """Return the allowed max |x - G|: per row (B, Hq, Sq) for scope "row", a 0-d array for "tensor"."""
        ref_err = np.zeros(gold.shape[:-1])
        for r in references:
            with np.errstate(invalid="ignore"):
                diff = np.where(np.isfinite(r), np.abs(r - gold), 0.0)  # an overflowed R says nothing
            ref_err = np.maximum(ref_err, _row_max(diff))
        g = _row_max(gold_bound)
        magnitude = _row_max(np.abs(gold))
        if self.scope == "tensor":
            ref_err, g, magnitude = (np.max(a, initial=0.0) for a in (ref_err, g, magnitude))
        floor = self.floor_ulps * ulp(magnitude, fmt)
        return self.k * (ref_err + g) + floor + g

    def judge(self, out: np.ndarray, gold: np.ndarray, references: list[np.ndarray], fmt: Format,
              gold_bound: np.ndarray) -> Verdict:
        """Return the verdict on O (B, Hq, Sq, Dv) against the gold, the references and the gold's bound."""
        tol = self.tolerance(gold, references, fmt, gold_bound)
        return judge_against(out, gold, tol, rule="flash", tensor="out", scope=self.scope,
                             detail=f"{self.k:g} x naive {fmt} error + {self.floor_ulps:g} ulp floor")


def judge_against(x: np.ndarray, gold: np.ndarray, tol: np.ndarray, *, rule: str, tensor: str, scope: str,
                  detail: str) -> Verdict:
    """Return the verdict of max |x - G| <= tol per row (the last axis of O; elementwise for LSE).

    Where G is non-finite (an empty row's LSE), x must be the same value (NaN matches NaN).
    """
    same = (x == gold) | (np.isnan(x) & np.isnan(gold))
    bad_special = (~np.isfinite(gold) | ~np.isfinite(x)) & ~same
    if np.any(bad_special):
        idx = tuple(int(i) for i in np.argwhere(bad_special)[0])
        return Verdict(False, rule, tensor, float("inf"), 0.0, float("inf"), idx,
                       f"{tensor}: got {x[idx]!r} where the gold is {gold[idx]!r} [at {idx}]",
                       {"special_mismatches": int(np.sum(bad_special))})
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(x - gold))
    err = _row_max(diff) if tensor == "out" else diff
    if scope == "tensor":
        err = np.max(err, initial=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / tol)
    flat = int(np.argmax(ratio)) if ratio.size else 0
    worst = _where(ratio, flat) if ratio.ndim else None
    err_w = float(err.reshape(-1)[flat]) if err.size else 0.0
    tol_w = float(np.broadcast_to(tol, err.shape).reshape(-1)[flat]) if err.size else 0.0
    ratio_w = float(ratio.reshape(-1)[flat]) if ratio.size else 0.0
    ok = bool(np.all(err <= tol))
    message = f"{tensor}: " + (f"max_err/tol={ratio_w:.3g} ok" if ok else _message(err_w, tol_w, detail, worst))
    return Verdict(ok, rule, tensor, err_w, tol_w, ratio_w, worst, message,
                   {"max_err": float(np.max(err, initial=0.0)), "rows_failed": int(np.sum(~(err <= tol)))})


@dataclass(frozen=True)
class LseRule:
    """The a-priori LSE rule (see the module docstring)."""

    k: float = 2.0

    def tolerance(self, gold: np.ndarray, bound: np.ndarray, gold_bound: np.ndarray, lse_format: Format) -> np.ndarray:
        """Return the allowed |lse - G| per row (B, Hq, Sq): k B_lse + g + one ulp of ``lse_format``."""
        finite = np.isfinite(gold)
        floor = np.where(finite, ulp(np.where(finite, gold, 0.0), lse_format), 0.0)
        return self.k * bound + gold_bound + floor

    def judge(self, lse: np.ndarray, gold: np.ndarray, tol: np.ndarray) -> Verdict:
        """Return the verdict on LSE (B, Hq, Sq) against its per-row tolerance."""
        return judge_against(lse, gold, tol, rule="flash", tensor="lse", scope="row",
                             detail=f"{self.k:g} x the LSE error bound of an FP32 FlashAttention + 1 ulp")


@dataclass(frozen=True)
class FlashMLAComparator:
    """FlashMLA's three-part comparator (see the module docstring)."""

    abs_tol: float
    rel_tol: float
    cos_diff_tol: float = 1e-7
    rel_eps: float = 1e-6  # compare.py: raw_abs_err / (|ref| + 1e-6)

    @classmethod
    def flashmla_bf16_out(cls) -> "FlashMLAComparator":
        """Return FlashMLA's own BF16 output tolerances (test_flash_mla_dense_decoding.py)."""
        return cls(abs_tol=8e-4, rel_tol=2.01 / 128, cos_diff_tol=5e-6)

    @classmethod
    def for_output(cls, fmt: "Format | str", v_max: float) -> "FlashMLAComparator":
        """Return FlashMLA's output tolerances carried to ``fmt`` and a V of largest magnitude ``v_max``."""
        eps = get_format(fmt).info.epsilon
        return cls(abs_tol=eps * max(float(v_max), np.finfo(float).tiny), rel_tol=2.01 * eps, cos_diff_tol=eps * eps / 12)

    @classmethod
    def for_lse(cls) -> "FlashMLAComparator":
        """Return FlashMLA's LSE tolerances (its LSE is FP32 for every input format)."""
        return cls(abs_tol=1e-6, rel_tol=8.01 / 65536)

    def judge(self, x: np.ndarray, gold: np.ndarray, tensor: str) -> Verdict:
        """Return the verdict of the three-part comparison of ``x`` against ``gold``."""
        x = np.array(x, dtype=np.float64)
        g = np.array(gold, dtype=np.float64)
        for special in (np.inf, -np.inf, np.nan):  # 1. anomalies at equal positions, then zeroed
            in_x, in_g = (np.isnan(x), np.isnan(g)) if np.isnan(special) else (x == special, g == special)
            if not np.array_equal(in_x, in_g):
                idx = tuple(int(i) for i in np.argwhere(in_x != in_g)[0])
                return Verdict(False, "flashmla", tensor, float("inf"), 0.0, float("inf"), idx,
                               f"{tensor}: anomaly {special} at {int(in_x.sum())} positions in the kernel's "
                               f"result but {int(in_g.sum())} in the gold [first mismatch at {idx}]")
            x[in_x] = 0.0
            g[in_g] = 0.0
        abs_err = np.abs(x - g)  # 2. elementwise abs-or-rel
        rel_err = abs_err / (np.abs(g) + self.rel_eps)
        failed = ~((abs_err < self.abs_tol) | (rel_err < self.rel_tol))
        ref_sq = float(np.sum(g * g))
        cos_diff = 0.0 if ref_sq < 1e-12 else 1.0 - 2.0 * float(np.sum(x * g)) / (ref_sq + float(np.sum(x * x)))
        if np.any(failed):
            idx = tuple(int(i) for i in np.argwhere(failed)[0])
            return Verdict(False, "flashmla", tensor, float(abs_err[idx]), self.abs_tol, float(rel_err[idx] / self.rel_tol),
                           idx, f"{tensor}: abs_err={abs_err[idx]:.6g}, rel_err={rel_err[idx]:.6g}, but should have "
                                f"abs_err < {self.abs_tol:.6g} or rel_err < {self.rel_tol:.6g} "
                                f"({int(failed.sum())} elements fail) [at {idx}]",
                           {"cos_diff": cos_diff, "elements_failed": int(failed.sum())})
        ok = abs(cos_diff) <= self.cos_diff_tol  # 3. global cos_diff
        ratio = abs(cos_diff) / self.cos_diff_tol
        message = f"{tensor}: cos_diff={cos_diff:.3g} ok" if ok else \
            f"{tensor}: cos_diff={cos_diff:.6g}, but should be <= {self.cos_diff_tol:.6g}"
        return Verdict(ok, "flashmla", tensor, abs(cos_diff), self.cos_diff_tol, ratio, None, message,
                       {"cos_diff": cos_diff, "max_abs_err": float(np.max(abs_err, initial=0.0))})
