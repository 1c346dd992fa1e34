"""AMLA: FlashAttention's output rescale done as an INT32 add to the FP32 bits of O (MLA decode kernel view).

Normative sources:

- Q. Liao et al., "AMLA: MUL by ADD in FlashAttention Rescaling", arXiv 2509.25224 (abstract
  and introduction; the body and its algorithm box are not public). The identity
  ``F * 2^n = as_fp32(as_int32(F) + n * 2^23)`` and the claim that the kernel ships in CANN.
- The shipped kernel, which this module follows line by line: hicann/ops-transformer @
  c29bc1069d3252c641e2aa059ec88f392d3f05ac (2025-11-15), directory
  ``attention/common/op_kernel/arch32/``:
  ``fia_block_vec_nonquant_mla.h`` (Vector side: ``ElewiseCompute``, ``AttentionMaskCompute``,
  ``SoftmaxFlashV2Compute``, ``AmlaVecCompute``, ``ProcessAmlaNupdate``, ``DealBmm2ResBaseBlock``,
  ``Bmm2CastAndCopyOut``, ``DealInvalidRows``), ``fia_block_cube_nonquant_mla.h`` (C2 writes
  the first block and ``SetAtomicAdd<float>``-adds the others) and ``fia_kernel_nonquant_mla.h``
  (the KV loop over ``ceil(kv_len / 512)`` blocks; ``InitAllZeroOutput`` for a zero length).
  Tags below read ``# c29bc10 <function>``.
- Rounding modes: CANN Ascend C API reference, "RoundMode": ``CAST_RINT`` rounds to nearest,
  ties to even; ``CAST_ROUND`` rounds to nearest, ties away from zero (its example: 2.5 -> 3);
  ``CAST_NONE`` is exact where the cast loses nothing.

Per task (the M = G x s_q rows that share a KV head) and KV block i = 1..T of ``block_k`` = 512
keys (the last block holds the remainder; a sequence of length L has ceil(L / 512) blocks):

    S    = fl(fl(Q K_i^T) * scale); causal-masked keys -> -1e12        C1; ElewiseCompute
    m_i  = max(m_{i-1}, rowmax S)                  (m_0 = -2e38)        SoftmaxFlashV2
    P    = exp(S - m_i);  l_i = exp(m_{i-1} - m_i) l_{i-1} + rowsum P    SoftmaxFlashV2
    n_i  = round_away(fl(m_i * (-1/ln2)))          (integer-valued)     AmlaVecCompute
    r_i  = exp(fl(fl(fl(m_i * 1/ln2) + n_i) * ln2))  in [2^-1/2, 2^1/2]
    r^_i = round_away_bf16(r_i);  c_i = fl(r_i / r^_i)   (c_0 = 1)
    P~   = round_away_bf16(fl(P * r^_i))                                 -> C2
    N_i  = int32(round_away(fl(fl(max(n_i - n_{i-1}, -30) + fl(fl(1.5 fl(fl(c_{i-1}/c_i) - 1)) + 1e-6)) 2^23)))
    O   <- as_fp32(as_int32(O) + N_i)     INT32 atomic add, i >= 2      ProcessAmlaNupdate
    O   <- fl(O + P~ V_i)                 FP32 atomic add (block 1: O = P~ V_1)   C2 Fixpipe
    out  = cast(fl(guard(O) / fl(l_T r^_T))),  guard: O -> 0 unless |O| <= 1e10   DealBmm2ResBaseBlock

fl is FP32 round-to-nearest-even (the Vector core's ``T = float``). In exact arithmetic the
accumulator keeps the invariant O_i = (2^{n_i} / c_i) sum_{j<=i} exp(S_j) V_j and the
output is softmax attention (``proofs/amla_invariant.py``); the bit trick is exact only on
its domain (:func:`exponent_add_domain`; ``proofs/amla_identity.py``, ``proofs/amla_failures.py``)
and the compensation only approximately (``proofs/amla_compensation.py``).

Variants (``variant=``), marked on the lines where they differ:

- ``cann``: the shipped kernel, as above.
- ``exact_residual``: r is not rounded to BF16 (r^ = r, so c = 1 and the compensation is zero).
- ``no_compensation``: N_i drops the 1.5 (c_{i-1}/c_i - 1) term (clamp and 1e-6 stay).
- ``ideal``: O is multiplied by exactly 2^{n_i - n_{i-1}} c_{i-1} / c_i (no clamp, no bias, no
  bit trick, hence no guard); everything else is as in ``cann``.

Decision (2026-11-29): CAST_ROUND is modelled as round-to-nearest, ties away from zero, for
the three casts that use it (n_i, r^_i and P~ into the input format, N_i into int32); the
final cast is ties-to-even for a BF16 output and ties-away for FP16, as the kernel selects.
Decision (2026-11-29): the INT32 atomic add wraps modulo 2^32 (two's complement), and an FP32
add whose result is NaN stores the default NaN 0x7FC00000. Which NaN the hardware writes is
not documented; it can matter only after a corrupted zero (the zero hole), see
``docs/amla.md``.
Decision (2026-11-29): keys beyond a sequence's length are not columns of the block at all
(the kernel processes ``actualSingleProcessSInnerSize`` columns); keys masked by causality
are columns filled with -1e12, as ``AttentionMaskCompute`` does. A row with no admitted key
gets O = 0 (``DealInvalidRows``), a sequence of length 0 gets O = 0 (``InitAllZeroOutput``);
both report LSE = ``empty_lse``.
Decision (2026-11-29): the returned LSE is fl(m_T + log l_T), the pair (m, l) that the
kernel's flash-decode partials store (``ComputeLogSumExpAndCopyToGm``); its single-split
output path writes no LSE.

Modelled freedom (the spec picks one, a conforming kernel may differ): exp, the divisions
and the P~ V dot product are correctly rounded (the Ascend vector ``Exp`` and ``Div`` and the
Cube's accumulation order within a block are not specified to that level); subnormal FP32
values are kept (no flush to zero); the row sum of P is rounded once.

Known deviations of the shipped kernel from softmax attention (each has a test):

- The zero hole: an element of O that is exactly 0 (or below the normal range) when N_i is
  added becomes a huge number, +-Inf or NaN; the guard then zeroes it at the end and every
  later contribution to it is lost (``reference/amla_cases.py``: ``amla_zero_hole_*``).
  When three or more large rescales follow, the corrupted value can decay below 1e10 and
  reach the output as garbage (``amla_zero_hole_escape_*``).
- The guard also zeroes legitimate elements with |O| > 1e10, i.e. outputs with
  |out| * l_T * r^_T > 1e10 (large V).
- O elements below 2^-95 (tiny V) are outside the exponent add's safe domain.
- Admitted logits below -1e12 lose against masked keys, which are filled with -1e12.

Scope: the kernel supports causal (bottom-right) masking, per-sequence KV lengths and paged
caches, which are modelled; the sliding window, the flash-decode split of one task over
cores and the quantised paths are not. The widths are the kernel's 576 / 512 by default
(``config``); other widths are accepted for study, as a config that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .attention import logits
from .errors import ConventionError, DomainError, FormatError, ShapeError, require
from .formats import (Format, exponent_field, fp32_as_int32, int32_as_fp32, require_representable,
                      round_to)
from .mla import DEEPSEEK_V3, DecodeResult, MLAConfig, decode_problem
from .policy import PrecisionPolicy, require_policy
from .problem import AttentionProblem

VARIANTS = ("cann", "exact_residual", "no_compensation", "ideal")

#: The kernel's precision: BF16 Q, K and P~, FP32 accumulator and vector unit, BF16 output.
POLICY_AMLA = PrecisionPolicy(Format.BF16, Format.FP32, Format.FP32, Format.BF16, name="amla-bf16")
#: The kernel's FP16 instantiation (``KV_T = half``).
POLICY_AMLA_FP16 = PrecisionPolicy(Format.FP16, Format.FP32, Format.FP32, Format.FP16, name="amla-fp16")

BLOCK_K = 512  # c29bc10 fia_tiling_nonquant_mla.cpp: S2 base size
MANTISSA_BITS = 23
_LN2 = float(round_to(np.log(2.0), Format.FP32))  # c29bc10 LN2 (T = float)
_RECIP_LN2 = float(round_to(1.0 / _LN2, Format.FP32))  # c29bc10 RECIP_OF_LN2 = 1 / LN2, in float
_DEFAULT_NAN = np.float64(np.nan)  # positive quiet NaN: stored as 0x7FC00000


@dataclass(frozen=True)
class AmlaConstants:
    """The kernel's literal constants. Change them only to study alternatives (the tests' mutants do).

    ``dn_clamp`` or ``guard`` None removes that step.
    """

    dn_clamp: float | None = -30.0  # c29bc10 AmlaVecCompute: Maxs(nUpdateTmp, nUpdateTmp, -30.0)
    compensation: float = 1.5  # Muls(epsUb, epsUb, 1.5)
    bias: float = float(round_to(1e-6, Format.FP32))  # Adds(epsUb, epsUb, 0.000001)
    guard: float | None = 1e10  # DealBmm2ResBaseBlock: CompareScalar(|O|, 1e10, LE), else 0
    mask_fill: float = float(round_to(-1e12, Format.FP32))  # BOOL_ATTEN_MASK_SCALAR_VALUE
    max_init: float = float(round_to(-2e38, Format.FP32))  # SOFTMAX_MIN_NUM


CANN = AmlaConstants()

#: The range of N_i the kernel can emit when every O is rescaled by a clamped dn in [-30, 0]:
#: |k| = |1.5 (c_{i-1}/c_i - 1) + 1e-6| < 0.0118 < 2^-6 since |c - 1| <= 2^-8
#: (``proofs/amla_compensation.py``), so N in [-30 * 2^23 - 2^17, 2^17].
N_MIN = -30 * 2**MANTISSA_BITS - 2**17
N_MAX = 2**17

#: The domain of n in :func:`int32_add`: an INT32 addend (the kernel's ``nInt32Out``).
INT32_ADDEND = (-2**31, 2**31 - 1)
#: The domain of n in :func:`exponent_add`: n << 23 must be an INT32, so n in [-256, 255].
EXPONENT_SHIFT = (-2**(31 - MANTISSA_BITS), 2**(31 - MANTISSA_BITS) - 1)


# ----------------------------------------------------------------------------------------------
# Bit tricks and roundings, each with its domain
# ----------------------------------------------------------------------------------------------

def _integers(n, domain: tuple[int, int], what: str) -> np.ndarray:
    """Return ``n`` as int64 after checking that every element is an integer in ``domain``.

    Integer dtypes and integer-valued floats are accepted; anything else (a fraction, NaN, a
    bool, a value outside ``domain``) raises DomainError: never truncated, never wrapped.
    """
    a = np.asarray(n)
    lo, hi = domain
    if a.dtype.kind in "iuf":
        with np.errstate(invalid="ignore"):
            ok = (a >= lo) & (a <= hi) & (a == np.trunc(a))  # NaN and Inf fail the comparisons
    else:
        ok = np.zeros(a.shape, dtype=bool)  # bool, object (a Python int beyond int64), strings
    if not np.all(ok):
        i = int(np.argmin(ok.reshape(-1)))
        got = a.reshape(-1)[i:i + 1].tolist()[0]
        raise DomainError(f"n: expected integers in [{lo}, {hi}] ({what}), got {got!r}")
    return a.astype(np.int64)


def int32_add(x, n) -> np.ndarray:
    """Return as_fp32(as_int32(x) + n) for FP32 values x, wrapping modulo 2^32 like the INT32 atomic add.

    Domain of n: integers in :data:`INT32_ADDEND` (DomainError otherwise). The sum wraps: that
    is the atomic add's behaviour, not an input error.
    """
    words = fp32_as_int32(x).astype(np.int64) + _integers(n, INT32_ADDEND, "an INT32 addend")
    wrapped = ((words + 2**31) % 2**32 - 2**31).astype(np.int32)
    with np.errstate(invalid="ignore"):
        return int32_as_fp32(wrapped)


def exponent_add(x, n) -> np.ndarray:
    """Return as_fp32(as_int32(x) + (n << 23)): AMLA's multiply by 2^n (AMLA §3.1).

    Domain of n: integers in :data:`EXPONENT_SHIFT` (DomainError otherwise); the result equals
    fl(x * 2^n) only inside :func:`exponent_add_domain`.
    """
    return int32_add(x, _integers(n, EXPONENT_SHIFT, "n << 23 an INT32") * 2**MANTISSA_BITS)


def exponent_add_domain(x, n) -> np.ndarray:
    """Return where :func:`exponent_add` equals fl(x * 2^n): x normal (e in [1, 254]) and e + n in [1, 254].

    Both signs. Outside it the result is wrong in the ways ``proofs/amla_failures.py`` lists.
    """
    e = exponent_field(x, Format.FP32)
    e_n = e + np.asarray(n, dtype=np.int64)
    return (e >= 1) & (e <= 254) & (e_n >= 1) & (e_n <= 254)


def rescale_safe_domain(x) -> np.ndarray:
    """Return where adding any N in [N_MIN, N_MAX] to x keeps it a normal number of the same sign.

    x finite with biased exponent in [32, 253], i.e. 2^-95 <= |x| < 2^127
    (``proofs/amla_failures.py::prove_clamped_add_keeps_normal``).
    """
    e = exponent_field(x, Format.FP32)
    return (e >= 32) & (e <= 253)


def round_half_away(x, fmt: "Format | str") -> np.ndarray:
    """Return x rounded to nearest in ``fmt``, ties away from zero (Ascend ``CAST_ROUND``)."""
    return round_to(x, fmt, ties="away")


def round_half_away_int(x) -> np.ndarray:
    """Return x rounded to an integer, ties away from zero (``CAST_ROUND``), as float64.

    Domain: FP32 values (|x| + 0.5 is then exact in binary64 or lands on no integer).
    """
    x = np.asarray(x, dtype=np.float64)
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def output_cast(x, fmt: Format) -> np.ndarray:
    """Return the final cast (c29bc10 Bmm2CastAndCopyOut): ties to even into BF16 (``CAST_RINT``), ties away into FP16.

    FP32 is the flash-decode partial path (``Bmm2FDDataCopyOut``), which stores O / L uncast.
    """
    return round_half_away(x, fmt) if fmt is Format.FP16 else round_to(x, fmt)


# ----------------------------------------------------------------------------------------------
# The Vector core's per-row values (AmlaVecCompute)
# ----------------------------------------------------------------------------------------------

def rescale_exponent(m: np.ndarray) -> np.ndarray:
    """Return n = round_away(fl(m * (-1/ln2))), integer-valued (AMLA §3.2; c29bc10 Muls + Cast CAST_ROUND)."""
    return round_half_away_int(round_to(m * -_RECIP_LN2, Format.FP32))


def residual(m: np.ndarray, n: np.ndarray, policy: PrecisionPolicy) -> np.ndarray:
    """Return r = exp((m/ln2 + n) ln2) in FP32, in [2^-1/2, 2^1/2] (AMLA §3.2; c29bc10 Muls, Add, Muls, Exp)."""
    t = policy.to_softmax(policy.to_softmax(m * _RECIP_LN2) + n)
    return policy.exp(policy.to_softmax(t * _LN2))


def nupdate(n: np.ndarray, n_prev: np.ndarray, c: np.ndarray, c_prev: np.ndarray, variant: str,
            policy: PrecisionPolicy, constants: AmlaConstants = CANN) -> np.ndarray:
    """Return N_i, the int32 the Vector core atomically adds to each row of O (AMLA §3.3 step 6), as int64.

    The FP32 operations are those of c29bc10 AmlaVecCompute, in its order.
    """
    f32 = policy.to_softmax
    dn = f32(n - n_prev)  # Sub(nUpdateTmp, nTmp, nValueUb[prev])
    k = f32(f32(c_prev / c) - 1.0)  # Div(epsUb, cof(i-1), cof(i)); Adds(epsUb, epsUb, -1)
    k = f32(k * constants.compensation)  # Muls(epsUb, epsUb, 1.5)   [variant: cann, exact_residual]
    if variant == "no_compensation":
        k = np.zeros_like(k)  # [variant: no_compensation]
    if constants.dn_clamp is not None:
        dn = np.maximum(dn, constants.dn_clamp)  # Maxs(nUpdateTmp, nUpdateTmp, -30)
    k = f32(k + constants.bias)  # Adds(epsUb, epsUb, 1e-6)
    t = f32(f32(dn + k) * 2.0**MANTISSA_BITS)  # Add; Muls(nUpdateTmp, nUpdateTmp, FLOAT_E_SCALAR)
    return round_half_away_int(t).astype(np.int64)  # Cast(nInt32Out, nUpdateTmp, CAST_ROUND)


# ----------------------------------------------------------------------------------------------
# The recurrence over KV blocks
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AmlaState:
    """The running state of every task after some KV blocks."""

    o: np.ndarray  # (B, Hq, Sq, Dv) the accumulator in global memory (FP32 values; accumulate format for ideal)
    m: np.ndarray  # (B, Hq, Sq, 1) running max, FP32
    l: np.ndarray  # (B, Hq, Sq, 1) running sum of P, FP32
    n: np.ndarray  # (B, Hq, Sq, 1) integer exponent n_i
    c: np.ndarray  # (B, Hq, Sq, 1) residual ratio c_i = r_i / r^_i
    r_hat: np.ndarray  # (B, Hq, Sq, 1) r^_i
    blocks: np.ndarray  # (B,) KV blocks processed per sequence
    guarded: np.ndarray  # (B, Hq, Sq, Dv) bool, set by amla_finalize: elements the guard zeroed


def initial_state(problem: AttentionProblem, constants: AmlaConstants = CANN) -> AmlaState:
    """Return the state before the first block: m = -2e38, l = 0, c = 1 (c29bc10 InitSoftmaxDefaultBuffer)."""
    b, hq, sq, _ = problem.q.shape
    row = (b, hq, sq, 1)
    return AmlaState(o=np.zeros((b, hq, sq, problem.v.shape[3])), m=np.full(row, constants.max_init),
                     l=np.zeros(row), n=np.zeros(row), c=np.ones(row), r_hat=np.ones(row),
                     blocks=np.zeros(b, dtype=np.int64), guarded=np.zeros((b, hq, sq, problem.v.shape[3]), bool))


def block_logits(block: AttentionProblem, valid: np.ndarray, policy: PrecisionPolicy,
                 constants: AmlaConstants = CANN) -> np.ndarray:
    """Return S (B, Hq, Sq, w) of one KV block: -1e12 where masked, -inf beyond the sequence (no column).

    ``valid`` (B, w) says which keys lie inside their sequence. Raises DomainError when an
    admitted logit is not finite in FP32 (AMLA's domain).
    """
    s = logits(block, policy)  # (B, Hq, Sq, w)  C1, then Muls(scale)
    admitted = block.allowed
    bad = admitted & ~np.isfinite(s)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DomainError(f"q, k: expected scaled logits finite in FP32, got {s[idx]!r} "
                          f"at (b, h, i, j_in_block) = {idx}")
    key_valid = valid[:, None, None, :]  # (B, 1, 1, w)
    return np.where(admitted, s, np.where(key_valid, constants.mask_fill, -np.inf))  # c29bc10 AttentionMaskCompute


def _group_matmul(p: np.ndarray, v: np.ndarray, policy: PrecisionPolicy) -> np.ndarray:
    """Return P~ V per KV head without repeating V onto the query heads: (B, Hq, Sq, w) @ (B, Hkv, w, Dv)."""
    b, hq, sq, w = p.shape
    hkv = v.shape[1]
    grouped = p.reshape(b, hkv, (hq // hkv) * sq, w)  # (B, Hkv, G*Sq, w): heads g*G..g*G+G-1 share kv head g
    return policy.matmul(grouped, v).reshape(b, hq, sq, v.shape[3])  # (B, Hq, Sq, Dv)


def amla_step(state: AmlaState, s: np.ndarray, v: np.ndarray, active: np.ndarray, variant: str,
              policy: PrecisionPolicy, constants: AmlaConstants = CANN) -> AmlaState:
    """Return the state after one more KV block: V1 (softmax, AMLA values), the INT32 add, then C2.

    ``s`` (B, Hq, Sq, w) from :func:`block_logits`, ``v`` (B, Hkv, w, Dv) input-format values;
    sequences with ``active`` (B,) False keep their state.
    """
    f32 = policy.to_softmax
    first = (state.blocks == 0)[:, None, None, None]  # c29bc10 info.isFirstSInnerLoop
    # SoftmaxFlashV2 (FlashAttention-2 Alg. 1 l.9)
    m = np.maximum(state.m, np.max(s, axis=-1, keepdims=True))
    p = policy.exp(f32(s - m))
    alpha = policy.exp(f32(state.m - m))
    l = f32(f32(alpha * state.l) + policy.sum(p, axis=-1))
    # AmlaVecCompute (AMLA §3.2-3.3)
    n = rescale_exponent(m)
    r = residual(m, n, policy)
    r_hat = round_half_away(r, policy.matmul_input)  # Cast(fp32 -> bf16, CAST_ROUND); Cast back   [variant: cann]
    if variant == "exact_residual":
        r_hat = r  # [variant: exact_residual]
    c = f32(r / r_hat)  # Div(tmpCofUb, tmpS32, tmpS16)
    p_tilde = round_half_away(f32(p * r_hat), policy.matmul_input)  # RowMuls; Cast(KV_T, CAST_ROUND)
    n_prev = np.where(first, n, state.n)  # n_1 = n_0: no rescale before the first block
    c_prev = np.where(first, 1.0, state.c)  # cof_0 = 1
    # ProcessAmlaNupdate (AMLA §3.4), then C2's FP32 add
    if variant == "ideal":
        with np.errstate(over="ignore", invalid="ignore"):  # rows without a key overflow here; V2 zeroes them
            factor = np.exp2(n - n_prev) * (c_prev / c)  # [variant: ideal] exactly 2^dn c_{i-1}/c_i, in binary64
            rescaled = policy.to_accumulate(state.o * factor)
    else:
        rescaled = int32_add(state.o, nupdate(n, n_prev, c, c_prev, variant, policy, constants))
    o = np.where(first, 0.0, rescaled)  # C2 writes the first block instead of adding
    with np.errstate(invalid="ignore", over="ignore"):
        o = policy.to_accumulate(o + _group_matmul(p_tilde, v, policy))  # Fixpipe SetAtomicAdd<float>
    o = np.where(np.isnan(o), _DEFAULT_NAN, o)
    on = active[:, None, None, None]  # a shorter sequence's loop has ended: its state stays

    def keep(new, old):
        return np.where(on, new, old)

    return replace(state, o=keep(o, state.o), m=keep(m, state.m), l=keep(l, state.l), n=keep(n, state.n),
                   c=keep(c, state.c), r_hat=keep(r_hat, state.r_hat), blocks=state.blocks + active)


def amla_finalize(state: AmlaState, empty: np.ndarray, variant: str, policy: PrecisionPolicy,
                  empty_lse: float, constants: AmlaConstants = CANN) -> tuple[np.ndarray, np.ndarray, AmlaState]:
    """Return (out, lse, state with ``guarded`` set): V2's guard, division by l r^ and cast (AMLA §3.5).

    ``empty`` (B, Hq, Sq, 1) marks rows without an admitted key; they and sequences without
    blocks get O = 0 and LSE = ``empty_lse``.
    """
    o = state.o
    guarded = np.zeros(o.shape, dtype=bool)
    if variant != "ideal" and constants.guard is not None:  # [variant: ideal] has nothing to guard
        with np.errstate(invalid="ignore"):
            guarded = ~(np.abs(o) <= constants.guard)  # CompareScalar(LE); NaN compares false
        o = np.where(guarded, 0.0, o)  # Select(..., FLOAT_ZERO)
    unused = (empty | (state.blocks == 0)[:, None, None, None])
    total = policy.to_softmax(state.l * state.r_hat)  # aMlaSum = softmaxSum * r^_T (last block)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = output_cast(policy.to_softmax(o / np.where(unused, 1.0, total)), policy.output)  # RowDivs; Cast
        lse = policy.to_softmax(state.m + policy.log(np.where(unused, 1.0, state.l)))
    out = np.where(unused, 0.0, out)  # DealInvalidRows / InitAllZeroOutput
    lse = np.where(unused, empty_lse, lse)[..., 0]
    return out, lse, replace(state, guarded=guarded & ~unused)


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------

def check_policy(policy: PrecisionPolicy, variant: str) -> None:
    """Raise unless ``policy`` is a kernel policy: BF16/FP16 in, FP32 accumulator and vector unit, BF16/FP16/FP32 out."""
    require_policy(policy)
    require(variant in VARIANTS, ConventionError, f"variant: expected one of {VARIANTS}, got {variant!r}")
    require(policy.matmul_input in (Format.BF16, Format.FP16), FormatError,
            f"policy.matmul_input: expected bf16 or fp16 (the kernel's KV_T), got {policy.matmul_input}")
    require(policy.output in (Format.BF16, Format.FP16, Format.FP32), FormatError,
            f"policy.output: expected bf16 or fp16 (the kernel's OUT_T) or fp32 (its flash-decode partials), "
            f"got {policy.output}")
    require(policy.softmax is Format.FP32, FormatError,
            f"policy.softmax: expected fp32 (the Vector core's T = float), got {policy.softmax}")
    require(policy.accumulate is Format.FP32 or variant == "ideal", FormatError,
            f"policy.accumulate: expected fp32 (variant {variant!r} adds to the FP32 bits of O), "
            f"got {policy.accumulate}")


def amla_state(problem: AttentionProblem, variant: str = "cann", policy: PrecisionPolicy = POLICY_AMLA,
               block_k: int = BLOCK_K, constants: AmlaConstants = CANN) -> AmlaState:
    """Return the state after every KV block of every sequence (before V2)."""
    check_policy(policy, variant)
    require(isinstance(block_k, (int, np.integer)) and not isinstance(block_k, bool) and block_k >= 1, ShapeError,
            f"block_k: expected a positive int, got {block_k!r}")
    state = initial_state(problem, constants)
    sk = problem.k.shape[2]
    for start in range(0, sk, block_k):
        stop = min(start + block_k, sk)
        active = problem.kv_lens > start  # (B,) sequences that still have keys here
        if not np.any(active):
            break
        block = problem.key_slice(start, stop)
        valid = np.arange(start, stop)[None, :] < problem.kv_lens[:, None]  # (B, w)
        s = block_logits(block, valid, policy, constants)
        state = amla_step(state, s, policy.to_input(block.v), active, variant, policy, constants)
    return state


def no_keys(problem: AttentionProblem) -> np.ndarray:
    """Return (B, Hq, Sq, 1) True for rows without an admitted key (c29bc10 DealInvalidRows zeroes them)."""
    return ~np.any(problem.allowed, axis=-1, keepdims=True)


def amla_from_problem(problem: AttentionProblem, variant: str = "cann", policy: PrecisionPolicy = POLICY_AMLA,
                      block_k: int = BLOCK_K, constants: AmlaConstants = CANN) -> tuple[np.ndarray, np.ndarray]:
    """Return (out (B, Hq, Sq, Dv), lse (B, Hq, Sq)) of AMLA on a validated problem."""
    state = amla_state(problem, variant, policy, block_k, constants)
    out, lse, _ = amla_finalize(state, no_keys(problem), variant, policy, problem.empty_lse, constants)
    return out, lse


def amla_decode(q, kv_cache, *, block_table=None, cache_seqlens=None, scale: float | None = None,
                causal: bool = False, config: MLAConfig = DEEPSEEK_V3, variant: str = "cann",
                policy: PrecisionPolicy = POLICY_AMLA, block_k: int = BLOCK_K, strict: bool = False,
                empty_lse: float = -np.inf, constants: AmlaConstants = CANN) -> DecodeResult:
    """Return AMLA's out (B, s_q, h_q, 512) and LSE (B, h_q, s_q) for the MLA kernel view.

    Inputs as in :func:`spec.mla.mla_decode`, validated by :func:`spec.mla.decode_problem`. NaN or
    Inf in the valid part of q or the cache raises DomainError (slots beyond a sequence are never
    read); so does a scaled logit that overflows FP32. ``strict=True`` raises FormatError unless q
    and the cache already hold values of ``policy.matmul_input`` (otherwise they are rounded to
    it, ties to even).
    """
    check_policy(policy, variant)
    problem = decode_problem(q, kv_cache, block_table=block_table, cache_seqlens=cache_seqlens, scale=scale,
                             causal=causal, config=config, empty_lse=empty_lse)
    if strict:
        require_representable(problem.q, policy.matmul_input, "q")
        require_representable(problem.k, policy.matmul_input, "kv_cache")
    out, lse = amla_from_problem(problem, variant, policy, block_k, constants)
    return DecodeResult(out=np.swapaxes(out, 1, 2), lse=lse)  # out (B, s_q, h_q, 512)
