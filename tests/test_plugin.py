"""The pytest plugin, run from a separate temporary project in a subprocess (as a user would)."""

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

KERNELS = textwrap.dedent("""
    from attnspec.reference.mutants import CORRECT, MUTANTS

    good = CORRECT["spec_flash"].kernel
    bad = MUTANTS["missing_scale"].kernel
""")

OWN_TEST = textwrap.dedent("""
    from mypkg.kernels import bad, good

    def test_good_kernel(attnspec):
        report = attnspec.check(good, op="attention", dtype="bf16", examples=2)
        assert report.ok

    def test_bad_kernel(attnspec):
        attnspec.check(bad, op="attention", dtype="bf16", examples=2)
""")


@pytest.fixture
def project(tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "kernels.py").write_text(KERNELS)
    (tmp_path / "test_own.py").write_text(OWN_TEST)
    return tmp_path


def _pytest(project, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(project),
                                                                            "PATH": "/usr/bin:/bin"})


def test_plugin_is_registered_as_an_entry_point():
    names = {e.name: e.value for e in entry_points(group="pytest11")}
    assert names.get("attnspec") == "attnspec.reference.pytest_plugin"


def test_command_line_items_pass_and_fail(project, tmp_path):
    from attnspec.reference.vectors import export_rows, write_vector_set
    write_vector_set(tmp_path / "set", export_rows(1, ops=["attention"], formats=["bf16"]))
    run = _pytest(project, "--attnspec-impl", "mypkg.kernels:good", "--attnspec-impl", "mypkg.kernels:bad",
                  "--attnspec-dtype", "bf16", "--attnspec-examples", "2", "--attnspec-vectors", str(tmp_path / "set"),
                  "-k", "attnspec", "-rA")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 failed, 2 passed" in run.stdout
    for verdict, item in (("PASSED", "good-attention-bf16"), ("PASSED", "good-attention-vectors"),
                          ("FAILED", "bad-attention-bf16"), ("FAILED", "bad-attention-vectors")):
        assert f"{verdict} ::attnspec[mypkg.kernels:{item}]" in run.stdout
    assert "reproduce: attnspec check --impl mypkg.kernels:bad" in run.stdout


def test_fixture_in_a_users_own_tests(project):
    run = _pytest(project, "test_own.py")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout
    assert "FAIL mypkg.kernels:bad" not in run.stdout and "missing_scale" in run.stdout
