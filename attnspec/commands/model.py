"""``attnspec model NAME``: hardware and serving performance models (e.g. ``pipeline``, ``serving``)."""

from attnspec.commands._tools import register_group


def register(sub) -> None:
    register_group(sub, "model", "run a hardware or performance model")
