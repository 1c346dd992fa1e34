"""Solver outcomes: every theorem runs under a finite timeout, and unknown or a timeout is never a pass.

- Statically: no module that imports z3 asks a solver anything except through
  ``proofs/_core.prove``, which always sets a timeout.
- Dynamically: every solver call a theorem makes has its timeout set before ``check()``
  (the cheap theorems in ``ci``, all of them in ``thorough``).
- ``$ATTNSPEC_PROOF_TIMEOUT_S`` replaces every timeout (explicit ones included); lowered to
  1 ms it turns a real, registered theorem into ``unknown`` with the reason ``timeout``, which
  ``attnspec prove`` and ``attnspec verify`` report with exit code 3 and never count as passed.
- Bad values of the variable, and timeouts that would disable the timer, are DomainErrors
  (the CLI's exit 2 for them is a row of the bad-input matrix).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import math
import os
import pkgutil
from pathlib import Path

import pytest
import z3

from attnspec import cli
from attnspec.errors import DomainError
from attnspec.proofs import _core
from attnspec.reference.strategies import PROFILE_ENV
from attnspec.registry import all_checks, exit_code, run_check

# A real theorem that proves in ~50 ms and passes its own timeout_s=10 explicitly.
THEOREM = "preload_period_amla_cann"
SOLVER_ENTRY_POINTS = {"check", "solve", "solve_using", "prove", "Optimize", "Tactic", "Then", "OrElse", "SolverFor",
                       "SimpleSolver", "ParThen", "TryFor"}
# Cheap modules whose theorems the ci profile instruments one by one (the thorough profile takes all).
CI_MODULES = ("attnspec.hw_model.predictions", "attnspec.proofs.pasa_resonance", "attnspec.proofs.amla_invariant",
              "attnspec.proofs.mla_absorption", "attnspec.proofs.preload_pipeline")


def z3_modules() -> list[Path]:
    """Return the source files of attnspec's check packages that import z3."""
    files = []
    for package_name in ("attnspec.proofs", "attnspec.hw_model", "attnspec.reference"):
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            path = Path(package.__path__[0]) / f"{info.name}.py"
            if path.exists() and "import z3" in path.read_text():
                files.append(path)
    return files


def test_z3_is_asked_only_through_prove():
    assert len(z3_modules()) >= 10  # the scan sees the theorem modules
    offenders = []
    for path in z3_modules():
        if path.name == "_core.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SOLVER_ENTRY_POINTS:
                offenders.append(f"{path.name}:{node.lineno} .{node.func.attr}(")
    assert not offenders, f"solver calls outside proofs/_core.prove (no guaranteed timeout): {offenders}"


def test_the_static_scan_catches_a_direct_solver_call():
    """The scan's mutant: a theorem that calls Solver().check() itself is flagged."""
    tree = ast.parse("import z3\ndef prove_x():\n    s = z3.Solver()\n    return s.check()\n")
    calls = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert "check" in calls and "check" in SOLVER_ENTRY_POINTS


@pytest.fixture
def solver_audit(monkeypatch):
    """Record, per solver, whether a timeout was set before each check() (z3 cannot report its params)."""
    timed: set[int] = set()
    audit = {"checked": 0, "untimed": []}
    original_set, original_check = z3.Solver.set, z3.Solver.check

    def set_(self, *args, **kwargs):
        if args and args[0] == "timeout" and args[1] > 0:
            timed.add(id(self))
        return original_set(self, *args, **kwargs)

    def check_(self, *args):
        audit["checked"] += 1
        if id(self) not in timed:
            audit["untimed"].append(repr(self)[:80])
        return original_check(self, *args)

    monkeypatch.setattr(z3.Solver, "set", set_)
    monkeypatch.setattr(z3.Solver, "check", check_)
    return audit


def theorems(modules: tuple[str, ...] | None):
    return [c for c in all_checks(kinds=("proof",)) if modules is None or c.module in modules]


def test_every_solver_call_has_a_timeout(solver_audit):
    chosen = theorems(None if os.environ.get(PROFILE_ENV) == "thorough" else CI_MODULES)
    assert len(chosen) >= 10
    reports = [run_check(c) for c in chosen]
    # The audit saw every theorem ask the solver (pasa.region checks exact rational witnesses instead).
    assert solver_audit["checked"] >= sum(c.module != "attnspec.proofs.pasa_region" for c in chosen)
    assert not solver_audit["untimed"], f"solver calls without a timeout: {solver_audit['untimed']}"
    assert all(r.status == "pass" for r in reports), [(r.name, r.detail) for r in reports if r.status != "pass"]


def test_the_audit_catches_an_untimed_solver(solver_audit):
    """The audit's mutant: a solver checked without a timeout is reported."""
    s = z3.Solver()
    s.add(z3.Int("x") > 0)
    s.check()
    assert solver_audit["checked"] == 1 and solver_audit["untimed"]


def test_override_makes_a_real_theorem_unknown(monkeypatch):
    (theorem,) = [c for c in all_checks(kinds=("proof",)) if c.name == THEOREM]
    assert run_check(theorem).status == "pass"  # the same theorem, under its own timeout
    monkeypatch.setenv(_core.TIMEOUT_ENV, "0.001")
    report = run_check(theorem)
    assert report.status == "unknown" and report.data["reason"] == "timeout"
    assert "unknown (timeout)" in report.detail and exit_code([report]) == 3


def cli_json(*argv: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(list(argv))
    return code, json.loads(out.getvalue())


@pytest.mark.parametrize("argv", [("prove", THEOREM, "--json"), ("verify", "-k", THEOREM, "--json")])
def test_unknown_is_exit_3_and_never_counted_as_passed(monkeypatch, argv):
    monkeypatch.setenv(_core.TIMEOUT_ENV, "0.001")
    code, body = cli_json(*argv)
    assert code == 3
    assert body["passed"] == 0 and body["unknown"] == len(body["checks"]) >= 1
    assert all(c["status"] == "unknown" and c["data"]["reason"] == "timeout" for c in body["checks"])
    assert body["failed"] == len(body["checks"]) - body["passed"], "'failed' counts every check not passed"


def test_a_failure_outranks_unknown(monkeypatch):
    """A run with one refuted theorem and one timeout exits 1: unknown never hides a failure."""
    x = z3.Real("x")
    wrong = _core.prove("test.wrong", x * x > 0, statement="x^2 > 0")
    monkeypatch.setenv(_core.TIMEOUT_ENV, "0.001")
    (theorem,) = [c for c in all_checks(kinds=("proof",)) if c.name == THEOREM]
    unknown = run_check(theorem)
    failed = run_check(type(theorem)("test.wrong", "proof", True, lambda: wrong, __name__))
    assert (unknown.status, failed.status) == ("unknown", "fail") and exit_code([unknown, failed]) == 1


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "nan", "inf", "0.0001", ""])
def test_bad_override_values_are_domain_errors(monkeypatch, raw):
    monkeypatch.setenv(_core.TIMEOUT_ENV, raw)
    with pytest.raises(DomainError, match=_core.TIMEOUT_ENV):
        _core.solver_timeout(10.0)


@pytest.mark.parametrize("raw, expected", [(None, 10.0), ("2.5", 2.5), ("120", 120.0), ("0.001", 0.001)])
def test_override_replaces_the_theorem_timeout(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv(_core.TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(_core.TIMEOUT_ENV, raw)
    assert _core.solver_timeout(10.0) == expected


@pytest.mark.parametrize("timeout_s", [0, 0.0004, -1.0, math.inf, math.nan])
def test_prove_refuses_a_timeout_that_is_not_one(monkeypatch, timeout_s):
    """0 ms means 'no timeout' to z3; below 1 ms rounds to 0; inf and NaN are no timeout either."""
    monkeypatch.delenv(_core.TIMEOUT_ENV, raising=False)
    with pytest.raises(DomainError, match="timeout_s: expected a finite number of seconds >= 0.001"):
        _core.prove("test.t", z3.BoolVal(True), statement="true", timeout_s=timeout_s)
