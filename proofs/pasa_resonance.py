"""Resonance: aligned or anti-aligned q and k reach |q.k| = ||q|| ||k||, and what PASA does about it.

The PASA paper (arXiv:2503.01873, abstract) names "resonance", a phase coincidence or a
180-degree phase shift between query and key along the head dimension, as the second cause
of FP16 overflow (after a large bias along the sequence). Its formulas are not public; the
model checked here is ours:

    q(t) = b + a sin(w t + phi_q),  k(t) = b + a sin(w t + phi_k),  t = 0..d-1,  w = 2 pi m / d

Over whole periods (0 < m < d/2) sum_t sin(w t + phi) = 0 and
sum_t sin(w t + phi_q) sin(w t + phi_k) = (d/2) cos(phi_q - phi_k) exactly, so

    q.k = d b^2 + (d/2) a^2 cos(phi_q - phi_k),

largest at phase coincidence and most negative at 180 degrees. d = 128, a = 30 gives
(d/2) a^2 = 57,600, below 65504 with no bias; a bias b >= 7.9 lifts it past 65520.

- ``pasa.resonance.aligned``: q = lambda k implies (q.k)^2 = ||q||^2 ||k||^2 (d = 4): the
  Cauchy-Schwarz bound is reached. Control: without alignment the equality fails.
- ``pasa.resonance.cauchy_schwarz``: (q.k)^2 <= ||q||^2 ||k||^2 (d = 3), so alignment is the
  worst case. Control: the reversed inequality fails.
- ``pasa.resonance.sinusoid``: the identity above at 40 digits (mpmath) for the brief's numbers,
  and the spec on such inputs: naive FP16 FA overflows; PASA, whose shift removes the pattern
  the keys of a block share (k_j - beta kbar = (1 - beta) kbar + (k_j - kbar)), does not.
"""

from __future__ import annotations

import mpmath
import numpy as np
import z3

from attnspec.proofs._core import ProofResult, prove, theorem
from attnspec.registry import Outcome, check
from attnspec.spec.attention import POLICY_FP64, attention
from attnspec.spec.flash import flash_attention
from attnspec.spec.formats import Format, round_to
from attnspec.spec.pasa import pasa_attention
from attnspec.spec.policy import PrecisionPolicy

#: The brief's example and the bias that makes it overflow FP16 (d b^2 + (d/2) a^2 >= 65520).
D, AMPLITUDE, BIAS, PERIODS = 128, 30.0, 10.0, 3
CONFIRM_DPS = 40
#: FlashAttention's rule (Dao-AILab/flash-attention tests/test_flash_attn.py): a low-precision kernel's error is
#: at most twice that of the naive same-format computation, here FP16 FA with the scale folded into Q.
ERROR_FACTOR = 2.0


def _dot(u, w):
    return sum(x * y for x, y in zip(u, w))


def _aligned(with_alignment: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    k = z3.Reals("k0 k1 k2 k3")
    q = z3.Reals("q0 q1 q2 q3")
    lam = z3.Real("lam")
    assumptions = [x == lam * y for x, y in zip(q, k)] if with_alignment else []
    return _dot(q, k) * _dot(q, k) == _dot(q, q) * _dot(k, k), assumptions


@theorem("pasa.resonance.aligned")
def prove_pasa_resonance_aligned() -> ProofResult:
    """Return the proof that aligned (lambda > 0) or anti-aligned (lambda < 0) q, k reach |q.k| = ||q|| ||k||."""
    claim, assumptions = _aligned(True)
    return prove("pasa.resonance.aligned", claim, assumptions, statement="q = lambda k => (q.k)^2 = |q|^2 |k|^2, d = 4")


@theorem("pasa.resonance.aligned.control")
def prove_pasa_resonance_control_aligned() -> ProofResult:
    """Return the counterexample without alignment."""
    claim, assumptions = _aligned(False)
    return prove("pasa.resonance.aligned.control", claim, assumptions, expect="refuted",
                 statement="without q = lambda k the bound is not reached")


def _cauchy_schwarz(reverse: bool) -> z3.BoolRef:
    q = z3.Reals("q0 q1 q2")
    k = z3.Reals("k0 k1 k2")
    lhs, rhs = _dot(q, k) * _dot(q, k), _dot(q, q) * _dot(k, k)
    return lhs >= rhs if reverse else lhs <= rhs


@theorem("pasa.resonance.cauchy_schwarz")
def prove_pasa_resonance_cauchy_schwarz() -> ProofResult:
    """Return the proof of (q.k)^2 <= |q|^2 |k|^2 for d = 3."""
    return prove("pasa.resonance.cauchy_schwarz", _cauchy_schwarz(False), [],
                 statement="(q.k)^2 <= |q|^2 |k|^2, d = 3")


@theorem("pasa.resonance.cauchy_schwarz.control")
def prove_pasa_resonance_control_cauchy_schwarz() -> ProofResult:
    """Return the counterexample to the reversed inequality."""
    return prove("pasa.resonance.cauchy_schwarz.control", _cauchy_schwarz(True), [], expect="refuted",
                 statement="(q.k)^2 >= |q|^2 |k|^2 is false in general")


def sinusoid_dot(d: int, periods: int, amplitude, bias, phase) -> mpmath.mpf:
    """Return sum_t (b + a sin(w t)) (b + a sin(w t + phase)) at mpmath's working precision."""
    w = 2 * mpmath.pi * periods / d
    return mpmath.fsum((bias + amplitude * mpmath.sin(w * t)) * (bias + amplitude * mpmath.sin(w * t + phase))
                       for t in range(d))


def resonant_inputs(d: int = D, keys: int = 200, *, amplitude: float = AMPLITUDE, bias: float = BIAS,
                    jitter: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (q, k, v) of one head: q and every key follow the sinusoid, keys with small phase jitter."""
    rng = np.random.default_rng(seed)
    w = 2 * np.pi * PERIODS / d
    t = np.arange(d)
    q = bias + amplitude * np.sin(w * t)[None, :]  # (1, d)
    phases = rng.normal(0.0, jitter, size=(keys, 1))
    phases[::2] += np.pi * (rng.random(((keys + 1) // 2, 1)) < 0.5)  # some keys anti-aligned
    k = bias + amplitude * np.sin(w * t[None, :] + phases)  # (keys, d)
    v = rng.uniform(-1.0, 1.0, size=(keys, d))
    return q[None, None], k[None, None], v[None, None]  # (1, 1, S, d)


@check("pasa.resonance.sinusoid", "property")
def check_pasa_resonance_sinusoid() -> Outcome:
    """Return pass iff the sinusoid identity holds to 1e-30 and the spec overflows naively but not with PASA."""
    with mpmath.workdps(CONFIRM_DPS):
        a, b = mpmath.mpf(AMPLITUDE), mpmath.mpf(BIAS)
        worst = max(abs(sinusoid_dot(D, PERIODS, a, b, phase) - (D * b * b + D / 2 * a * a * mpmath.cos(phase)))
                    for phase in (0, mpmath.pi / 3, mpmath.pi))
        pure = sinusoid_dot(D, PERIODS, a, 0, 0)  # (d/2) a^2, no bias
        identity_ok = worst < mpmath.mpf(10) ** -30 and abs(pure - 57600) < mpmath.mpf(10) ** -30
    q, k, v = resonant_inputs()
    fp16 = PrecisionPolicy.uniform(Format.FP16)
    with np.errstate(invalid="ignore"):
        naive = flash_attention(q, k, v, policy=fp16)  # Q K^T stored in FP16 before scaling: inf - inf = NaN
    scaled_q = round_to(round_to(q, Format.FP16) / np.sqrt(D), Format.FP16)
    naive_scaled = flash_attention(scaled_q, k, v, policy=fp16, scale=1.0)
    pasa = pasa_attention(q, k, v)
    exact_out = attention(q, k, v, policy=POLICY_FP64).out
    err = float(np.max(np.abs(pasa.out - exact_out)))
    err_scaled = float(np.max(np.abs(naive_scaled.out - exact_out)))
    ok = (identity_ok and not np.all(np.isfinite(naive.out)) and not pasa.overflowed
          and err <= ERROR_FACTOR * err_scaled)
    return Outcome.from_bool(ok, f"identity to {mpmath.nstr(worst, 3)}; (d/2) a^2 = {mpmath.nstr(pure, 8)}; "
                                 f"naive FP16 finite: {bool(np.all(np.isfinite(naive.out)))}; PASA max|S'| = "
                                 f"{pasa.peaks['scores']}, max|err| = {err:.2e} (FP16 FA, scale on Q: {err_scaled:.2e})",
                             {"identity_error": float(worst), "pure_resonance": float(pure), "pasa_peaks": pasa.peaks,
                              "pasa_max_abs_error": err, "scaled_fa16_max_abs_error": err_scaled})
