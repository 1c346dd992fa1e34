"""Determinism: the same seed gives byte-identical vectors and reports across runs.

Two fresh interpreters with different ``PYTHONHASHSEED`` run the same commands through
``attnspec.cli.main`` and report every byte they printed or wrote. Set and dict ordering,
hash randomisation and unseeded randomness would all show up as a difference.

What is compared: the vector set's files, byte for byte; the JSON reports (the PASA grid's
file included: its per-cell times go to stderr) byte for byte where they carry no wall-clock
time; and, where they do (``attnspec verify``'s ``seconds`` and solver times, the AMLA
report's per-input ``seconds``), byte for byte after removing exactly those keys and the
times quoted in ``verify``'s detail lines. The ``ci`` profile runs the
commands that take seconds; ``thorough`` adds the full vector set, the AMLA report and the
full ``attnspec verify``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from attnspec.reference.strategies import PROFILE_ENV

THOROUGH = os.environ.get(PROFILE_ENV) == "thorough"

DRIVER = r'''
import contextlib, io, json, sys
from pathlib import Path
from attnspec import cli

out = Path(sys.argv[1])
commands = json.loads(sys.argv[2])
result = {}
for name, argv in commands.items():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main([a.replace("{out}", str(out)) for a in argv])
    result[name] = {"code": code, "stdout": printed.getvalue().replace(str(out), "{out}")}
files = {p.relative_to(out).as_posix(): p.read_bytes().hex() for p in sorted(out.rglob("*")) if p.is_file()}
print(json.dumps({"commands": result, "files": files}))
'''

GRID = ["--q-heads", "1", "--kv-heads", "1", "--head-dim", "16", "--seq-q", "4", "--seq-k", "128"]
COMMANDS = {
    "vectors": ["vectors", "export", "{out}/vectors", "--op", "attention", "--fmt", "fp32"],
    "report int8": ["report", "int8", "--json"],
    "report ep-buffers": ["report", "ep-buffers", "--json"],
    "report pasa-grid": ["report", "pasa-grid", *GRID, "--json", "{out}/pasa-grid.json"],
    "model pipeline": ["model", "pipeline", "--json"],
    "model serving": ["model", "serving", "--json"],
    "verify": ["verify", "--quick", "--json", "-k", "split_kv"],
}
if THOROUGH:
    COMMANDS.update({
        "vectors (all)": ["vectors", "export", "{out}/vectors-all"],
        "report amla": ["report", "amla", "--json", "--quick"],
        "verify (all)": ["verify", "--json"],
    })
# Outputs that carry wall-clock times, and where.
TIMED = {"verify", "verify (all)", "report amla"}
TIME_KEYS = {"seconds", "solver_seconds"}
TIME_TEXT = re.compile(r"\b\d+(\.\d+)? s\b")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run the commands in two fresh interpreters at once, with hash seeds 1 and 2."""
    procs = []
    for seed in ("1", "2"):
        out = tmp_path_factory.mktemp(f"hashseed{seed}")
        procs.append(subprocess.Popen([sys.executable, "-c", DRIVER, str(out), json.dumps(COMMANDS)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "PYTHONHASHSEED": seed}))
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=3600)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def without_times(text: str) -> str:
    """Return a JSON document with its wall-clock fields removed (and times in free text masked)."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in TIME_KEYS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return TIME_TEXT.sub("<time> s", node) if isinstance(node, str) else node
    return json.dumps(strip(json.loads(text)), sort_keys=True)


def test_commands_succeed(runs):
    for run in runs:
        assert {name: r["code"] for name, r in run["commands"].items()} == {name: 0 for name in COMMANDS}


@pytest.mark.parametrize("name", [n for n in COMMANDS if n not in TIMED and not n.startswith("vectors")])
def test_reports_are_byte_identical(runs, name):
    first, second = (run["commands"][name]["stdout"] for run in runs)
    assert first and first == second


@pytest.mark.parametrize("name", [n for n in COMMANDS if n in TIMED])
def test_timed_reports_are_identical_but_for_their_times(runs, name):
    first, second = (run["commands"][name]["stdout"] for run in runs)
    assert without_times(first) == without_times(second)


def test_vector_sets_are_byte_identical(runs):
    first, second = (run["files"] for run in runs)
    vectors = {name for name in first if name.startswith("vectors")}
    assert vectors and {n: first[n] for n in vectors} == {n: second[n] for n in vectors}
    printed = [TIME_TEXT.sub("<time> s", run["commands"]["vectors"]["stdout"]) for run in runs]
    assert printed[0] == printed[1] and "set_sha256" in printed[0]


def test_the_pasa_grid_file_is_byte_identical(runs):
    first, second = (run["files"]["pasa-grid.json"] for run in runs)
    assert first == second
    assert not TIME_KEYS & set(json.loads(bytes.fromhex(first))["rows"][0]), "a wall time is back in the report"


def test_the_normalisation_removes_only_times():
    """Its mutant check: a changed value survives normalisation; a changed time does not."""
    a = json.dumps({"seconds": 1.0, "detail": "proved in 0.50 s", "err": 0.25})
    b = json.dumps({"seconds": 2.0, "detail": "proved in 0.75 s", "err": 0.25})
    c = json.dumps({"seconds": 2.0, "detail": "proved in 0.75 s", "err": 0.5})
    assert without_times(a) == without_times(b) != without_times(c)
