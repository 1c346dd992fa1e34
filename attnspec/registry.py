"""The registry of checks that ``attnspec verify`` runs.

A check is a zero-argument function registered with :func:`check`. It returns an
:class:`Outcome` (or any object with an ``outcome()`` method, such as a proof result).
Checks live next to what they check, in ``attnspec.proofs``, ``attnspec.reference`` and
``attnspec.hw_model``; :func:`all_checks` imports every module of those packages, so adding
a check is adding a decorated function, with no central list to edit.

Status semantics: ``pass``; ``fail`` (the claim is false, or the check raised); ``unknown``
(a solver gave up or timed out). Only ``pass`` passes.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Status = Literal["pass", "fail", "unknown"]
KINDS = ("proof", "oracle", "property", "model", "vector", "rule")
CHECK_PACKAGES = ("attnspec.proofs", "attnspec.reference", "attnspec.hw_model")


@dataclass(frozen=True)
class Outcome:
    """What one check found: a status, a one-line detail, and JSON-able data."""

    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_bool(cls, ok: bool, detail: str, data: dict[str, Any] | None = None) -> "Outcome":
        return cls("pass" if ok else "fail", detail, data or {})


@dataclass(frozen=True)
class Check:
    name: str
    kind: str
    quick: bool
    run: Callable[[], Any]
    module: str


@dataclass(frozen=True)
class Report:
    name: str
    kind: str
    status: Status
    seconds: float
    detail: str
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "status": self.status, "seconds": round(self.seconds, 4),
                "detail": self.detail, "data": self.data}


_REGISTRY: dict[str, Check] = {}


def check(name: str, kind: str, *, quick: bool = True) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register the decorated zero-argument function as the check ``name`` of ``kind``.

    ``quick=True`` puts it in ``attnspec verify --quick`` (the whole quick set must finish in
    under 30 s on 2 cores).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")

    def decorate(fn: Callable[[], Any]) -> Callable[[], Any]:
        existing = _REGISTRY.get(name)
        if existing is not None and (existing.module, existing.run.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"check {name!r} is registered twice ({existing.module} and {fn.__module__})")
        _REGISTRY[name] = Check(name=name, kind=kind, quick=quick, run=fn, module=fn.__module__)
        return fn

    return decorate


def load_all() -> None:
    """Import every module of the packages that hold checks."""
    for package_name in CHECK_PACKAGES:
        package = importlib.import_module(package_name)
        for info in sorted(pkgutil.walk_packages(package.__path__, package_name + "."), key=lambda i: i.name):
            if info.name.rsplit(".", 1)[-1].startswith("_") and not info.ispkg:
                continue
            importlib.import_module(info.name)


def all_checks(*, quick: bool = False, kinds: tuple[str, ...] | None = None) -> list[Check]:
    """Return the registered checks sorted by name, optionally only quick ones or some kinds."""
    load_all()
    checks = sorted(_REGISTRY.values(), key=lambda c: c.name)
    if quick:
        checks = [c for c in checks if c.quick]
    if kinds is not None:
        checks = [c for c in checks if c.kind in kinds]
    return checks


def run_check(c: Check) -> Report:
    """Run one check; an exception is a ``fail`` whose detail names it."""
    start = time.perf_counter()
    try:
        result = c.run()
        outcome = result.outcome() if hasattr(result, "outcome") else result
        if not isinstance(outcome, Outcome):
            raise TypeError(f"check {c.name} returned {type(result).__name__}, expected an Outcome")
    except Exception as exc:  # a crashing check is a failing check, reported with its cause
        last = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = Outcome("fail", f"raised {type(exc).__name__}: {exc} ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})")
    return Report(c.name, c.kind, outcome.status, time.perf_counter() - start, outcome.detail, dict(outcome.data))


# ----------------------------------------------------------------------------------------------
# Named tools behind "attnspec report NAME ..." and "attnspec model NAME ..."
# ----------------------------------------------------------------------------------------------

_TOOLS: dict[str, dict[str, tuple[str, Callable[[list[str]], int]]]] = {"report": {}, "model": {}}


def tool(group: str, name: str, help: str) -> Callable[[Callable[[list[str]], int]], Callable[[list[str]], int]]:
    """Register ``main(argv) -> exit code`` as ``attnspec <group> <name> [argv...]``.

    ``group`` is "report" or "model". The function parses its own arguments, so each tool
    keeps its options next to its code.
    """
    if group not in _TOOLS:
        raise ValueError(f"group: expected one of {sorted(_TOOLS)}, got {group!r}")

    def decorate(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        _TOOLS[group][name] = (help, fn)
        return fn

    return decorate


def tools(group: str) -> dict[str, tuple[str, Callable[[list[str]], int]]]:
    """Return {name: (help, main)} of the registered tools of ``group``."""
    load_all()
    return dict(sorted(_TOOLS[group].items()))


def exit_code(reports: list[Report]) -> int:
    """Return 0 when all passed, 1 when any failed, 3 when none failed but some were unknown."""
    if any(r.status == "fail" for r in reports):
        return 1
    if any(r.status == "unknown" for r in reports):
        return 3
    return 0
