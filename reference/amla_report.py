"""AMLA's error analysis: the acceptance rule, ``attnspec report amla``, and the ``attnspec verify`` checks.

The acceptance rule (per query row r, output format F = BF16)::

    max_d |amla - G|  <=  2 * max_d |fa - G|  +  ulp_F(max_d |G|)        (+ 3 g when G has error bound g)

where G is the exact output (the mpmath oracle, or the binary64 evaluation with its error
bound g, ~1e-13 relative) and fa is standard FlashAttention-2 with the same BF16 cast of P
(``spec.flash`` under ``spec.amla.POLICY_AMLA``: S in FP32, P = exp(S - m) in FP32 cast to
BF16 before P V, O accumulated in FP32, out = fl(O * fl(1 / l)) cast to BF16; blocks of 512).
Its rounding points are AMLA's except for the rescale itself and two details that do not move
the error at the BF16 level: it casts P to BF16 with ties to even where the kernel's
``CAST_ROUND`` breaks ties away (a tie needs the 16 low bits of an FP32 P to be 0x8000: one
element in 2^16), and it multiplies by fl(1/l) where the kernel divides by fl(l r^).

Why this rule:

- The baseline shares AMLA's dominant error. Both feed BF16 weights to the P V product: AMLA's
  P~ = bf16(P r^) and FA's bf16(P) each carry a relative error <= 2^-8 per weight, so their
  errors are of the same kind and size; a fixed atol/rtol would either excuse a broken kernel
  on small outputs or fail a correct one on large ones.
- Factor 2 (FlashAttention's own factor, ``tests/test_flash_attn.py``): AMLA adds, per rescale
  of O, the compensation error of T3 (``amla.compensation.bound``): at most |e|/2 + 2^-18
  relative, e = c_{i-1}/c_i - 1 with |e| <= 0.00785, i.e. <= 0.004, about one BF16 unit
  roundoff, on the rescaled part of O. These errors telescope to first order (the factors
  c_{i-1}/c_i multiply to c_0/c_T), so their sum stays at the size of one BF16 rounding of
  the row and does not grow with the number of blocks: at most as large as FA's error again.
- The floor of one ulp at the row's output magnitude: both end with a rounding to BF16. When
  FA's pre-cast value lies close to the exact one (err(fa) ~ 0), a second algorithm whose
  pre-cast value differs by a hair may round to the neighbouring BF16 number: one ulp of
  difference that neither algorithm can avoid.
- Per row, not per tensor: a row of small outputs must not be excused by another row's error.

The rule is claimed on AMLA's domain: finite FP32 logits, no element of O exactly 0 (or below
2^-95) when a rescale with dn < 0 reaches it (T2), |O| <= 1e10 at the end (|out| l r^ <= 1e10).
The report runs inputs inside and outside it and names every input where the rule fails.

The report evaluates the kernel's full geometry (576 / 512 wide, blocks of 512) with
:func:`blas_policy`, a substitute for the spec's exact-then-round dot products (``spec.policy``):
one binary64 BLAS dot, then one rounding. For BF16 inputs of moderate dynamic range the binary64
dot is exact (16-bit products, under 53 bits in total) and the two agree bit for bit
(``tests/test_amla_report.py``); elsewhere they differ by at most one FP32 ulp per dot product,
2^-24 relative, far below the BF16-level errors measured. The gold there is ``spec.flash`` in
binary64 (exact in real arithmetic, ``proofs/online_softmax.py``; its rounding error bound from
``reference.bounds`` is printed where the arrays are small enough to compute it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from attnspec.reference.amla_cases import expected_of, random_mtp, zero_hole, zero_hole_escape
from attnspec.reference.bounds import attention_error_bound
from attnspec.reference.oracle import oracle_from_problem
from attnspec.registry import Outcome, check, tool
from attnspec.spec.amla import BLOCK_K, POLICY_AMLA, VARIANTS, amla_finalize, amla_from_problem, amla_state, no_keys
from attnspec.spec.attention import POLICY_FP64
from attnspec.spec.errors import DomainError, require
from attnspec.spec.flash import flash_finalize, flash_from_problem, flash_state
from attnspec.spec.formats import Format, get_format, round_to, ulp
from attnspec.spec.mla import DEEPSEEK_V3, MLAConfig, decode_problem
from attnspec.spec.policy import PrecisionPolicy
from attnspec.spec.problem import AttentionProblem

FACTOR = 2.0
FLOOR_ULPS = 1.0
BOUND_LIMIT = 2 * 10**7  # reference.bounds materialises (B, Hq, Sq, Sk, Dv): only below this many elements
BASELINE = "fa_bf16p"


# ----------------------------------------------------------------------------------------------
# The rule
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleResult:
    """The rule on one output: worst row's error, its budget, and whether every row is within."""

    ok: bool
    err: float  # max over rows of max_d |x - G|
    baseline_err: float  # max over rows of max_d |fa - G|
    worst_ratio: float  # max over rows of err_row / tol_row (<= 1 passes)
    failing_rows: int


def error_rule(out: np.ndarray, baseline: np.ndarray, gold: np.ndarray, fmt: Format = Format.BF16,
               gold_bound: float = 0.0) -> RuleResult:
    """Return the acceptance rule (module docstring) for ``out`` against ``gold``, rows over the last axis."""
    with np.errstate(invalid="ignore"):
        err = np.nan_to_num(np.abs(out - gold), nan=np.inf).max(axis=-1, initial=0.0)
        base = np.nan_to_num(np.abs(baseline - gold), nan=np.inf).max(axis=-1, initial=0.0)
    floor = FLOOR_ULPS * ulp(np.abs(gold).max(axis=-1, initial=0.0), fmt)
    tol = FACTOR * (base + gold_bound) + floor + gold_bound
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(err == 0, 0.0, err / tol)
    fails = ~(err <= tol)
    return RuleResult(ok=not bool(np.any(fails)), err=float(err.max(initial=0.0)),
                      baseline_err=float(base.max(initial=0.0)),
                      worst_ratio=float(ratio.max(initial=0.0)), failing_rows=int(fails.sum()))


@dataclass(frozen=True)
class BlasPolicy(PrecisionPolicy):
    """A substitute for the spec's dot products (see the module docstring): binary64 BLAS, then one rounding."""

    def matmul(self, a: np.ndarray, b: np.ndarray, fmt: "Format | None" = None) -> np.ndarray:
        """Return fl_fmt(fl64(a @ b)) (default fmt: accumulate)."""
        return round_to(np.matmul(a, b), self.accumulate if fmt is None else get_format(fmt))


def blas_policy(policy: PrecisionPolicy) -> BlasPolicy:
    """Return ``policy`` with BLAS dot products (a substitute for speed; the report and bench only)."""
    return BlasPolicy(policy.matmul_input, policy.accumulate, policy.softmax, policy.output, policy.accumulation,
                      name=f"{policy.name}+blas")


def relative_frobenius(out: np.ndarray, gold: np.ndarray) -> float:
    """Return ||out - gold||_F / ||gold||_F (0 for an all-zero gold equal to out)."""
    norm = float(np.linalg.norm(gold))
    with np.errstate(invalid="ignore"):
        diff = float(np.linalg.norm(np.nan_to_num(out - gold, nan=np.inf)))
    return diff / norm if norm > 0 else diff


def evaluate(problem: AttentionProblem, gold: np.ndarray, gold_bound: float, policy: PrecisionPolicy,
             block_k: int) -> dict:
    """Return {variant or 'fa_bf16p': RuleResult as dict, plus ``rel_fro_fp32``} for every variant and FA.

    ``rel_fro_fp32`` is the relative Frobenius error of the FP32 output before the final cast
    (the flash-decode partial's O / L), which the cast's rounding does not mask.
    """
    fp32_out = replace(policy, output=Format.FP32)
    state = flash_state(problem, policy, block_k)
    fa = flash_finalize(state, policy, problem.empty_lse).out
    rows = {BASELINE: asdict(error_rule(fa, fa, gold, policy.output, gold_bound))}
    rows[BASELINE]["rel_fro_fp32"] = relative_frobenius(flash_finalize(state, fp32_out, problem.empty_lse).out, gold)
    empty = no_keys(problem)
    for variant in VARIANTS:
        state = amla_state(problem, variant, policy, block_k)
        out = amla_finalize(state, empty, variant, policy, problem.empty_lse)[0]
        rows[variant] = asdict(error_rule(out, fa, gold, policy.output, gold_bound))
        out32 = amla_finalize(state, empty, variant, fp32_out, problem.empty_lse)[0]
        rows[variant]["rel_fro_fp32"] = relative_frobenius(out32, gold)
    return rows


# ----------------------------------------------------------------------------------------------
# The report's inputs (the kernel's geometry)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportInput:
    """One report input: a family, its shape, and whether the rule is claimed on it."""

    family: str
    heads: int
    sq: int
    keys: int
    seed: int
    in_domain: bool

    @property
    def name(self) -> str:
        return f"{self.family}_h{self.heads}_sq{self.sq}_S{self.keys}_s{self.seed}"


#: family -> (in AMLA's domain, what it probes)
FAMILIES = {
    "random": (True, "q and latent N(0, 1), DeepSeek's scale"),
    "growing": (True, "logits growing along the keys by ~3 per block: the max rises at every block"),
    "jumps": (True, "the max jumps by ~60 at every block: dn is clamped at -30"),
    "large": (True, "|V| ~ 2^16: |O| stays below 1e10"),
    "small": (True, "|V| ~ 2^-60: O stays above 2^-95"),
    "large_guard": (False, "|V| ~ 2^36: |O| > 1e10, the guard zeroes correct values"),
    "tiny": (False, "|V| ~ 2^-110 with rising max: O below 2^-95 is corrupted by the rescale"),
}


def report_inputs(seed: int, quick: bool) -> list[ReportInput]:
    """Return the report's inputs: every family at several shapes (s_q 1..4, 16..128 heads, lengths not k * 512)."""
    require(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, DomainError,
            f"seed: expected an int >= 0 (numpy's generator takes no negative seed), got {seed!r}")
    if quick:
        shapes = [(16, 1, 700), (16, 2, 1100)]
    else:
        shapes = [(16, 1, 1100), (32, 2, 1537), (64, 3, 2049), (128, 4, 1100)]
    return [ReportInput(family, h, sq, keys, seed + i, FAMILIES[family][0])
            for family in FAMILIES for i, (h, sq, keys) in enumerate(shapes)]


def build_problem(spec: ReportInput, config: MLAConfig = DEEPSEEK_V3) -> AttentionProblem:
    """Return the kernel-view problem of a report input (causal MTP, BF16 values, one sequence)."""
    rng = np.random.default_rng(spec.seed)
    width, latent = config.latent_dim, config.kv_lora_rank
    q = rng.normal(size=(1, spec.sq, spec.heads, width))
    kv = rng.normal(size=(1, spec.keys, 1, width))
    position = np.arange(spec.keys) / BLOCK_K  # in blocks
    if spec.family in ("growing", "jumps", "tiny"):
        slope = {"growing": 3.0, "jumps": 60.0, "tiny": 10.0}[spec.family] / config.softmax_scale
        q[..., -1] = 1.0
        kv[0, :, 0, -1] = slope * np.floor(position) if spec.family != "growing" else slope * position
    magnitude = {"large": 16, "small": -60, "large_guard": 36, "tiny": -110}.get(spec.family, 0)
    kv[..., :latent] *= 2.0**magnitude  # V = the latent; q's latent part compensates, logits stay O(1)
    q[..., :latent] *= 2.0**-magnitude
    q, kv = round_to(q, Format.BF16), round_to(kv, Format.BF16)
    return decode_problem(q, kv, causal=True, config=config)


def gold_of(problem: AttentionProblem) -> tuple[np.ndarray, float | None]:
    """Return (binary64 FlashAttention output, its a-priori error bound or None where too large to compute)."""
    gold = flash_from_problem(problem, POLICY_FP64, BLOCK_K).out
    b, hq, sq, _ = problem.q.shape
    if b * hq * sq * problem.k.shape[2] * problem.v.shape[3] > BOUND_LIMIT:
        return gold, None
    bound, _ = attention_error_bound(problem, POLICY_FP64, algorithm="flash", block_k=BLOCK_K)
    return gold, float(bound.max(initial=0.0))


def run_report(seed: int, quick: bool, inputs: list[ReportInput] | None = None) -> dict:
    """Return the report as a JSON-able dict: one entry per input, and the inputs where the rule fails.

    ``inputs`` defaults to :func:`report_inputs` of ``seed`` and ``quick``.
    """
    policy = blas_policy(POLICY_AMLA)
    entries = []
    for spec in report_inputs(seed, quick) if inputs is None else inputs:
        start = time.perf_counter()
        problem = build_problem(spec)
        gold, bound = gold_of(problem)
        rows = evaluate(problem, gold, 0.0 if bound is None else bound, policy, BLOCK_K)
        entries.append({"input": spec.name, "family": spec.family, "in_domain": spec.in_domain,
                        "probes": FAMILIES[spec.family][1], "gold_bound": bound, "results": rows,
                        "seconds": round(time.perf_counter() - start, 2)})
    failures = [{"input": e["input"], "variant": v, "in_domain": e["in_domain"], "worst_ratio": r["worst_ratio"]}
                for e in entries for v, r in e["results"].items() if v != BASELINE and not r["ok"]]
    return {"rule": f"per row: err <= {FACTOR:g} * err({BASELINE}) + {FLOOR_ULPS:g} ulp_bf16(max|gold|)",
            "seed": seed, "quick": quick, "policy": policy.name, "entries": entries, "failures": failures}


def print_table(report: dict) -> None:
    """Print the report as two tables (max abs error with the rule; pre-cast Frobenius error) and its failures."""
    columns = [BASELINE] + list(VARIANTS)
    print(f"rule: {report['rule']}   (cells: max |out - gold| over rows; * = rule fails)")
    print(f"{'input':<34} {'dom':>3} " + " ".join(f"{c:>15}" for c in columns))
    for e in report["entries"]:
        cells = []
        for c in columns:
            r = e["results"][c]
            cells.append(f"{r['err']:>14.3e}{'*' if c != BASELINE and not r['ok'] else ' '}")
        print(f"{e['input']:<34} {'yes' if e['in_domain'] else 'no':>3} " + " ".join(cells))
    print("\nrelative Frobenius error of the FP32 output before the final cast:")
    print(f"{'input':<34} {'':>3} " + " ".join(f"{c:>15}" for c in columns))
    for e in report["entries"]:
        print(f"{e['input']:<34} {'':>3} " + " ".join(f"{e['results'][c]['rel_fro_fp32']:>14.3e} " for c in columns))
    inside = [f for f in report["failures"] if f["in_domain"]]
    print(f"\n{len(report['failures'])} (input, variant) pairs fail the rule; "
          f"{len(inside)} of them inside AMLA's domain")
    for f in report["failures"]:
        print(f"  {f['input']} {f['variant']}: worst row at {f['worst_ratio']:.3g} x its tolerance"
              f"{'' if f['in_domain'] else ' (outside the domain: expected)'}")


@tool("report", "amla", "AMLA variants and FA-with-BF16-P against the exact result, with the acceptance rule")
def main(argv: list[str]) -> int:
    """Run ``attnspec report amla``; exit 1 when the ``cann`` variant fails the rule inside AMLA's domain."""
    parser = argparse.ArgumentParser(prog="attnspec report amla", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--quick", action="store_true", help="two small shapes per family instead of four")
    args = parser.parse_args(argv)
    report = run_report(args.seed, args.quick)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print_table(report)
    return int(any(f["in_domain"] and f["variant"] == "cann" for f in report["failures"]))


# ----------------------------------------------------------------------------------------------
# Checks for attnspec verify
# ----------------------------------------------------------------------------------------------

def _oracle_rule(case) -> tuple[dict, np.ndarray, np.ndarray]:
    """Return ({variant: RuleResult}, cann out, exact out) of a small case against the oracle."""
    problem = case.problem()
    gold = oracle_from_problem(problem).out
    fa = flash_from_problem(problem, POLICY_AMLA, case.block_k).out
    results, outs = {}, {}
    for variant in VARIANTS:
        outs[variant], _ = amla_from_problem(problem, variant, POLICY_AMLA, case.block_k)
        results[variant] = error_rule(outs[variant], fa, gold)
    return results, outs["cann"], gold


@check("amla.rule.quick", "rule")
def check_amla_rule_quick() -> Outcome:
    """Every AMLA variant is within the acceptance rule on a causal MTP case (s_q = 2, 16 heads, 2 sequences)."""
    case = random_mtp(12, 8, 2)
    results, _, _ = _oracle_rule(case)
    ok = all(r.ok for r in results.values())
    detail = ", ".join(f"{v}: {r.worst_ratio:.2f}x" for v, r in results.items())
    return Outcome.from_bool(ok, f"{case.name} vs the oracle, worst row / tolerance: {detail}",
                             {v: asdict(r) for v, r in results.items()})


@check("amla.vector.zero_hole", "vector")
def check_amla_vector_zero_hole() -> Outcome:
    """The zero hole reproduces: cann outputs exactly 0 on channel 0 of every head; ideal is within the rule."""
    case = zero_hole(1, 8)
    results, cann, gold = _oracle_rule(case)
    lost = np.argwhere((cann == 0) & (gold != 0))
    expected = {(0, h, 0, 0) for h in range(case.q.shape[2])}
    reproduced = {tuple(int(i) for i in idx) for idx in lost} == expected
    ok = reproduced and results["ideal"].ok and not results["cann"].ok
    return Outcome.from_bool(ok, f"{case.name}: cann lost {len(lost)} elements (expected channel 0 of "
                                 f"{len(expected)} heads), ideal {results['ideal'].worst_ratio:.2f}x its tolerance",
                             {"lost": [list(map(int, i)) for i in lost]})


@check("amla.vector.zero_hole_escape", "vector")
def check_amla_vector_zero_hole_escape() -> Outcome:
    """The escaping zero hole reproduces: channel 0 of cann is finite, below the guard, and far from the exact value."""
    case = zero_hole_escape(2, 8)
    expected = expected_of(case)
    cann, exact = expected["out_amla_cann"][..., 0], expected["out"][..., 0]
    ok = bool(np.all(np.isfinite(cann)) and np.all(np.abs(cann - exact) > 100 * np.abs(exact)))
    return Outcome.from_bool(ok, f"{case.name}: channel 0 is {cann.ravel()[:4].tolist()} where the exact value "
                                 f"is {exact.ravel()[:4].round(4).tolist()}", {})

