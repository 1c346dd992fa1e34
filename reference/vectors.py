r"""Conformance vectors: a versioned, deterministic export of conformance cases, readable without Python.

Format ``attnspec-vectors`` version 2. Path grammar (all names ASCII, ``/``-separated)::

    set      := MANIFEST.json  case*
    case     := <op> "/" <fmt> "/" <family> "/" <case_id> "/" file
    op       := attention | flash | mla | amla | pasa
    fmt      := fp32 | bf16 | fp16                        (the inputs' format)
    case_id  := "seed" <decimal seed> "-" <8 hex digits>   (SHA-256 prefix of the case's params)
    file     := case.json | <array> ".npy" | <tensor> ".oracle.txt"

Arrays are NumPy ``.npy`` version 1.0 files, little-endian, C order, never pickled:

================  ==========================  ================================================
file              dtype                       content
================  ==========================  ================================================
q, k, v           uint16 / uint32             input bit patterns in ``fmt`` (dense layout
                                              (B, H, S, D); k, v slots past kv_seqlens are NaN)
q, k_cache        uint16 / uint32             paged layout: q (B, s_q, h_q, D), cache
                                              (blocks, page, h_kv, D), unused slots NaN
block_table       int32                       (B, max_blocks), unused entries 2147480000
cache_seqlens     int32                       (B,)
mask              uint8                       (B, 1, Sq, Sk), 1 = may attend (when present)
out               uint16 / uint32             the exact O correctly rounded into ``fmt`` (bits)
out_f64           uint64                      the exact O correctly rounded to binary64 (bits)
lse, lse_f64      uint32 / uint64             the exact LSE rounded to FP32 / binary64 (bits);
                                              -inf marks a row with no admissible key
out_tol           float64                     the FlashAttention rule's bound on max|O - out_f64|
lse_tol           float64                     (B, H, Sq) bound on |LSE - lse_f64| (FP32 LSE)
out_amla_cann     uint16                      AMLA cases only: spec.amla's bit-exact output
================  ==========================  ================================================

``<tensor>.oracle.txt`` holds the gold in high precision, one decimal string per line in C
order (the mpmath oracle's enclosure midpoints at 40 significant digits; "-inf" for an empty
row's LSE). ``case.json`` holds the op, format, family, params (with the seed), the
conventions (scale also as a hex float), every array's file, dtype and shape, the gold's
source and the tolerance parameters. A kernel that reports LSE +inf or NaN for rows without
an admissible key compares there against its own declared value.

``MANIFEST.json`` lists every file with its SHA-256 and size, and ``set_sha256``. Loading
rejects a missing, extra, truncated or altered file with :class:`VectorFileError`. Export is
deterministic (no timestamps, sorted keys, fixed npy headers): exporting twice gives
byte-identical files.

``set_sha256`` is the lowercase hex SHA-256 of the UTF-8 bytes of the manifest's canonical
form: the manifest object without its ``set_sha256`` member, as JSON with

- every object's members sorted by key (code point order), at every depth;
- no whitespace at all: "," between items, ":" between key and value, no trailing newline;
- strings with ``"`` and ``\`` escaped as ``\"`` and ``\\``, U+0008, U+0009, U+000A, U+000C
  and U+000D as ``\b \t \n \f \r``, the other characters below U+0020 as ``\u00xx``
  (lowercase hex), and every other character as itself (UTF-8, not escaped);
- integers in decimal (a manifest holds no other numbers), ``null``, ``true``, ``false``.

A manifest attnspec writes holds only ASCII strings and integers, so this is also its
RFC 8785 (JSON Canonicalization Scheme) form; in Python it is ``json.dumps(body,
sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")``.

Versions. 2 (2026-11-30): the canonical form above. 1: the same JSON with ", " and ": " as
separators (Python's defaults, while the text promised no whitespace); still readable, never
written. Nothing else differs.

Atomic export. A set is written completely into a hidden sibling ``.DIR.tmp-*`` (manifest
last), then swapped into place, so DIR holds the old set or the new one at every instant:

1. Where Linux's ``renameat2(RENAME_EXCHANGE)`` exists (glibc >= 2.28, kernel >= 3.15, and a
   filesystem that supports it), the staging directory and DIR are exchanged in one atomic
   step; the staging name then holds the old set, which is deleted.
2. Elsewhere (or where the filesystem refuses the exchange), DIR is renamed aside to
   ``.DIR.old-<pid>``, the staging directory is renamed to DIR, and the aside set is renamed
   to a ``.DIR.tmp-*`` name and deleted. A writer killed between the first two renames
   leaves no DIR but the whole old set at ``.DIR.old-<pid>``: the next export or load of DIR
   renames it back first.

A first export is one rename. Exports, and a load's restore, hold an exclusive ``flock`` on
DIR's parent directory, so concurrent writers wait for each other; each export first removes
the ``.DIR.tmp-*`` and ``.DIR.old-*`` leftovers of killed writers. DIR must be a vector set
(it has MANIFEST.json) or an empty directory, and is checked before any case is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import mpmath
import numpy as np

from attnspec import SPEC_VERSION
from attnspec.registry import Outcome, check as register_check
from attnspec.spec.amla import POLICY_AMLA, amla_from_problem
from attnspec.spec.errors import AttnSpecError, VectorFileError, require
from attnspec.spec.formats import Format, from_bits, get_format, round_to, to_bits

from .cases import Case, PagedInputs, build_case, paged_case, vector_params
from .harness import CheckReport, Expected, evaluate, expected_from_gold, oracle_gold, resolve_kernel
from .oracle import oracle_from_problem
from .tolerances import FlashRule, LseRule

FORMAT_NAME = "attnspec-vectors"
FORMAT_VERSION = 2
#: The separators of each readable version's canonical form (see the module docstring).
SEPARATORS = {1: (", ", ": "), 2: (",", ":")}
ORACLE_DIGITS = 40
_F64 = Format.FP64


@dataclass(frozen=True)
class VectorRow:
    """One case to export: the case, what it is judged against, and its gold in high precision."""

    op: str
    case: Case
    expected: Expected
    out_in_fmt: np.ndarray  # the gold rounded into the case's format
    lse_in_fp32: np.ndarray
    out_decimal: np.ndarray  # object array: mpmath numbers or floats
    lse_decimal: np.ndarray
    extras: dict = None  # name -> (values, format), e.g. AMLA's bit-exact kernel output


def oracle_row(op: str, case: Case, extras: dict | None = None) -> VectorRow:
    """Return the row of ``case`` with its gold from the mpmath oracle (correctly rounded, certified)."""
    problem = case.problem()
    r = oracle_from_problem(problem)
    expected = expected_from_gold(case, op, problem, *oracle_gold(r))
    return VectorRow(op, case, expected, r.rounded(case.fmt)[0], r.rounded(Format.FP32)[1], r.out_mp, r.lse_mp,
                     extras or {})


def expected_row(op: str, case: Case, expected: Expected) -> VectorRow:
    """Return the row of ``case`` for an already computed Expected (a saved failure: the binary64 gold)."""
    return VectorRow(op, case, expected, round_to(expected.out, case.fmt), round_to(expected.lse, Format.FP32),
                     expected.out, expected.lse, {})


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------

def _npy_bytes(arr: np.ndarray) -> bytes:
    """Return the .npy (version 1.0) encoding of ``arr``: deterministic header, never pickled."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(arr, order="C"), version=(1, 0), allow_pickle=False)
    return buffer.getvalue()


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode("ascii")


def _bits(values: np.ndarray, fmt: Format) -> np.ndarray:
    return to_bits(values, fmt).astype(fmt.info.uint.newbyteorder("<"))


def _decimal_lines(values: np.ndarray) -> bytes:
    """Return one decimal string per element, C order: mpmath numbers at ORACLE_DIGITS digits, floats by repr."""
    lines = []
    for x in np.asarray(values, dtype=object).reshape(-1):
        if x is None or (isinstance(x, (float, np.floating)) and not np.isfinite(x)):
            lines.append("-inf" if x is None or x < 0 else ("inf" if x > 0 else "nan"))
        elif isinstance(x, (float, np.floating)):
            lines.append(repr(float(x)))
        else:
            lines.append(mpmath.nstr(x, ORACLE_DIGITS, strip_zeros=False))
    return ("\n".join(lines) + "\n").encode("ascii")


def case_id(case: Case) -> str:
    """Return ``seed<seed>-<8 hex>``, stable for the same params."""
    digest = hashlib.sha256(json.dumps(case.params, sort_keys=True).encode()).hexdigest()[:8]
    return f"seed{case.params['seed']}-{digest}"


def case_path(row: VectorRow) -> str:
    """Return the case's directory in the path grammar: op/fmt/family/case_id."""
    return f"{row.op}/{row.case.fmt}/{row.case.family}/{case_id(row.case)}"


def case_files(row: VectorRow) -> dict[str, bytes]:
    """Return {file name: bytes} of one case directory (see the module docstring)."""
    case, expected, fmt = row.case, row.expected, row.case.fmt
    files: dict[str, bytes] = {}
    arrays: dict[str, dict] = {}

    def put(name: str, arr: np.ndarray, encoding: str) -> None:
        files[f"{name}.npy"] = _npy_bytes(arr)
        arrays[name] = {"file": f"{name}.npy", "dtype": arr.dtype.name, "shape": list(arr.shape), "encoding": encoding}

    if case.paged is not None:
        put("q", _bits(case.paged.q, fmt), f"{fmt} bits")
        put("k_cache", _bits(case.paged.k_cache, fmt), f"{fmt} bits")
        put("block_table", case.paged.block_table.astype("<i4"), "int32")
        put("cache_seqlens", case.paged.cache_seqlens.astype("<i4"), "int32")
    else:
        for name in ("q", "k", "v"):
            put(name, _bits(getattr(case, name), fmt), f"{fmt} bits")
        if case.conventions.get("mask") is not None:
            put("mask", case.conventions["mask"].astype(np.uint8), "uint8, 1 = may attend")
    put("out", _bits(row.out_in_fmt, fmt), f"{fmt} bits")
    put("out_f64", _bits(expected.out, _F64), "binary64 bits")
    put("lse", _bits(row.lse_in_fp32, Format.FP32), "fp32 bits")
    put("lse_f64", _bits(expected.lse, _F64), "binary64 bits")
    put("out_tol", np.asarray(expected.out_tol, dtype="<f8"), "float64")
    put("lse_tol", np.asarray(expected.lse_tolerance(expected.lse, Format.FP32), dtype="<f8"), "float64")
    for name, (values, extra_fmt) in sorted(row.extras.items()):
        put(name, _bits(values, extra_fmt), f"{extra_fmt} bits")
    files["out.oracle.txt"] = _decimal_lines(row.out_decimal)
    files["lse.oracle.txt"] = _decimal_lines(row.lse_decimal)
    conv = case.conventions
    as_ints = lambda x: None if x is None else [int(i) for i in x]
    eps = fmt.info.epsilon
    files["case.json"] = _json_bytes({
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "spec_version": SPEC_VERSION,
        "op": row.op, "fmt": str(fmt), "family": case.family, "name": case.name, "params": case.params,
        "layout": "paged" if case.paged is not None else "dense",
        "conventions": {"scale": float(conv["scale"]), "scale_hex": float(conv["scale"]).hex(),
                        "causal": bool(conv.get("causal", False)),
                        "causal_alignment": conv.get("causal_alignment", "bottom_right"),
                        "window": None if conv.get("window") is None else list(conv["window"]),
                        "softcap": conv.get("softcap"), "kv_seqlens": as_ints(conv.get("kv_seqlens")),
                        "q_seqlens": as_ints(conv.get("q_seqlens")),
                        "mask": "mask.npy" if conv.get("mask") is not None else None,
                        "head_dim_v": None if case.paged is None else int(case.paged.head_dim_v)},
        "arrays": arrays,
        "gold": {"source": expected.gold_source, "decimal_files": ["out.oracle.txt", "lse.oracle.txt"]},
        "tolerance": {"rule": "flash", "k": expected.flash_rule.k, "floor_ulps": expected.flash_rule.floor_ulps,
                      "scope": expected.flash_rule.scope, "references": list(expected.references),
                      "out_tol": "out_tol.npy", "lse_k": expected.lse_rule.k, "lse_tol": "lse_tol.npy",
                      "lse_format": "fp32", "v_max": expected.v_max,
                      "flashmla_out": {"abs_tol": eps * expected.v_max, "rel_tol": 2.01 * eps,
                                       "cos_diff_tol": eps * eps / 12},
                      "flashmla_lse": {"abs_tol": 1e-6, "rel_tol": 8.01 / 65536, "cos_diff_tol": 1e-7}},
    })
    return files


def _manifest(files: dict[str, bytes], level: int | None) -> bytes:
    listing = {path: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
               for path, data in sorted(files.items())}
    cases = sorted({path.rsplit("/", 1)[0] for path in files})
    body = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "spec_version": SPEC_VERSION, "level": level,
            "path_grammar": "<op>/<fmt>/<family>/<case_id>/<file>", "cases": cases, "files": listing}
    return _json_bytes({**body, "set_sha256": _set_digest(body)})


def _set_digest(body: dict) -> str:
    """Return the SHA-256 of the manifest's canonical form (module docstring) without its own ``set_sha256``.

    The form is that of the manifest's ``format_version`` when readable, else the current one.
    """
    rest = {key: value for key, value in body.items() if key != "set_sha256"}
    version = body.get("format_version")
    separators = SEPARATORS[version] if type(version) is int and version in SEPARATORS else SEPARATORS[FORMAT_VERSION]
    canonical = json.dumps(rest, sort_keys=True, separators=separators, ensure_ascii=False)
    # surrogatepass: a lone surrogate (only a forged manifest holds one) gets a digest that cannot match, not a crash
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


# ----------------------------------------------------------------------------------------------
# The atomic swap (module docstring, "Atomic export")
# ----------------------------------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_EXCHANGE_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}  # old kernel, filesystem without it


def _load_renameat2():
    """Return glibc's renameat2 (>= 2.28) through ctypes, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Exchange the directories ``a`` and ``b`` in one atomic step; return False where the system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _siblings(root: Path, kind: str) -> list[Path]:
    """Return the hidden siblings ``.NAME.<kind>-*`` of ``root`` (staging ``tmp``, aside ``old``), sorted."""
    prefix = f".{root.name}.{kind}-"
    return sorted(p for p in root.parent.iterdir() if p.name.startswith(prefix)) if root.parent.is_dir() else []


@contextlib.contextmanager
def _writers_lock(root: Path):
    """Hold an exclusive flock on ``root``'s parent directory (released when the process dies, even by SIGKILL)."""
    import fcntl  # POSIX: here, not at the top, so that the loader still imports where there is none
    fd = os.open(root.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _restore_aside(root: Path) -> None:
    """Rename a set left aside by a writer killed between the two renames back to ``root`` (caller holds the lock)."""
    asides = [p for p in _siblings(root, "old") if p.is_dir() and not p.is_symlink()]
    if asides and not os.path.lexists(root):
        os.rename(asides[0], root)


def _remove(path: Path) -> None:
    """Remove a leftover sibling: a directory with its contents, anything else (a link, a file) by itself."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _staging_name(root: Path) -> Path:
    """Return a fresh hidden sibling name ``.NAME.tmp-<pid>-<random>`` (never restored, removed when left over)."""
    return root.parent / f".{root.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def _discard(aside: Path, root: Path) -> None:
    """Delete the set moved aside from ``root``, first renamed to a staging name (never restored half-deleted)."""
    trash = _staging_name(root)
    os.rename(aside, trash)
    shutil.rmtree(trash)


def _absolute(root: "str | Path") -> Path:
    """Return ``root`` as an absolute, normalised path with a name (its siblings live next to it)."""
    path = Path(os.path.abspath(root))
    require(path.name != "", VectorFileError, f"{root}: expected a directory with a name to hold a vector set")
    return path


def require_export_target(root: "str | Path") -> Path:
    """Return ``root`` as an absolute path after checking that an export may replace it.

    Raises VectorFileError unless ``root`` is absent, an empty directory, or a vector set (it
    has MANIFEST.json), in a directory this process may write (or may create); a symbolic link
    is refused. Cheap: call it before computing any case.
    """
    root = _absolute(root)
    existing = next(p for p in root.parents if os.path.lexists(p))
    require(existing.is_dir() and os.access(existing, os.W_OK | os.X_OK), VectorFileError,
            f"{root}: expected a location this process may write, but {existing} is "
            + ("not writable" if existing.is_dir() else "not a directory"))
    require(not root.is_symlink(), VectorFileError, f"{root}: expected a directory, got a symbolic link")
    if root.exists():
        require(root.is_dir() and ((root / "MANIFEST.json").is_file() or not any(root.iterdir())), VectorFileError,
                f"{root}: expected a vector set (with MANIFEST.json) or an empty directory to replace, got "
                + ("other files" if root.is_dir() else "a file"))
    return root


def write_vector_set(root: "str | Path", rows: Iterable[VectorRow], *, level: int | None = None) -> str:
    """Write a vector set atomically at ``root``; return its ``set_sha256``.

    ``root`` is checked (:func:`require_export_target`) before ``rows`` is read; the set is
    written into a hidden sibling and swapped into place as the module docstring says.
    """
    root = require_export_target(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _writers_lock(root):
        _restore_aside(root)
        for leftover in _siblings(root, "tmp") + _siblings(root, "old"):  # of killed writers: the lock is ours
            _remove(leftover)
        require_export_target(root)  # again, now that no other writer can change it
        files: dict[str, bytes] = {}
        for row in rows:
            base = case_path(row)
            for name, data in case_files(row).items():
                files[f"{base}/{name}"] = data
        manifest = _manifest(files, level)
        staging = _staging_name(root)
        os.mkdir(staging)  # the umask's mode, as for any directory
        try:
            for path, data in files.items():
                target = staging / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            (staging / "MANIFEST.json").write_bytes(manifest)
            if not root.exists():
                os.rename(staging, root)  # a first export: one rename
            elif _exchange(staging, root):
                shutil.rmtree(staging)  # the staging name now holds the old set
            else:
                aside = root.parent / f".{root.name}.old-{os.getpid()}"
                os.rename(root, aside)
                os.rename(staging, root)
                _discard(aside, root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            _restore_aside(root)  # an error between the two renames: the old set goes back
            raise
    return json.loads(manifest)["set_sha256"]


def export_rows(level: int = 1, *, ops: Iterable[str] | None = None,
                formats: Iterable[str] | None = None) -> list[VectorRow]:
    """Return the rows of the vector set of ``level``: the case table plus the AMLA module's named cases.

    ``ops`` and ``formats`` select a subset (default: everything).
    """
    ops = None if ops is None else set(ops)
    formats = None if formats is None else {str(get_format(f)) for f in formats}
    keep = lambda op, fmt: (ops is None or op in ops) and (formats is None or str(get_format(fmt)) in formats)
    rows = [oracle_row(op, build_case(family, fmt, params)) for op, fmt, family, params in vector_params(level)
            if keep(op, fmt)]
    return rows + (amla_rows("quick" if level == 1 else "full") if keep("amla", "bf16") else [])


def amla_rows(level: str) -> list[VectorRow]:
    """Return reference/amla_cases.py's named cases (the zero hole among them) as amla-op rows."""
    from .amla_cases import case_table
    rows = []
    for amla in case_table(level):
        b, s = amla.kv_cache.shape[:2]
        paged = PagedInputs(q=amla.q, k_cache=amla.kv_cache, block_table=np.arange(b, dtype=np.int32)[:, None],
                            cache_seqlens=np.asarray(amla.cache_seqlens, dtype=np.int32),
                            head_dim_v=amla.config.kv_lora_rank)  # a dense cache is one page per sequence
        params = {"seed": int(amla.seed), "name": amla.name, "amla_block_k": int(amla.block_k)}
        case = paged_case("amla_named", params, Format.BF16, paged, scale=float(amla.scale), causal=bool(amla.causal))
        cann = np.swapaxes(amla_from_problem(case.problem(), "cann", POLICY_AMLA, amla.block_k)[0], 1, 2)
        rows.append(oracle_row("amla", case, {"out_amla_cann": (cann, Format.BF16)}))
    return rows


# ----------------------------------------------------------------------------------------------
# Reading and checking
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VectorCase:
    """One loaded case: the op, the rebuilt Case, and what it is judged against."""

    path: str
    op: str
    case: Case
    expected: Expected


_NAME = re.compile(r"[A-Za-z0-9_.+-]+")  # one component of a path inside a set
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _inside(root: Path, rel: object, what: str, parts: int | None = None) -> Path:
    """Return root / rel after checking that ``rel`` is a relative '/'-path of plain names (no '..', not absolute)."""
    names = rel.split("/") if isinstance(rel, str) else []
    require(names and all(_NAME.fullmatch(n) and n not in (".", "..") for n in names)
            and (parts is None or len(names) == parts), VectorFileError,
            f"{root}/MANIFEST.json: expected {what} as a path of plain names inside the set, got {rel!r}")
    return root.joinpath(*names)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VectorFileError(f"{path}: expected a readable JSON file, got {type(exc).__name__}: {exc}") from exc


def verify_vector_set(root: "str | Path", *, digest: str | None = None) -> dict:
    """Return the manifest after checking every file's presence, size and SHA-256, and that none is extra.

    ``digest`` pins the expected ``set_sha256``. Raises VectorFileError naming the first problem.
    Where ``root`` is missing but a writer killed mid-swap left the old set aside
    (``.NAME.old-*``), that set is first renamed back (module docstring, "Atomic export").
    """
    root = Path(root)
    asides = [] if os.path.lexists(root) else _siblings(_absolute(root), "old")
    if asides:
        try:
            with _writers_lock(_absolute(root)):
                _restore_aside(_absolute(root))
        except OSError as exc:
            raise VectorFileError(f"{root}: expected a vector set, got none; a writer killed mid-export left the old "
                                  f"set at {asides[0]}, which could not be renamed back: {exc}") from exc
    require((root / "MANIFEST.json").is_file(), VectorFileError, f"{root}: expected a vector set with MANIFEST.json")
    manifest = _read_json(root / "MANIFEST.json")
    require(isinstance(manifest, dict), VectorFileError, f"{root}/MANIFEST.json: expected a JSON object")
    version = manifest.get("format_version")
    require(manifest.get("format") == FORMAT_NAME and type(version) is int and version in SEPARATORS,
            VectorFileError, f"{root}/MANIFEST.json: expected format {FORMAT_NAME} version "
                             f"{' or '.join(map(str, SEPARATORS))}, got {manifest.get('format')!r} version {version!r}")
    listing = manifest.get("files")
    require(isinstance(listing, dict) and _set_digest(manifest) == manifest.get("set_sha256"), VectorFileError,
            f"{root}/MANIFEST.json: expected set_sha256 to match the manifest (it was altered)")
    require(digest is None or digest == manifest["set_sha256"], VectorFileError,
            f"{root}: expected set_sha256 {digest}, got {manifest['set_sha256']}")
    for rel, entry in listing.items():
        _inside(root, rel, "a file")
        require(isinstance(entry, dict) and type(entry.get("bytes")) is int and entry["bytes"] >= 0
                and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"]), VectorFileError,
                f"{root}/MANIFEST.json: expected {{'bytes': int, 'sha256': hex}} for {rel!r}, got {entry!r}")
    cases = manifest.get("cases")
    require(isinstance(cases, list), VectorFileError, f"{root}/MANIFEST.json: expected a list of cases")
    for case in cases:
        _inside(root, case, "a case", parts=4)
        require(f"{case}/case.json" in listing, VectorFileError, f"{root}: expected {case}/case.json in the manifest")
    links = [p for p in root.rglob("*") if p.is_symlink()]
    require(not links, VectorFileError, f"{root}: expected plain files, got symbolic links {links[:3]}")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    extra = sorted(present - set(listing))
    require(not extra, VectorFileError, f"{root}: expected only the manifest's files, got extra {extra[:3]}")
    for rel, entry in sorted(listing.items()):
        path = root / rel
        require(path.is_file(), VectorFileError, f"{path}: expected a file listed in the manifest, got nothing")
        data = path.read_bytes()
        require(len(data) == entry["bytes"], VectorFileError,
                f"{path}: expected {entry['bytes']} bytes, got {len(data)} (truncated or extended)")
        require(hashlib.sha256(data).hexdigest() == entry["sha256"], VectorFileError,
                f"{path}: expected SHA-256 {entry['sha256']}, got {hashlib.sha256(data).hexdigest()} (corrupted)")
    return manifest


def _load_array(directory: Path, spec: dict, name: str) -> np.ndarray:
    """Return the array after checking its header against ``spec`` (nothing is read or allocated before)."""
    require(isinstance(spec.get("file"), str) and _NAME.fullmatch(spec["file"]), VectorFileError,
            f"{directory}/case.json: expected a plain file name for {name}, got {spec.get('file')!r}")
    path = directory / spec["file"]
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(fh)
            header_end = fh.tell()
        require(dtype.name == spec["dtype"] and list(shape) == spec["shape"]
                and header_end + math.prod(shape) * dtype.itemsize == path.stat().st_size, VectorFileError,
                f"{path}: expected {name} of dtype {spec['dtype']} and shape {spec['shape']}, got {dtype} {shape}")
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, TypeError, SyntaxError, tokenize.TokenError, RecursionError) as exc:  # header text
        raise VectorFileError(f"{path}: expected a .npy array, got {type(exc).__name__}: {exc}") from exc


def load_case(directory: "str | Path") -> VectorCase:
    """Return one case directory as a VectorCase (inputs from their bits, tolerances as stored).

    Raises VectorFileError for a case.json that lacks a documented field or holds a value of
    the wrong kind (the checksums cannot tell: a re-signed set is internally consistent).
    """
    directory = Path(directory)
    body = _read_json(directory / "case.json")
    try:
        require(isinstance(body, dict) and body.get("layout") in ("dense", "paged"), VectorFileError,
                f"{directory}/case.json: expected an object with layout 'dense' or 'paged'")
        return _case(directory, body)
    except VectorFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, AttnSpecError) as exc:
        raise VectorFileError(f"{directory}/case.json: expected the documented fields, got {type(exc).__name__}: "
                              f"{exc}") from exc


def _case(directory: Path, body: dict) -> VectorCase:
    fmt = get_format(body["fmt"])
    arrays = {name: _load_array(directory, spec, name) for name, spec in body["arrays"].items()}
    value = lambda name, f=fmt: from_bits(arrays[name], f)
    conv = body["conventions"]
    scale = float.fromhex(conv["scale_hex"])
    if body["layout"] == "paged":
        paged = PagedInputs(q=value("q"), k_cache=value("k_cache"), block_table=arrays["block_table"].astype(np.int32),
                            cache_seqlens=arrays["cache_seqlens"].astype(np.int32), head_dim_v=int(conv["head_dim_v"]))
        case = paged_case(body["family"], body["params"], fmt, paged, scale=scale, causal=conv["causal"])
    else:
        conventions = {"scale": scale, "causal": conv["causal"], "causal_alignment": conv["causal_alignment"]}
        for key in ("kv_seqlens", "q_seqlens"):
            if conv[key] is not None:
                conventions[key] = np.asarray(conv[key], dtype=np.int64)
        if conv["window"] is not None:
            conventions["window"] = tuple(conv["window"])
        if conv["softcap"] is not None:
            conventions["softcap"] = float(conv["softcap"])
        if conv["mask"] is not None:
            conventions["mask"] = arrays["mask"].astype(bool)
        case = Case(body["family"], body["params"], fmt, value("q"), value("k"), value("v"), conventions)
    tol = body["tolerance"]
    out = from_bits(arrays["out_f64"], _F64)
    lse = from_bits(arrays["lse_f64"], _F64)
    expected = Expected(fmt=fmt, out=out, lse=lse, out_bound=np.zeros_like(out), lse_bound=np.zeros_like(lse),
                        out_tol=arrays["out_tol"], lse_err_bound=np.zeros_like(lse), v_max=float(tol["v_max"]),
                        gold_source=body["gold"]["source"], references=tuple(tol["references"]),
                        flash_rule=FlashRule(k=tol["k"], floor_ulps=tol["floor_ulps"], scope=tol["scope"]),
                        lse_rule=LseRule(k=tol["lse_k"]), lse_tol=arrays["lse_tol"])
    return VectorCase(directory.as_posix(), body["op"], case, expected)


def load_vector_set(root: "str | Path", *, digest: str | None = None) -> list[VectorCase]:
    """Return every case of a verified vector set (see :func:`verify_vector_set`)."""
    root = Path(root)
    manifest = verify_vector_set(root, digest=digest)
    return [load_case(root / rel) for rel in manifest["cases"]]


def check_vectors(root: "str | Path", impl: Any, *, op: str | None = None, rule: str = "flash",
                  digest: str | None = None) -> list[CheckReport]:
    """Return one report per op: ``impl`` judged on the set's cases of that op (all ops its signature fits)."""
    cases = load_vector_set(root, digest=digest)
    ops = sorted({c.op for c in cases}) if op is None else [op]
    reports = []
    for name in ops:
        kernel = resolve_kernel(impl, name)
        chosen = [c for c in cases if c.op == name and c.case.fmt in kernel.formats
                  and ((c.case.paged is not None) == (kernel.signature == "mla"))]
        if not chosen:
            continue
        results = [evaluate(kernel, c.case, name, rule=rule, expected=c.expected) for c in chosen]
        formats = ",".join(sorted({str(c.case.fmt) for c in chosen}))
        reports.append(CheckReport(impl if isinstance(impl, str) else kernel.name, name, formats, rule, "vectors", 0,
                                   len(results), results))
    return reports


@register_check("conformance.vectors_roundtrip", "vector")
def vectors_roundtrip() -> Outcome:
    """Two exports of a small set are byte-identical, load back, pass the spec and reject a flipped byte."""
    from .mutants import CORRECT
    rows = [oracle_row(op, build_case(family, fmt, params)) for op, fmt, family, params in vector_params(1)[:2]]
    with tempfile.TemporaryDirectory() as tmp:
        first, second = Path(tmp) / "a", Path(tmp) / "b"
        digests = write_vector_set(first, rows), write_vector_set(second, rows)
        identical = all((first / p.relative_to(second)).read_bytes() == p.read_bytes()
                        for p in second.rglob("*") if p.is_file())
        reports = check_vectors(first, CORRECT["spec_flash"].kernel, op="attention")
        victim = next(p for p in sorted(first.rglob("*.npy")))
        data = bytearray(victim.read_bytes())
        data[-1] ^= 1
        victim.write_bytes(bytes(data))
        try:
            verify_vector_set(first)
            rejected = False
        except VectorFileError:
            rejected = True
    ok = digests[0] == digests[1] and identical and all(r.ok for r in reports) and rejected
    return Outcome.from_bool(ok, f"identical={identical}, spec passes={all(r.ok for r in reports)}, "
                                 f"tampered byte rejected={rejected}", {"set_sha256": digests[0]})
