"""Vector-file integrity: checksums, tampering, pickles, traversal, and writers killed mid-export.

What ``reference/vectors.py`` promises (its docstring, docs/conformance.md §5): the manifest
lists every file with its size and SHA-256 and a ``set_sha256`` over itself; loading rejects a
missing, extra, truncated or altered file with VectorFileError; nothing is unpickled; a set
is written into a sibling directory and renamed into place. Here each promise is attacked:

- damage of every kind to every kind of file (truncation, a flipped byte, an appended byte,
  a deleted, added or swapped file, an edited manifest) is rejected;
- a consistent tamper (file and manifest re-signed to match) cannot be detected by a
  self-contained checksum: it is rejected once the expected ``set_sha256`` is pinned;
- a pickled object array is refused without being unpickled;
- a manifest may not reach outside the set (``..``, absolute paths, symlinks), nor make the
  loader allocate what the file cannot hold;
- a writer killed (SIGKILL) at every step of the export leaves the old set or the new one.

Rows whose required behaviour is not implemented yet are strict xfails naming the gap.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from attnspec.errors import VectorFileError
from attnspec.reference import vectors as vec
from attnspec.reference.cases import build_case, vector_params
from attnspec.reference.strategies import PROFILE_ENV

VECTOR_GAP = "reference/vectors.py"


def gap(reason: str):
    return pytest.mark.xfail(strict=True, reason=f"gap in {VECTOR_GAP}: {reason}")


@pytest.fixture(scope="module")
def rows():
    """Three small dense cases of the level-1 table (no AMLA: they take seconds)."""
    return [vec.oracle_row(op, build_case(family, fmt, params)) for op, fmt, family, params in vector_params(1)[:3]]


@pytest.fixture(scope="module")
def pristine(rows, tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine") / "set"
    vec.write_vector_set(root, rows, level=1)
    return root


@pytest.fixture
def vset(pristine, tmp_path):
    """A fresh copy of the pristine set, to damage."""
    root = tmp_path / "set"
    shutil.copytree(pristine, root)
    return root


def manifest(root: Path) -> dict:
    return json.loads((root / "MANIFEST.json").read_text())


def sign(root: Path, body: dict) -> None:
    """Write ``body`` as the manifest with a matching set_sha256: what a careful tamperer does."""
    body = {**body, "set_sha256": vec._set_digest(body)}
    (root / "MANIFEST.json").write_text(json.dumps(body))


def resign(root: Path) -> None:
    """Re-list every file under ``root`` with its size and SHA-256, and re-sign the manifest."""
    body = manifest(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    body["files"] = {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size,
                                                      "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                     for p in files}
    sign(root, body)


def first_case(root: Path) -> Path:
    return root / manifest(root)["cases"][0]


# ----------------------------------------------------------------------------------------------
# The manifest covers every file
# ----------------------------------------------------------------------------------------------

def test_every_file_is_listed_with_its_size_and_checksum(pristine):
    body = manifest(pristine)
    on_disk = {p.relative_to(pristine).as_posix(): p.read_bytes() for p in pristine.rglob("*") if p.is_file()}
    assert set(body["files"]) == set(on_disk) - {"MANIFEST.json"}
    for rel, entry in body["files"].items():
        assert entry == {"bytes": len(on_disk[rel]), "sha256": hashlib.sha256(on_disk[rel]).hexdigest()}
    assert all(f"{case}/case.json" in body["files"] for case in body["cases"])


ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def canonical(value) -> str:
    """Return the canonical form that reference/vectors.py's docstring states, built from its text (no json module)."""
    if isinstance(value, dict):
        return "{" + ",".join(canonical(k) + ":" + canonical(v) for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + "".join(ESCAPES.get(c, f"\\u{ord(c):04x}" if c < " " else c) for c in value) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    assert type(value) is int, value
    return str(value)


def documented_digest(body: dict) -> str:
    rest = {k: v for k, v in body.items() if k != "set_sha256"}
    return hashlib.sha256(canonical(rest).encode("utf-8")).hexdigest()


def test_set_digest_follows_its_documented_rule(pristine):
    """What a C++ or Rust reader computes from the docstring's rule is the digest the manifest carries."""
    body = manifest(pristine)
    assert body["format_version"] == 2 and documented_digest(body) == body["set_sha256"]
    rest = {k: v for k, v in body.items() if k != "set_sha256"}
    version_1 = hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()  # ", " and ": "
    assert version_1 != body["set_sha256"], "the check cannot tell the two rules apart"


def test_the_canonical_form_of_awkward_strings():
    """Escapes, non-ASCII characters, nesting and every JSON kind a manifest could hold, against the stated rule."""
    body = {"format_version": 2, "z": [1, -2, None, True, False, {"b": "", "a": "é \u2028 \U0001f600"}],
            "quote\"back\\slash": "\b\t\n\f\r \x00\x01\x1f \x7f /", "A": {"nested": [[], {}]}}
    assert vec._set_digest(body) == documented_digest(body)
    assert vec._set_digest({**body, "z": []}) != documented_digest(body)


def test_a_version_1_set_still_verifies(vset):
    """Version 1 signed with Python's default separators; its sets stay readable, and only with that rule."""
    body = {**manifest(vset), "format_version": 1}
    rest = {k: v for k, v in body.items() if k != "set_sha256"}
    body["set_sha256"] = hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()
    (vset / "MANIFEST.json").write_text(json.dumps(body))
    assert vec.verify_vector_set(vset)["format_version"] == 1
    body["set_sha256"] = documented_digest(body)  # the version 2 rule on a version 1 manifest
    (vset / "MANIFEST.json").write_text(json.dumps(body))
    with pytest.raises(VectorFileError, match="it was altered"):
        vec.verify_vector_set(vset)


# ----------------------------------------------------------------------------------------------
# Damage of every kind is rejected
# ----------------------------------------------------------------------------------------------

KINDS = {"npy": "q.npy", "case": "case.json", "oracle": "out.oracle.txt"}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))


def extend(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


DAMAGE = {"truncated": truncate, "one bit flipped": flip, "one byte appended": extend, "deleted": Path.unlink}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_files_are_rejected(vset, kind, damage):
    DAMAGE[damage](first_case(vset) / KINDS[kind])
    with pytest.raises(VectorFileError, match=KINDS[kind] if damage != "deleted" else "expected a file listed"):
        vec.load_vector_set(vset)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_manifest_is_rejected(vset, damage):
    DAMAGE[damage](vset / "MANIFEST.json")
    with pytest.raises(VectorFileError, match="MANIFEST.json|expected a vector set"):
        vec.load_vector_set(vset)


def test_an_extra_file_is_rejected(vset):
    (first_case(vset) / "notes.txt").write_text("added later")
    with pytest.raises(VectorFileError, match="expected only the manifest's files, got extra"):
        vec.load_vector_set(vset)


def test_swapped_files_are_rejected(vset):
    """Two cases' q.npy exchanged: each file is intact, but not where the manifest says."""
    a, b = (vset / c / "q.npy" for c in manifest(vset)["cases"][:2])
    data_a, data_b = a.read_bytes(), b.read_bytes()
    assert data_a != data_b
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(VectorFileError, match="q.npy"):
        vec.load_vector_set(vset)


def test_an_edited_manifest_is_rejected(vset):
    body = manifest(vset)
    body["level"] = 2
    (vset / "MANIFEST.json").write_text(json.dumps(body))  # set_sha256 left as it was
    with pytest.raises(VectorFileError, match="it was altered"):
        vec.load_vector_set(vset)


def test_a_consistent_tamper_is_caught_by_the_pinned_digest(vset, pristine):
    """A self-contained checksum cannot see a re-signed set; pinning the published set_sha256 can."""
    published = manifest(pristine)["set_sha256"]
    flip(first_case(vset) / "out_f64.npy")  # a different expected output
    resign(vset)
    assert vec.verify_vector_set(vset)["set_sha256"] != published
    with pytest.raises(VectorFileError, match=f"expected set_sha256 {published}"):
        vec.load_vector_set(vset, digest=published)


# ----------------------------------------------------------------------------------------------
# Half-written sets
# ----------------------------------------------------------------------------------------------

def test_a_set_without_its_manifest_is_rejected(vset):
    (vset / "MANIFEST.json").unlink()
    with pytest.raises(VectorFileError, match="expected a vector set with MANIFEST.json"):
        vec.load_vector_set(vset)


def test_a_partial_copy_is_rejected(vset):
    """The manifest arrived, half of the files did not (an interrupted copy or download)."""
    files = sorted(p for p in vset.rglob("*.npy"))
    for path in files[len(files) // 2:]:
        path.unlink()
    with pytest.raises(VectorFileError, match="expected a file listed in the manifest, got nothing"):
        vec.load_vector_set(vset)


def test_an_empty_directory_is_rejected(tmp_path):
    with pytest.raises(VectorFileError, match="expected a vector set with MANIFEST.json"):
        vec.load_vector_set(tmp_path)


# ----------------------------------------------------------------------------------------------
# Nothing is unpickled; nothing outside the set is read; nothing huge is allocated
# ----------------------------------------------------------------------------------------------

class Trap:
    """Unpickling this creates a directory: the proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("signed", [False, True], ids=["as-is", "re-signed"])
def test_a_pickled_object_array_is_never_unpickled(vset, tmp_path, signed):
    marker = tmp_path / "unpickled"
    payload = np.empty(1, dtype=object)
    payload[0] = Trap(marker)
    np.save(first_case(vset) / "q.npy", payload, allow_pickle=True)
    if signed:  # the checksums match, so np.load itself is reached
        resign(vset)
    with pytest.raises(VectorFileError, match="q.npy"):
        vec.load_vector_set(vset)
    assert not marker.exists()


def outside_file(vset: Path) -> tuple[Path, dict]:
    secret = vset.parent / "outside.bin"
    secret.write_bytes(b"not part of the set")
    return secret, {"bytes": secret.stat().st_size, "sha256": hashlib.sha256(secret.read_bytes()).hexdigest()}


def test_a_manifest_path_may_not_climb_out(vset):
    _, entry = outside_file(vset)
    body = manifest(vset)
    body["files"]["../outside.bin"] = entry
    sign(vset, body)
    with pytest.raises(VectorFileError):
        vec.verify_vector_set(vset)


def test_a_manifest_path_may_not_be_absolute(vset):
    secret, entry = outside_file(vset)
    body = manifest(vset)
    body["files"][str(secret)] = entry
    sign(vset, body)
    with pytest.raises(VectorFileError):
        vec.verify_vector_set(vset)


def test_a_case_may_not_live_outside_the_set(vset):
    shutil.copytree(first_case(vset), vset.parent / "elsewhere")
    body = manifest(vset)
    body["cases"].append("../elsewhere")
    sign(vset, body)
    with pytest.raises(VectorFileError):
        vec.load_vector_set(vset)


def test_a_symlink_out_of_the_set_is_rejected(vset):
    victim = first_case(vset) / "q.npy"
    outside = vset.parent / "q-elsewhere.npy"
    outside.write_bytes(victim.read_bytes())
    victim.unlink()
    victim.symlink_to(outside)
    with pytest.raises(VectorFileError):
        vec.load_vector_set(vset)


def test_a_huge_declared_shape_is_rejected_without_allocating(vset):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<u4", "fortran_order": False, "shape": (2**40, 2**20)})
    (first_case(vset) / "q.npy").write_bytes(header.getvalue() + bytes(16))
    resign(vset)
    with pytest.raises(VectorFileError, match="q.npy"):
        vec.load_vector_set(vset)


@pytest.mark.parametrize("edit", [
    pytest.param(lambda b: b.pop("fmt"), id="no fmt"),
    pytest.param(lambda b: b.update(fmt="fp12"), id="unknown fmt"),
    pytest.param(lambda b: b.update(arrays=[1]), id="arrays not a dict"),
    pytest.param(lambda b: b["conventions"].update(scale_hex="zz"), id="bad hex scale"),
    pytest.param(lambda b: b.update(layout="weird"), id="unknown layout"),
    pytest.param(lambda b: b["arrays"]["q"].update(file="../../q.npy"), id="array file climbs out"),
    pytest.param(lambda b: b["arrays"]["q"].update(shape=[1]), id="shape disagrees with the file"),
])
def test_a_re_signed_malformed_case_is_rejected(vset, edit):
    path = first_case(vset) / "case.json"
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))
    resign(vset)
    with pytest.raises(VectorFileError):
        vec.load_vector_set(vset)


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------

def test_cli_verify_reports_damage_in_one_line(vset, capsys):
    from attnspec.cli import main
    flip(first_case(vset) / "k.npy")
    assert main(["vectors", "verify", str(vset)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnspec: error: VectorFileError: ") and "k.npy" in err[0]


# ----------------------------------------------------------------------------------------------
# Writers killed mid-export
# ----------------------------------------------------------------------------------------------

# Runs in a fresh interpreter: computes the rows once, then, per scenario, writes the old set (or
# none), forks a child that starts writing the new set over it and SIGKILLs itself at the
# scenario's point, and reports what the directory holds: before any load, after a load (which
# restores a set left aside), and after the next export.
KILLER = r"""
import json, os, pathlib, signal, sys
from attnspec.errors import VectorFileError
from attnspec.reference import vectors as vec
from attnspec.reference.cases import build_case, vector_params

base = pathlib.Path(sys.argv[1])
scenarios = json.loads(sys.argv[2])
rows = [vec.oracle_row(op, build_case(f, fmt, p)) for op, fmt, f, p in vector_params(1)[:3]]
OLD, NEW = rows[:1], rows
EXCHANGE = vec._RENAMEAT2

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def arm(point):
    # write:N[:partial], rename:N:before|after, exchange:before|after, rmtree
    what, *rest = point.split(":")
    count = {"n": 0}
    if what == "write":
        real = pathlib.Path.write_bytes
        def write_bytes(self, data):
            count["n"] += 1
            if count["n"] == int(rest[0]):
                if rest[1:] == ["partial"]:
                    real(self, data[: len(data) // 2])
                die()
            return real(self, data)
        pathlib.Path.write_bytes = write_bytes
    elif what == "rename":
        real = os.rename
        def rename(src, dst):
            count["n"] += 1
            if count["n"] == int(rest[0]) and rest[1] == "before":
                die()
            real(src, dst)
            if count["n"] == int(rest[0]) and rest[1] == "after":
                die()
        vec.os.rename = rename
    elif what == "exchange":
        real = vec._exchange
        def exchange(a, b):
            if rest[0] == "before":
                die()
            real(a, b)
            die()
        vec._exchange = exchange
    elif what == "rmtree":
        vec.shutil.rmtree = lambda *a, **k: die()

def state(root, digests):
    try:
        return digests.get(vec.verify_vector_set(root)["set_sha256"], "other")
    except VectorFileError as exc:
        return "rejected: " + str(exc).split(": ", 1)[-1][:60]

def hidden(root):
    return sorted(p.name for p in root.parent.iterdir() if p.name != "set")

new_digest = vec.write_vector_set(base / "reference-new", NEW)
report = {}
for name, (mode, start, point) in scenarios.items():
    vec._RENAMEAT2 = EXCHANGE if mode == "exchange" else None
    root = base / name.replace(":", "_").replace("/", "_") / "set"
    root.parent.mkdir(parents=True)
    digests = {new_digest: "new"}
    if start == "old":
        digests[vec.write_vector_set(root, OLD)] = "old"
    pid = os.fork()
    if pid == 0:
        arm(point)
        vec.write_vector_set(root, NEW)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    outcome = {"killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
               "present": (root / "MANIFEST.json").is_file(), "leftovers": hidden(root)}
    outcome["state"] = state(root, digests)
    outcome["after_load"] = hidden(root)
    outcome["next_export"] = vec.write_vector_set(root, NEW) == new_digest
    outcome["after_next_export"] = hidden(root)
    report[name] = outcome
print(json.dumps(report))
"""

NOTHING = "rejected: expected a vector set with MANIFEST.json"
# name -> (swap mode, what DIR held, kill point, what DIR holds after a load); the writer writes
# 3 cases x 12 files, then MANIFEST.json, then swaps.
SCENARIOS = {
    "before the first file": ("exchange", "old", "write:1", "old"),
    "half-way through the first file": ("exchange", "old", "write:1:partial", "old"),
    "half-way through the set": ("exchange", "old", "write:18:partial", "old"),
    "before the manifest": ("exchange", "old", "write:37", "old"),
    "half-way through the manifest": ("exchange", "old", "write:37:partial", "old"),
    "before the exchange": ("exchange", "old", "exchange:before", "old"),
    "after the exchange, before the old set is deleted": ("exchange", "old", "exchange:after", "new"),
    "while deleting the old set": ("exchange", "old", "rmtree", "new"),
    "first export: half-way through the set": ("exchange", "none", "write:18:partial", NOTHING),
    "first export: before its rename": ("exchange", "none", "rename:1:before", NOTHING),
    "first export: after its rename": ("exchange", "none", "rename:1:after", "new"),
    "fallback: half-way through the manifest": ("fallback", "old", "write:37:partial", "old"),
    "fallback: before moving the old set aside": ("fallback", "old", "rename:1:before", "old"),
    "fallback: between the two renames": ("fallback", "old", "rename:1:after", "old"),
    "fallback: after the new set is in place": ("fallback", "old", "rename:2:after", "new"),
    "fallback: after the old set is renamed for deletion": ("fallback", "old", "rename:3:after", "new"),
    "fallback: while deleting the old set": ("fallback", "old", "rmtree", "new"),
}


@pytest.fixture(scope="module")
def kill_report(tmp_path_factory):
    assert vec._RENAMEAT2 is not None, "this machine has no renameat2: the exchange scenarios cannot run"
    base = tmp_path_factory.mktemp("killed")
    scenarios = {name: list(s[:3]) for name, s in SCENARIOS.items()}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(base), json.dumps(scenarios)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_killed_export_leaves_the_old_set_or_the_new_one(kill_report, name):
    mode, start, point, expected = SCENARIOS[name]
    outcome = kill_report[name]
    assert outcome["killed"], f"the writer never reached {point} ({name})"
    assert outcome["state"] == expected, outcome


@pytest.mark.parametrize("name", [n for n, s in SCENARIOS.items() if s[:2] == ("exchange", "old")])
def test_with_the_exchange_dir_is_never_missing(kill_report, name):
    """renameat2(RENAME_EXCHANGE): DIR holds a whole set at every instant, before any load restores anything."""
    assert kill_report[name]["present"], kill_report[name]


def test_without_the_exchange_a_load_restores_the_set_moved_aside(kill_report):
    """Fallback, killed between the two renames: no DIR, the old set at .set.old-PID; the next load renames it back."""
    outcome = kill_report["fallback: between the two renames"]
    assert not outcome["present"] and any(n.startswith(".set.old-") for n in outcome["leftovers"]), outcome
    assert outcome["state"] == "old" and not any(n.startswith(".set.old-") for n in outcome["after_load"]), outcome


def test_killed_exports_leave_only_hidden_siblings(kill_report):
    """Staging and aside directories are dot-named siblings; the loader never reads them."""
    for outcome in kill_report.values():
        assert all(name.startswith(".set.") for name in outcome["leftovers"] + outcome["after_load"]), outcome


def test_the_next_export_removes_every_leftover(kill_report):
    for outcome in kill_report.values():
        assert outcome["next_export"] and outcome["after_next_export"] == [], outcome


def test_the_cleanup_spares_other_names(rows, tmp_path):
    """Only .set.tmp-* and .set.old-* siblings are leftovers; other names, and link targets, are not touched."""
    root = tmp_path / "set"
    vec.write_vector_set(root, rows[:1])
    for name in (".set.tmp-1-dead", ".set.old-2"):
        (tmp_path / name / "x").mkdir(parents=True)
    for name in (".settings.tmp-1", ".other.tmp-1", "set2", ".set"):
        (tmp_path / name).mkdir()
    (tmp_path / ".set.tmp-3-file").write_text("a file")
    (tmp_path / ".set.old-4").symlink_to(tmp_path / "set2")  # a link: removed, its target kept
    vec.write_vector_set(root, rows[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-1", ".set", ".settings.tmp-1", "set", "set2"]


def test_an_export_that_fails_between_the_renames_puts_the_old_set_back(rows, tmp_path, monkeypatch):
    """Fallback swap, the second rename raises (e.g. EXDEV, EACCES): the old set is renamed back, nothing is left."""
    root = tmp_path / "set"
    digest = vec.write_vector_set(root, rows[:1])
    monkeypatch.setattr(vec, "_RENAMEAT2", None)
    real = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".set.tmp-") and Path(dst) == root:
            raise OSError("the second rename failed")
        real(src, dst)

    monkeypatch.setattr(vec.os, "rename", rename)
    with pytest.raises(OSError, match="the second rename failed"):
        vec.write_vector_set(root, rows)
    monkeypatch.setattr(vec.os, "rename", real)
    assert vec.verify_vector_set(root)["set_sha256"] == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_an_export_refuses_a_foreign_directory_before_computing_any_case(tmp_path, monkeypatch, capsys):
    """`attnspec vectors export` over a directory that is not a set fails at once: no case is computed."""
    from attnspec.cli import main
    from attnspec.commands import vectors as command
    (tmp_path / "mine.txt").write_text("x")
    computed = []
    monkeypatch.setattr(command, "export_rows", lambda *a, **k: computed.append(a) or [])
    assert main(["vectors", "export", str(tmp_path), "--op", "attention"]) == 2
    assert computed == [] and "expected a vector set (with MANIFEST.json) or an empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("make, target, message", [
    pytest.param(lambda d: (d / "set").write_text("a file"), "set", "or an empty directory to replace, got a file",
                 id="a file"),
    pytest.param(lambda d: (d / "set").symlink_to(d), "set", "expected a directory, got a symbolic link",
                 id="a symbolic link"),
    pytest.param(lambda d: (d / "deeper").write_text("a file"), "deeper/set", "deeper is not a directory",
                 id="a file on the path"),
])
def test_an_export_refuses_what_is_not_a_directory(rows, tmp_path, make, target, message):
    make(tmp_path)
    with pytest.raises(VectorFileError, match=message):
        vec.write_vector_set(tmp_path / target, rows[:1])


@pytest.mark.skipif(os.environ.get(PROFILE_ENV) != "thorough", reason="seconds per kill; the thorough profile runs it")
@pytest.mark.parametrize("delay", [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
def test_killing_the_cli_export_after_a_delay(tmp_path, delay):
    """The real command, killed from outside at a time: DIR holds the old set or the new one."""
    root = tmp_path / "set"
    argv = [sys.executable, "-m", "attnspec", "vectors", "export", str(root), "--op", "attention", "--fmt", "fp32"]
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    new_digest = vec.verify_vector_set(root)["set_sha256"]
    small = tmp_path / "small"
    old_digest = vec.write_vector_set(small, [vec.oracle_row(op, build_case(f, fmt, p))
                                              for op, fmt, f, p in vector_params(1)[:1]])
    shutil.rmtree(root)
    shutil.copytree(small, root)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert vec.verify_vector_set(root)["set_sha256"] in (old_digest, new_digest)
