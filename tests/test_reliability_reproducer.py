"""Every hypothesis failure prints a reproducer that works without the local example database.

A deliberately false property over the project's own strategy (``attention_inputs``) runs
in a fresh process under each profile. Its output must carry ``@reproduce_failure(...)``
(both profiles set ``print_blob=True``). Pasted onto the same property, the blob must
replay the same minimal failing case in another fresh process, started in an empty
directory, so that no ``.hypothesis`` database can help.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attnspec.reference.strategies import PROFILE_ENV

PROPERTY = '''
from hypothesis import given, reproduce_failure
from attnspec.reference.strategies import attention_inputs, register_profiles

register_profiles()

{decorator}
@given(attention_inputs(max_seq=24))
def prop(case):
    assert case.k.shape[2] < 5, case.describe()

prop()
'''
BLOB = re.compile(r"@reproduce_failure\('[^']+', b'[^']+'\)")


def run_property(directory: Path, profile: str, decorator: str = "") -> subprocess.CompletedProcess:
    directory.mkdir()
    script = directory / "prop.py"
    script.write_text(PROPERTY.format(decorator=decorator))
    return subprocess.run([sys.executable, str(script)], cwd=directory, capture_output=True, text=True, timeout=300,
                          env={**os.environ, PROFILE_ENV: profile})


def failing_case(output: str) -> str:
    """Return the AssertionError line: the shrunk case's description."""
    lines = [line for line in output.splitlines() if line.startswith("AssertionError: ")]
    assert lines, output[-2000:]
    return lines[-1]


@pytest.mark.parametrize("profile", ["ci", "thorough"])
def test_a_failure_prints_a_blob_that_replays_without_the_database(tmp_path, profile):
    first = run_property(tmp_path / "first", profile)
    assert first.returncode != 0
    blobs = BLOB.findall(first.stdout + first.stderr)
    assert blobs, f"no @reproduce_failure in the output:\n{(first.stdout + first.stderr)[-2000:]}"
    replay = run_property(tmp_path / "replay", profile, decorator=blobs[-1])
    assert replay.returncode != 0
    assert failing_case(replay.stdout + replay.stderr) == failing_case(first.stdout + first.stderr)


def test_both_profiles_print_blobs_and_ci_has_no_database():
    """The settings the replay relies on; with print_blob=False the test above finds no blob."""
    from hypothesis import settings

    from attnspec.reference.strategies import register_profiles
    register_profiles()
    assert settings.get_profile("ci").print_blob and settings.get_profile("thorough").print_blob
    assert settings.get_profile("ci").database is None and settings.get_profile("ci").derandomize
