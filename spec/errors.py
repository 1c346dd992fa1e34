"""The small hierarchy of errors that attnspec raises on bad input.

Every check on user input goes through :func:`require`, never a bare ``assert`` (which
``python -O`` strips). Each message names the argument, what was expected and what was
given, so that a failing kernel test points at the cause without a debugger.

All classes derive from :class:`AttnSpecError`; each also derives from the builtin
exception a Python user would expect (``ValueError`` for a bad value, ``TypeError``
for a bad dtype), so existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations


class AttnSpecError(Exception):
    """Base class of every error attnspec raises on purpose."""


class ShapeError(AttnSpecError, ValueError):
    """An array has the wrong rank, or its dimensions disagree with another argument."""


class FormatError(AttnSpecError, TypeError):
    """An unsupported numeric format or array dtype, or a value the format cannot hold."""


class DomainError(AttnSpecError, ValueError):
    """A value outside the domain the convention allows: NaN/Inf where forbidden, a zero scale."""


class MaskError(AttnSpecError, ValueError):
    """A mask of the wrong shape or dtype, or masking arguments that contradict each other."""


class ConventionError(AttnSpecError, ValueError):
    """An unknown convention name, e.g. a causal alignment that is neither 'bottom_right' nor 'top_left'."""


class VectorFileError(AttnSpecError, ValueError):
    """A test-vector file or set that is missing, truncated, corrupted or tampered with."""


class ImplementationError(AttnSpecError, RuntimeError):
    """A user kernel that cannot be loaded, or that raised or returned something unusable."""


def require(condition: object, error: type[AttnSpecError], message: str) -> None:
    """Raise ``error(message)`` unless ``condition`` holds.

    ``message`` should read "<argument>: expected <what>, got <what>".
    """
    if not condition:
        raise error(message)
