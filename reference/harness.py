"""The conformance harness: ``check(impl, op=..., dtype=...)`` runs a kernel on generated cases and judges it.

For every case (drawn by hypothesis from :func:`reference.cases.conformance_cases`, seeded):

1. the *gold*: the definition in binary64 with its a-priori error bound
   (:func:`reference.bounds.attention_error_bound`, default, fast) or the mpmath oracle
   (``gold="oracle"``: exact, correctly rounded to binary64, slow);
2. the *references* of the FlashAttention rule: the naive same-format implementation
   (``spec.attention`` under ``PrecisionPolicy.uniform(F)``), its FP32-accumulator sibling,
   and the op's own algorithm where it has one (AMLA's ``cann`` kernel, PASA);
3. the kernel, called through its declared signature (:mod:`reference.conformance`);
4. the rules of :mod:`reference.tolerances` on O and, when the kernel returns one, on LSE.

A kernel passes when every case passes. A failure report names the worst case (largest
error / tolerance), prints the house-format message, the seed, the case's params (which
rebuild it with :func:`reference.cases.build_case`) and the path of a one-case vector set
written atomically (:mod:`reference.vectors`), which ``attnspec vectors check`` replays.

This module is a substitute for nothing: every value it compares against comes from
``spec/`` (references) or from the gold; it computes only errors and tolerances.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings

from attnspec.registry import Outcome, check as register_check, tool
from attnspec.spec.amla import POLICY_AMLA, POLICY_AMLA_FP16, amla_from_problem
from attnspec.spec.attention import POLICY_FP64, softmax_attention
from attnspec.spec.errors import AttnSpecError, ConventionError, FormatError, ImplementationError, require
from attnspec.spec.formats import Format, get_format, round_to, ulp
from attnspec.spec.pasa import PASA_ATTNSPEC, pasa_from_problem
from attnspec.spec.policy import PrecisionPolicy
from attnspec.spec.problem import AttentionProblem
from attnspec.spec.split_kv import combine, split_boundaries, split_partials

from .bounds import attention_error_bound
from .cases import OPS, Case, build_case, conformance_cases, edge_params
from .conformance import Kernel, KernelOutput, as_kernel, call_kernel, load_impl
from .oracle import OracleResult, oracle_from_problem
from .tolerances import (RULES, FlashMLAComparator, FlashRule, LseRule, Verdict, judge_against, lse_bound, mixed_policy,
                         naive_policy)

OP_SIGNATURE = {"attention": "attention", "flash": "flash", "mla": "mla", "amla": "mla", "pasa": "attention"}
OP_FORMATS = {"amla": (Format.BF16, Format.FP16)}  # AMLA's kernel has BF16 or FP16 inputs only
DEFAULT_FORMATS = (Format.FP32, Format.BF16, Format.FP16)
GOLDS = ("fp64", "oracle")
REFERENCE_SPLITS = 3  # flash-decoding reference: 3 splits of 16-key FlashAttention-2 blocks, then the LSE combine
REFERENCE_BLOCK_K = 16


@dataclass(frozen=True)
class Expected:
    """Everything a case is judged against; the same object a vector stores."""

    fmt: Format
    out: np.ndarray  # gold O (B, Hq, Sq, Dv), float64
    lse: np.ndarray  # gold LSE (B, Hq, Sq); -inf on rows without an admissible key
    out_bound: np.ndarray  # |gold O - exact| bound, elementwise
    lse_bound: np.ndarray  # |gold LSE - exact| bound
    out_tol: np.ndarray  # FlashAttention-rule tolerance: 0-d (scope "tensor") or per row (B, Hq, Sq)
    lse_err_bound: np.ndarray  # B_lse of an FP32 FlashAttention (B, Hq, Sq)
    v_max: float  # max |V| over keys that exist, for the FlashMLA comparator's abs_tol
    gold_source: str
    references: tuple[str, ...]
    flash_rule: FlashRule = field(default_factory=FlashRule)
    lse_rule: LseRule = field(default_factory=LseRule)
    lse_tol: np.ndarray | None = None  # a stored LSE tolerance (vectors: FP32 LSE) instead of the bound

    def lse_tolerance(self, gold_lse: np.ndarray, lse_format: Format) -> np.ndarray:
        """Return the allowed |lse - G| per row for a kernel whose LSE is held in ``lse_format``."""
        if self.lse_tol is not None:
            return self.lse_tol
        return self.lse_rule.tolerance(gold_lse, self.lse_err_bound, self.lse_bound, lse_format)


def gold_result(problem: AttentionProblem, gold: str = "fp64") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Return (out, lse, out bound, lse bound, source) of the gold for a problem (empty rows: lse -inf)."""
    require(gold in GOLDS, ConventionError, f"gold: expected one of {GOLDS}, got {gold!r}")
    if gold == "oracle":
        return oracle_gold(oracle_from_problem(problem))
    result = softmax_attention(problem, POLICY_FP64)
    out_bound, lse_bound_ = attention_error_bound(problem, POLICY_FP64, algorithm="naive")
    return result.out, result.lse, out_bound, lse_bound_, "binary64 definition with its a-priori error bound"


def oracle_gold(r: OracleResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Return (out, lse, half-ulp bounds, source) of the oracle's results correctly rounded to binary64."""
    def half_ulp(x: np.ndarray) -> np.ndarray:
        finite = np.isfinite(x)
        return np.where(finite, ulp(np.where(finite, x, 0.0), Format.FP64) / 2, 0.0)

    return r.out, r.lse, half_ulp(r.out), half_ulp(r.lse), "mpmath interval oracle, correctly rounded to binary64"


def scale_orderings(problem: AttentionProblem, fmt: Format) -> dict[str, AttentionProblem]:
    """Return the problem with the scale folded into the inputs, as kernels commonly order it, rounded in ``fmt``.

    ``scale-on-k``: FlashAttention's ``out_pt`` (``reorder_ops=True``: K * scale, "to estimate the
    numerical error from operation reordering"); ``sqrt-scale-split``: ONNX Attention and
    PyTorch's math SDPA multiply Q and K each by sqrt(scale) in the input format.
    """
    def folded(x: np.ndarray, factor: float) -> np.ndarray:
        return round_to(x * float(round_to(factor, fmt)), fmt)

    root = math.sqrt(abs(problem.scale))
    return {"scale-on-k": replace(problem, k=folded(problem.k, problem.scale), scale=1.0),
            "sqrt-scale-split": replace(problem, q=folded(problem.q, math.copysign(root, problem.scale)),
                                        k=folded(problem.k, root), scale=1.0)}


def reference_outputs(case: Case, problem: AttentionProblem, op: str) -> dict[str, np.ndarray]:
    """Return the FlashAttention rule's reference outputs R for ``op`` in the case's format, by name."""
    fmt = case.fmt
    naive = naive_policy(fmt)
    refs = {"naive": softmax_attention(problem, naive).out,
            "flash-decoding": combine(split_partials(problem, split_boundaries(problem.k.shape[2], REFERENCE_SPLITS,
                                                                               REFERENCE_BLOCK_K),
                                                     naive, REFERENCE_BLOCK_K), naive, problem.empty_lse).out}
    for name, folded in scale_orderings(problem, fmt).items():
        refs[name] = softmax_attention(folded, naive).out
    if not np.all(np.isfinite(refs["naive"])):  # the naive overflowed: its FP32-accumulator sibling stands in
        refs["fp32-accumulator"] = softmax_attention(problem, mixed_policy(fmt)).out
    if op == "amla":
        policy = POLICY_AMLA if fmt is Format.BF16 else POLICY_AMLA_FP16
        refs["amla(cann)"] = amla_from_problem(problem, "cann", policy, int(case.params.get("amla_block_k", 512)))[0]
    if op == "pasa":
        refs["pasa"] = pasa_from_problem(problem, PASA_ATTNSPEC, PrecisionPolicy.uniform(fmt)).out
    return refs


def expected_for(case: Case, op: str, *, gold: str = "fp64", flash_rule: FlashRule = FlashRule(),
                 lse_rule: LseRule = LseRule()) -> Expected:
    """Return what ``case`` is judged against under ``op`` (gold, tolerances, bounds)."""
    problem = case.problem()
    return expected_from_gold(case, op, problem, *gold_result(problem, gold), flash_rule=flash_rule, lse_rule=lse_rule)


def expected_from_gold(case: Case, op: str, problem: AttentionProblem, out: np.ndarray, lse: np.ndarray,
                       out_bound: np.ndarray, gold_lse_bound: np.ndarray, source: str, *,
                       flash_rule: FlashRule = FlashRule(), lse_rule: LseRule = LseRule()) -> Expected:
    """Return the Expected of ``case`` for a gold computed elsewhere (the vector export's oracle)."""
    with np.errstate(all="ignore"):  # a naive FP16 reference may overflow; its non-finite values are ignored
        refs = reference_outputs(case, problem, op)
    tol = flash_rule.tolerance(out, list(refs.values()), case.fmt, out_bound)
    v_max = float(np.max(np.abs(problem.v), initial=0.0))
    return Expected(fmt=case.fmt, out=out, lse=lse, out_bound=out_bound, lse_bound=gold_lse_bound, out_tol=tol,
                    lse_err_bound=lse_bound(problem), v_max=v_max, gold_source=source, references=tuple(refs),
                    flash_rule=flash_rule, lse_rule=lse_rule)


def judge(output: KernelOutput, expected: Expected, kernel: Kernel, rule: str = "flash") -> list[Verdict]:
    """Return the verdicts on a kernel's output: O always, LSE when the kernel returned one."""
    require(rule in RULES, ConventionError, f"rule: expected one of {RULES}, got {rule!r}")
    gold_lse = np.where(expected.lse == -np.inf, kernel.empty_lse, expected.lse)  # the kernel's declared empty LSE
    if rule == "flashmla":
        verdicts = [FlashMLAComparator.for_output(expected.fmt, expected.v_max).judge(output.out, expected.out, "out")]
        if output.lse is not None:
            verdicts.append(FlashMLAComparator.for_lse().judge(output.lse, gold_lse, "lse"))
        return verdicts
    verdicts = [judge_against(output.out, expected.out, expected.out_tol, rule="flash", tensor="out",
                              scope=expected.flash_rule.scope,
                              detail=f"{expected.flash_rule.k:g} x reference error "
                                     f"({', '.join(expected.references)}) + {expected.flash_rule.floor_ulps:g} ulp floor")]
    if output.lse is not None:
        verdicts.append(expected.lse_rule.judge(output.lse, gold_lse, expected.lse_tolerance(gold_lse, kernel.lse_format)))
    return verdicts


@dataclass(frozen=True)
class CaseResult:
    """One case's outcome."""

    case: Case
    verdicts: tuple[Verdict, ...]
    error: str | None = None  # the kernel raised or returned something unusable
    expected: Expected | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(v.ok for v in self.verdicts)

    @property
    def ratio(self) -> float:
        """Return the worst error / tolerance (inf for a crash or a special-value mismatch)."""
        return math.inf if self.error is not None else max((v.ratio for v in self.verdicts), default=0.0)

    @property
    def message(self) -> str:
        if self.error is not None:
            return f"{self.error} [{self.case.name}]"
        bad = [v for v in self.verdicts if not v.ok] or list(self.verdicts)
        return "; ".join(v.message for v in bad) + f" [{self.case.name}]"


def evaluate(kernel: Kernel, case: Case, op: str, *, rule: str = "flash", gold: str = "fp64",
             expected: Expected | None = None) -> CaseResult:
    """Return the outcome of ``kernel`` on ``case`` (``expected`` is computed when not given)."""
    expected = expected or expected_for(case, op, gold=gold)
    try:
        output = call_kernel(kernel, case)
    except (ImplementationError, AttnSpecError) as exc:
        return CaseResult(case, (), f"{type(exc).__name__}: {exc}", expected)
    return CaseResult(case, tuple(judge(output, expected, kernel, rule)), None, expected)


@dataclass
class CheckReport:
    """The outcome of :func:`check`: every case, the worst one, and how to reproduce it."""

    kernel: str
    op: str
    dtype: str
    rule: str
    gold: str
    seed: int
    examples: int
    results: list[CaseResult]
    saved: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]

    @property
    def worst(self) -> CaseResult | None:
        return max(self.results, key=lambda r: r.ratio, default=None)

    def reproducer(self) -> str:
        """Return the command that reruns this check."""
        return (f"attnspec check --impl {self.kernel} --op {self.op} --dtype {self.dtype} --seed {self.seed} "
                f"--examples {self.examples} --rule {self.rule} --gold {self.gold}")

    def summary(self) -> str:
        """Return a few lines: verdict, counts, the worst case and the reproducer."""
        worst = self.worst
        head = (f"{'PASS' if self.ok else 'FAIL'} {self.kernel} op={self.op} dtype={self.dtype} rule={self.rule}: "
                f"{len(self.results) - len(self.failed)}/{len(self.results)} cases passed")
        if worst is None:
            return head + " (no case was generated)"
        lines = [head, f"worst (error/tolerance = {worst.ratio:.3g}): {worst.message}",
                 f"seed={self.seed}; case params={json.dumps(worst.case.params, sort_keys=True)}"]
        if not self.ok:
            lines.append(f"reproduce: {self.reproducer()}")
            if self.saved:
                lines.append(f"saved vector: {self.saved}  (attnspec vectors check {self.saved} "
                             f"--impl {self.kernel} --op {self.op})")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        worst = self.worst
        return {"kernel": self.kernel, "op": self.op, "dtype": self.dtype, "rule": self.rule, "gold": self.gold,
                "seed": self.seed, "examples": self.examples, "ok": self.ok, "cases": len(self.results),
                "failed": len(self.failed), "saved": self.saved, "reproduce": self.reproducer(),
                "worst": None if worst is None else {"name": worst.case.name, "family": worst.case.family,
                                                     "params": worst.case.params, "ratio": worst.ratio,
                                                     "message": worst.message},
                "failures": [{"name": r.case.name, "ratio": r.ratio, "message": r.message} for r in self.failed]}


def resolve_kernel(impl: Any, op: str) -> Kernel:
    """Return ``impl`` (a Kernel, a callable or a 'module:function' string) as a Kernel for ``op``."""
    require(op in OPS, ConventionError, f"op: expected one of {OPS}, got {op!r}")
    if isinstance(impl, str):
        return load_impl(impl, signature=OP_SIGNATURE[op])
    return as_kernel(impl, signature=OP_SIGNATURE[op])


def check(impl: Any, *, op: str = "attention", dtype: "Format | str" = "fp32", examples: int = 50, seed: int = 0,
          rule: str = "flash", gold: str = "fp64", save_dir: "str | Path | None" = None, save: bool = True,
          edges: bool = True, fail_fast: bool = False) -> CheckReport:
    """Return the report of ``impl`` on the op's edge cases and ``examples`` cases drawn with ``seed``.

    ``impl`` is a :class:`Kernel`, a callable of the op's signature or ``"module:function"``.
    On failure the worst case is saved as a one-case vector set under ``save_dir`` (default:
    the system's temporary directory) unless ``save`` is False. ``fail_fast`` stops evaluating
    cases after the first failure (the report then shows that one as the worst).
    """
    kernel = resolve_kernel(impl, op)
    fmt = get_format(dtype)
    allowed = OP_FORMATS.get(op, DEFAULT_FORMATS)
    require(fmt in allowed, FormatError, f"dtype: expected one of {[str(f) for f in allowed]} for op {op!r}, got {fmt}")
    require(fmt in kernel.formats, FormatError,
            f"dtype: kernel {kernel.name} declares formats {[str(f) for f in kernel.formats]}, got {fmt}")
    require(isinstance(examples, int) and examples >= 1, ConventionError, f"examples: expected an int >= 1, got {examples!r}")
    require(rule in RULES, ConventionError, f"rule: expected one of {RULES}, got {rule!r}")
    drawn = kernel if op != "pasa" else _without(kernel, "softcap")  # PASA has no softcap (spec/pasa.py deviation 9)
    results: list[CaseResult] = []

    def run_one(case: Case) -> None:
        if not (fail_fast and any(not r.ok for r in results)):
            results.append(evaluate(kernel, case, op, rule=rule, gold=gold))

    for family, params in edge_params(op, drawn) if edges else []:
        run_one(build_case(family, fmt, params))

    @settings(max_examples=examples, database=None, deadline=None, derandomize=False, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck), print_blob=False)
    @hypothesis_seed(seed)
    @given(conformance_cases(op, drawn, fmt))
    def run(case: Case) -> None:
        run_one(case)

    run()
    report = CheckReport(impl if isinstance(impl, str) else kernel.name, op, str(fmt), rule, gold, seed, examples, results)
    if save and not report.ok:
        report.saved = str(save_failure(report, save_dir))
    return report


def _without(kernel: Kernel, convention: str) -> Kernel:
    return replace(kernel, accepts=kernel.accepts - {convention})


def save_failure(report: CheckReport, save_dir: "str | Path | None") -> Path:
    """Write the worst failing case of ``report`` as a one-case vector set; return its directory."""
    from .vectors import expected_row, write_vector_set  # vectors imports this module
    worst = report.worst
    digest = hashlib.sha256(json.dumps(worst.case.params, sort_keys=True).encode()).hexdigest()[:8]
    root = Path(save_dir) if save_dir is not None else Path(tempfile.gettempdir()) / "attnspec-failures"
    target = root / f"{report.op}-{report.dtype}-seed{report.seed}-{worst.case.family}-{digest}"
    write_vector_set(target, [expected_row(report.op, worst.case, worst.expected)])
    return target


# ----------------------------------------------------------------------------------------------
# attnspec verify: the harness has tests of its own
# ----------------------------------------------------------------------------------------------

@register_check("conformance.harness_flags_mutant", "rule")
def harness_flags_mutant() -> Outcome:
    """The harness flags a wrong-causal-alignment kernel and passes the spec's FlashAttention."""
    from .mutants import CORRECT, MUTANTS
    bad = check(MUTANTS["wrong_causal_alignment"].kernel, op="attention", dtype="bf16", examples=6, save=False)
    good = check(CORRECT["spec_flash"].kernel, op="attention", dtype="bf16", examples=6, save=False)
    return Outcome.from_bool(not bad.ok and good.ok, f"mutant flagged: {not bad.ok}; spec flash passed: {good.ok}",
                             {"mutant_worst": bad.worst.message if bad.worst else None,
                              "correct_worst_ratio": good.worst.ratio if good.worst else None})


@register_check("conformance.comparators_known_good_bad", "rule")
def comparators_known_good_bad() -> Outcome:
    """Each rule passes a correctly rounded result and fails one that is 8 ulps off or has a NaN."""
    rng = np.random.default_rng(7)
    gold = rng.uniform(-1, 1, (1, 2, 3, 16))
    fmt = Format.BF16
    good = round_to(gold, fmt)
    bad = good + 8 * ulp(good, fmt)
    nan = good.copy()
    nan[0, 0, 0, 0] = np.nan
    flash = [FlashRule().judge(x, gold, [good], fmt, np.zeros_like(gold)) for x in (good, bad, nan)]
    comparator = FlashMLAComparator.for_output(fmt, 1.0)
    fmla = [comparator.judge(x, gold, "out") for x in (good, bad, nan)]
    ok = [v.ok for v in flash] == [True, False, False] and [v.ok for v in fmla] == [True, False, False]
    return Outcome.from_bool(ok, f"flash rule {[v.ok for v in flash]}, FlashMLA comparator {[v.ok for v in fmla]} "
                                 f"(expected [True, False, False] each)")


@register_check("conformance.fp64_gold_within_bound", "oracle")
def fp64_gold_within_bound() -> Outcome:
    """The harness's default gold (binary64 definition) lies within its error bound of the mpmath oracle."""
    case = build_case("growing_max", "bf16", {"seed": 5, "b": 1, "hkv": 1, "group": 2, "sq": 2, "sk": 9, "dk": 16,
                                              "dv": 4, "scale_factor": 2.0, "growth": 40.0})
    problem = case.problem()
    out, lse, out_bound, lse_bound_, _ = gold_result(problem, "fp64")
    exact = oracle_from_problem(problem)
    out_ratio = float(np.max(np.abs(out - exact.out) / np.maximum(out_bound, np.finfo(float).tiny)))
    lse_ratio = float(np.max(np.abs(lse - exact.lse) / np.maximum(lse_bound_, np.finfo(float).tiny)))
    return Outcome.from_bool(out_ratio <= 1 and lse_ratio <= 1,
                             f"|gold - oracle| / bound: out {out_ratio:.3g}, lse {lse_ratio:.3g} (must be <= 1)")


# ----------------------------------------------------------------------------------------------
# attnspec report peers: the README's results table
# ----------------------------------------------------------------------------------------------

@tool("report", "peers", "run the harness on the installed peers (torch SDPA, ONNX reference, ONNX Runtime)")
def peers_report(argv: list[str]) -> int:
    """Print the peers table (markdown); exit 1 if a peer fails."""
    import argparse

    from .conformance import onnx_reference, onnxruntime_attention, torch_sdpa
    parser = argparse.ArgumentParser(prog="attnspec report peers")
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows, failed = [], False
    print("| peer | version | op | dtype | result | cases | max err/tol | max abs err vs gold | rule |")
    print("|---|---|---|---|---|---|---|---|---|")
    for make in (torch_sdpa, onnx_reference, onnxruntime_attention):
        try:
            peer = make()
        except ImportError as exc:
            print(f"| {make.__name__} | not installed ({exc.name}) | | | skipped | | | | |")
            continue
        for fmt in peer.kernel.formats:
            report = check(peer.kernel, op="attention", dtype=fmt, examples=args.examples, seed=args.seed, save=False)
            failed |= not report.ok
            max_err = max((v.data.get("max_err", v.err) for r in report.results for v in r.verdicts), default=0.0)
            rows.append(report)
            print(f"| {peer.kernel.name} | {peer.package} {peer.version} | attention | {fmt} | "
                  f"{'pass' if report.ok else 'FAIL'} | {len(report.results)} | {report.worst.ratio:.3g} | "
                  f"{max_err:.3g} | FlashAttention rule, k=2, 2-ulp floor |")
    return 1 if failed else 0
