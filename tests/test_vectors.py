"""Conformance vectors: byte-identical re-export, round trip through the checker, tamper and crash safety."""

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from attnspec.cli import main
from attnspec.reference import vectors as vec
from attnspec.reference.mutants import CORRECT, MUTANTS, amla_kernel
from attnspec.spec.amla import CANN
from attnspec.spec.errors import VectorFileError


@pytest.fixture(scope="module")
def rows():
    """A small set: bf16 attention cases, the FlashMLA-style case and the AMLA named cases."""
    return vec.export_rows(1, ops=["attention", "mla", "amla"], formats=["bf16"])


@pytest.fixture
def vector_set(tmp_path, rows):
    root = tmp_path / "set"
    vec.write_vector_set(root, rows, level=1)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_reexport_is_byte_identical(tmp_path, rows, vector_set):
    """Serialising the same rows again, and regenerating a subset from scratch, give identical bytes."""
    again = vec.write_vector_set(tmp_path / "again", rows, level=1)
    assert _files(vector_set) == _files(tmp_path / "again")
    assert again == vec.verify_vector_set(vector_set)["set_sha256"]
    fresh = [vec.export_rows(1, ops=["attention"], formats=["fp16"]) for _ in (0, 1)]
    digests = [vec.write_vector_set(tmp_path / f"fresh{i}", r) for i, r in enumerate(fresh)]
    assert digests[0] == digests[1] and _files(tmp_path / "fresh0") == _files(tmp_path / "fresh1")


def test_path_grammar_and_readable_arrays(vector_set):
    manifest = vec.verify_vector_set(vector_set)
    assert any(c.startswith("amla/bf16/amla_named/") for c in manifest["cases"])
    for case in manifest["cases"]:
        op, fmt, family, case_id = case.split("/")
        assert op in ("attention", "mla", "amla") and fmt == "bf16" and case_id.startswith("seed")
        q = np.load(vector_set / case / "q.npy", allow_pickle=False)
        assert q.dtype == np.uint16
        lines = (vector_set / case / "out.oracle.txt").read_text().splitlines()
        assert len(lines) == np.load(vector_set / case / "out_f64.npy", allow_pickle=False).size


def test_round_trip_through_the_checker(vector_set):
    for name in ("spec_flash", "spec_attention"):
        reports = vec.check_vectors(vector_set, CORRECT[name].kernel, op="attention")
        assert reports and all(r.ok for r in reports), [r.summary() for r in reports]
    assert all(r.ok for r in vec.check_vectors(vector_set, CORRECT["spec_mla"].kernel, op="mla"))
    assert not all(r.ok for r in vec.check_vectors(vector_set, MUTANTS["wrong_causal_alignment"].kernel, op="attention"))
    # AMLA's named cases use 8-key blocks (reference/amla_cases.py), so the kernels under test do too
    assert all(r.ok for r in vec.check_vectors(vector_set, amla_kernel("cann-8", block_k=8), op="amla"))
    unguarded = vec.check_vectors(vector_set, amla_kernel("unguarded-8", replace(CANN, guard=None), 8), op="amla")
    assert unguarded and not unguarded[0].ok


def test_amla_vectors_carry_the_bit_exact_kernel_output(vector_set):
    case = next(vector_set.glob("amla/bf16/amla_named/*"))
    assert np.load(case / "out_amla_cann.npy", allow_pickle=False).dtype == np.uint16


@pytest.mark.parametrize("damage", ["flip", "truncate", "extra", "missing", "manifest"])
def test_damaged_sets_are_rejected(vector_set, damage):
    victim = sorted(vector_set.rglob("*.npy"))[0]
    if damage == "flip":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x10
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-3])
    elif damage == "extra":
        (victim.parent / "notes.txt").write_text("x")
    elif damage == "missing":
        victim.unlink()
    else:
        manifest = vector_set / "MANIFEST.json"
        manifest.write_text(manifest.read_text().replace('"level": 1', '"level": 2'))
    with pytest.raises(VectorFileError):
        vec.load_vector_set(vector_set)


def test_pinned_digest(vector_set):
    with pytest.raises(VectorFileError, match="set_sha256"):
        vec.verify_vector_set(vector_set, digest="0" * 64)


def test_pickled_array_is_refused(tmp_path):
    np.save(tmp_path / "q.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(VectorFileError, match="q.npy"):
        vec._load_array(tmp_path, {"file": "q.npy", "dtype": "object", "shape": [1]}, "q")


def test_write_refuses_a_foreign_directory(tmp_path, rows):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("mine")
    with pytest.raises(VectorFileError, match="expected a vector set"):
        vec.write_vector_set(tmp_path / "docs", rows[:1])
    assert (tmp_path / "docs" / "readme.txt").read_text() == "mine"


def test_a_crash_leaves_the_old_set_intact(tmp_path, rows, monkeypatch):
    root = tmp_path / "set"
    digest = vec.write_vector_set(root, rows[:1])
    real = os.rename

    def crash(src, dst):
        if Path(dst) == root:
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(vec.os, "rename", crash)
    monkeypatch.setattr(vec, "_exchange", crash)  # the atomic swap fails the same way
    with pytest.raises(OSError):
        vec.write_vector_set(root, rows[:2])
    monkeypatch.setattr(vec.os, "rename", real)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".set.tmp-")]
    assert not leftovers
    old = [p for p in tmp_path.iterdir() if p.name.startswith(".set.old-")]
    restored = old[0] if old else root  # the previous set is whole, either in place or under its .old name
    assert vec.verify_vector_set(restored)["set_sha256"] == digest


def test_cli_export_verify_check(tmp_path, monkeypatch, capsys):
    module = tmp_path / "kernels_under_test.py"
    module.write_text("from attnspec.reference.mutants import CORRECT, MUTANTS\n"
                      "good = CORRECT['spec_flash'].kernel\nbad = MUTANTS['missing_scale'].kernel\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    root = tmp_path / "cli-set"
    assert main(["vectors", "export", str(root), "--op", "attention", "--fmt", "fp16"]) == 0
    assert main(["vectors", "verify", str(root)]) == 0
    assert main(["vectors", "check", str(root), "--impl", "kernels_under_test:good"]) == 0
    assert main(["vectors", "check", str(root), "--impl", "kernels_under_test:bad"]) == 1
    assert main(["check", "--impl", "kernels_under_test:good", "--dtype", "fp16", "--examples", "2"]) == 0
    assert main(["check", "--impl", "kernels_under_test:bad", "--dtype", "fp16", "--examples", "2",
                 "--save", str(tmp_path / "failures")]) == 1
    assert "reproduce: attnspec check --impl kernels_under_test:bad" in capsys.readouterr().out
    assert main(["check", "--impl", "no_such_module:f"]) == 2
