"""The bad-input matrix: every public entry point against every class of bad input.

One table drives the tests and ``docs/bad-inputs.md``: :data:`ROWS` here plus the foundation
rows of ``tests/test_bad_inputs.py`` (attention-like entry points and the paged cache), which
this module extends rather than repeats. Each row names the entry points, the class of bad
input (the categories of issue 9), the input, and either the exception from
:mod:`attnspec.errors` with a fragment of its message (which names the argument and what was
expected) or the defined result. A row whose required behaviour is not implemented yet names
the file and what happens now (``gap``); it is a strict xfail, so it fails the day it is fixed
and the table must be updated.

``python tests/test_reliability_matrix.py`` rewrites the generated part of
docs/bad-inputs.md; :func:`test_doc_matches_the_table` fails when the two drift, and
:func:`test_every_public_spec_function_is_covered` fails when a public function of
``attnspec.spec`` has neither a row nor a stated reason for having none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import io
import os
import pkgutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from attnspec import cli
from attnspec.errors import (AttnSpecError, ConventionError, DomainError, FormatError, ImplementationError, MaskError,
                             ShapeError)
from attnspec.reference import bounds, certified, conformance, ep_dispatch, harness, int8, oracle
from attnspec.spec import amla, formats, masks, mla, paged, pasa, pasa_beta, policy, problem, rope

# The package re-exports functions of the same names, so these modules are fetched by their full names.
attention = importlib.import_module("attnspec.spec.attention")
flash = importlib.import_module("attnspec.spec.flash")
split_kv = importlib.import_module("attnspec.spec.split_kv")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad-inputs.md"
BEGIN, END = "<!-- BEGIN GENERATED: tests/test_reliability_matrix.py -->", "<!-- END GENERATED -->"

CATEGORIES = {
    "rank": "wrong rank",
    "heads": "mismatched heads or widths",
    "gqa": "q heads not divisible by kv heads",
    "lengths": "negative lengths, or lengths beyond the cache",
    "table": "block-table entries out of range",
    "nonfinite": "NaN or Inf in the inputs",
    "scale": "non-finite or zero scale",
    "format": "unsupported format (or policy, or dtype)",
    "empty": "empty batch",
    "masked": "fully masked batch",
    "impl": "`--impl module:function` missing, or raising in user code",
    "other": "other argument checks",
}


# ----------------------------------------------------------------------------------------------
# What a row expects
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Raises:
    """The call raises ``error`` (a class of attnspec.errors) and its message contains ``fragment``."""

    error: type[AttnSpecError]
    fragment: str

    def result_cell(self) -> str:
        return f"`{self.error.__name__}`"

    def message_cell(self) -> str:
        return f"`{self.fragment}`"


@dataclass(frozen=True)
class Defined:
    """The call returns, and ``holds(result)``: the documented result for that input."""

    text: str
    holds: Callable[[Any], bool]

    def result_cell(self) -> str:
        return f"defined: {self.text}"

    def message_cell(self) -> str:
        return ""


@dataclass(frozen=True)
class Exits:
    """A command exits with ``code``; ``stream`` holds ``fragment``; no traceback; one stderr line if ``one_line``."""

    code: int
    fragment: str
    one_line: bool = True
    stream: str = "stderr"

    def result_cell(self) -> str:
        if self.stream == "stdout":
            return f"exit {self.code}, the report on stdout"
        return f"exit {self.code}" + (", one line on stderr" if self.one_line else ", argparse usage on stderr")

    def message_cell(self) -> str:
        return f"`{self.fragment}`"


@dataclass(frozen=True)
class Row:
    targets: tuple[str, ...]
    category: str
    given: str
    call: Callable[[Callable], Any]  # called with the target's function (or the CLI runner)
    expect: Raises | Defined | Exits
    gap: str = ""  # the required behaviour is not implemented: file, function and what happens now

    @property
    def ids(self) -> list[str]:
        return [f"{t}: {self.given}" for t in self.targets]


# ----------------------------------------------------------------------------------------------
# Entry points and inputs
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CliRun:
    code: int | None  # None: the command crashed with an exception other than SystemExit
    stdout: str
    stderr: str
    crash: str = ""


def run_cli(*argv: str) -> CliRun:
    """Return what ``attnspec ARGV`` does in this process (exit code, stdout, stderr, crash)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception as exc:  # a crash: what the matrix must never show
            return CliRun(None, out.getvalue(), err.getvalue(), f"{type(exc).__name__}: {exc}")
    return CliRun(code, out.getvalue(), err.getvalue())


def run_cli_fresh(*argv: str, env: dict[str, str]) -> CliRun:
    """Return what ``attnspec ARGV`` does in a fresh interpreter with ``env`` added (import-time checks)."""
    proc = subprocess.run([sys.executable, "-m", "attnspec", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


ENTRIES: dict[str, Callable] = {
    "spec.attention.attention": attention.attention,
    "spec.flash.flash_attention": flash.flash_attention,
    "spec.split_kv.split_kv_attention": split_kv.split_kv_attention,
    "reference.oracle.attention_oracle": oracle.attention_oracle,
    "reference.certified.certified_attention": certified.certified_attention,
    "spec.pasa.pasa_attention": pasa.pasa_attention,
    "spec.problem.attention_problem": problem.attention_problem,
    "spec.paged.gather_paged": paged.gather_paged,
    "spec.mla.mla_decode": mla.mla_decode,
    "spec.mla.decode_problem": mla.decode_problem,
    "spec.amla.amla_decode": amla.amla_decode,
    "spec.amla.decode_problem": amla.decode_problem,
    "spec.split_kv.combine": split_kv.combine,
    "spec.split_kv.split_boundaries": split_kv.split_boundaries,
    "spec.split_kv.split_partials": split_kv.split_partials,
    "spec.flash.flash_from_problem": flash.flash_from_problem,
    "spec.attention.softmax_attention": attention.softmax_attention,
    "spec.policy.PrecisionPolicy": policy.PrecisionPolicy,
    "spec.policy.require_policy": policy.require_policy,
    "spec.policy.matmul_rounded": policy.matmul_rounded,
    "spec.policy.sum_rounded": policy.sum_rounded,
    "spec.formats.get_format": formats.get_format,
    "spec.formats.format_of_dtype": formats.format_of_dtype,
    "spec.formats.as_float64": formats.as_float64,
    "spec.formats.round_to": formats.round_to,
    "spec.formats.round_exact": formats.round_exact,
    "spec.formats.is_representable": formats.is_representable,
    "spec.formats.require_representable": formats.require_representable,
    "spec.formats.require_finite": formats.require_finite,
    "spec.formats.to_bits": formats.to_bits,
    "spec.formats.sign_bit": formats.sign_bit,
    "spec.formats.exponent_field": formats.exponent_field,
    "spec.formats.mantissa_field": formats.mantissa_field,
    "spec.formats.next_up": formats.next_up,
    "spec.formats.next_down": formats.next_down,
    "spec.formats.fp32_as_int32": formats.fp32_as_int32,
    "spec.formats.fp32_as_uint32": formats.fp32_as_uint32,
    "spec.formats.from_bits": formats.from_bits,
    "spec.formats.int32_as_fp32": formats.int32_as_fp32,
    "spec.formats.ulp": formats.ulp,
    "spec.masks.validate_window": masks.validate_window,
    "spec.masks.alignment_offset": masks.alignment_offset,
    "spec.rope.Yarn": rope.Yarn,
    "spec.rope.rope_frequencies": rope.rope_frequencies,
    "spec.rope.rope_angles": rope.rope_angles,
    "spec.rope.apply_rope": rope.apply_rope,
    "spec.mla.MLAConfig": mla.MLAConfig,
    "spec.mla.check_weights": mla.check_weights,
    "spec.mla.gemm": mla.gemm,
    "spec.mla.validate_tokens": mla.validate_tokens,
    "spec.mla.rope_rotate": mla.rope_rotate,
    "spec.mla.mla_queries": mla.mla_queries,
    "spec.mla.mla_latents": mla.mla_latents,
    "spec.mla.mla_forward": mla.mla_forward,
    "spec.mla.mla_attention": mla.mla_attention,
    "spec.mla.naive_problem": mla.naive_problem,
    "spec.mla.absorbed_problem": mla.absorbed_problem,
    "spec.mla.kernel_inputs": mla.kernel_inputs,
    "spec.amla.exponent_add": amla.exponent_add,
    "spec.amla.int32_add": amla.int32_add,
    "spec.amla.round_half_away": amla.round_half_away,
    "spec.amla.output_cast": amla.output_cast,
    "spec.amla.check_policy": amla.check_policy,
    "spec.pasa.PasaConfig": pasa.PasaConfig,
    "spec.pasa_beta.beta_map": pasa_beta.beta_map,
    "spec.pasa_beta.stored_shift_entries": pasa_beta.stored_shift_entries,
    "spec.pasa_beta.recovery_coefficient": pasa_beta.recovery_coefficient,
    "spec.pasa_beta.is_fixed_point": pasa_beta.is_fixed_point,
    "spec.pasa_beta.fixed_point": pasa_beta.fixed_point,
    "spec.pasa_beta.fixed_points": pasa_beta.fixed_points,
    "reference.bounds.attention_error_bound": bounds.attention_error_bound,
    "reference.conformance.load_impl": conformance.load_impl,
    "reference.harness.check": harness.check,
    "reference.int8.quantize_per_token": int8.quantize_per_token,
    "reference.int8.int8_linear": int8.int8_linear,
    "reference.ep_dispatch.route": ep_dispatch.route,
    "reference.ep_dispatch.capacity": ep_dispatch.capacity,
    "reference.ep_dispatch.buffer_bytes": ep_dispatch.buffer_bytes,
}
CLI = ("attnspec verify", "attnspec prove", "attnspec report", "attnspec model", "attnspec bench", "attnspec check",
       "attnspec vectors")
ATTENTION_LIKE = ("spec.attention.attention", "spec.flash.flash_attention", "spec.split_kv.split_kv_attention",
                  "reference.oracle.attention_oracle")

Q = np.ones((2, 4, 3, 8))  # (B, Hq, Sq, Dk)
K = np.ones((2, 2, 5, 8))  # (B, Hkv, Sk, Dk)
V = np.ones((2, 2, 5, 6))  # (B, Hkv, Sk, Dv)
ALL_FALSE = np.zeros((3, 5), dtype=bool)
FP32 = policy.PrecisionPolicy.uniform("fp32")

# The MLA kernel view at a small config: latent rows of kv_lora_rank + rope = 8 + 4 = 12 channels.
MLA = mla.MLAConfig(hidden=16, n_heads=2, q_lora_rank=0, kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=4,
                    v_head_dim=4, original_seq_len=64, max_seq_len=64)
WIDTH = MLA.latent_dim
_rng = np.random.default_rng(0)
DQ = _rng.uniform(-1, 1, (2, 1, 4, WIDTH))  # (B, s_q, h_q, 576-like)
CACHE = _rng.uniform(-1, 1, (6, 4, 1, WIDTH))  # (num_blocks, page, h_kv, D)
TABLE = np.array([[0, 1, 2], [3, 4, 5]])
LENS = np.array([5, 9])
CACHE_UNUSED_NAN = CACHE.copy()
CACHE_UNUSED_NAN[1, 3] = np.nan  # token 7 of sequence 0, whose length is 5: never read
WEIGHTS = mla.MLAWeights.random(MLA, 0)
X = _rng.uniform(-1, 1, (1, 3, 16))  # (B, S, hidden)
Q_NOPE, Q_PE = mla.mla_queries(X, WEIGHTS, MLA)
C_LAT, K_PE = mla.mla_latents(X, WEIGHTS, MLA)
MLA_DECODES = ("spec.mla.mla_decode", "spec.amla.amla_decode")
MLA_PROBLEMS = ("spec.mla.decode_problem", "spec.amla.decode_problem")


def decode(fn, q=DQ, cache=CACHE, table=TABLE, lens=LENS, **kw):
    return fn(q, cache, block_table=table, cache_seqlens=lens, config=MLA, **kw)


def empty_result(shape_out, shape_lse):
    return lambda r: np.shape(r.out) == shape_out and np.shape(r.lse) == shape_lse


def all_empty_rows(r) -> bool:
    return bool(np.all(np.asarray(r.out) == 0) and np.all(np.asarray(r.lse) == -np.inf))


def problem_rows_empty(p) -> bool:
    return not p.allowed.any()


def attention_partial(sq: int) -> attention.AttentionResult:
    return attention.AttentionResult(np.zeros((1, 1, sq, 2)), np.zeros((1, 1, sq)))


USER_MODULES = {
    "attnspec_matrix_user": '''
        def boom(q, k, v, **conventions):
            raise RuntimeError("user kernel exploded")
        def wrong_shape(q, k, v, **conventions):
            return q[..., :1]
        not_callable = 3
    ''',
    "attnspec_matrix_badimport": '''
        raise ZeroDivisionError("user module fails at import")
    ''',
}


def in_tmp(fn: Callable[[str], Any]) -> Any:
    """Return fn(a fresh temporary directory), removed afterwards (e.g. where `attnspec check` saves failures)."""
    with tempfile.TemporaryDirectory() as tmp:
        return fn(tmp)


def failed_with(text: str) -> Callable[[Any], bool]:
    return lambda report: (not report.ok and bool(report.results)
                           and all(r.error is not None and text in r.error for r in report.results))


# ----------------------------------------------------------------------------------------------
# The table (the foundation attention rows live in tests/test_bad_inputs.py)
# ----------------------------------------------------------------------------------------------

R = Row


def C(target: str, category: str, argv: list[str], expect: Exits, gap: str = "") -> Row:
    """Return the row of a command line: ``attnspec ARGV``, described by itself."""
    return Row((target,), category, "`attnspec " + " ".join(argv) + "`", lambda run: run(*argv), expect, gap)


ROWS: list[Row] = [
    # Attention-like entry points: what test_bad_inputs.py does not already cover.
    R(ATTENTION_LIKE + ("reference.certified.certified_attention", "spec.pasa.pasa_attention"), "empty", "B = 0",
      lambda f: f(Q[:0], K[:0], V[:0]),
      Defined("O (0, Hq, Sq, Dv), LSE (0, Hq, Sq)", empty_result((0, 4, 3, 6), (0, 4, 3)))),
    R(ATTENTION_LIKE + ("reference.certified.certified_attention", "spec.pasa.pasa_attention"), "masked",
      "every key masked (all-False mask)", lambda f: f(Q, K, V, mask=ALL_FALSE),
      Defined("O = 0, LSE = -inf (empty_lse) in every row", all_empty_rows)),
    R(ATTENTION_LIKE + ("reference.certified.certified_attention", "spec.pasa.pasa_attention"), "masked",
      "kv_seqlens all 0", lambda f: f(Q, K, V, kv_seqlens=np.array([0, 0])),
      Defined("O = 0, LSE = -inf in every row", all_empty_rows)),
    R(ATTENTION_LIKE, "masked", "Sk = 0", lambda f: f(Q, K[:, :, :0], V[:, :, :0]),
      Defined("O = 0, LSE = -inf in every row", all_empty_rows)),
    R(ATTENTION_LIKE, "masked", "empty_lse=+inf, every key masked",
      lambda f: f(Q, K, V, mask=ALL_FALSE, empty_lse=np.inf),
      Defined("O = 0, LSE = +inf (FA2/FlashMLA style)",
              lambda r: bool(np.all(r.out == 0) and np.all(r.lse == np.inf)))),
    R(ATTENTION_LIKE, "gqa", "Hkv = 0", lambda f: f(Q, K[:, :0], V[:, :0]),
      Raises(ShapeError, "k: expected at least one kv head, got 0")),
    R(ATTENTION_LIKE, "scale", "scale = +inf", lambda f: f(Q, K, V, scale=np.inf),
      Raises(DomainError, "scale: expected a finite non-zero number, got inf")),
    R(ATTENTION_LIKE, "scale", "scale = True", lambda f: f(Q, K, V, scale=True),
      Raises(DomainError, "scale: expected a real number, got True")),
    R(ATTENTION_LIKE, "format", "complex q", lambda f: f(Q.astype(complex), K, V),
      Raises(FormatError, "q: expected a floating-point array, got dtype complex128")),
    R(ATTENTION_LIKE, "format", "ragged nested list as q", lambda f: f([[1.0], [1.0, 2.0]], K, V),
      Raises(ShapeError, "q: expected a rectangular array")),
    R(ATTENTION_LIKE, "other", "causal='no'", lambda f: f(Q, K, V, causal="no"),
      Raises(ConventionError, "causal: expected True or False, got 'no'")),
    R(ATTENTION_LIKE, "other", "integer 0/1 mask", lambda f: f(Q, K, V, mask=np.ones((3, 5), dtype=np.int64)),
      Raises(MaskError, "mask: expected a bool mask (True = may attend) or a floating-point additive mask")),
    R(ATTENTION_LIKE, "other", "softcap=True", lambda f: f(Q, K, V, softcap=True),
      Raises(DomainError, "softcap: expected None or a finite positive number, got True")),
    R(ATTENTION_LIKE, "other", "scalar kv_seqlens", lambda f: f(Q, K, V, kv_seqlens=3),
      Raises(ShapeError, "kv_seqlens: expected shape (2,), got ()")),
    R(ATTENTION_LIKE[:3], "format", "policy='bf16' (a name, not a policy)", lambda f: f(Q, K, V, policy="bf16"),
      Raises(FormatError, "policy: expected a PrecisionPolicy, e.g. PrecisionPolicy.uniform('bf16')")),
    R(("spec.pasa.pasa_attention",), "format", "policy='fp16' (a name, not a policy)",
      lambda f: f(Q, K, V, policy="fp16"),
      Raises(FormatError, "policy: expected a PrecisionPolicy, e.g. PrecisionPolicy.uniform('bf16'), got 'fp16'")),
    R(("spec.attention.attention", "spec.flash.flash_attention"), "format", "values outside fp32's range, non-strict",
      lambda f: f(Q * 1e39, K, V, policy=FP32),
      Defined("the IEEE emulation: inputs round to inf, O and LSE are NaN, as an fp32 kernel's would be "
              "(strict=True raises FormatError instead)", lambda r: bool(np.all(np.isnan(r.out))))),
    R(("spec.attention.attention",), "format", "values outside fp32's range, strict",
      lambda f: f(Q * 1e39, K, V, policy=FP32, strict=True),
      Raises(FormatError, "q: expected values exactly representable in fp32")),
    R(("reference.oracle.attention_oracle",), "nonfinite", "logits beyond binary64 (q, k ~ 1e300)",
      lambda f: f(Q[:1, :1, :1] * 1e300, K[:1, :1] * 1e300, V[:1, :1]),
      Defined("exact: LSE rounds to +inf in binary64, O is the exact mean",
              lambda r: bool(r.lse[0, 0, 0] == np.inf and r.out[0, 0, 0, 0] == 1))),
    R(("reference.oracle.attention_oracle",), "other", "dps = 5", lambda f: f(Q, K, V, dps=5),
      Raises(DomainError, "dps: expected an int in [15, 10000], got 5")),
    R(("reference.oracle.attention_oracle",), "format", "rounded('fp12')",
      lambda f: f(Q[:1], K[:1], V[:1]).rounded("fp12"),
      Raises(FormatError, "format: expected one of")),
    R(("reference.certified.certified_attention", "spec.pasa.pasa_attention"), "rank", "q rank 3",
      lambda f: f(Q[0], K, V),
      Raises(ShapeError, "q: expected rank 4")),
    R(("reference.certified.certified_attention", "spec.pasa.pasa_attention"), "heads", "Dk mismatch",
      lambda f: f(Q, K[..., :7], V), Raises(ShapeError, "k: expected head width Dk=8")),
    R(("reference.certified.certified_attention", "spec.pasa.pasa_attention"), "gqa", "Hq = 3, Hkv = 2",
      lambda f: f(np.ones((2, 3, 3, 8)), K, V), Raises(ShapeError, "divisible by the kv-head count 2")),
    R(("reference.certified.certified_attention", "spec.pasa.pasa_attention"), "lengths", "kv_seqlens beyond Sk",
      lambda f: f(Q, K, V, kv_seqlens=np.array([3, 6])), Raises(ShapeError, "kv_seqlens: expected lengths <= 5")),
    R(("reference.certified.certified_attention", "spec.pasa.pasa_attention"), "nonfinite", "NaN in q",
      lambda f: f(np.where(np.arange(8) == 3, np.nan, Q), K, V), Raises(DomainError, "q: expected finite values")),
    R(("reference.certified.certified_attention", "spec.pasa.pasa_attention"), "scale", "scale = 0",
      lambda f: f(Q, K, V, scale=0.0), Raises(DomainError, "scale: expected a finite non-zero number")),
    R(("reference.certified.certified_attention",), "format", "fmt='fp64'", lambda f: f(Q, K, V, fmt="fp64"),
      Raises(FormatError, "fmt: expected fp32, bf16, fp16, fp8_e4m3, fp8_e5m2 or None, got fp64")),
    R(("reference.certified.certified_attention",), "format", "fmt='fp12'", lambda f: f(Q, K, V, fmt="fp12"),
      Raises(FormatError, "format: expected one of")),
    R(("spec.pasa.pasa_attention",), "other", "softcap", lambda f: f(Q, K, V, softcap=5.0),
      Raises(ConventionError, "softcap: expected None")),
    R(("spec.pasa.pasa_attention",), "format", "config='x'", lambda f: f(Q, K, V, config="x"),
      Raises(ConventionError, "config: expected a PasaConfig, e.g. PASA_ATTNSPEC or PasaConfig(beta=0.9375), got 'x'")),
    R(("spec.problem.attention_problem",), "rank", "v rank 3", lambda f: f(Q, K, V[0]),
      Raises(ShapeError, "v: expected rank 4")),
    R(("spec.problem.attention_problem",), "heads", "v with 3 kv heads", lambda f: f(Q, K, np.ones((2, 3, 5, 6))),
      Raises(ShapeError, "v: expected (B, Hkv, Sk) = (2, 2, 5) (from k)")),
    R(("spec.problem.attention_problem",), "gqa", "Hq = 3, Hkv = 2", lambda f: f(np.ones((2, 3, 3, 8)), K, V),
      Raises(ShapeError, "q: expected a query-head count divisible by the kv-head count 2, got 3")),
    R(("spec.problem.attention_problem",), "lengths", "q_seqlens = [-1, 0]",
      lambda f: f(Q, K, V, q_seqlens=np.array([-1, 0])),
      Raises(ShapeError, "q_seqlens: expected lengths >= 0")),
    R(("spec.problem.attention_problem",), "nonfinite", "Inf in k inside the valid length",
      lambda f: f(Q, np.where(np.arange(8) == 0, np.inf, K), V), Raises(DomainError, "k: expected finite values")),
    R(("spec.problem.attention_problem",), "nonfinite", "NaN in k beyond kv_seqlens",
      lambda f: f(Q, np.where(np.arange(5)[:, None] >= 3, np.nan, K), V, kv_seqlens=np.array([3, 3])),
      Defined("never read: the padded slots are zeroed, no error", lambda p: bool(np.all(np.isfinite(p.k))))),
    R(("spec.problem.attention_problem",), "scale", "scale = -inf", lambda f: f(Q, K, V, scale=-np.inf),
      Raises(DomainError, "scale: expected a finite non-zero number, got -inf")),
    R(("spec.problem.attention_problem",), "format", "object-dtype q", lambda f: f(Q.astype(object), K, V),
      Raises(FormatError, "q: expected a floating-point array, got dtype object")),
    R(("spec.problem.attention_problem",), "format", "int64 q above 2**53",
      lambda f: f(np.full((2, 4, 3, 8), 2**60), K, V),
      Raises(FormatError, "q: integers beyond 2**53 cannot be converted to float64 exactly")),
    R(("spec.problem.attention_problem",), "empty", "B = 0", lambda f: f(Q[:0], K[:0], V[:0]),
      Defined("a problem with allowed (0, Hq, Sq, Sk)", lambda p: p.allowed.shape == (0, 4, 3, 5))),
    R(("spec.problem.attention_problem",), "masked", "causal, every kv length 0",
      lambda f: f(np.ones((1, 2, 7, 8)), K[:1], V[:1], causal=True, kv_seqlens=np.array([0])),
      Defined("allowed is all False: every row takes the fully-masked convention", problem_rows_empty)),
    # The paged cache (test_bad_inputs.py covers ranks, ids and lengths).
    R(("spec.paged.gather_paged",), "nonfinite", "NaN in a slot that is read",
      lambda f: f(np.full((4, 2, 1, 3), np.nan), np.array([[0, 1], [2, 3]]), np.array([3, 4])),
      Defined("copied as is: finiteness is checked by the attention problem that reads it (DomainError there)",
              lambda r: bool(np.isnan(r[0][0, 0, 0, 0])))),
    R(("spec.paged.gather_paged",), "empty", "B = 0",
      lambda f: f(np.ones((4, 2, 1, 3)), np.zeros((0, 2), int), np.zeros(0, int)),
      Defined("dense (0, H, max_blocks * page, D), lengths (0,)",
              lambda r: r[0].shape == (0, 1, 4, 3) and r[1].shape == (0,))),
    R(("spec.paged.gather_paged",), "format", "bool block_table",
      lambda f: f(np.ones((4, 2, 1, 3)), np.array([[True, False]]), np.array([1])),
      Raises(ShapeError, "block_table: expected integers, got dtype bool")),
    R(("spec.paged.gather_paged",), "other", "page size 0",
      lambda f: f(np.ones((4, 0, 1, 3)), np.array([[0, 1]]), np.array([0])),
      Raises(ShapeError, "cache: expected a page size >= 1, got 0")),
    # The MLA kernel view: FlashMLA's calling convention, shared by AMLA.
    R(MLA_DECODES + MLA_PROBLEMS, "rank", "q rank 3", lambda f: decode(f, q=DQ[0]),
      Raises(ShapeError, "q: expected (B, s_q, h_q, kv_lora_rank + qk_rope_head_dim = 12)")),
    R(MLA_DECODES + MLA_PROBLEMS, "heads", "q 11 wide (not kv_lora_rank + rope)", lambda f: decode(f, q=DQ[..., :-1]),
      Raises(ShapeError, "q: expected (B, s_q, h_q, kv_lora_rank + qk_rope_head_dim = 12)")),
    R(MLA_DECODES + MLA_PROBLEMS, "heads", "cache 11 wide", lambda f: decode(f, cache=CACHE[..., :-1]),
      Raises(ShapeError, "kv_cache: expected (num_blocks, page, h_kv, kv_lora_rank + qk_rope_head_dim = 12)")),
    R(MLA_DECODES + MLA_PROBLEMS, "gqa", "h_q = 3, h_kv = 2",
      lambda f: decode(f, q=np.ones((2, 1, 3, WIDTH)), cache=np.ones((6, 4, 2, WIDTH))),
      Raises(ShapeError, "q: expected a query-head count divisible by the kv-head count 2, got 3")),
    R(MLA_DECODES + MLA_PROBLEMS, "lengths", "cache_seqlens = [-1, 3]", lambda f: decode(f, lens=np.array([-1, 3])),
      Raises(ShapeError, "cache_seqlens: expected lengths >= 0, got [-1, 3]")),
    R(MLA_DECODES + MLA_PROBLEMS, "lengths", "cache_seqlens beyond the table (13 > 3 pages of 4)",
      lambda f: decode(f, lens=np.array([13, 3])),
      Raises(ShapeError, "cache_seqlens: expected lengths <= max_blocks * page = 12, got [13, 3]")),
    R(MLA_DECODES + MLA_PROBLEMS, "lengths", "block_table without cache_seqlens", lambda f: decode(f, lens=None),
      Raises(ShapeError, "cache_seqlens: expected (B,) lengths with a block_table, got None")),
    R(MLA_DECODES + MLA_PROBLEMS, "table", "block id 9 of 6 blocks",
      lambda f: decode(f, table=np.array([[0, 9, 2], [3, 4, 5]])),
      Raises(ShapeError, "block_table[0, :2]: expected block ids in [0, 6), got [0, 9]")),
    R(MLA_DECODES + MLA_PROBLEMS, "table", "negative block id",
      lambda f: decode(f, table=np.array([[-1, 1, 2], [3, 4, 5]])),
      Raises(ShapeError, "block_table[0, :2]: expected block ids in [0, 6), got [-1, 1]")),
    R(MLA_DECODES, "table", "2147480000 past the last page (FlashMLA's filler)",
      lambda f: decode(f, table=np.array([[0, 1, 2147480000], [3, 4, 5]])),
      Defined("never read, no error", lambda r: bool(np.all(np.isfinite(r.out))))),
    R(MLA_DECODES + MLA_PROBLEMS, "table", "float block_table", lambda f: decode(f, table=TABLE.astype(float)),
      Raises(ShapeError, "block_table: expected integers, got dtype float64")),
    R(MLA_DECODES + MLA_PROBLEMS, "nonfinite", "NaN in q",
      lambda f: decode(f, q=np.where(np.arange(WIDTH) == 0, np.nan, DQ)),
      Raises(DomainError, "q: expected finite values")),
    R(MLA_DECODES + MLA_PROBLEMS, "nonfinite", "NaN in a cache slot that is read",
      lambda f: decode(f, cache=np.where(np.arange(4)[:, None, None] == 0, np.nan, CACHE)),
      Raises(DomainError, "k: expected finite values")),
    R(MLA_DECODES, "nonfinite", "NaN in a cache slot past the sequence", lambda f: decode(f, cache=CACHE_UNUSED_NAN),
      Defined("never read: O and LSE are finite",
              lambda r: bool(np.all(np.isfinite(r.out)) and np.all(np.isfinite(r.lse))))),
    R(MLA_DECODES + MLA_PROBLEMS, "scale", "scale = 0", lambda f: decode(f, scale=0.0),
      Raises(DomainError, "scale: expected a finite non-zero number, got 0.0")),
    R(MLA_DECODES + MLA_PROBLEMS, "scale", "scale = NaN", lambda f: decode(f, scale=np.nan),
      Raises(DomainError, "scale: expected a finite non-zero number, got nan")),
    R(("spec.mla.mla_decode",), "format", "policy='bf16'", lambda f: decode(f, policy="bf16"),
      Raises(FormatError, "policy: expected a PrecisionPolicy")),
    R(("spec.amla.amla_decode",), "format", "policy='bf16'", lambda f: decode(f, policy="bf16"),
      Raises(FormatError, "policy: expected a PrecisionPolicy, e.g. PrecisionPolicy.uniform('bf16'), got 'bf16'")),
    R(("spec.amla.amla_decode",), "format", "policy='bf16', strict=True",
      lambda f: decode(f, policy="bf16", strict=True),
      Raises(FormatError, "policy: expected a PrecisionPolicy")),
    R(("spec.amla.amla_decode",), "format", "an fp64 policy",
      lambda f: decode(f, policy=policy.PrecisionPolicy.uniform("fp64")),
      Raises(FormatError, "policy.matmul_input: expected bf16 or fp16")),
    R(MLA_DECODES + MLA_PROBLEMS, "format", "object-dtype cache", lambda f: decode(f, cache=CACHE.astype(object)),
      Raises(FormatError, "kv_cache: expected a floating-point array, got dtype object")),
    R(MLA_DECODES, "empty", "B = 0", lambda f: decode(f, q=DQ[:0], table=TABLE[:0], lens=LENS[:0]),
      Defined("O (0, s_q, h_q, 8), LSE (0, h_q, s_q)", empty_result((0, 1, 4, 8), (0, 4, 1)))),
    R(MLA_DECODES, "masked", "cache_seqlens all 0", lambda f: decode(f, lens=np.array([0, 0])),
      Defined("O = 0, LSE = -inf in every row", all_empty_rows)),
    R(MLA_DECODES, "masked", "causal MTP with s_q > length",
      lambda f: decode(f, q=np.ones((2, 3, 1, WIDTH)), lens=np.array([1, 0]), causal=True),
      Defined("rows without a key get O = 0, LSE = -inf",
              lambda r: bool(np.all(r.out[1] == 0) and np.all(r.lse[0, :, :2] == -np.inf)))),
    R(("spec.mla.mla_decode",), "other", "dv = 3 (FlashMLA's head_dim_v must be kv_lora_rank)",
      lambda f: decode(f, dv=3), Raises(ShapeError, "dv: expected kv_lora_rank = 8")),
    R(("spec.mla.mla_decode",), "other", "algorithm='foo'", lambda f: decode(f, algorithm="foo"),
      Raises(ConventionError, "algorithm: expected one of ('attention', 'flash'), got 'foo'")),
    R(("spec.amla.amla_decode",), "other", "variant='foo'", lambda f: decode(f, variant="foo"),
      Raises(ConventionError, "variant: expected one of")),
    R(("spec.amla.amla_decode",), "other", "block_k = 0", lambda f: decode(f, block_k=0),
      Raises(ShapeError, "block_k: expected a positive int, got 0")),
    # Split-KV building blocks.
    R(("spec.split_kv.combine",), "empty", "no partials", lambda f: f([], FP32),
      Raises(ShapeError, "partials: expected at least one partial result")),
    R(("spec.split_kv.combine",), "heads", "partials of different shapes",
      lambda f: f([attention_partial(1), attention_partial(2)], FP32),
      Raises(ShapeError, "partials[1]: expected out (1, 1, 1, 2) and lse (1, 1, 1) (from partials[0])")),
    R(("spec.split_kv.combine",), "format", "policy='fp32'", lambda f: f([attention_partial(1)], "fp32"),
      Raises(FormatError, "policy: expected a PrecisionPolicy")),
    R(("spec.split_kv.combine",), "masked", "every partial empty (lse -inf)",
      lambda f: f([attention.AttentionResult(np.zeros((1, 1, 1, 2)), np.full((1, 1, 1), -np.inf))] * 2, FP32),
      Defined("O = 0, LSE = -inf (no (-inf) - (-inf))", all_empty_rows)),
    R(("spec.split_kv.combine",), "nonfinite", "a partial LSE of +inf (FA2's empty marker)",
      lambda f: f([attention.AttentionResult(np.zeros((1, 1, 1, 2)), np.full((1, 1, 1), np.inf))], FP32),
      Defined("IEEE propagation: O and LSE are NaN (split partials must mark empty splits with -inf)",
              lambda r: bool(np.all(np.isnan(r.out)) and np.isnan(r.lse).all()))),
    R(("spec.split_kv.split_boundaries",), "lengths", "Sk = -1", lambda f: f(-1, 2, 4),
      Raises(ShapeError, "sk: expected an int >= 0, got -1")),
    R(("spec.split_kv.split_boundaries",), "other", "block_k = 0", lambda f: f(10, 2, 0),
      Raises(ShapeError, "block_k: expected a positive int, got 0")),
    R(("spec.split_kv.split_boundaries",), "other", "num_splits = 0", lambda f: f(10, 0, 4),
      Raises(ShapeError, "num_splits: expected a positive int, got 0")),
    R(("spec.split_kv.split_partials",), "lengths", "boundaries that do not end at Sk",
      lambda f: f(problem.attention_problem(Q, K, V), [0, 3], FP32, 4),
      Raises(ShapeError, "boundaries: expected a non-decreasing list from 0 to Sk=5, got [0, 3]")),
    R(("spec.split_kv.split_kv_attention",), "other", "block_k = 0", lambda f: f(Q, K, V, block_k=0),
      Raises(ShapeError, "block_k: expected a positive int, got 0")),
    R(("spec.flash.flash_attention", "spec.flash.flash_from_problem"), "other", "block_k = True",
      lambda f: f(Q, K, V, block_k=True) if f is flash.flash_attention
      else f(problem.attention_problem(Q, K, V), FP32, True),
      Raises(ShapeError, "block_k: expected a positive int, got True")),
    R(("spec.attention.softmax_attention", "spec.flash.flash_from_problem"), "format", "policy='fp32'",
      lambda f: f(problem.attention_problem(Q, K, V), "fp32"),
      Raises(FormatError, "policy: expected a PrecisionPolicy")),
    # Formats and policies.
    R(("spec.policy.PrecisionPolicy",), "format", "a format name that does not exist",
      lambda f: f("fp12", "fp32", "fp32", "fp32"),
      Raises(FormatError, "format: expected one of ['bf16', 'fp16', 'fp32'")),
    R(("spec.policy.PrecisionPolicy",), "format", "an integer dtype", lambda f: f(np.int8, "fp32", "fp32", "fp32"),
      Raises(FormatError, "format: dtype int8 is not one of the supported float formats")),
    R(("spec.policy.PrecisionPolicy",), "format", "None as a format", lambda f: f(None, "fp32", "fp32", "fp32"),
      Raises(FormatError, "format: expected a Format, a format name or a float dtype, got None")),
    R(("spec.policy.PrecisionPolicy",), "other", "accumulation='kahan'",
      lambda f: f("fp32", "fp32", "fp32", "fp32", "kahan"),
      Raises(ConventionError, "accumulation: expected 'exact' or 'sequential', got 'kahan'")),
    R(("spec.policy.require_policy",), "format", "a format name", lambda f: f("bf16"),
      Raises(FormatError, "policy: expected a PrecisionPolicy")),
    R(("spec.policy.matmul_rounded",), "nonfinite", "an Inf operand",
      lambda f: f(np.array([[np.inf, 1.0]]), np.array([[1.0], [2.0]]), formats.Format.FP16),
      Defined("IEEE propagation: inf (NaN for inf * 0)", lambda r: bool(r[0, 0] == np.inf))),
    R(("spec.policy.sum_rounded",), "nonfinite", "an Inf term",
      lambda f: f(np.array([np.inf, -np.inf]), -1, formats.Format.FP16),
      Defined("IEEE propagation: inf - inf = NaN", lambda r: bool(np.isnan(r[0])))),
    R(("spec.policy.matmul_rounded", "spec.policy.sum_rounded"), "format", "fmt='fp12'",
      lambda f: f(np.ones((1, 1)), np.ones((1, 1)), "fp12") if f is policy.matmul_rounded else f(np.ones(2), -1,
      "fp12"),
      Raises(FormatError, "format: expected one of")),
    R(("spec.formats.get_format", "spec.formats.round_to", "spec.formats.is_representable", "spec.formats.ulp",
       "spec.formats.to_bits", "spec.formats.from_bits", "spec.formats.sign_bit", "spec.formats.exponent_field",
       "spec.formats.mantissa_field", "spec.formats.next_up", "spec.formats.next_down",
       "spec.formats.require_representable"), "format", "'int8' as a format",
      lambda f: f("int8") if f is formats.get_format else f(np.ones(1, dtype=np.uint8),
      "int8") if f is formats.from_bits
      else f(1.0, "int8", "x") if f is formats.require_representable else f(1.0, "int8"),
      Raises(FormatError,
      "format: expected one of ['bf16', 'fp16', 'fp32', 'fp64', 'fp8_e4m3', 'fp8_e5m2'], got 'int8'")),
    R(("spec.formats.format_of_dtype",), "format", "int8", lambda f: f(np.int8),
      Defined("None (the dtype is not a supported float format)", lambda r: r is None)),
    R(("spec.formats.round_to", "spec.formats.ulp"), "nonfinite", "NaN", lambda f: f(np.nan, "bf16"),
      Defined("NaN", lambda r: bool(np.isnan(r)))),
    R(("spec.formats.round_exact",), "nonfinite", "float NaN", lambda f: f(float("nan"), "bf16"),
      Raises(DomainError, "value: expected a finite rational, got nan")),
    R(("spec.formats.as_float64", "spec.formats.round_to"), "format", "strings", lambda f: f(np.array(["1.0"]), "fp32")
      if f is formats.round_to else f(np.array(["1.0"]), "x"),
      Raises(FormatError, "x: expected a floating-point array, got dtype <U3")),
    R(("spec.formats.as_float64",), "rank", "ragged nested list", lambda f: f([[1.0], [1.0, 2.0]], "x"),
      Raises(ShapeError, "x: expected a rectangular array")),
    R(("spec.formats.to_bits", "spec.formats.sign_bit", "spec.formats.exponent_field", "spec.formats.mantissa_field",
       "spec.formats.next_up", "spec.formats.next_down"), "format", "1.1, not a bf16 value", lambda f: f(1.1, "bf16"),
      Raises(FormatError, "x: expected values exactly representable in bf16, got np.float64(1.1)")),
    R(("spec.formats.fp32_as_int32", "spec.formats.fp32_as_uint32"), "format", "1.1, not an fp32 value",
      lambda f: f(1.1),
      Raises(FormatError, "x: expected values exactly representable in fp32")),
    R(("spec.formats.from_bits",), "format", "float bits", lambda f: f(np.array([1.0]), "bf16"),
      Raises(FormatError, "bits: expected an integer array, got float64")),
    R(("spec.formats.from_bits",), "other", "bits beyond the width", lambda f: f(np.array([70000]), "bf16"),
      Raises(FormatError, "bits: expected integers in [0, 2**16), got range [70000, 70000]")),
    R(("spec.formats.int32_as_fp32",), "format", "float words", lambda f: f(np.ones(2)),
      Raises(FormatError, "i: expected an int32 or uint32 array, got float64")),
    R(("spec.formats.require_finite",), "nonfinite", "Inf", lambda f: f(np.array([1.0, np.inf]), "x"),
      Raises(DomainError, "x: expected finite values, got np.float64(inf) at index (1,)")),
    # Masks and RoPE.
    R(("spec.masks.validate_window",), "other", "window (True, 1)", lambda f: f((True, 1)),
      Raises(MaskError, "window[left]: expected a non-negative int, -1 or None, got True")),
    R(("spec.masks.alignment_offset",), "other", "alignment 'upper_left'", lambda f: f(1, 2, "upper_left"),
      Raises(ConventionError, "causal_alignment: expected one of ('bottom_right', 'top_left'), got 'upper_left'")),
    R(("spec.rope.rope_frequencies",), "heads", "odd rotary width 3", lambda f: f(3, 10000.0),
      Raises(ShapeError, "qk_rope_head_dim: expected an even int >= 2 (pairs are rotated), got 3")),
    R(("spec.rope.rope_frequencies",), "nonfinite", "theta = NaN", lambda f: f(4, float("nan")),
      Raises(DomainError, "rope_theta: expected a finite number > 1, got nan")),
    R(("spec.rope.rope_angles",), "lengths", "position -1", lambda f: f(np.array([-1]), np.ones(2)),
      Raises(DomainError, "positions: expected positions >= 0, got min -1")),
    R(("spec.rope.rope_angles",), "format", "float positions", lambda f: f(np.array([1.5]), np.ones(2)),
      Raises(ShapeError, "positions: expected integers, got dtype float64")),
    R(("spec.rope.apply_rope",), "heads", "3 channels for 2 angles", lambda f: f(np.ones((2, 3)), np.ones((2, 2))),
      Raises(ShapeError, "x: expected a last axis of 2 * 2 (one pair per angle), got shape (2, 3)")),
    R(("spec.rope.apply_rope",), "nonfinite", "NaN in x", lambda f: f(np.full((2, 4), np.nan), np.ones((2, 2))),
      Defined("NaN where x is NaN (an elementwise rotation; attention rejects it later)",
              lambda r: bool(np.isnan(r).all()))),
    R(("spec.rope.Yarn",), "other", "rope_factor 0", lambda f: f(0.0, 4096, 32, 1),
      Raises(DomainError, "rope_factor: expected a finite positive number, got 0.0")),
    # The MLA layer.
    R(("spec.mla.MLAConfig",), "heads", "n_heads = 0", lambda f: f(n_heads=0),
      Raises(ShapeError, "n_heads: expected a positive int, got 0")),
    R(("spec.mla.MLAConfig",), "heads", "n_heads = 2.0", lambda f: f(n_heads=2.0),
      Raises(ShapeError, "n_heads: expected a positive int, got 2.0")),
    R(("spec.mla.MLAConfig",), "heads", "odd qk_rope_head_dim", lambda f: f(qk_rope_head_dim=3),
      Raises(ShapeError, "qk_rope_head_dim: expected an even int (RoPE rotates pairs), got 3")),
    R(("spec.mla.MLAConfig",), "nonfinite", "norm_eps = NaN", lambda f: f(norm_eps=float("nan")),
      Raises(DomainError, "norm_eps: expected a finite positive number, got nan")),
    R(("spec.mla.check_weights", "spec.mla.mla_forward", "spec.mla.mla_queries", "spec.mla.mla_latents"), "heads",
      "weights of a 4-head config", lambda f: f(mla.MLAWeights.random(dataclasses.replace(MLA, n_heads=4), 0), MLA)
      if f is mla.check_weights else f(X, mla.MLAWeights.random(dataclasses.replace(MLA, n_heads=4), 0), MLA),
      Raises(ShapeError, "wq_b: expected shape (16, 16) for this config, got (32, 16)")),
    R(("spec.mla.mla_forward", "spec.mla.mla_queries", "spec.mla.mla_latents", "spec.mla.validate_tokens"), "rank",
      "x of rank 2", lambda f: f(X[0], MLA, None) if f is mla.validate_tokens else f(X[0], WEIGHTS, MLA),
      Raises(ShapeError, "x: expected shape (B, S, hidden=16), got (3, 16)")),
    R(("spec.mla.mla_forward", "spec.mla.mla_queries", "spec.mla.mla_latents"), "heads", "x 15 wide",
      lambda f: f(X[..., :15], WEIGHTS, MLA),
      Raises(ShapeError, "x: expected shape (B, S, hidden=16), got (1, 3, 15)")),
    R(("spec.mla.mla_forward", "spec.mla.mla_queries", "spec.mla.mla_latents"), "nonfinite", "NaN in x",
      lambda f: f(np.where(np.arange(16) == 2, np.nan, X), WEIGHTS, MLA),
      Raises(DomainError, "x: expected finite values")),
    R(("spec.mla.mla_forward", "spec.mla.mla_queries", "spec.mla.mla_latents", "spec.mla.gemm"), "format",
      "policy='bf16'",
      lambda f: f(np.ones((1, 1)), np.ones((1, 1)), "bf16") if f is mla.gemm else f(X, WEIGHTS, MLA, policy="bf16"),
      Raises(FormatError, "policy: expected a PrecisionPolicy")),
    R(("spec.mla.rope_rotate",), "format", "policy='bf16'",
      lambda f: f(np.ones((1, 1, 4)), np.zeros((1, 1), int), MLA, "bf16"),
      Raises(FormatError, "policy: expected a PrecisionPolicy")),
    R(("spec.mla.rope_rotate",), "lengths", "position -1", lambda f: f(np.ones((1, 1, 4)), np.array([[-1]]), MLA, FP32),
      Raises(DomainError, "positions: expected positions >= 0, got min -1")),
    R(("spec.mla.mla_forward",), "empty", "B = 0", lambda f: f(X[:0], WEIGHTS, MLA),
      Defined("y (0, S, hidden)", lambda r: r.shape == (0, 3, 16))),
    R(("spec.mla.mla_forward",), "other", "form='foo'", lambda f: f(X, WEIGHTS, MLA, form="foo"),
      Raises(ConventionError, "form: expected 'naive' or 'absorbed', got 'foo'")),
    R(("spec.mla.mla_queries", "spec.mla.mla_latents", "spec.mla.validate_tokens"), "lengths",
      "position beyond max_seq_len", lambda f: f(X, MLA, np.array([0, 1, 64])) if f is mla.validate_tokens
      else f(X, WEIGHTS, MLA, positions=np.array([0, 1, 64])),
      Raises(DomainError, "positions: expected values in [0, max_seq_len=64), got 0..64")),
    R(("spec.mla.mla_attention", "spec.mla.naive_problem", "spec.mla.absorbed_problem", "spec.mla.kernel_inputs"),
      "heads",
      "q_pe 2 wide", lambda f: f(Q_NOPE, Q_PE[..., :2], C_LAT, K_PE, WEIGHTS, MLA),
      Raises(ShapeError, "q_pe: expected (1, 3, 2, 4), got (1, 3, 2, 2)")),
    R(("spec.mla.mla_attention", "spec.mla.naive_problem", "spec.mla.absorbed_problem"), "scale", "scale = 0",
      lambda f: f(Q_NOPE, Q_PE, C_LAT, K_PE, WEIGHTS, MLA, scale=0.0),
      Raises(DomainError, "scale: expected a finite non-zero number, got 0.0")),
    R(("spec.mla.mla_attention", "spec.mla.naive_problem", "spec.mla.absorbed_problem"),
      "nonfinite", "NaN in the latent c", lambda f: f(Q_NOPE, Q_PE, np.full_like(C_LAT, np.nan), K_PE, WEIGHTS, MLA),
      Raises(DomainError, "expected finite values")),
    R(("spec.mla.kernel_inputs",), "nonfinite", "NaN in the latent c",
      lambda f: f(Q_NOPE, Q_PE, np.full_like(C_LAT, np.nan), K_PE, WEIGHTS, MLA),
      Defined("copied into the cache rows as is (a layout step; the attention problem rejects it)",
              lambda r: bool(np.isnan(r[1][..., :8]).all()))),
    R(("spec.mla.mla_attention",), "masked", "kv_seqlens 0",
      lambda f: f(Q_NOPE, Q_PE, C_LAT, K_PE, WEIGHTS, MLA, kv_seqlens=np.array([0])),
      Defined("O = 0, LSE = -inf in every row", all_empty_rows)),
    # AMLA's bit tricks and PASA's parameters.
    R(("spec.amla.exponent_add", "spec.amla.int32_add"), "format", "1.1, not an fp32 value", lambda f: f(1.1, 1),
      Raises(FormatError, "x: expected values exactly representable in fp32")),
    R(("spec.amla.exponent_add", "spec.amla.int32_add"), "nonfinite", "x = NaN",
      lambda f: f(np.nan, 1),
      Defined("the INT32 add on NaN's bits, as the hardware does (outside exponent_add_domain)",
              lambda r: np.ndim(r) == 0)),
    R(("spec.amla.exponent_add", "spec.amla.int32_add"), "other", "n = 1.5 (not an integer)", lambda f: f(1.0, 1.5),
      Raises(DomainError, "n: expected integers in [")),
    R(("spec.amla.exponent_add", "spec.amla.int32_add"), "nonfinite", "n = NaN", lambda f: f(1.0, np.nan),
      Raises(DomainError, "n: expected integers in [")),
    R(("spec.amla.exponent_add", "spec.amla.int32_add"), "other", "n = True (a bool, not an integer)",
      lambda f: f(1.0, True), Raises(DomainError, "n: expected integers in [")),
    R(("spec.amla.int32_add",), "other", "n = 2^31 (beyond INT32)", lambda f: f(1.0, 2**31),
      Raises(DomainError, "n: expected integers in [-2147483648, 2147483647] (an INT32 addend), got 2147483648")),
    R(("spec.amla.int32_add",), "other", "n = 2^70 (beyond int64 too)", lambda f: f(1.0, 2**70),
      Raises(DomainError, "n: expected integers in [-2147483648, 2147483647] (an INT32 addend), "
                          "got 1180591620717411303424")),
    R(("spec.amla.exponent_add",), "other", "n = 256 (n << 23 beyond INT32)", lambda f: f(1.0, np.array([1, 256])),
      Raises(DomainError, "n: expected integers in [-256, 255] (n << 23 an INT32), got 256")),
    R(("spec.amla.int32_add",), "other", "a sum beyond INT32 (0x7FFFFFFF + 1)",
      lambda f: f(formats.from_bits(np.array([0x7FFFFFFF], dtype=np.uint32), formats.Format.FP32), 1),
      Defined("wraps modulo 2^32 like the INT32 atomic add: -0.0 (0x80000000)",
              lambda r: bool(r[0] == 0 and np.signbit(r[0])))),
    R(("spec.amla.round_half_away", "spec.amla.output_cast"), "format", "fmt='fp12'", lambda f: f(np.ones(1), "fp12"),
      Raises(FormatError, "format: expected one of")),
    R(("spec.amla.check_policy",), "format", "policy='bf16'", lambda f: f("bf16", "cann"),
      Raises(FormatError, "policy: expected a PrecisionPolicy")),
    R(("spec.pasa.PasaConfig",), "other", "beta = 2", lambda f: f(beta=2.0),
      Raises(DomainError, "beta: expected a number in [0, 1), got 2.0")),
    R(("spec.pasa.PasaConfig",), "nonfinite", "beta = NaN", lambda f: f(beta=float("nan")),
      Raises(DomainError, "beta: expected a number in [0, 1), got nan")),
    R(("spec.pasa.PasaConfig",), "other", "block_k = 0", lambda f: f(beta=0.9375, block_k=0),
      Raises(ShapeError, "block_k: expected a positive int, got 0")),
    R(("spec.pasa_beta.beta_map", "spec.pasa_beta.stored_shift_entries", "spec.pasa_beta.recovery_coefficient",
       "spec.pasa_beta.is_fixed_point"), "nonfinite", "beta = NaN", lambda f: f(float("nan"), 4),
      Raises(DomainError, "beta: expected 0 <= beta < 1, got nan")),
    R(("spec.pasa_beta.beta_map", "spec.pasa_beta.stored_shift_entries", "spec.pasa_beta.recovery_coefficient",
       "spec.pasa_beta.is_fixed_point"), "lengths", "block length n = 0", lambda f: f(0.9, 0),
      Raises(ShapeError, "n: expected a block length >= 1, got 0")),
    R(("spec.pasa_beta.beta_map", "spec.pasa_beta.stored_shift_entries", "spec.pasa_beta.recovery_coefficient",
       "spec.pasa_beta.is_fixed_point"), "scale", "scale = 0", lambda f: f(0.9, 4, scale=0.0),
      Raises(DomainError, "scale: expected a finite scale > 0, got 0.0")),
    R(("spec.pasa_beta.beta_map", "spec.pasa_beta.stored_shift_entries", "spec.pasa_beta.recovery_coefficient",
       "spec.pasa_beta.is_fixed_point"), "format", "fmt='fp12'", lambda f: f(0.9, 4, fmt="fp12"),
      Raises(FormatError, "format: expected one of")),
    R(("spec.pasa_beta.fixed_point",), "other", "max_iter = 0", lambda f: f(0.9, 128, max_iter=0),
      Raises(DomainError, "beta0: expected the iteration to converge within 0 steps")),
    R(("spec.pasa_beta.fixed_points",), "other", "lo > hi", lambda f: f(128, lo=0.9, hi=0.5),
      Raises(DomainError, "lo, hi: expected lo <= hi, got 0.9 > 0.5")),
    # Reference: bounds, conformance, INT8, EP.
    R(("reference.bounds.attention_error_bound",), "format", "policy='fp32'",
      lambda f: f(problem.attention_problem(Q, K, V), "fp32"),
      Raises(FormatError, "policy: expected a PrecisionPolicy")),
    R(("reference.bounds.attention_error_bound",), "other", "raw arrays instead of a problem", lambda f: f(Q, FP32),
      Raises(ShapeError, "problem: expected an AttentionProblem")),
    R(("reference.bounds.attention_error_bound",), "other", "algorithm='foo'",
      lambda f: f(problem.attention_problem(Q, K, V), FP32, algorithm="foo"),
      Raises(ConventionError, "algorithm: expected 'naive', 'flash' or 'split', got 'foo'")),
    R(("reference.bounds.attention_error_bound",), "other", "block_k = 0",
      lambda f: f(problem.attention_problem(Q, K, V), FP32, block_k=0),
      Raises(ShapeError, "block_k: expected a positive int")),
    R(("reference.conformance.load_impl",), "impl", "a module that does not exist",
      lambda f: f("no_such_module_xyz:kernel"),
      Raises(ImplementationError, "impl: cannot import module 'no_such_module_xyz'")),
    R(("reference.conformance.load_impl",), "impl", "a function the module lacks",
      lambda f: f("attnspec_matrix_user:nope"),
      Raises(ImplementationError, "impl: module 'attnspec_matrix_user' has no attribute 'nope'")),
    R(("reference.conformance.load_impl",), "impl", "no ':'", lambda f: f("attnspec_matrix_user"),
      Raises(ImplementationError, "impl: expected 'module:function', got 'attnspec_matrix_user'")),
    R(("reference.conformance.load_impl",), "impl", "not callable", lambda f: f("attnspec_matrix_user:not_callable"),
      Raises(ImplementationError, "impl: expected a callable or a Kernel, got int")),
    R(("reference.conformance.load_impl",), "impl", "a module that raises at import",
      lambda f: f("attnspec_matrix_badimport:f"),
      Raises(ImplementationError, "cannot import module 'attnspec_matrix_badimport': it raised ZeroDivisionError")),
    R(("reference.harness.check",), "impl", "a kernel that raises",
      lambda f: f("attnspec_matrix_user:boom", examples=2, save=False, edges=False),
      Defined("a failing CheckReport; every case's error names RuntimeError and its message",
              failed_with("raised RuntimeError: user kernel exploded"))),
    R(("reference.harness.check",), "impl", "a kernel returning the wrong shape",
      lambda f: f("attnspec_matrix_user:wrong_shape", examples=2, save=False, edges=False),
      Defined("a failing CheckReport; every case's error is an ImplementationError naming the shape",
              failed_with("ImplementationError"))),
    R(("reference.harness.check",), "format", "dtype='fp12'", lambda f: f("attnspec_matrix_user:boom", dtype="fp12"),
      Raises(FormatError, "format: expected one of")),
    R(("reference.harness.check",), "other", "op='foo'", lambda f: f("attnspec_matrix_user:boom", op="foo"),
      Raises(ConventionError, "op: expected one of")),
    R(("reference.harness.check",), "other", "examples = 0", lambda f: f("attnspec_matrix_user:boom", examples=0),
      Raises(ConventionError, "examples: expected an int >= 1, got 0")),
    R(("reference.int8.quantize_per_token",), "rank", "x of rank 1", lambda f: f(np.array([1.0, 2.0])),
      Raises(ShapeError, "x: expected a 2-D (rows >= 1, K >= 1) array, got (2,)")),
    R(("reference.int8.quantize_per_token",), "nonfinite", "NaN in x", lambda f: f(np.array([[np.nan, 1.0]])),
      Raises(DomainError, "x: expected finite values")),
    R(("reference.int8.quantize_per_token",), "empty", "0 rows", lambda f: f(np.zeros((0, 4))),
      Raises(ShapeError, "x: expected a 2-D (rows >= 1, K >= 1) array, got (0, 4)")),
    R(("reference.int8.quantize_per_token",), "format", "x_format='fp12'",
      lambda f: f(np.ones((1, 4)), x_format="fp12"),
      Raises(FormatError, "format: expected one of")),
    R(("reference.int8.quantize_per_token",), "other", "an all-zero row", lambda f: f(np.zeros((1, 4))),
      Raises(DomainError, "x: row 0 is all zero")),
    R(("reference.int8.int8_linear",), "heads", "x 5 wide for a 4-wide weight",
      lambda f: f(np.ones((2, 5)), int8.quantize_weight(np.ones((3, 4)))),
      Raises(ShapeError, "x: expected K = 4 columns (the weight's in_features), got 5")),
    R(("reference.ep_dispatch.route",), "heads", "255 expert logits for 256 experts",
      lambda f: f(np.zeros((2, 255)), np.zeros(256)),
      Raises(ShapeError, "logits: expected (T, n_experts=256), got (2, 255)")),
    R(("reference.ep_dispatch.route",), "rank", "logits of rank 1", lambda f: f(np.zeros(256), np.zeros(256)),
      Raises(ShapeError, "logits: expected (T, n_experts=256), got (256,)")),
    R(("reference.ep_dispatch.route",), "nonfinite", "NaN logits",
      lambda f: f(np.full((2, 256), np.nan), np.zeros(256)),
      Raises(DomainError, "logits: expected finite values")),
    R(("reference.ep_dispatch.route",), "empty", "T = 0 tokens", lambda f: f(np.zeros((0, 256)), np.zeros(256)),
      Defined("the empty routing: expert_ids and weights (0, 8), groups (0, 4), scores (0, 256)",
              lambda r: (r.expert_ids.shape, r.weights.shape, r.groups.shape, r.scores.shape, r.biased.shape)
              == ((0, 8), (0, 8), (0, 4), (0, 256), (0, 256)))),
    R(("reference.ep_dispatch.capacity",), "lengths", "local_batch = -1", lambda f: f(-1, 8, 1),
      Raises(ShapeError, "local_batch: expected a positive int, got -1")),
    R(("reference.ep_dispatch.capacity",), "other", "top_k = 0", lambda f: f(96, 0, 1),
      Raises(ShapeError, "top_k: expected a positive int, got 0")),
    R(("reference.ep_dispatch.buffer_bytes",), "other", "rank_num = 0", lambda f: f(0, 96, 7680),
      Raises(ShapeError, "rank_num: expected a positive int, got 0")),
    R(("reference.ep_dispatch.buffer_bytes",), "other", "msg_bytes = 2.5", lambda f: f(320, 96, 2.5),
      Raises(ShapeError, "msg_bytes: expected a positive int, got 2.5")),
    # The command line.
    C("attnspec verify", "other", ["verify", "-k", "no_such_check_xyz"],
      Exits(2, "ConventionError: -k: expected text contained in some check's name, got 'no_such_check_xyz'")),
    C("attnspec verify", "other", ["verify", "--bogus"],
      Exits(2, "attnspec: error: unrecognized arguments: --bogus", one_line=False)),
    C("attnspec prove", "other", ["prove", "no_such_theorem"],
      Exits(2, "ConventionError: NAME: no theorem matches ['no_such_theorem']")),
    R(("attnspec prove",), "other", "ATTNSPEC_PROOF_TIMEOUT_S=0 (0 ms would disable the timeout)",
      lambda f: run_cli_fresh("prove", "online_softmax", env={"ATTNSPEC_PROOF_TIMEOUT_S": "0"}),
      Exits(2, "DomainError: ATTNSPEC_PROOF_TIMEOUT_S: expected a finite number of seconds >= 0.001, got 0.0")),
    R(("attnspec prove",), "nonfinite", "ATTNSPEC_PROOF_TIMEOUT_S=nan",
      lambda f: run_cli_fresh("prove", "online_softmax", env={"ATTNSPEC_PROOF_TIMEOUT_S": "nan"}),
      Exits(2, "DomainError: ATTNSPEC_PROOF_TIMEOUT_S: expected a finite number of seconds >= 0.001, got nan")),
    C("attnspec report", "other", ["report", "no-such-tool"],
      Exits(2, "attnspec report: unknown report 'no-such-tool'; available:")),
    C("attnspec model", "other", ["model", "no-such-tool"],
      Exits(2, "attnspec model: unknown model 'no-such-tool'; available:")),
    C("attnspec report", "other", ["report", "amla", "--seed", "x"],
      Exits(2, "argument --seed: invalid int value: 'x'", one_line=False)),
    C("attnspec report", "other", ["report", "amla", "--seed", "-1", "--quick"],
      Exits(2, "DomainError: seed: expected an int >= 0 (numpy's generator takes no negative seed), got -1")),
    C("attnspec report", "empty", ["report", "int8", "--tokens", "0"],
      Exits(2, "ShapeError: tokens: expected an int >= 1, got 0")),
    C("attnspec report", "lengths", ["report", "int8", "--tokens", "-3"],
      Exits(2, "ShapeError: tokens: expected an int >= 1, got -3")),
    C("attnspec report", "heads", ["report", "int8", "--k", "0"],
      Exits(2, "ShapeError: k: expected an int >= 4 (outlier channels 0-2 and the quiet channel 3), got 0")),
    C("attnspec report", "heads", ["report", "int8", "--out", "0"],
      Exits(2, "ShapeError: out: expected an int >= 1, got 0")),
    C("attnspec report", "other", ["report", "int8", "--seed", "-1"],
      Exits(2, "DomainError: seed: expected an int >= 0, got -1")),
    C("attnspec report", "other", ["report", "int8", "--block-rows", "0"],
      Exits(2, "ShapeError: block_rows: expected a positive int, got 0")),
    C("attnspec report", "other", ["report", "ep-buffers", "--top-k", "-1"],
      Exits(2, "ShapeError: top_k: expected a positive int, got -1")),
    C("attnspec report", "other", ["report", "ep-buffers", "--rank-num", "0"],
      Exits(2, "ShapeError: rank_num: expected a positive int, got 0")),
    C("attnspec report", "empty", ["report", "ep-buffers", "--local-batch", "0"],
      Exits(2, "ShapeError: local_batch: expected a positive int, got 0")),
    C("attnspec report", "other", ["report", "ep-buffers", "--scale-region", "7"],
      Exits(2, "ShapeError: scale_region: expected an int >= 20 bytes")),
    C("attnspec report", "gqa", ["report", "pasa-grid", "--q-heads", "3", "--kv-heads", "2"],
      Exits(2, "DomainError: shape: expected positive sizes with kv heads dividing q heads")),
    C("attnspec report", "lengths", ["report", "pasa-grid", "--seq-k", "0"],
      Exits(2, "DomainError: shape: expected positive sizes")),
    C("attnspec report", "nonfinite", ["report", "pasa-grid", "--beta", "nan"],
      Exits(2, "DomainError: beta: expected a number in [0, 1), got nan")),
    C("attnspec report", "other", ["report", "pasa-grid", "--json", "/nonexistent-attnspec-dir/grid.json"],
      Exits(2, "DomainError: --json: expected a file in an existing, writable directory, got "
               "'/nonexistent-attnspec-dir/grid.json'")),
    R(("attnspec report",), "other", "`attnspec report pasa-grid --csv DIR` (a directory, not a file)",
      lambda f: in_tmp(lambda d: f("report", "pasa-grid", "--csv", d)),
      Exits(2, "DomainError: --csv: expected a file in an existing, writable directory")),
    C("attnspec report", "other", ["report", "peers", "--bogus"],
      Exits(2, "attnspec report peers: error: unrecognized arguments: --bogus", one_line=False)),
    C("attnspec vectors", "other", ["vectors"],
      Exits(2, "the following arguments are required: ACTION", one_line=False)),
    C("attnspec vectors", "other", ["vectors", "export", "x", "--level", "3"],
      Exits(2, "argument --level: invalid choice: 3", one_line=False)),
    C("attnspec model", "other", ["model", "pipeline", "--batch", "-1"],
      Exits(2, "ShapeError: batch: expected a positive int, got -1")),
    C("attnspec model", "lengths", ["model", "pipeline", "--s-k", "100"],
      Exits(2, "ShapeError: s_k: expected a multiple of the KV block 512, got 100")),
    C("attnspec model", "other", ["model", "pipeline", "--clock-ghz", "0"],
      Exits(2, "DomainError: clock_ghz: expected a number of GHz in [0.001, 1000], got 0.0")),
    C("attnspec model", "nonfinite", ["model", "pipeline", "--clock-ghz", "nan"],
      Exits(2, "DomainError: clock_ghz: expected a number of GHz in [0.001, 1000], got nan")),
    C("attnspec model", "nonfinite", ["model", "pipeline", "--clock-ghz", "inf"],
      Exits(2, "DomainError: clock_ghz: expected a number of GHz in [0.001, 1000], got inf")),
    C("attnspec model", "nonfinite", ["model", "pipeline", "--sync-us", "nan"],
      Exits(2, "DomainError: sync_us: expected a finite number of microseconds >= 0, got nan")),
    C("attnspec model", "other", ["model", "pipeline", "--sync-us", "-1"],
      Exits(2, "DomainError: sync_us: expected a finite number of microseconds >= 0, got -1.0")),
    C("attnspec model", "other", ["model", "pipeline", "--gantt-tasks", "0"],
      Exits(2, "ShapeError: gantt_tasks: expected a positive int, got 0")),
    C("attnspec model", "other", ["model", "pipeline", "--plot", "/nonexistent-attnspec-dir/gantt.png"],
      Exits(2, "DomainError: --plot: expected a file in an existing directory, got "
               "'/nonexistent-attnspec-dir/gantt.png'")),
    C("attnspec model", "other", ["model", "pipeline", "--plot", "gantt.svg"],
      Exits(2, "ConventionError: --plot: expected a .png path, got 'gantt.svg'")),
    C("attnspec model", "other", ["model", "serving", "--attention", "foo"],
      Exits(2, "argument --attention: invalid choice: 'foo'", one_line=False)),
    C("attnspec check", "impl", ["check", "--impl", "no_such_module_xyz:kernel"],
      Exits(2, "ImplementationError: impl: cannot import module 'no_such_module_xyz'")),
    C("attnspec check", "impl", ["check", "--impl", "attnspec_matrix_user:nope"],
      Exits(2, "ImplementationError: impl: module 'attnspec_matrix_user' has no attribute 'nope'")),
    C("attnspec check", "impl", ["check", "--impl", "attnspec_matrix_user"],
      Exits(2, "ImplementationError: impl: expected 'module:function', got 'attnspec_matrix_user'")),
    C("attnspec check", "impl", ["check", "--impl", "attnspec_matrix_user:not_callable"],
      Exits(2, "ImplementationError: impl: expected a callable or a Kernel, got int")),
    C("attnspec check", "impl", ["check", "--impl", "attnspec_matrix_badimport:f"],
      Exits(2, "ImplementationError: impl: cannot import module 'attnspec_matrix_badimport': it raised ZeroDivision")),
    R(("attnspec check",), "impl", "--impl whose kernel raises",
      lambda f: in_tmp(lambda d: f("check", "--impl", "attnspec_matrix_user:boom", "--examples", "1", "--save", d)),
      Exits(1, "raised RuntimeError: user kernel exploded", one_line=False, stream="stdout")),
    C("attnspec check", "other", ["check", "--impl", "attnspec_matrix_user:boom", "--examples", "0"],
      Exits(2, "ConventionError: examples: expected an int >= 1, got 0")),
    C("attnspec check", "format", ["check", "--impl", "attnspec_matrix_user:boom", "--dtype", "fp12"],
      Exits(2, "argument --dtype: invalid choice: 'fp12'", one_line=False)),
    C("attnspec vectors", "other", ["vectors", "verify", "/nonexistent-attnspec-set"],
      Exits(2, "VectorFileError: /nonexistent-attnspec-set: expected a vector set with MANIFEST.json")),
    R(("attnspec vectors",), "other", "export over a directory that is not a vector set",
      lambda f: in_tmp(lambda d: (Path(d, "mine.txt").write_text("x"),
      f("vectors", "export", d, "--op", "attention"))[1]),
      Exits(2, "expected a vector set (with MANIFEST.json) or an empty directory to replace, got other files")),
    R(("attnspec vectors",), "other", "check on an empty directory",
      lambda f: in_tmp(lambda d: f("vectors", "check", d, "--impl", "attnspec_matrix_user:boom")),
      Exits(2, "VectorFileError: ")),
    C("attnspec bench", "other", ["bench", "--", "--bogus"],
      Exits(2, "unrecognized arguments: --bogus", one_line=False)),
]

# Foundation rows kept in tests/test_bad_inputs.py: their input class here, for the doc.
FOUNDATION_CATEGORY = {
    "q rank 3": "rank", "k rank 5": "rank", "mask rank": "rank", "cache rank": "rank", "table rank": "rank",
    "batch mismatch": "heads", "Dk mismatch": "heads", "v length mismatch": "heads", "Dk zero": "heads",
    "heads not divisible": "gqa", "NaN in q": "nonfinite", "Inf in v": "nonfinite", "mask NaN": "nonfinite",
    "mask +inf": "nonfinite", "object dtype": "format", "zero scale": "scale", "nan scale": "scale",
    "string scale": "scale", "negative length": "lengths", "length beyond cache": "lengths",
    "length shape": "lengths", "float lengths": "lengths", "length beyond table": "lengths", "lengths shape": "lengths",
    "table dtype": "table", "block id too large": "table", "negative block id": "table",
}


def foundation_rows() -> list[Row]:
    """Return the rows of tests/test_bad_inputs.py (tested there) in this module's form, for the doc."""
    spec = importlib.util.spec_from_file_location("attnspec_test_bad_inputs",
    Path(__file__).with_name("test_bad_inputs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    by_function = {fn: name for name, fn in ENTRIES.items()}
    attention_targets = tuple(by_function[fn] for fn in module.ENTRY_POINTS.values())
    rows = [Row(attention_targets, FOUNDATION_CATEGORY.get(row_id, "other"), row_id, None, Raises(error, fragment))
            for row_id, _, error, fragment in module.ROWS]
    rows += [Row(("spec.paged.gather_paged",), FOUNDATION_CATEGORY.get(row_id, "other"), row_id, None,
                 Raises(error, fragment)) for row_id, _, error, fragment in module.PAGED_ROWS]
    return rows


# The classes of bad input each main entry point must have a row for (the others get what applies).
ATTENTION_CLASSES = "rank heads gqa lengths nonfinite scale format empty masked"
DECODE_CLASSES = "rank heads gqa lengths table nonfinite scale format empty masked"
REQUIRED = {
    **{t: ATTENTION_CLASSES for t in ATTENTION_LIKE + ("reference.certified.certified_attention",
                                                        "spec.pasa.pasa_attention", "spec.problem.attention_problem")},
    **{t: DECODE_CLASSES for t in MLA_DECODES},
    **{t: "rank heads gqa lengths table nonfinite scale format" for t in MLA_PROBLEMS},
    "spec.paged.gather_paged": "rank lengths table nonfinite format empty",
    "spec.split_kv.combine": "heads format empty masked nonfinite",
    "spec.mla.mla_forward": "rank heads nonfinite format empty",
    "reference.harness.check": "impl format",
    "reference.conformance.load_impl": "impl",
    "attnspec check": "impl format",
}

# Public names of attnspec.spec without a row, and why no bad input reaches them.
EXEMPT = {
    "spec.errors": "the error classes and require() themselves",
    "spec.formats.FormatInfo": "a format's parameters (data)",
    "spec.formats.Format": "the enumeration of formats (data)",
    "spec.masks.allowed_keys": "internal to attention_problem, which validates sizes, lengths and window first",
    "spec.problem.AttentionProblem": "built and validated by attention_problem",
    "spec.attention.AttentionResult": "a result",
    "spec.attention.logits": "a step over a validated AttentionProblem",
    "spec.attention.empty_rows": "a step over logits of a validated problem",
    "spec.attention.check_strict": "reached through strict=True (row: values outside fp32's range, strict)",
    "spec.flash.FlashState": "the recurrence's state (data)",
    "spec.flash.initial_state": "a step over a validated AttentionProblem",
    "spec.flash.flash_step": "a step over a validated AttentionProblem",
    "spec.flash.flash_finalize": "a step over a state built by flash_state",
    "spec.flash.flash_state": "validates block_k and policy as flash_from_problem does (same rows)",
    "spec.mla.MLAWeights": "checked by check_weights at every use",
    "spec.mla.weight_shapes": "of a validated MLAConfig",
    "spec.mla.rms_norm": "a step of mla_queries / mla_latents over validated activations",
    "spec.mla.DecodeResult": "a result",
    "spec.rope.correction_range": "of a validated Yarn and rope_frequencies' checked width and theta",
    "spec.amla.AmlaConstants": "the kernel's literal constants (data)",
    "spec.amla.exponent_add_domain": "a domain predicate: defined (True/False) for every FP32 value, NaN included",
    "spec.amla.rescale_safe_domain": "a domain predicate: defined (True/False) for every FP32 value, NaN included",
    "spec.amla.round_half_away_int": "a step of rescale_exponent (|x| < 2^52 by the kernel's clamp)",
    "spec.amla.rescale_exponent": "a step over the kernel's FP32 row maxima",
    "spec.amla.residual": "a step over the kernel's FP32 row maxima",
    "spec.amla.nupdate": "a step over the kernel's state",
    "spec.amla.AmlaState": "the kernel's state (data)",
    "spec.amla.initial_state": "a step over a validated AttentionProblem",
    "spec.amla.block_logits": "a step over a validated AttentionProblem",
    "spec.amla.amla_step": "a step over the kernel's state",
    "spec.amla.amla_finalize": "a step over the kernel's state",
    "spec.amla.amla_state": "over a validated AttentionProblem; checks the policy as amla_decode does",
    "spec.amla.no_keys": "of a validated AttentionProblem",
    "spec.amla.amla_from_problem": "over a validated AttentionProblem; checks the policy as amla_decode does",
    "spec.pasa.PasaResult": "a result",
    "spec.pasa.shift_constants": "of a validated PasaConfig and problem scale",
    "spec.pasa.padded_kv": "of a validated AttentionProblem and PasaConfig",
    "spec.pasa.pasa_from_problem": "over a validated AttentionProblem (pasa_attention's rows)",
    "spec.pasa_beta.FixedPoint": "a result",
}


def all_rows() -> list[Row]:
    return foundation_rows() + ROWS


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def user_modules():
    """Write the modules the impl rows name into a directory on sys.path."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in USER_MODULES.items():
            Path(tmp, f"{name}.py").write_text(textwrap.dedent(body))
        sys.path.insert(0, tmp)
        importlib.invalidate_caches()
        try:
            yield tmp
        finally:
            sys.path.remove(tmp)
            for name in USER_MODULES:
                sys.modules.pop(name, None)


def _cases():
    for row in ROWS:
        marks = [pytest.mark.xfail(strict=True, reason=f"gap: {row.gap}")] if row.gap else []
        for target, case_id in zip(row.targets, row.ids):
            yield pytest.param(row, target, id=case_id, marks=marks)


def check_row(row: Row, target: str) -> None:
    """Call the row's input on ``target`` and assert the documented error, result or exit."""
    fn = run_cli if target.startswith("attnspec ") else ENTRIES[target]
    expect = row.expect
    if isinstance(expect, Raises):
        with pytest.raises(AttnSpecError) as info:
            row.call(fn)
        assert isinstance(info.value, expect.error), f"raised {type(info.value).__name__}: {info.value}"
        assert expect.fragment in str(info.value)
    elif isinstance(expect, Defined):
        assert expect.holds(row.call(fn)), f"the result is not the documented one: {expect.text}"
    else:
        run = row.call(fn)
        assert not run.crash, f"crashed: {run.crash}"
        assert run.code == expect.code, f"exit {run.code}, stderr: {run.stderr[-500:]}"
        assert "Traceback" not in run.stderr + run.stdout
        assert expect.fragment in getattr(run, expect.stream), getattr(run, expect.stream)[-500:]
        if expect.one_line:
            assert len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.parametrize("row, target", list(_cases()))
def test_row(row, target, user_modules):
    check_row(row, target)


def test_every_target_is_known():
    for row in all_rows():
        assert row.category in CATEGORIES
        for target in row.targets:
            assert target in ENTRIES or target in CLI, target


@pytest.mark.parametrize("target", sorted(REQUIRED))
def test_main_entry_points_cover_every_class(target):
    covered = {row.category for row in all_rows() if target in row.targets}
    missing = set(REQUIRED[target].split()) - covered
    assert not missing, f"{target} has no row for {sorted(missing)}"


def public_spec_names() -> list[str]:
    """Return every public function and class defined in a module of attnspec.spec, as 'spec.module.name'."""
    import attnspec.spec as package
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"attnspec.spec.{info.name}")
        for name, obj in vars(module).items():
            if (not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                    and obj.__module__ == module.__name__):
                names.append(f"spec.{info.name}.{name}")
    return sorted(names)


def test_every_public_spec_function_is_covered():
    targets = {t for row in all_rows() for t in row.targets}
    uncovered = [n for n in public_spec_names()
                 if n not in targets and n not in EXEMPT and n.rsplit(".", 1)[0] not in EXEMPT]
    assert not uncovered, f"public functions with neither a row nor an exemption: {uncovered}"
    stale = [n for n in EXEMPT if n.count(".") == 2 and n not in public_spec_names()]
    assert not stale, f"exemptions for names that no longer exist: {stale}"


def test_doc_matches_the_table():
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC.name}: the generated markers are missing"
    current = text[text.index(BEGIN):text.index(END) + len(END)]
    assert current == render(), f"{DOC.name} is stale: run 'python tests/test_reliability_matrix.py'"


# ----------------------------------------------------------------------------------------------
# The document
# ----------------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """Return the generated part of docs/bad-inputs.md."""
    rows = all_rows()
    lines = [BEGIN, "", "| Entry points | Input class | Bad input | Result | Message contains |",
    "|---|---|---|---|---|"]
    for row in rows:
        targets = ", ".join(f"`{t}`" for t in row.targets)
        result = row.expect.result_cell()
        if row.gap:
            result = f"**gap** (now: {row.gap}); required: {result}"
        lines.append(f"| {_cell(targets)} | {CATEGORIES[row.category]} | {_cell(row.given)} | {_cell(result)} | "
                     f"{_cell(row.expect.message_cell())} |")
    keys = list(CATEGORIES)
    lines += ["", "Coverage: rows per entry point and input class (blank: the entry point has no such argument).", "",
              "| Entry point | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    targets = sorted({t for row in rows for t in row.targets}, key=lambda t: (t.startswith("attnspec"), t))
    for target in targets:
        counts = [sum(1 for r in rows if target in r.targets and r.category == k) for k in keys]
        lines.append(f"| `{target}` | " + " | ".join(str(c) if c else "" for c in counts) + " |")
    lines += ["", "Public names of `attnspec.spec` without a row, and why no unchecked input reaches them:", ""]
    lines += [f"- `{name}`: {why}" for name, why in sorted(EXEMPT.items())]
    gaps = sum(len(r.targets) for r in ROWS if r.gap)
    tested = sum(len(r.targets) for r in rows)
    lines += ["", f"{len(rows)} rows, {tested} (entry point, input) cases; {gaps} are gaps, tested as strict xfails.",
              "", END]
    return "\n".join(lines)


def write_doc() -> None:
    """Rewrite the generated part of docs/bad-inputs.md atomically."""
    text = DOC.read_text()
    updated = text[:text.index(BEGIN)] + render() + text[text.index(END) + len(END):]
    with tempfile.NamedTemporaryFile("w", dir=DOC.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(updated)
    os.replace(tmp.name, DOC)


if __name__ == "__main__":
    write_doc()
