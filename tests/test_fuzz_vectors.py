"""Fuzzing the vector loader with hypothesis.

Every example writes a real one-case vector set into a fresh directory, damages it, and
calls ``load_vector_set``. The loader may return cases or raise VectorFileError; any other
exception (KeyError, MemoryError, ...) is a crash, and unpickling is detected by a trap.

- ``test_damage_is_detected``: truncation, bit flips, appended bytes, random contents,
  deletions, extra files (traversal-like names included), swaps, crafted ``.npy`` headers
  (object, void and complex dtypes; huge, negative and malformed shapes) and random JSON, to
  any file. Without re-signing, every change that alters a file's bytes (or the manifest's
  parsed content) must be rejected.
- ``test_re_signed_damage_never_crashes``: the same damage, with the manifest re-signed to
  match (what a careful tamperer does): the loader must still answer only with VectorFileError.
- ``test_random_manifests_never_crash``: manifests generated from scratch (random JSON, the
  real keys with random values, paths such as ``../../x`` and absolute ones), signed or not.

Counts: ``ci`` runs a quick slice; ``thorough`` runs 10,000 cases in all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from attnspec.errors import VectorFileError
from attnspec.reference import vectors as vec
from attnspec.reference.cases import build_case, vector_params
from attnspec.reference.strategies import PROFILE_ENV

THOROUGH = os.environ.get(PROFILE_ENV) == "thorough"


def one_case_set() -> dict[str, bytes]:
    """Return {relative path: bytes} of a real one-case vector set."""
    op, fmt, family, params = vector_params(1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        vec.write_vector_set(root, [vec.oracle_row(op, build_case(family, fmt, params))], level=1)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


PRISTINE = one_case_set()
NAMES = sorted(PRISTINE)
CASE_DIR = next(n for n in NAMES if n.endswith("/case.json")).rsplit("/", 1)[0]
PATHS = st.sampled_from(["../x", "../../x", "/absolute/x", "a/../../x", "", ".", "..", "MANIFEST.json", "x\x00y",
                         f"{CASE_DIR}/q.npy", f"{CASE_DIR}/../q.npy", f"{CASE_DIR}/extra.npy", "C:\\x", "~/x"]) | st.text(
    max_size=20)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


def examples(n_thorough: int):
    """Settings for one fuzzer: the profile's count in ci, ``n_thorough`` cases under thorough."""
    return settings(max_examples=n_thorough) if THOROUGH else settings()


# ----------------------------------------------------------------------------------------------
# Damage
# ----------------------------------------------------------------------------------------------

def npy_file(descr: str, shape, fortran_order, version: int, body: bytes) -> bytes:
    """Return a .npy file with this header, written by hand so that any value can be declared."""
    header = repr({"descr": descr, "fortran_order": fortran_order, "shape": shape}).encode("latin1")
    width = 2 if version == 1 else 4
    header += b" " * (-(len(header) + 9 + width) % 64) + b"\n"  # magic, version, length and header: 64-aligned
    return b"\x93NUMPY" + bytes([version, 0]) + len(header).to_bytes(width, "little") + header + body


NPY = st.builds(npy_file,
                st.sampled_from(["<u4", "<u2", "|u1", "<f8", "|O", "|V4", "<c16", ">u4", "<i8", "garbage", "<U3"]),
                st.one_of(st.lists(st.integers(min_value=-3, max_value=2**62), max_size=4).map(tuple),
                          st.sampled_from([(2**40, 2**20), (-1,), (0,), "x", None, (1.5,)])),
                st.sampled_from([False, True, "no"]), st.sampled_from([1, 2, 3, 9]), st.binary(max_size=64))


@st.composite
def damages(draw) -> list[tuple]:
    """1 to 3 changes to a set: (kind, file index, detail)."""
    kinds = st.sampled_from(["truncate", "flip", "append", "random", "delete", "extra", "swap", "npy", "json"])
    return draw(st.lists(st.tuples(kinds, st.integers(min_value=0, max_value=len(NAMES) - 1),
                                   st.integers(min_value=0, max_value=2**16), st.binary(max_size=32),
                                   NPY, JSON, PATHS), min_size=1, max_size=3))


def apply(root: Path, changes: list[tuple]) -> None:
    for kind, index, offset, blob, npy, doc, path in changes:
        victim = root / NAMES[index]
        if not victim.is_file():
            continue
        data = victim.read_bytes()
        if kind == "truncate":
            victim.write_bytes(data[: offset % max(len(data), 1)])
        elif kind == "flip" and data:
            flipped = bytearray(data)
            flipped[offset % len(flipped)] ^= 1 << (offset % 8)
            victim.write_bytes(bytes(flipped))
        elif kind == "append":
            victim.write_bytes(data + (blob or b"\0"))
        elif kind == "random":
            victim.write_bytes(blob)
        elif kind == "delete":
            victim.unlink()
        elif kind == "extra":
            extra = root / CASE_DIR / f"extra-{offset}.bin"
            extra.write_bytes(blob)
        elif kind == "swap":
            other = root / NAMES[offset % len(NAMES)]
            if other.is_file():
                victim.write_bytes(other.read_bytes())
                other.write_bytes(data)
        elif kind == "npy":
            victim.write_bytes(npy)
        elif kind == "json":
            # A manifest that is not even an object is the random-manifest fuzzer's business.
            victim.write_bytes(json.dumps({"doc": doc} if victim.name == "MANIFEST.json" else doc).encode())


def write_pristine(root: Path) -> None:
    for rel, data in PRISTINE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def resign(root: Path) -> None:
    """Re-list every file with its size and SHA-256 and re-sign the manifest (if it is still an object)."""
    try:
        body = json.loads((root / "MANIFEST.json").read_text())
    except (OSError, ValueError):
        return
    if not isinstance(body, dict):
        return
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    body["files"] = {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size,
                                                      "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                     for p in files}
    body["set_sha256"] = vec._set_digest(body)
    (root / "MANIFEST.json").write_text(json.dumps(body))


def load(root: Path) -> list | None:
    """Return the loaded cases, or None when the loader rejected the set with VectorFileError."""
    try:
        return vec.load_vector_set(root)
    except VectorFileError:
        return None
    except Exception as exc:
        raise AssertionError(f"the loader crashed: {type(exc).__name__}: {exc}") from exc


def changed(root: Path) -> bool:
    """Return whether any file differs from the pristine set (the manifest by its parsed content)."""
    now = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    if set(now) != set(PRISTINE):
        return True
    for rel, data in now.items():
        if rel == "MANIFEST.json":
            try:
                if json.loads(data) != json.loads(PRISTINE[rel]):
                    return True
            except ValueError:
                return True
        elif data != PRISTINE[rel]:
            return True
    return False


# ----------------------------------------------------------------------------------------------
# The fuzzers
# ----------------------------------------------------------------------------------------------

def damaged(tmp: str, changes: list[tuple]) -> Path:
    root = Path(tmp) / "set"
    write_pristine(root)
    apply(root, changes)
    return root


def check_detected(root: Path, changes: list[tuple]) -> None:
    cases = load(root)
    assert cases is None or not changed(root), f"damage went undetected: {changes}"


@examples(4_000)
@given(damages())
def test_damage_is_detected(changes):
    with tempfile.TemporaryDirectory() as tmp:
        root = damaged(tmp, changes)
        check_detected(root, changes)


@examples(3_000)
@given(damages())
@example([("json", NAMES.index(f"{CASE_DIR}/case.json"), 0, b"", b"", [1, 2], "")])
def test_re_signed_damage_never_crashes(changes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        write_pristine(root)
        apply(root, changes)
        resign(root)
        load(root)


@examples(3_000)
@given(st.one_of(JSON, st.fixed_dictionaries({
    "format": st.sampled_from([vec.FORMAT_NAME]) | JSON, "format_version": st.sampled_from([vec.FORMAT_VERSION]) | JSON,
    "files": st.dictionaries(PATHS, JSON | st.fixed_dictionaries({"bytes": JSON, "sha256": JSON}), max_size=4) | JSON,
    "cases": st.lists(PATHS, max_size=3) | JSON})), st.booleans())
@example([], False)
def test_random_manifests_never_crash(body, signed):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        write_pristine(root)
        if signed and isinstance(body, dict):
            body = {**body, "set_sha256": vec._set_digest(body)}
        (root / "MANIFEST.json").write_text(json.dumps(body))
        load(root)


# ----------------------------------------------------------------------------------------------
# The fuzzers' own checks
# ----------------------------------------------------------------------------------------------

def test_the_pristine_set_loads():
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        write_pristine(root)
        assert len(load(root)) == 1 and not changed(root)


def test_the_detection_property_catches_a_blind_loader(monkeypatch):
    """The mutant: a loader that skips the checksums lets a flipped output byte through."""
    monkeypatch.setattr(vec, "verify_vector_set",
                        lambda root, digest=None: json.loads((Path(root) / "MANIFEST.json").read_text()))
    out = NAMES.index(f"{CASE_DIR}/out_f64.npy")
    changes = [("flip", out, 200, b"", b"", None, "")]
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(AssertionError, match="damage went undetected"):
        check_detected(damaged(tmp, changes), changes)


def test_the_load_helper_reports_a_crash(monkeypatch):
    """The mutant: a loader that raises KeyError is a crash, not a rejection."""
    def broken(root, digest=None):
        raise KeyError("fmt")
    monkeypatch.setattr(vec, "load_vector_set", broken)
    with pytest.raises(AssertionError, match="the loader crashed: KeyError"):
        load(Path("."))


def test_crafted_npy_files_reach_numpy_s_parser():
    """The generator writes real .npy headers: a well-formed one loads."""
    arr = np.load(io.BytesIO(npy_file("<u4", (2,), False, 1, bytes(8))), allow_pickle=False)
    assert arr.dtype == np.uint32 and arr.tolist() == [0, 0]
