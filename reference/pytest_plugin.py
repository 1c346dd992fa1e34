"""pytest plugin of the conformance kit (entry point ``pytest11: attnspec``).

Command line, from any project where attnspec is installed::

    pytest --attnspec-impl mypkg.kernels:mla_decode --attnspec-op mla [--attnspec-dtype bf16]
           [--attnspec-examples 25] [--attnspec-seed 0] [--attnspec-rule flash]
           [--attnspec-vectors DIR]

adds one test item per (kernel, dtype): ``attnspec[mypkg.kernels:mla_decode-mla-bf16]``,
which runs :func:`reference.harness.check` and fails with the worst case and a reproducer;
with ``--attnspec-vectors DIR`` also one item per op of that vector set. Without
``--attnspec-dtype`` every format the kernel declares (and the op allows) is checked.

Fixture, for a project's own tests::

    def test_my_kernel(attnspec):
        attnspec.check(my_kernel, op="attention", dtype="bf16")   # pytest.fail with the report

``attnspec.cases(op, kernel, dtype)`` is the hypothesis strategy of the cases, for
property tests of one's own. Imports of the harness are deferred to the first use, so the
plugin costs nothing in a run that does not use it.
"""

from __future__ import annotations

from typing import Any

try:
    import pytest
except ImportError:  # ``attnspec verify`` imports every reference module; only a pytest run needs this one
    pytest = None

OPS = ("attention", "flash", "mla", "amla", "pasa")
DTYPES = ("fp32", "bf16", "fp16")


def pytest_addoption(parser) -> None:
    group = parser.getgroup("attnspec", "attnspec conformance kit")
    group.addoption("--attnspec-impl", action="append", default=[], metavar="MODULE:FUNCTION",
                    help="check this kernel against attnspec (repeatable)")
    group.addoption("--attnspec-op", default="attention", choices=OPS, help="the op and calling signature")
    group.addoption("--attnspec-dtype", action="append", default=[], choices=DTYPES,
                    help="input format (repeatable; default: every format the kernel declares)")
    group.addoption("--attnspec-examples", type=int, default=25, help="random cases per dtype after the edge cases")
    group.addoption("--attnspec-seed", type=int, default=0, help="hypothesis seed of the random cases")
    group.addoption("--attnspec-rule", default="flash", choices=("flash", "flashmla"), help="tolerance rule")
    group.addoption("--attnspec-vectors", default=None, metavar="DIR", help="also run the kernel on this vector set")


def _formats(impl: str, op: str) -> list[str]:
    """Return the formats to check: those the kernel declares that the op allows."""
    from attnspec.reference.harness import DEFAULT_FORMATS, OP_FORMATS, resolve_kernel
    kernel = resolve_kernel(impl, op)
    allowed = OP_FORMATS.get(op, DEFAULT_FORMATS)
    return [str(f) for f in kernel.formats if f in allowed]


def pytest_collection_modifyitems(session, config, items) -> None:
    op = config.getoption("attnspec_op")
    for impl in config.getoption("attnspec_impl"):
        for dtype in config.getoption("attnspec_dtype") or _formats(impl, op):
            items.append(AttnspecItem.from_parent(session, name=f"attnspec[{impl}-{op}-{dtype}]", impl=impl, op=op,
                                                  dtype=dtype, vectors=None))
        vectors = config.getoption("attnspec_vectors")
        if vectors:
            items.append(AttnspecItem.from_parent(session, name=f"attnspec[{impl}-{op}-vectors]", impl=impl, op=op,
                                                  dtype=None, vectors=vectors))


if pytest is not None:
    class AttnspecFailure(Exception):
        """A failed conformance check; its message is the report's summary."""


    class AttnspecItem(pytest.Item):
        """One conformance check of one kernel in one format (or on one vector set)."""

        def __init__(self, *, impl: str, op: str, dtype: str | None, vectors: str | None, **kwargs) -> None:
            super().__init__(**kwargs)
            self.impl, self.op, self.dtype, self.vectors = impl, op, dtype, vectors

        def runtest(self) -> None:
            config = self.config
            if self.vectors is not None:
                from attnspec.reference.vectors import check_vectors
                reports = check_vectors(self.vectors, self.impl, op=self.op, rule=config.getoption("attnspec_rule"))
                if not reports:
                    raise AttnspecFailure(f"{self.vectors}: no case fits {self.impl} for op {self.op}")
            else:
                from attnspec.reference.harness import check
                reports = [check(self.impl, op=self.op, dtype=self.dtype, examples=config.getoption("attnspec_examples"),
                                 seed=config.getoption("attnspec_seed"), rule=config.getoption("attnspec_rule"))]
            failed = [r for r in reports if not r.ok]
            if failed:
                raise AttnspecFailure("\n".join(r.summary() for r in failed))

        def repr_failure(self, excinfo, style=None) -> str:
            if isinstance(excinfo.value, AttnspecFailure):
                return str(excinfo.value)
            return super().repr_failure(excinfo)

        def reportinfo(self) -> tuple[Any, int | None, str]:
            return self.path, None, self.name


    class AttnspecFixture:
        """The ``attnspec`` fixture: the harness with the session's seed and example count."""

        def __init__(self, config) -> None:
            self._examples = config.getoption("attnspec_examples")
            self._seed = config.getoption("attnspec_seed")

        def check(self, impl: Any, *, op: str = "attention", dtype: str = "fp32", examples: int | None = None,
                  seed: int | None = None, **options):
            """Return the passing report of ``impl``; call pytest.fail with the summary when it fails."""
            from attnspec.reference.harness import check
            report = check(impl, op=op, dtype=dtype, examples=self._examples if examples is None else examples,
                           seed=self._seed if seed is None else seed, **options)
            if not report.ok:
                pytest.fail(report.summary(), pytrace=False)
            return report

        def cases(self, op: str, impl: Any, dtype: str = "fp32"):
            """Return the hypothesis strategy of ``op``'s cases that ``impl`` can be given."""
            from attnspec.reference.cases import conformance_cases
            from attnspec.reference.harness import resolve_kernel
            return conformance_cases(op, resolve_kernel(impl, op), dtype)


    @pytest.fixture
    def attnspec(request) -> AttnspecFixture:
        """Return the conformance kit's fixture (see the module docstring)."""
        return AttnspecFixture(request.config)
