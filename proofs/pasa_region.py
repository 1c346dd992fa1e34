"""The region where PASA provably never overflows FP16 while naive FP16 FlashAttention provably does.

Statement. Fix the head width d, the block length n, the number of keys N_kv, beta, and the
box model of ``reference/pasa_bounds.py`` (q and k entries in [b - A, b + A], |v| <= V).
Let PASA be ``spec.pasa`` with ``PASA_ATTNSPEC`` (scale on Q, initial max -inf) under
``POLICY_PASA_FP16``. Then

    R = { (b, A, d, n, N_kv, V) : pasa_certificate(...).safe  and  naive_fa_overflow(...).certain }

is a region where (i) no stored quantity of PASA is ever Inf or NaN, for every input in the
box, every boolean mask and every length <= N_kv, and (ii) naive FP16 FA (Q K^T stored in
FP16 before scaling, as ``spec.flash`` with a uniform FP16 policy does) overflows for every
input in the box. For (ii) with the scale folded into Q first, use ``scale_on_q``.

Proof. (i): the certificate is a chain of bounds, each an instance of a lemma proved in
``proofs/pasa_overflow.py`` (shift_bound, dot_bound, offset_bound, rebase_identity,
reference_error, telescoping_errors, max_commutes, state_bounds) followed by a rounding step
proved bit-precisely in ``proofs/pasa_fp16.py`` (rounding_monotone, rounding_half_ulp,
exponent_order); the chain is evaluated in exact rational arithmetic (``round_exact``), so
its finiteness is decided exactly. (ii): ``pasa.overflow.naive_certain`` gives
|q.k| >= d (|b| - A)^2 for every input when |b| > A, and an exact sum that large rounds to
+inf. The checks below evaluate R at witness points (the paper's grid cells where naive FP16
overflows, and larger biases with |v| <= 1) and run its negative controls:

- beta = 0 (no shift): the certificate fails at the shifted scores exactly where the scaled
  naive bound c d (|b| - A)^2 reaches 65520 (PASA degenerates to FA with the scale on Q);
- gamma r' formed on its own, before subtracting R: gamma (1 - beta) c d (|b| - A)^2 =
  beta c d (|b| - A)^2 >= 65520 at the witnesses with |b| >= 100: it overflows for every input,
  which is why ``pasa()`` (and the spec) subtract first ("ave_j = (S_ave - S_ave_0) * Inv_Pam").
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np

from attnspec.reference.pasa_bounds import Box, Certificate, NaiveVerdict, naive_fa_overflow, pasa_certificate
from attnspec.registry import Outcome, check
from attnspec.spec.formats import Format, round_exact
from attnspec.spec.pasa import PASA_ATTNSPEC, PasaConfig

D, N = 128, 128
SCALE = 1 / np.sqrt(D)
#: (b, A, N_kv, V): the paper's grid cells where naive FP16 FA always overflows, then larger biases with |v| <= 1.
WITNESSES = ((30.0, 0.5, 1407, 30.5), (30.0, 5.0, 1407, 35.0), (100.0, 0.5, 1407, 1.0), (200.0, 0.5, 1407, 1.0),
             (250.0, 1.0, 1407, 1.0), (60.0, 10.0, 4096, 1.0))


def in_region(b: float, amp: float, n_kv: int, v_max: float, *, d: int = D, config: PasaConfig = PASA_ATTNSPEC,
              scale_on_q: bool = False) -> tuple[Certificate, NaiveVerdict]:
    """Return PASA's certificate and naive FP16 FA's verdict (scale on Q or not) for one point."""
    box = Box(b, amp)
    scale = 1 / np.sqrt(d)
    cert = pasa_certificate(box, box, v_max, d, n_kv, scale=scale, config=config)
    return cert, naive_fa_overflow(box, box, d, scale_on_q=scale if scale_on_q else None)


@check("pasa.region.witnesses", "proof")
def check_pasa_region_witnesses() -> Outcome:
    """Return pass iff every witness is certified for PASA and certain to overflow naive FP16 FA."""
    rows = []
    for b, amp, n_kv, v_max in WITNESSES:
        cert, naive = in_region(b, amp, n_kv, v_max)
        rows.append({"b": b, "A": amp, "N_kv": n_kv, "V": v_max, "pasa_certified": cert.safe,
                     "naive_certain": naive.certain, "failed_link": cert.failed})
    bad = [r for r in rows if not (r["pasa_certified"] and r["naive_certain"])]
    return Outcome.from_bool(not bad, f"{len(rows) - len(bad)}/{len(rows)} witnesses in the region"
                             + (f"; outside: {bad}" if bad else ""), {"witnesses": rows})


@check("pasa.region.control_beta_zero", "proof")
def check_pasa_region_control_beta_zero() -> Outcome:
    """Return pass iff with beta = 0 the certificate fails at the scores exactly where scaled naive FA can overflow.

    With beta = 0, M = I and K' = K, so the scores bound is naive FA's with the scale on Q:
    the certificate must fail at the scores exactly at the witnesses where that bound reaches
    65520, and at least one witness must make scaled naive FA overflow for every input.
    """
    no_shift = replace(PASA_ATTNSPEC, beta=0.0)
    rows = []
    for b, amp, n_kv, v_max in WITNESSES:
        cert, _ = in_region(b, amp, n_kv, v_max, config=no_shift)
        _, scaled = in_region(b, amp, n_kv, v_max, scale_on_q=True)
        rows.append({"b": b, "A": amp, "failed_link": cert.failed, "scaled_naive_possible": scaled.possible,
                     "scaled_naive_certain": scaled.certain})
    ok = all((r["failed_link"] == "scores") == r["scaled_naive_possible"] for r in rows) \
        and any(r["scaled_naive_certain"] for r in rows)
    return Outcome.from_bool(ok, "beta = 0 fails at the scores exactly where c d (|b| + A)^2 >= 65520 "
                                 f"({sum(r['failed_link'] == 'scores' for r in rows)} of {len(rows)} witnesses; "
                                 f"{sum(r['scaled_naive_certain'] for r in rows)} always overflow)", {"rows": rows})


@check("pasa.region.control_gamma_r_first", "proof")
def check_pasa_region_control_gamma_r_first() -> Outcome:
    """Return pass iff at certified witnesses with |b| >= 100 the lone gamma r' overflows FP16 for every input."""
    beta = Fraction(PASA_ATTNSPEC.beta)
    rows = []
    for b, amp, n_kv, v_max in WITNESSES:
        cert, _ = in_region(b, amp, n_kv, v_max)
        smallest = beta * Fraction(SCALE) * D * Box(b, amp).gap ** 2  # gamma (1 - beta) c d (|b| - A)^2
        rows.append({"b": b, "A": amp, "certified": cert.safe, "min_gamma_r": float(smallest),
                     "always_overflows": not np.isfinite(round_exact(smallest, Format.FP16))})
    large = [r for r in rows if r["b"] >= 100]
    ok = bool(large) and all(r["certified"] and r["always_overflows"] for r in large)
    return Outcome.from_bool(ok, f"gamma r' alone is >= 65520 for every input at {len(large)} certified witnesses",
                             {"rows": rows})


def region_table(biases, *, n_kv: int = 1407, v_max: float | None = None, d: int = D,
                 step: float = 0.5, max_amp: float = 64.0) -> list[dict]:
    """Return, per bias b, the largest amplitude A (a multiple of ``step``) that the certificate accepts.

    ``v_max`` None means V in the same box as q and k (|v| <= |b| + A). The certificate is
    evaluated on the grid of amplitudes, scanning up from 0 until the first failure.
    """
    rows = []
    for b in biases:
        best, amp, failed = None, 0.0, None
        while amp <= max_amp:
            v = abs(b) + amp if v_max is None else v_max
            cert, _ = in_region(b, amp, n_kv, v, d=d)
            failed = cert.failed
            if not cert.safe:
                break
            best, amp = amp, amp + step
        naive_from = next((a * step for a in range(int(max_amp / step) + 1)
                           if naive_fa_overflow(Box(b, a * step), Box(b, a * step), d).possible), None)
        rows.append({"b": b, "max_certified_A": best, "binding_link": failed, "naive_possible_from_A": naive_from})
    return rows
