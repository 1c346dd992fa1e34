"""The one helper every theorem uses: negate the claim, ask Z3, and report what it said.

A theorem is a function ``prove_<claim>()`` in ``proofs/<topic>.py`` that states the claim,
its assumptions, and calls :func:`prove`. It returns a :class:`ProofResult` with the
solver's status, the solver time and, where Z3 found one, the counterexample.

- ``expect="proved"``: the claim must hold. Z3 must answer ``unsat`` for
  ``assumptions and not claim``.
- ``expect="refuted"``: a *negative control*. The same claim with one precondition dropped
  or weakened (or a deliberately wrong algorithm) must have a counterexample: Z3 must
  answer ``sat``, and the model is reported.
- ``unknown`` (including a timeout) is never a pass, whatever was expected.

Solver: z3-solver 5.4.1.0, pinned in pyproject.toml. Every call gets a timeout (default
30 s, or the theorem's own ``timeout_s``) and a fixed random seed, so a run is repeatable.
``$ATTNSPEC_PROOF_TIMEOUT_S`` (seconds, at least 0.001), when set, replaces every theorem's
timeout: raise it on a slow machine, lower it to see what gives up first. A bad value is a
DomainError (``attnspec prove`` exits 2); the solver is never run without a timeout. Quirk:
z3 looks at its timer between search steps, so a call can overrun it (under a 1 ms timeout,
``online_softmax.unrolled`` still spends ~5 s simplifying before it answers ``unknown``). Quirks relied on: ``fpToIEEEBV``
knows one NaN encoding only (Z3 docs), so theorems about bit patterns state NaN cases
through ``fpIsNaN`` rather than through bits.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Literal

import z3

from attnspec.registry import Outcome, check
from attnspec.spec.errors import DomainError, require

DEFAULT_TIMEOUT_S = 30.0
TIMEOUT_ENV = "ATTNSPEC_PROOF_TIMEOUT_S"
MIN_TIMEOUT_S = 0.001  # z3 counts in whole milliseconds, and 0 ms would mean "no timeout"
RANDOM_SEED = 0

# Named sorts, used by the bit-precise theorems.
F32 = z3.FPSort(8, 24)
F16 = z3.FPSort(5, 11)
BF16 = z3.FPSort(8, 8)
BV32 = z3.BitVecSort(32)
BV16 = z3.BitVecSort(16)


@dataclass(frozen=True)
class ProofResult:
    """What Z3 said about one claim."""

    name: str
    statement: str
    expected: Literal["proved", "refuted"]
    status: Literal["proved", "refuted", "unknown"]
    seconds: float
    counterexample: dict[str, str] | None = None
    reason: str | None = None  # why the solver gave up, for ``unknown``
    note: str = ""  # e.g. how a counterexample was confirmed independently

    @property
    def ok(self) -> bool:
        return self.status == self.expected

    def outcome(self) -> Outcome:
        """Return the registry outcome: pass iff the status is the expected one; unknown stays unknown."""
        if self.status == "unknown":
            status = "unknown"
        else:
            status = "pass" if self.ok else "fail"
        what = {"proved": "proved", "refuted": "counterexample found"}.get(self.status, f"unknown ({self.reason})")
        detail = f"{what} in {self.seconds:.3f} s (expected {self.expected})"
        if self.counterexample and self.status == "refuted":
            shown = ", ".join(f"{k}={v}" for k, v in list(self.counterexample.items())[:6])
            detail += f"; counterexample: {shown}"
        if self.note:
            detail += f"; {self.note}"
        return Outcome(status, detail, {"statement": self.statement, "expected": self.expected,
                                        "solver_status": self.status, "solver_seconds": round(self.seconds, 4),
                                        "counterexample": self.counterexample, "reason": self.reason})


def prove(name: str, claim: z3.BoolRef, assumptions: Iterable[z3.BoolRef] = (), *, statement: str,
          expect: Literal["proved", "refuted"] = "proved", timeout_s: float = DEFAULT_TIMEOUT_S,
          solver: z3.Solver | None = None, confirm: Callable[[z3.ModelRef], str] | None = None) -> ProofResult:
    """Return whether ``assumptions => claim`` is valid, by asking Z3 for a model of its negation.

    ``confirm``, when given, is called on a counterexample model and returns a note saying
    how the counterexample was checked independently (e.g. by evaluating it with mpmath);
    it must raise if the model is not a genuine counterexample.
    """
    timeout_s = solver_timeout(timeout_s)
    s = solver if solver is not None else z3.Solver()
    s.set("timeout", round(timeout_s * 1000))
    s.set("random_seed", RANDOM_SEED)
    for a in assumptions:
        s.add(a)
    s.add(z3.Not(claim))
    start = time.perf_counter()
    answer = s.check()
    seconds = time.perf_counter() - start
    if answer == z3.unsat:
        return ProofResult(name, statement, expect, "proved", seconds)
    if answer == z3.sat:
        model = s.model()
        cex = {str(d.name()): _show(model[d]) for d in sorted(model.decls(), key=lambda d: str(d.name()))
               if d.arity() == 0}
        note = confirm(model) if confirm is not None else ""
        return ProofResult(name, statement, expect, "refuted", seconds, counterexample=cex, note=note)
    return ProofResult(name, statement, expect, "unknown", seconds, reason=s.reason_unknown())


def solver_timeout(timeout_s: float) -> float:
    """Return the timeout in seconds a solver call gets: ``$ATTNSPEC_PROOF_TIMEOUT_S`` when set, else ``timeout_s``."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is not None:
        try:
            timeout_s = float(raw)
        except ValueError:
            raise DomainError(f"{TIMEOUT_ENV}: expected a number of seconds >= {MIN_TIMEOUT_S}, got {raw!r}") from None
    name = TIMEOUT_ENV if raw is not None else "timeout_s"
    require(isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s >= MIN_TIMEOUT_S,
            DomainError, f"{name}: expected a finite number of seconds >= {MIN_TIMEOUT_S}, got {timeout_s!r}")
    return float(timeout_s)


solver_timeout(DEFAULT_TIMEOUT_S)  # a bad $ATTNSPEC_PROOF_TIMEOUT_S fails at import: the CLI exits 2 with the message


def _show(value: z3.ExprRef) -> str:
    """Return a readable rendering of a model value (bit-vectors in hex, reals as decimals)."""
    if z3.is_bv_value(value):
        return hex(value.as_long())
    if z3.is_rational_value(value):
        return value.as_decimal(12) if value.denominator_as_long() != 1 else str(value.as_long())
    if z3.is_algebraic_value(value):
        return value.as_decimal(12)
    return str(value)


def theorem(name: str, *, quick: bool = True):
    """Register ``prove_<claim>()`` as the ``attnspec verify`` check ``name`` (kind "proof")."""
    return check(name, "proof", quick=quick)
