"""The command line and the check registry: JSON shape, exit codes, and that unknown never passes."""

import json
import subprocess
import sys

import pytest
import z3

from attnspec import cli
from attnspec.proofs._core import prove
from attnspec.registry import Check, Outcome, exit_code, run_check


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "attnspec", *args], capture_output=True, text=True, timeout=300)


def test_verify_quick_json_shape():
    result = run_cli("verify", "--quick", "--json", "-k", "split_kv")
    body = json.loads(result.stdout)
    assert set(body) >= {"checks", "passed", "failed"}
    assert body["checks"] and all(set(c) >= {"name", "kind", "status", "seconds", "detail"} for c in body["checks"])
    assert all(c["status"] in ("pass", "fail", "unknown") for c in body["checks"])
    assert body["passed"] + body["failed"] == len(body["checks"])
    assert result.returncode == (0 if body["failed"] == 0 else 1)


def test_prove_lists_and_filters_theorems():
    listed = run_cli("prove", "--list").stdout.split()
    assert "online_softmax.unrolled" in listed or any(n.startswith("online_softmax") for n in listed)
    assert run_cli("prove", "no_such_theorem").returncode == 2


def test_unknown_is_never_a_pass():
    """A solver that gives up (here: a 1 ms timeout on a hard nonlinear claim) is 'unknown', exit code 3."""
    xs = z3.Reals("a b c d")
    hard = z3.Implies(z3.And(*[x > 1 for x in xs]), xs[0] ** 7 * xs[1] ** 5 + xs[2] ** 3 * xs[3] ** 9 != 2)
    result = prove("test.hard", hard, statement="deliberately hard", timeout_s=0.001)
    assert result.status == "unknown" and not result.ok and result.reason
    report = run_check(Check("test.hard", "proof", True, lambda: result, __name__))
    assert report.status == "unknown" and exit_code([report]) == 3


def test_refuted_claim_fails_and_control_passes():
    x = z3.Real("x")
    wrong = prove("test.wrong", x * x > 0, statement="x^2 > 0 for all x")
    assert wrong.status == "refuted" and wrong.outcome().status == "fail" and wrong.counterexample == {"x": "0"}
    control = prove("test.control", x * x > 0, statement="x^2 > 0 fails at 0", expect="refuted")
    assert control.outcome().status == "pass"
    assert exit_code([run_check(Check("w", "proof", True, lambda: wrong, __name__))]) == 1


def test_a_crashing_check_fails_with_its_cause():
    def boom():
        raise ValueError("broken check")
    report = run_check(Check("boom", "rule", True, boom, __name__))
    assert report.status == "fail" and "ValueError: broken check" in report.detail


def test_wrong_return_type_fails():
    report = run_check(Check("typo", "rule", True, lambda: True, __name__))
    assert report.status == "fail" and "expected an Outcome" in report.detail


def test_outcome_from_bool():
    assert Outcome.from_bool(True, "ok").status == "pass" and Outcome.from_bool(False, "no").status == "fail"


@pytest.mark.parametrize("argv", [["--version"], ["verify", "--help"], ["report", "list"], ["model", "list"]])
def test_help_and_version(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse exits after --help / --version
        code = exc.code
    assert code == 0


def test_unknown_tool_name_is_a_usage_error():
    assert cli.main(["report", "no-such-report"]) == 2


def test_a_source_checkout_resolves_the_subpackages():
    """Without site-packages (so without the install's mapping), attnspec.spec comes from the checkout's spec/;
    the import then stops at the first missing third-party dependency, never at 'attnspec.spec'."""
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    code = f"import sys; sys.path.insert(0, {str(root)!r}); import attnspec.spec"
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert "No module named 'attnspec.spec'" not in out.stderr
    assert str(root / "spec" / "__init__.py") in out.stderr and "No module named 'numpy'" in out.stderr
