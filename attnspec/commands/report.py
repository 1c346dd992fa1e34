"""``attnspec report NAME``: accuracy reports (e.g. ``amla``, ``pasa-grid``)."""

from attnspec.commands._tools import register_group


def register(sub) -> None:
    register_group(sub, "report", "run an accuracy report")
