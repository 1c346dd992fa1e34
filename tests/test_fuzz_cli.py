"""Fuzzing the command line's argument parsing with hypothesis.

Argument lists are drawn over the real vocabulary: every subcommand and option of the
``attnspec`` parser, every ``report``/``model`` tool and its options (read from the tools'
own parsers), values at the edges (0, -1, huge, nan, inf, empty, unicode, path traversal,
``--``), and ``--opt=value`` forms. Each list goes through ``attnspec.cli.main`` in-process.
Only parsing and dispatch are exercised: checks are replaced by a fast stand-in, a tool stops
right after its own parser accepted its arguments, and commands that would write files stop
after the top-level parse. Allowed outcomes: a return code (0, 1, 3, or 2 with exactly one
``attnspec: error:`` line on stderr), or argparse's SystemExit (0 for --help/--version, 2 with
a usage message). Anything else, or a traceback in the output, is a crash.

Counts: the ``ci`` profile runs a quick slice; ``thorough`` runs 10,000 cases in all.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnspec import cli
from attnspec.commands import prove as prove_command, verify as verify_command
from attnspec.reference.strategies import PROFILE_ENV
from attnspec.registry import Report, tools

THOROUGH = os.environ.get(PROFILE_ENV) == "thorough"
# Commands whose function runs for real (with stand-in checks); the others stop after parsing.
RUN_FOR_REAL = {"verify", "prove", "report", "model"}


class Parsed(BaseException):
    """Raised once a tool's parser accepted its arguments (BaseException: no tool may swallow it)."""


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(s for a in parser._actions for s in a.option_strings)


def tool_parsers() -> dict[str, argparse.ArgumentParser]:
    """Return {"report amla": parser, ...}: each tool's own parser, caught as it is about to parse."""
    found = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise Parsed(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        for group in ("report", "model"):
            for name, (_, main) in tools(group).items():
                try:
                    main(["--help"])
                except Parsed as caught:
                    found[f"{group} {name}"] = caught.args[0]
    finally:
        argparse.ArgumentParser.parse_args = original
    return found


BUILD_PARSER = cli.build_parser
TOP = BUILD_PARSER()
COMMANDS = subparsers(TOP)
TOOLS = tool_parsers()
WORDS = sorted(set(COMMANDS) | {w for key in TOOLS for w in key.split()} | {"list", "--", "-", "--version", "-h"})
OPTIONS = sorted({o for p in [TOP, *COMMANDS.values(), *TOOLS.values()] for o in options(p)})
VALUES = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "3", "64", "512", "1e9", "99999999999999999999", "nan", "inf", "-inf",
                     "0.5", "", " ", "x", "../../x", "/", "fp12", "bf16", "amla", "*", "online_softmax*", "\x00"]),
    st.integers(min_value=-2**40, max_value=2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
TOKENS = st.one_of(st.sampled_from(WORDS), st.sampled_from(OPTIONS), VALUES,
                   st.tuples(st.sampled_from(OPTIONS), VALUES).map(lambda t: f"{t[0]}={t[1]}"))


def stand_in_check(check) -> Report:
    """A passing report without running the check: the fuzzer tests parsing and dispatch, not the checks."""
    return Report(check.name, check.kind, "pass", 0.0, "stand-in", {})


def guarded_parser() -> argparse.ArgumentParser:
    """Return the real parser, with the commands that write or run long stopping after the parse."""
    parser = BUILD_PARSER()
    for name, sub in subparsers(parser).items():
        if name not in RUN_FOR_REAL:
            sub.set_defaults(func=lambda args: 0)
    return parser


ATTNSPEC_ERROR = re.compile(r"attnspec: error: [A-Za-z]+Error: ")


@contextlib.contextmanager
def fuzzing():
    """Patch the CLI for fuzzing (stand-in checks, tools and writers stop after parsing); yield run(argv)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *args, **kwargs):
        namespace = original(self, *args, **kwargs)
        if self.prog != "attnspec":  # a tool's own parser accepted its arguments
            raise Parsed(self.prog)
        return namespace

    def run(argv: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = 0 if exc.code is None else exc.code
            except Parsed:
                code = 0
            except Exception as exc:
                raise AssertionError(f"attnspec {argv!r} crashed: {type(exc).__name__}: {exc}") from exc
        return code, out.getvalue(), err.getvalue()

    with mock.patch.object(verify_command, "run_check", stand_in_check), \
            mock.patch.object(prove_command, "run_check", stand_in_check), \
            mock.patch.object(cli, "build_parser", guarded_parser), \
            mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
        yield run


def check_outcome(argv: list[str], code, stdout: str, stderr: str) -> None:
    """Assert an allowed outcome: exit 0, 1 or 3; or 2 with an error on stderr, one line for attnspec's errors."""
    assert "Traceback" not in stdout + stderr, (argv, stderr[-1000:])
    assert code in (0, 1, 2, 3), (argv, code)
    if code == 2:
        assert "error" in stderr or "unknown" in stderr, (argv, stderr[-1000:])
        if ATTNSPEC_ERROR.match(stderr):
            raw_newline = any("\n" in a or "\r" in a for a in argv)  # an argument echoed verbatim may span lines
            assert "usage:" not in stderr and (raw_newline or stderr.count("\n") == 1), (argv, stderr)


def fuzz(argv: list[str]) -> None:
    with fuzzing() as run:
        check_outcome(argv, *run(argv))


def examples(n_thorough: int):
    """Settings for one fuzzer: the profile's count in ci, ``n_thorough`` cases under thorough."""
    return settings(max_examples=n_thorough) if THOROUGH else settings()


@examples(4_000)
@given(st.lists(TOKENS, max_size=8))
def test_random_argv_never_crashes(argv):
    fuzz(argv)


@examples(3_000)
@given(st.sampled_from(sorted(COMMANDS)), st.lists(TOKENS, max_size=6))
def test_each_subcommand_with_random_options(command, rest):
    fuzz([command, *rest])


@examples(3_000)
@given(st.sampled_from(sorted(TOOLS)), st.lists(TOKENS, max_size=6))
def test_each_tool_with_random_options(tool, rest):
    fuzz([*tool.split(), *rest])


def test_the_vocabulary_is_the_real_one():
    assert {"verify", "prove", "report", "model"} <= set(COMMANDS)
    assert {"report amla", "report pasa-grid", "model pipeline"} <= set(TOOLS)
    assert {"--json", "--quick", "-k", "--seed"} <= set(OPTIONS)


def test_the_harness_reports_a_crash():
    """The fuzzer's mutant: a subcommand that raises a non-attnspec error is reported as a crash."""
    def broken(args):
        raise ValueError("boom")
    with mock.patch.object(verify_command, "run", broken), pytest.raises(AssertionError, match="crashed: ValueError"):
        fuzz(["verify"])


def test_the_outcome_check_rejects_a_traceback():
    with pytest.raises(AssertionError):
        check_outcome(["x"], 1, "", "Traceback (most recent call last):\n  ...\nValueError: boom\n")
