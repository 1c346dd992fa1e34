"""Optional matplotlib support shared by the model tools: a clear error without it, atomic PNG writes."""

from __future__ import annotations

import os
import tempfile

from attnspec.spec.errors import ConventionError, ImplementationError, require

PLOT_HINT = "install the optional extra: pip install 'attnspec[plot]' (matplotlib >= 3.7)"


def pyplot():
    """Return matplotlib.pyplot on the non-interactive Agg backend, or raise ImplementationError saying how to get it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImplementationError(f"--plot: expected matplotlib to be installed, got none; {PLOT_HINT}") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path: str) -> None:
    """Write ``fig`` to ``path`` as PNG atomically (temporary file in the same folder, then os.replace)."""
    require(path.lower().endswith(".png"), ConventionError, f"--plot: expected a .png path, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
