"""``attnspec verify`` checks: the attention, FlashAttention and split-KV specs against the oracle.

Each check draws a fixed, seeded set of small problems that covers the conventions (GQA,
both causal alignments, windows, softcap, additive and boolean masks, variable lengths,
fully masked rows), evaluates the spec under several precision policies, and compares with
the mpmath oracle using the derived bounds of :mod:`reference.bounds`. The detail reports
the worst observed error as a fraction of its bound.
"""

from __future__ import annotations

import numpy as np

from attnspec.registry import Outcome, check
from attnspec.spec.attention import softmax_attention
from attnspec.spec.errors import AttnSpecError
from attnspec.spec.flash import flash_from_problem
from attnspec.spec.formats import Format, round_to
from attnspec.spec.policy import PrecisionPolicy
from attnspec.spec.problem import attention_problem
from attnspec.spec.split_kv import combine, split_boundaries, split_partials

from .bounds import attention_error_bound, exceeds
from .oracle import attention_oracle

POLICIES = {"fp64": PrecisionPolicy.uniform(Format.FP64), "fp32": PrecisionPolicy.uniform(Format.FP32),
            "bf16/fp32": PrecisionPolicy(Format.BF16, Format.FP32, Format.FP32, Format.BF16),
            "fp16": PrecisionPolicy.uniform(Format.FP16)}


def seeded_problems(seed: int, count: int):
    """Yield (name, q, k, v, conventions): small problems covering every convention."""
    rng = np.random.default_rng(seed)
    variants = [dict(), dict(causal=True), dict(causal=True, causal_alignment="top_left"), dict(window=(2, 1)),
                dict(softcap=5.0), dict(causal=True, window=(3, None)), dict(mask="bool"), dict(mask="additive"),
                dict(kv_seqlens=True), dict(causal=True, kv_seqlens=True, scale=0.3)]
    for n in range(count):
        conv = dict(variants[n % len(variants)])
        b, hkv, group = 1 + n % 2, 1 + (n // 2) % 2, 1 + n % 3
        sq, sk, dk, dv = 1 + n % 4, [0, 1, 5, 9, 12][n % 5], 2 + n % 3, 1 + n % 3
        q = round_to(rng.uniform(-3, 3, (b, hkv * group, sq, dk)), Format.BF16)
        k = round_to(rng.uniform(-3, 3, (b, hkv, sk, dk)), Format.BF16)
        v = round_to(rng.uniform(-3, 3, (b, hkv, sk, dv)), Format.BF16)
        if conv.get("mask") == "bool":
            conv["mask"] = rng.random((sq, sk)) < 0.7
        elif conv.get("mask") == "additive":
            conv["mask"] = np.where(rng.random((b, 1, sq, sk)) < 0.2, -np.inf, rng.uniform(-2, 2, (b, 1, sq, sk)))
        if conv.get("kv_seqlens"):
            conv["kv_seqlens"] = rng.integers(0, sk + 1, size=b)
        yield f"case{n}", q, k, v, conv


def compare_with_oracle(algorithm: str, seed: int = 20261128, count: int = 10) -> Outcome:
    """Run ``algorithm`` ("naive", "flash", "split") on the seeded problems under every policy."""
    worst, failures, compared = 0.0, [], 0
    for name, q, k, v, conv in seeded_problems(seed, count):
        problem = attention_problem(q, k, v, **conv)
        exact = attention_oracle(q, k, v, **conv)
        for pname, policy in POLICIES.items():
            block_k, splits = 4, 3
            if algorithm == "naive":
                got = softmax_attention(problem, policy)
            elif algorithm == "flash":
                got = flash_from_problem(problem, policy, block_k)
            else:
                bounds = split_boundaries(problem.k.shape[2], splits, block_k)
                got = combine(split_partials(problem, bounds, policy, block_k), policy, problem.empty_lse)
            out_b, lse_b = attention_error_bound(problem, policy, algorithm=algorithm, block_k=block_k,
                                                 num_splits=splits)
            bad = exceeds(got.out, exact.out, out_b).any() or exceeds(got.lse, exact.lse, lse_b).any()
            if bad:
                failures.append(f"{name}/{pname}")
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.nan_to_num(np.abs(got.out - exact.out) / out_b, nan=0.0, posinf=np.inf)
            worst = max(worst, float(np.max(ratio, initial=0.0)))
            compared += 1
    detail = f"{compared} (problem, policy) pairs; worst error = {worst:.3g} x its derived bound"
    if failures:
        detail += f"; outside the bound: {', '.join(failures[:5])}"
    return Outcome.from_bool(not failures, detail, {"worst_fraction_of_bound": worst, "failures": failures})


@check("attention.definition_vs_oracle", "oracle")
def check_definition() -> Outcome:
    """The naive definition (every policy) is within its derived bound of the oracle."""
    return compare_with_oracle("naive")


@check("flash.recurrence_vs_oracle", "oracle")
def check_flash() -> Outcome:
    """FlashAttention-2 (block 4, every policy) is within its derived bound of the oracle."""
    return compare_with_oracle("flash")


@check("split_kv.combine_vs_oracle", "oracle")
def check_split() -> Outcome:
    """Split-KV with 3 splits and the LSE combine is within its derived bound of the oracle."""
    return compare_with_oracle("split")


@check("attention.bad_inputs_rejected", "rule")
def check_bad_inputs() -> Outcome:
    """A sample of documented bad inputs raises its documented error (the full table is in the tests)."""
    ok = np.ones((1, 2, 3, 4))
    cases = {"rank": (ok[0], ok, ok[..., :2]), "gqa": (np.ones((1, 3, 3, 4)), ok, ok),
             "nan": (np.full((1, 2, 3, 4), np.nan), ok, ok)}
    missed = []
    for name, (q, k, v) in cases.items():
        try:
            attention_problem(q, k, v)
            missed.append(name)
        except AttnSpecError:
            pass
    return Outcome.from_bool(not missed, f"{len(cases) - len(missed)}/{len(cases)} rejected", {"missed": missed})
