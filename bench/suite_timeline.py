"""A pytest plugin: the slowest test phases with how busy the machine's cores were meanwhile and
how much of its CPU time the hypervisor stole, so that a slow suite on a busy host can be told
from a slow test.

    .venv/bin/pytest -p bench.suite_timeline [--timeline-top 25]

pytest's ``--durations`` gives the seconds; this adds, per phase (set-up, call, tear-down),
the cores in use (0 to the core count) and the stolen share, both from ``/proc/stat`` read as
the phase starts and ends, and the same for the whole session.
"""

from __future__ import annotations

import time

import pytest

from bench.scale_bench import CORES, cpu_load, machine_ticks

Reading = tuple[int, int, int]
_phases: list[tuple[float, str, str, Reading, Reading]] = []
_session: dict[str, tuple[float, Reading]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--timeline-top", type=int, default=25,
                     help="how many of the slowest test phases to list (bench.suite_timeline)")


def pytest_sessionstart(session: pytest.Session) -> None:
    _session["start"] = (time.monotonic(), machine_ticks())


def _timed(when: str):
    @pytest.hookimpl(wrapper=True)
    def hook(item: pytest.Item):
        started, before = time.monotonic(), machine_ticks()
        try:
            return (yield)
        finally:
            _phases.append((time.monotonic() - started, when, item.nodeid, before,
                            machine_ticks()))
    return hook


pytest_runtest_setup = _timed("setup")
pytest_runtest_call = _timed("call")
pytest_runtest_teardown = _timed("teardown")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    start, first = _session["start"]
    write = terminalreporter.write_line
    terminalreporter.section("timeline: seconds, cores busy, CPU time stolen")
    for seconds, when, nodeid, before, after in sorted(_phases, reverse=True)[
            :config.getoption("timeline_top")]:
        busy, stolen = cpu_load(before, after)
        write(f"{seconds:8.2f}s {when:8s} {busy:4.2f} cores {stolen:4.0%} stolen  {nodeid}")
    busy, stolen = cpu_load(first, machine_ticks())
    write(f"session: {time.monotonic() - start:.0f} s, {busy:.2f} of {CORES} cores "
          f"busy, {stolen:.0%} of the CPU time stolen")
