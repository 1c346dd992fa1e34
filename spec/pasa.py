"""PASA: online pseudo-average shifting attention, emulated with its author's rounding points.

Normative sources:

- L. Cheng et al., "Online Pseudo-average Shifting Attention (PASA) for Robust Low-precision
  LLM Inference: Algorithms and Numerical Analysis", arXiv:2503.01873v1 (Alg. 1, Theorem 1;
  the body is not public, so the algorithm is fixed by the next source).
- The first author's reference: chenglong92/PASA, branch PASA_Torch, commit
  14f5c6f6a13d3a68352e74d123b48aa3a0bf460c, ``PASA_Verification.py`` function ``pasa()``
  ("pasa()" below) and ``tiling_par.constructM``. Facts are taken from it, not its code.

Per query row, over KV blocks j = 0..T-1 of n = ``block_k`` keys (the last one padded):

    pre  M~ = fl_in(c_M (I - (beta/n) 1 1^T));  gamma = fl_vec(beta/(1 - beta))
         K'_j = fl_in(M~ K_j) for every block, once per kv head          (the shifting GEMM)
     1   m = m_init;  l = 0;  O = 0
     2   S' = fl_acc(Q_c K'_j^T)                                          (shifted scores)
     3   r  = fl_vec(rowmean(S')) over all n columns, BEFORE masking       (pseudo-average)
     4   S' = S' + mask_j  (-inf where a key may not be attended)
     5   m~ = rowmax(S');  P = fl(exp(fl(S' - m~)));  l~ = fl(rowsum(P))   (local softmax)
     6   R_old = R  (R = r when j = 0)
     7   R = fl(fl(r w1) + fl(R w2)),  w1 = fl(1/(j+1)),  w2 = fl(j/(j+1)) (running reference)
     8   Delta = fl(fl(r - R) gamma);  delta = fl(gamma fl(R_old - R))      (difference first, then x gamma)
     9   m_new = max(fl(m~ + Delta), fl(m + delta))
    10   l = fl(fl(e_old l) + fl(e_new l~))
    11   O = fl(fl(e_old O) + fl(e_new fl(P V_j)))
    12   m = m_new
    13   O = fl_out(fl(O / l))

with e_old, e_new the rescale factors of the previous state and of the block (see the
variants). c_M is the softmax scale c when it is folded into M (``scale_placement="shift"``,
the author's layout) and 1 when it is applied to Q first (``"q"``: Q_c = fl_in(c Q)).

Why it is exact in real arithmetic: S' = S M with M^-1 = I + (gamma/n) 1 1^T, so
S = S' + gamma r' 1^T, and step 9-11 keep the state relative to gamma R, so O/l is softmax
attention for every beta < 1 and every reference sequence R (``proofs/pasa_recovery.py``).
Why it avoids FP16 overflow: the bias of K is reduced to (1 - beta) of itself before the
GEMM, and gamma r' is never formed on its own, only gamma times a difference of means
(``proofs/pasa_overflow.py``; the certified region is ``reference/pasa_bounds.py``).

Precision layout (pasa(): ``mm_tp``, ``vec_tp``, ``OutputDtype``) as a PrecisionPolicy:
matmul_input = mm_tp (Q, K, V, M and K'), accumulate = mm_tp (the GEMM outputs S', P V),
softmax = vec_tp (every vector quantity: r, R, gamma, Delta, delta, m, P, l, O),
output = OutputDtype. The reference runs everything in FP16 (:data:`POLICY_PASA_FP16`);
its "fp16-fp32 hybrid-precision" option sets vec_tp = FP32 (:data:`POLICY_PASA_HYBRID`).
Each GEMM and row reduction is modelled by the policy's accumulation rule (default: the
exact sum rounded once, a Cube unit's FP32 accumulator). The row mean is the exact sum of
fl64(S'/n) rounded once: for n a power of two (the reference's 128) that is the correctly
rounded mean. Query blocks do not appear: rows are independent and pasa() uses its
query tiling (``s1``) only for scheduling; decode (Sq = 1) is the same code.

Variants (``PasaConfig.variant``); the lines that differ are marked ``# [variant: ...]``:

``author``: pasa() at 14f5c6f bit for bit (up to the sign of zero) under the modelling above
(GEMMs and reductions exact then rounded once, exp correctly rounded), defects included.
``attnspec``: the same algorithm with the defects below fixed. Default.

Catalogue of deviations of ``attnspec`` from pasa() (each is reproduced by ``author``):

1. Fully masked (row, block): pasa() computes m~ = -inf and exp(-inf - (-inf)) = NaN, so a
   row whose block has no admissible key becomes NaN (a causal mask, or a row beyond a
   shorter sequence). attnspec lets such a block contribute nothing (FlashAttention's
   ``max == -inf ? 0 : max``), and a row with no admissible key at all returns O = 0 and
   LSE = ``empty_lse``, as :mod:`spec.attention` defines.
2. Causal mask: pasa()'s test helper ``getAttentionMask(types=1)`` is ``triu(ones)``, which
   masks key j >= i: the diagonal too, so query 0 sees no key (NaN by item 1). ``author``
   with ``causal=True`` applies exactly that mask (top-left, diagonal excluded); attnspec
   uses :mod:`spec.masks` (bottom-right aligned by default, diagonal included).
3. Rescale exponents: pasa() evaluates e_old = exp(fl(fl(m - m_new) + delta)), in a different
   order from the max in step 9, so the rounded argument can be positive (by up to half an
   ulp of m: up to +16 when |m| is near 32768) and l can exceed the number of keys.
   attnspec exponentiates the same rounded candidates that entered the max,
   e = exp(fl(candidate - m_new)), which is <= 0 in every format (``proofs/pasa_fp16.py``).
4. Padding of the last block: pasa() appends zeros when Sk < n, else copies of the last
   n*T - Sk rows. Padded keys enter the row mean (they must: item 5), and zero keys lie
   outside the inputs' bias/amplitude box, which voids the overflow bounds. attnspec repeats
   the last valid key of each sequence (zero when the sequence is empty).
5. (Not a deviation; required by both.) The mean r is over all n columns, masked and padded
   included. A mean over the admissible keys only breaks S = S' + gamma r' 1^T
   (counterexample in ``proofs/pasa_recovery.py``).
6. FP32 vector path: pasa() multiplies P (vec_tp = FP32) by V (FP16), which PyTorch's CPU
   matmul rejects (mixed dtypes). Decision (2026-11-28): ``author`` follows PyTorch's type
   promotion (V widened exactly, the product rounded into the promoted format), attnspec
   casts P to the matmul input format first, as a Cube unit takes FP16 operands. With
   vec_tp = mm_tp the two coincide.
7. M and gamma: pasa() builds M in float32 (``torch.eye(n) - torch.ones((n, n)) * afa / n``
   with a float32 ``afa``, times the Python-float scale, which PyTorch's CPU kernel casts to
   float32) and casts it to FP16, and forms gamma = afa/(1 - afa) in float32 before casting
   to vec_tp: two roundings each. attnspec rounds c(1 - beta/n), -c beta/n and beta/(1-beta)
   once from binary64, which is what ``optimal_para.py``'s fixed-point condition assumes.
8. Initial max: pasa() starts from the finite sentinel -60000; attnspec from -inf
   (``initial_max`` selects either for either variant). With -60000, a row whose shifted
   logits m~ + Delta all lie below -60000 + delta loses every weight (l = 0, O/l = NaN).
9. Soft-capping is rejected (ConventionError): tanh is not shift invariant, so the recovery
   cannot undo the shift.

``PasaResult.lse`` is not a kernel output (pasa() returns only O): it is m + gamma R + log l
evaluated in binary64 from the final stored state, what a caller could form from (m, l, R).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from .attention import check_strict
from .errors import ConventionError, DomainError, MaskError, ShapeError, require
from .formats import Format, round_to
from .pasa_beta import stored_shift_entries
from .policy import PrecisionPolicy, require_policy
from .problem import AttentionProblem, attention_problem

Variant = Literal["attnspec", "author"]
ScalePlacement = Literal["shift", "q"]
VARIANTS: tuple[str, ...] = ("attnspec", "author")
SCALE_PLACEMENTS: tuple[str, ...] = ("shift", "q")
AUTHOR_INITIAL_MAX = -60000.0  # pasa(): m_j_1 = zeros(...) - 60000

#: Everything in FP16, as pasa() runs by default (mm_tp = vec_tp = OutputDtype = float16).
POLICY_PASA_FP16 = PrecisionPolicy(Format.FP16, Format.FP16, Format.FP16, Format.FP16, name="pasa-fp16")
#: pasa()'s "fp16-fp32 hybrid-precision" option: FP16 GEMMs, FP32 vector unit.
POLICY_PASA_HYBRID = PrecisionPolicy(Format.FP16, Format.FP16, Format.FP32, Format.FP16, name="pasa-fp16/fp32")


@dataclass(frozen=True)
class PasaConfig:
    """The algorithm's parameters. See the module docstring for each variant's meaning."""

    beta: float
    block_k: int = 128
    scale_placement: ScalePlacement = "q"
    initial_max: float = -np.inf
    variant: Variant = "attnspec"

    def __post_init__(self) -> None:
        require(isinstance(self.beta, (float, int)) and not isinstance(self.beta, bool)
                and np.isfinite(self.beta) and 0 <= self.beta < 1, DomainError,
                f"beta: expected a number in [0, 1), got {self.beta!r}")
        require(isinstance(self.block_k, (int, np.integer)) and not isinstance(self.block_k, bool)
                and self.block_k >= 1, ShapeError, f"block_k: expected a positive int, got {self.block_k!r}")
        require(self.scale_placement in SCALE_PLACEMENTS, ConventionError,
                f"scale_placement: expected one of {SCALE_PLACEMENTS}, got {self.scale_placement!r}")
        require(self.variant in VARIANTS, ConventionError, f"variant: expected one of {VARIANTS}, got {self.variant!r}")
        require(isinstance(self.initial_max, (float, int)) and not isinstance(self.initial_max, bool)
                and (self.initial_max == -np.inf or (np.isfinite(self.initial_max) and self.initial_max < 0)),
                DomainError, f"initial_max: expected -inf or a finite negative number, got {self.initial_max!r}")


#: attnspec's PASA: beta = 1 - 2**-4 (the default justified in spec/pasa_beta.py), scale on Q.
PASA_ATTNSPEC = PasaConfig(beta=0.9375)
#: pasa() at 14f5c6f as its __main__ runs it: afa = 0.984497, scale folded into M, m starts at -60000.
PASA_AUTHOR = PasaConfig(beta=0.984497, scale_placement="shift", initial_max=AUTHOR_INITIAL_MAX, variant="author")

#: The stored quantities traced by :class:`PasaResult` (peaks and non-finite values).
TRACED = ("k_shift", "scores", "row_mean", "reference", "offset", "rebase", "max", "sum", "acc", "out")


@dataclass(frozen=True)
class PasaResult:
    """O (B, Hq, Sq, Dv), the binary64 LSE diagnostic (B, Hq, Sq), and a trace of magnitudes.

    ``peaks[name]`` is the largest finite |x| a stored quantity of :data:`TRACED` reached;
    ``nonfinite`` names those that held an Inf or a NaN (for ``max``: NaN or +inf).
    """

    out: np.ndarray
    lse: np.ndarray
    peaks: dict[str, float] = field(default_factory=dict)
    nonfinite: frozenset[str] = frozenset()

    @property
    def overflowed(self) -> bool:
        return bool(self.nonfinite)


class _Trace:
    """Running maxima of the stored quantities, for :class:`PasaResult`."""

    def __init__(self) -> None:
        self.peaks = {name: 0.0 for name in TRACED}
        self.bad: set[str] = set()

    def see(self, name: str, x: np.ndarray, bad: np.ndarray | None = None) -> None:
        finite = np.isfinite(x)
        if x.size and np.any(finite):
            self.peaks[name] = max(self.peaks[name], float(np.max(np.abs(x[finite]))))
        if np.any(~finite if bad is None else bad):
            self.bad.add(name)


def shift_constants(config: PasaConfig, scale: float, policy: PrecisionPolicy) -> tuple[np.ndarray, float]:
    """Return (M~ (n, n) in the matmul input format, gamma in the vector format) (step "pre")."""
    n = config.block_k
    c = scale if config.scale_placement == "shift" else 1.0
    if config.variant == "author":  # [variant: author] tiling_par.constructM in float32, then M * scalar
        b32 = float(round_to(config.beta, Format.FP32))  # afa = torch.tensor(0.984497).float()
        off32 = float(round_to(b32 / n, Format.FP32))
        diag32 = float(round_to(1.0 - off32, Format.FP32))
        if config.scale_placement == "shift":
            c32 = float(round_to(c, Format.FP32))
            diag32 = float(round_to(diag32 * c32, Format.FP32))
            off32 = float(round_to(off32 * c32, Format.FP32))
        diag, off = float(policy.to_input(diag32)), float(policy.to_input(-off32))
        gamma = float(policy.to_softmax(round_to(b32 / float(round_to(1.0 - b32, Format.FP32)), Format.FP32)))
    else:  # [variant: attnspec] each entry rounded once from binary64 (optimal_para.py's model)
        diag, off = stored_shift_entries(config.beta, n, fmt=policy.matmul_input, scale=abs(c))
        diag, off = np.copysign(diag, c), np.copysign(off, -c)
        gamma = float(policy.to_softmax(config.beta / (1.0 - config.beta)))
    m = np.full((n, n), off) + np.eye(n) * (diag - off)
    return m, gamma


def padded_kv(problem: AttentionProblem, config: PasaConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return K and V padded to T * n keys (B, Hkv, T n, D) by the variant's rule (deviation 4)."""
    n = config.block_k
    b, hkv, sk, _ = problem.k.shape
    total = max(1, -(-sk // n)) * n
    if config.variant == "author":  # [variant: author] pasa(): zeros if S2 < s2, else the last rows again
        pad = total - sk
        if sk < n:
            extra_k = np.zeros((b, hkv, pad, problem.k.shape[3]))
            extra_v = np.zeros((b, hkv, pad, problem.v.shape[3]))
        else:
            extra_k, extra_v = problem.k[:, :, sk - pad:], problem.v[:, :, sk - pad:]
        return np.concatenate([problem.k, extra_k], axis=2), np.concatenate([problem.v, extra_v], axis=2)
    # [variant: attnspec] every slot past a sequence's length repeats its last valid key
    source = np.minimum(np.arange(total)[None, :], np.maximum(problem.kv_lens, 1)[:, None] - 1)  # (B, T n)
    k = np.take_along_axis(problem.k, np.minimum(source, sk - 1)[:, None, :, None], axis=2) if sk else \
        np.zeros((b, hkv, total, problem.k.shape[3]))
    v = np.take_along_axis(problem.v, np.minimum(source, sk - 1)[:, None, :, None], axis=2) if sk else \
        np.zeros((b, hkv, total, problem.v.shape[3]))
    return k, v


def _promoted(a: Format, b: Format) -> Format:
    """Return PyTorch's result type of two float formats: the smallest that holds both."""
    for f in (Format.FP16, Format.BF16, Format.FP32, Format.FP64):
        if f.info.p >= max(a.info.p, b.info.p) and f.info.emax >= max(a.info.emax, b.info.emax):
            return f
    return Format.FP64


def _check_arguments(config: PasaConfig, policy: PrecisionPolicy) -> None:
    """Raise unless ``config`` is a PasaConfig and ``policy`` a PrecisionPolicy (a name is neither)."""
    require(isinstance(config, PasaConfig), ConventionError,
            f"config: expected a PasaConfig, e.g. PASA_ATTNSPEC or PasaConfig(beta=0.9375), got {config!r}")
    require_policy(policy)


def pasa_from_problem(problem: AttentionProblem, config: PasaConfig = PASA_ATTNSPEC,
                      policy: PrecisionPolicy = POLICY_PASA_FP16) -> PasaResult:
    """Return PASA's output for a validated problem (steps pre-13 of the module docstring)."""
    _check_arguments(config, policy)
    require(problem.softcap is None, ConventionError,
            "softcap: expected None, PASA recovers the logits by shift invariance and tanh is not shift invariant")
    author = config.variant == "author"
    n = config.block_k
    trace = _Trace()
    shift, gamma = shift_constants(config, problem.scale, policy)  # pre
    q = policy.to_input(problem.q)  # (B, Hq, Sq, Dk)
    if config.scale_placement == "q":
        q = policy.to_input(q * problem.scale)
    k_pad, v_pad = padded_kv(problem, config)  # (B, Hkv, T n, D)
    b, hkv, total, dk = k_pad.shape
    blocks = total // n
    k_blocks = policy.to_input(k_pad).reshape(b, hkv, blocks, n, dk)  # (B, Hkv, T, n, Dk)
    k_shift = policy.to_input(policy.matmul(shift, k_blocks)).reshape(b, hkv, total, dk)  # pre: K'_j = M~ K_j
    trace.see("k_shift", k_shift)
    k_shift = k_shift[:, problem.kv_head_of_q]  # (B, Hq, T n, Dk): GQA, query head h uses kv head h // G
    v_pad = policy.to_input(v_pad)[:, problem.kv_head_of_q]  # (B, Hq, T n, Dv)
    sk = problem.k.shape[2]
    bias = None if problem.bias is None else np.broadcast_to(problem.bias, problem.allowed.shape)

    shape = problem.q.shape[:3] + (1,)  # (B, Hq, Sq, 1)
    m = np.full(shape, float(policy.to_softmax(config.initial_max)))  # 1
    l = np.zeros(shape)
    o = np.zeros(shape[:3] + (problem.v.shape[3],))
    r_bar = None
    for j in range(blocks):
        cols = slice(j * n, (j + 1) * n)
        s = policy.to_softmax(policy.matmul(q, np.swapaxes(k_shift[:, :, cols], -1, -2)))  # 2: (B, Hq, Sq, n)
        trace.see("scores", s)
        r = policy.sum(s / n, axis=-1)  # 3: over every column, masked and padded ones included
        trace.see("row_mean", r)
        real = min(sk, (j + 1) * n) - j * n  # columns of this block that are keys of the problem
        allowed = np.zeros(s.shape, dtype=bool)
        allowed[..., :max(real, 0)] = problem.allowed[..., j * n:j * n + max(real, 0)]
        if bias is not None:
            s_b = np.zeros(s.shape)
            s_b[..., :max(real, 0)] = bias[..., j * n:j * n + max(real, 0)]
            s = policy.to_softmax(s + s_b)
        s = np.where(allowed, s, -np.inf)  # 4
        m_loc = np.max(s, axis=-1, keepdims=True, initial=-np.inf)  # 5
        if author:  # [variant: author] softmax_npu: exp(S - max) even when max = -inf (NaN)
            with np.errstate(invalid="ignore"):
                p = policy.exp(policy.to_softmax(s - m_loc))
        else:  # [variant: attnspec] a block with no admissible key contributes exp(-inf) = 0
            p = policy.exp(policy.to_softmax(s - np.where(m_loc == -np.inf, 0.0, m_loc)))
        l_loc = policy.sum(p, axis=-1)
        r_old = r if r_bar is None else r_bar  # 6
        w1 = policy.to_softmax(1.0 / (j + 1))  # 7: Temp_Ratio1, Temp_Ratio2
        w2 = policy.to_softmax(j / (j + 1))
        r_bar = policy.to_softmax(policy.to_softmax(r * w1) + policy.to_softmax(r_old * w2))
        trace.see("reference", r_bar)
        offset = policy.to_softmax(policy.to_softmax(r - r_bar) * gamma)  # 8: Delta (ave_j)
        rebase = policy.to_softmax(gamma * policy.to_softmax(r_old - r_bar))  # 8: delta (ave_j_1)
        trace.see("offset", offset)
        trace.see("rebase", rebase)
        with np.errstate(invalid="ignore"):
            cand_new = policy.to_softmax(m_loc + offset)  # 9
            cand_old = policy.to_softmax(m + rebase)
            m_new = np.maximum(cand_new, cand_old)
            if author:  # [variant: author] exp(m_j_1 - m_temp + ave_j_1), exp(m_j - m_temp + ave_j)
                e_old = policy.exp(policy.to_softmax(policy.to_softmax(m - m_new) + rebase))
                e_new = policy.exp(policy.to_softmax(policy.to_softmax(m_loc - m_new) + offset))
            else:  # [variant: attnspec] the candidates that entered the max, so every argument is <= 0
                safe = np.where(m_new == -np.inf, 0.0, m_new)
                e_old = policy.exp(policy.to_softmax(cand_old - safe))
                e_new = policy.exp(policy.to_softmax(cand_new - safe))
            l = policy.to_softmax(policy.to_softmax(e_old * l) + policy.to_softmax(e_new * l_loc))  # 10
            v = v_pad[:, :, cols]  # (B, Hq, n, Dv)
            if author:  # [variant: author] matmul(p, v) in PyTorch's promoted type (deviation 6)
                pv = policy.matmul(p, v, fmt=_promoted(policy.softmax, policy.matmul_input))
            else:  # [variant: attnspec] P cast to the GEMM operand format
                pv = policy.matmul(policy.to_input(p), v)
            o = policy.to_softmax(policy.to_softmax(e_old * o) + policy.to_softmax(e_new * pv))  # 11
        trace.see("max", m_new, np.isnan(m_new) | (m_new == np.inf))
        trace.see("sum", l)
        trace.see("acc", o)
        m = m_new  # 12

    with np.errstate(invalid="ignore", divide="ignore"):
        if author:  # [variant: author] O0 / l_j_1, whatever l is
            out = policy.to_output(policy.to_softmax(o / l))  # 13
            lse = m + gamma * r_bar + np.log(l)
        else:  # [variant: attnspec] a row with no admissible key: O = 0, LSE = empty_lse
            empty = ~np.any(problem.allowed, axis=-1, keepdims=True)  # (B, Hq, Sq, 1)
            out = np.where(empty, 0.0, policy.to_output(policy.to_softmax(o / np.where(empty, 1.0, l))))  # 13
            lse = np.where(empty, problem.empty_lse, m + gamma * r_bar + np.log(np.where(empty, 1.0, l)))
    trace.see("out", out)
    return PasaResult(out=out, lse=lse[..., 0], peaks=dict(trace.peaks), nonfinite=frozenset(trace.bad))


def pasa_attention(q, k, v, *, config: PasaConfig = PASA_ATTNSPEC, policy: PrecisionPolicy = POLICY_PASA_FP16,
                   strict: bool = False, **conventions) -> PasaResult:
    """Return PASA's result; ``conventions`` as in :func:`spec.attention.attention` (no softcap).

    With ``config.variant == "author"``, ``causal=True`` means pasa()'s ``triu(ones)`` mask
    (key j masked for query i iff j >= i; deviation 2) and takes no ``causal_alignment`` or
    other mask.
    """
    _check_arguments(config, policy)
    author_causal = config.variant == "author" and conventions.get("causal", False)
    if author_causal:
        require("causal_alignment" not in conventions and conventions.get("mask") is None, MaskError,
                "causal_alignment, mask: expected neither with the author variant's causal mask (triu(ones))")
        conventions = {**conventions, "causal": False}
    problem = attention_problem(q, k, v, **conventions)
    if author_causal:
        sq, sk = problem.q.shape[2], problem.k.shape[2]
        problem = replace(problem, allowed=problem.allowed & np.tri(sq, sk, -1, dtype=bool))  # getAttentionMask(types=1)
    if strict:
        check_strict(problem, policy)
    return pasa_from_problem(problem, config, policy)
