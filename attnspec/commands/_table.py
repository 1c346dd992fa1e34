"""Shared printing of check reports, as a table or as the documented JSON object."""

from __future__ import annotations

import json
import sys

from attnspec.registry import Report


def print_reports(reports: list[Report], as_json: bool, stream=None) -> None:
    """Print one row per report (name, kind, status, seconds), or the JSON summary."""
    stream = stream or sys.stdout
    passed = sum(r.status == "pass" for r in reports)
    if as_json:
        body = {"checks": [r.as_json() for r in reports], "passed": passed, "failed": len(reports) - passed,
                "unknown": sum(r.status == "unknown" for r in reports)}
        stream.write(json.dumps(body, indent=1, sort_keys=False) + "\n")
        return
    width = max([len(r.name) for r in reports] + [4])
    stream.write(f"{'name':<{width}}  {'kind':<8}  {'status':<7}  {'seconds':>8}\n")
    for r in reports:
        stream.write(f"{r.name:<{width}}  {r.kind:<8}  {r.status:<7}  {r.seconds:>8.3f}\n")
        if r.status != "pass":
            stream.write(f"{'':<{width}}  -> {r.detail}\n")
    stream.write(f"\n{passed}/{len(reports)} passed, {len(reports) - passed} not passed\n")
