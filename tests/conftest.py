"""Hypothesis profiles for tests/test_fuzz.py, and the largest errors printed after the run (tests/_report.py).

"ci" (the default): 1000 examples per property test, derandomized (the same examples on every run, so a
CI failure reproduces), no example database, no deadline.  "dev" (``HYPOTHESIS_PROFILE=dev``): 100
random examples per test, with the database, for quick local runs.
"""

import os

import _report

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the "test" extra; without it only test_fuzz.py is skipped
    pass
else:
    settings.register_profile("ci", max_examples=1000, deadline=None, derandomize=True, database=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", max_examples=100, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter):
    """Each test module's largest errors against its bounds (tests/_report.py), after the summary."""
    for title, lines in _report.SECTIONS.items():
        lines = lines()
        if lines:
            terminalreporter.write_sep("-", title)
            for line in lines:
                terminalreporter.write_line(line)
