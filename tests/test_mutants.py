"""The mutant matrix: the harness flags every deliberately wrong kernel and passes every correct one.

Dense ops run all three formats; the paged ops (mla, amla: 576-wide, up to 128 heads) run
BF16 only in the ci profile and every format under the thorough profile.
"""

import os

import pytest

from attnspec.reference.harness import check
from attnspec.reference.mutants import CORRECT, MUTANTS

THOROUGH = os.environ.get("ATTNSPEC_HYPOTHESIS_PROFILE") == "thorough"


def _matrix(table):
    for name, entry in table.items():
        paged = entry.op in ("mla", "amla")
        for fmt in entry.formats:
            if paged and fmt != "bf16" and not THOROUGH:
                continue
            yield pytest.param(name, fmt, id=f"{name}-{fmt}")


def _examples(op: str) -> int:
    return (20 if THOROUGH else 1) if op in ("mla", "amla") else (50 if THOROUGH else 4)


def test_matrix_has_the_issue_mutants():
    required = {"wrong_causal_alignment", "missing_scale", "misplaced_scale", "stale_running_max", "forgotten_rescale",
                "off_by_one_block_boundary", "wrong_gqa_mapping", "fp16_accumulation", "lse_base2",
                "dropped_last_partial_block", "nan_fully_masked_rows", "amla_without_zero_guard",
                "pasa_mean_after_masking"}
    assert required <= set(MUTANTS)
    assert len(MUTANTS) >= 12


@pytest.mark.parametrize("name, fmt", list(_matrix(MUTANTS)))
def test_harness_flags_mutant(name, fmt):
    entry = MUTANTS[name]
    report = check(entry.kernel, op=entry.op, dtype=fmt, examples=_examples(entry.op), save=False, fail_fast=True)
    assert not report.ok, f"{name} ({entry.description}) was not flagged:\n{report.summary()}"


@pytest.mark.parametrize("name, fmt", list(_matrix(CORRECT)))
def test_harness_passes_correct_kernel(name, fmt):
    entry = CORRECT[name]
    report = check(entry.kernel, op=entry.op, dtype=fmt, examples=_examples(entry.op), save=False)
    assert report.ok, report.summary()
