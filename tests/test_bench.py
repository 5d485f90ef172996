"""The benchmark's CPU accounting, checked against the kernel's other accounts of the same time."""

from __future__ import annotations

import os
import time

from bench import scale_bench


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_process_cpu_time_is_what_times_reports():
    _burn(0.3)
    times = os.times()
    ticks = scale_bench.process_ticks(os.getpid())
    assert abs(ticks / scale_bench.CLOCK_TICK - (times.user + times.system)) <= 0.05
    assert scale_bench.process_ticks(2 ** 22 + 1) == 0  # above pid_max: no such process


def test_the_machine_cpu_time_is_its_uptime_on_every_core():
    every, idle, stolen = scale_bench.machine_ticks()
    with open("/proc/uptime") as fh:
        uptime = float(fh.read().split()[0])
    assert abs(every / scale_bench.CLOCK_TICK / (uptime * os.cpu_count()) - 1) < 0.05
    assert 0 <= stolen < every and 0 < idle < every


def test_the_load_between_two_readings():
    # 200 ticks in all: 50 idle or waiting, 30 stolen, so 120 of 200 busy
    busy, stolen = scale_bench.cpu_load((1000, 400, 100), (1200, 450, 130))
    assert busy == scale_bench.CORES * 0.6 and stolen == 0.15
    assert scale_bench.cpu_load((5, 1, 0), (5, 1, 0)) == (0.0, 0.0)


def test_the_sampler_gives_each_stage_the_cpu_spent_in_it():
    sampler = scale_bench.Sampler(os.getpid())
    sampler.stage = "first"
    start = os.times()
    _burn(0.4)
    sampler._tick()
    middle = os.times()
    sampler.stage = "second"
    _burn(0.2)
    sampler._tick()
    end = os.times()
    for stage, (a, b) in {"first": (start, middle), "second": (middle, end)}.items():
        python, jvm, every, stolen = sampler.cpu[stage]
        spent = (b.user + b.system) - (a.user + a.system)
        assert abs(python / scale_bench.CLOCK_TICK - spent) <= 0.05, stage
        assert every + 2 >= python + jvm and 0 <= stolen <= every  # a tick either way
