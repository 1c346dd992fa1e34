"""Test-suite configuration: the hypothesis profile comes from $ATTNSPEC_HYPOTHESIS_PROFILE (ci | thorough)."""

from attnspec.reference.strategies import register_profiles

PROFILE = register_profiles()


def pytest_report_header(config):
    return f"attnspec hypothesis profile: {PROFILE}"
