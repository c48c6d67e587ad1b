"""The test run's settings: OpenMP's wait policy, the hypothesis profiles of tests/test_fuzz.py, and the largest
errors printed after the run (tests/_report.py).

"ci" (the default): 1000 examples per property test, derandomized (the same examples on every run, so a
CI failure reproduces), no example database, no deadline.  "dev" (``HYPOTHESIS_PROFILE=dev``): 100
random examples per test, with the database, for quick local runs.
"""

import os
import signal

import pytest

# OpenMP threads that wait actively (libgomp's default: spin at every barrier before sleeping) burn the cores that a
# shared machine's other processes need, and are starved by them.  On the 2-core development machine with another
# job running, `pytest -m "not slow"` took 42-70 s with the default and 23 s with passive waits (test_extremes and
# test_native_vs_reference alone: 22 s against 6 s).  Results do not depend on it (only how idle threads wait).
# Set before the core (and its libgomp) is loaded; OMP_WAIT_POLICY=active in the environment tests the default.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import _report  # noqa: E402

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


@pytest.fixture
def ctrl_c():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, whatever the run inherited: a process started
    from a shell's background job without job control (`cmd &` in a script) starts with SIGINT ignored, and then
    a Ctrl-C test could not see one."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def pytest_terminal_summary(terminalreporter):
    """Each test module's largest errors against its bounds (tests/_report.py), after the summary."""
    for title, lines in _report.SECTIONS.items():
        lines = lines()
        if lines:
            terminalreporter.write_sep("-", title)
            for line in lines:
                terminalreporter.write_line(line)
