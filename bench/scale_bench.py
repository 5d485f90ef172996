"""The whole pipeline at growing scales, with per-stage time, rows/s and peak memory, and the
single-process pandas + scikit-learn approach on the same inputs for comparison.

    .venv/bin/python bench/scale_bench.py [--scales uci,1x,10x,50x,1m] [--workdir DIR]
        [--pandas-timeout 900] [--pandas-memory-gb 16] [--pandas-scales 1x,10x]
        [--event-logs] [--out results.md] [--set KEY=VALUE]

``uci`` is the UCI workbook itself (``$CUSTSEG_DATA_DIR/Online_Retail.xlsx``, default
``../shared/data``); ``Nx`` is N times its 541,909 lines of generated data; ``1m`` is one million
customers. Each scale runs ``custseg run`` as its own process on a fresh lakehouse, so the
figures are what a user gets; a sampler reads the resident memory of the driver's Python process
and of its JVM (in local mode the driver and the executor share that JVM) twice a second and
keeps the peak of each stage, with the CPU seconds each used and the share of the machine's CPU
time the hypervisor stole (on a virtual machine the same code's times vary with it). Ratios
compare each stage with the scale before it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UCI_LINES = 541_909
UCI_WORKBOOK = Path(os.environ.get("CUSTSEG_DATA_DIR", REPO.parent / "shared" / "data"),
                    "Online_Retail.xlsx")
LINES_PER_CUSTOMER = 22.1  # what custseg.generate writes on average (22,091,548 per 1M)
STAGES = ("ingest", "refine", "report", "segment", "clv", "audiences", "drift",
          "dashboard")


def customers_for(scale: str) -> int:
    """Customers to generate for ``10x`` (lines) or ``1m`` (customers)."""
    if scale.endswith("x"):
        return round(UCI_LINES * float(scale[:-1]) / LINES_PER_CUSTOMER)
    if scale.endswith("m"):
        return round(float(scale[:-1]) * 1_000_000)
    raise SystemExit(f"--scales: {scale!r} is neither Nx nor Nm")


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _is_java(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip() == "java"
    except OSError:
        return False


CLOCK_TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1  # the online cores, whose ticks /proc/stat's first line adds up


def machine_ticks() -> tuple[int, int, int]:
    """The machine's CPU time so far from ``/proc/stat``, all cores, in clock ticks: (all, idle
    or waiting for I/O, stolen). Stolen time is what the hypervisor gave other guests while this
    one wanted to run; a virtual machine's figures from two days are comparable only with it
    beside them."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]
    return sum(fields), fields[3] + fields[4], fields[7]


def cpu_load(before: tuple[int, int, int], after: tuple[int, int, int]) -> tuple[float, float]:
    """Cores busy (neither idle, waiting for I/O nor stolen) and the stolen share between two
    ``machine_ticks`` readings."""
    every, idle, stolen = (b - a for a, b in zip(before, after, strict=True))
    if every <= 0:
        return 0.0, 0.0
    return CORES * (1 - (idle + stolen) / every), stolen / every


def process_ticks(pid: int) -> int:
    """User and system CPU time of one process so far, in clock ticks (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


class Sampler(threading.Thread):
    """Per stage: peak resident memory of the driver (Python) and of its JVM, the CPU seconds
    each used, and the share of the machine's CPU time stolen by the hypervisor."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stage, self.peaks = pid, "start", {}
        self.cpu: dict[str, list[float]] = {}  # stage: [python, jvm, all ticks, stolen ticks]
        self.stopped = threading.Event()
        # every JVM seen: its last CPU ticks (those already running count from now on)
        self._jvms = {p: process_ticks(p) for p in _descendants(pid) if _is_java(p)}
        self._last = (process_ticks(pid), sum(self._jvms.values()), *machine_ticks()[::2])

    def _tick(self) -> None:
        jvms = [p for p in _descendants(self.pid) if _is_java(p)]
        for p in jvms:
            self._jvms[p] = max(self._jvms.get(p, 0), process_ticks(p))
        now = (process_ticks(self.pid), sum(self._jvms.values()),
               *machine_ticks()[::2])
        spent = self.cpu.setdefault(self.stage, [0.0, 0.0, 0.0, 0.0])
        for i, (a, b) in enumerate(zip(self._last, now, strict=True)):
            spent[i] += max(b - a, 0)
        self._last = (max(now[0], self._last[0]), *now[1:])
        driver, jvm_peak = self.peaks.get(self.stage, (0.0, 0.0))
        self.peaks[self.stage] = (max(driver, _rss_mb(self.pid)),
                                  max(jvm_peak, sum(_rss_mb(p) for p in jvms)))

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self._tick()


def _cpu(spent: list[float]) -> dict:
    python, jvm, every, stolen = spent
    return {"python_cpu": python / CLOCK_TICK, "jvm_cpu": jvm / CLOCK_TICK,
            "steal": stolen / every if every else 0.0}


def run_pipeline(data: str, root: str, settings: list[str], log: Path) -> dict:
    """``custseg run`` on ``data``; per stage: rows in, seconds, driver and JVM peak MB."""
    cmd = [str(BIN / "custseg"), "run", "--input", data, "--lakehouse", root,
           "--run-id", f"bench-{Path(root).parent.name}"]
    for s in settings:
        cmd += ["--set", s]
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    table: dict[str, dict] = {}
    with open(log, "w") as fh:
        for line in proc.stdout:
            fh.write(line)
            m = re.search(r"\[(\w+)\] start\b", line)
            if m and m.group(1) in STAGES:
                sampler.stage = m.group(1)
            parts = line.split()
            if len(parts) == 5 and parts[0] in STAGES and parts[-1].replace(".", "").isdigit():
                table[parts[0]] = {"rows": int(parts[1].replace(",", "")),
                                   "seconds": float(parts[4])}
    proc.wait()
    sampler.stopped.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"custseg run failed ({proc.returncode}); see {log}")
    for stage, (driver, jvm) in sampler.peaks.items():
        if stage in table:
            table[stage].update(driver_mb=driver, jvm_mb=jvm, **_cpu(sampler.cpu[stage]))
    table["total"] = {"rows": table["ingest"]["rows"], "seconds": time.time() - started,
                      "driver_mb": max(v[0] for v in sampler.peaks.values()),
                      "jvm_mb": max(v[1] for v in sampler.peaks.values()),
                      **_cpu([sum(c) for c in zip(*sampler.cpu.values(), strict=True)])}
    return table


def run_pandas(data: str, timeout: float, memory_gb: float) -> tuple[list[dict], str, float]:
    """The pandas baseline under a time and address-space limit: finished steps, status and
    wall seconds."""
    limit = int(memory_gb * 1024 ** 3)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    started = time.time()
    proc = subprocess.Popen([sys.executable, str(REPO / "bench/pandas_baseline.py"), data],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=cap)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    out, err = proc.communicate()
    timer.cancel()
    wall = time.time() - started
    steps = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if proc.returncode == 0:
        return steps, "finished", wall
    if "MemoryError" in err or "Unable to allocate" in err:
        return steps, f"out of memory ({memory_gb:g} GiB limit)", wall
    if proc.returncode in (-9, 137):
        return steps, f"stopped at the {timeout:,.0f} s limit", wall
    last = err.strip().splitlines()[-1] if err.strip() else str(proc.returncode)
    return steps, f"failed: {last}", wall


def main() -> None:
    """Run every scale and print (and optionally write) the tables."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="uci,1x,10x,50x,1m")
    ap.add_argument("--workdir", default="/tmp/custseg-scale-bench")
    ap.add_argument("--pandas-timeout", type=float, default=900,
                    help="seconds per scale; 900 is the 15-minute target itself")
    ap.add_argument("--pandas-memory-gb", type=float, default=16)
    ap.add_argument("--no-pandas", action="store_true")
    ap.add_argument("--pandas-scales", help="run the pandas baseline at these scales only")
    ap.add_argument("--event-logs", action="store_true",
                    help="keep Spark event logs in WORKDIR/SCALE/events (bench/event_profile.py)")
    ap.add_argument("--out")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lines = [f"machine: {os.cpu_count()} cores, "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024 ** 3:.0f} GiB; "
             f"settings: {' '.join(args.set) or 'defaults'}", ""]
    header = ("| scale | stage | rows | seconds | rows/s | driver peak MB | JVM peak MB | "
              "CPU s Python / JVM | steal % | time ratio | data ratio |")
    spark_rows = [header, "| --- " * 11 + "|"]
    pandas_rows = ["| scale | step | seconds | peak MB | status |",
                   "| --- | --- | --- | --- | --- |"]
    previous: dict | None = None
    for scale in args.scales.split(","):
        here = work / scale
        here.mkdir()
        if scale == "uci":
            data, n_lines = str(UCI_WORKBOOK), UCI_LINES
        else:
            data = str(here / "lines.parquet")
            t = time.time()
            gen = subprocess.run([str(BIN / "custseg"), "generate", "--customers",
                                  str(customers_for(scale)), "--out", data, "--seed", "42",
                                  *sum((["--set", s] for s in args.set), [])],
                                 capture_output=True, text=True, check=True)
            n_lines = int(re.search(r"wrote ([\d,]+) invoice lines", gen.stdout).group(1)
                          .replace(",", ""))
            print(f"{scale}: {customers_for(scale):,} customers, {n_lines:,} lines generated "
                  f"in {time.time() - t:.0f} s", flush=True)
        settings = list(args.set)
        if args.event_logs:
            (here / "events").mkdir()
            settings.append(f"spark.conf={{spark.eventLog.enabled: 'true', "
                            f"spark.eventLog.dir: 'file://{here / 'events'}'}}")
        table = run_pipeline(data, str(here / "lakehouse"), settings, here / "run.log")
        table["total"]["rows"] = n_lines
        for stage in (*STAGES, "total"):
            s = table.get(stage)
            if not s:
                continue
            ratio = data_ratio = ""
            if previous and previous["scale"] != "uci" and stage in previous["table"]:
                ratio = f"{s['seconds'] / max(previous['table'][stage]['seconds'], 1e-9):.2f}"
                data_ratio = f"{n_lines / previous['lines']:.2f}"
            spark_rows.append(
                f"| {scale} | {stage} | {s['rows']:,} | {s['seconds']:.1f} | "
                f"{s['rows'] / max(s['seconds'], 1e-9):,.0f} | {s.get('driver_mb', 0):,.0f} | "
                f"{s.get('jvm_mb', 0):,.0f} | {s.get('python_cpu', 0):,.1f} / "
                f"{s.get('jvm_cpu', 0):,.1f} | {100 * s.get('steal', 0):.0f} | {ratio} | "
                f"{data_ratio} |")
        print("\n".join(spark_rows[-len(STAGES) - 1:]), flush=True)
        previous = {"table": table, "lines": n_lines, "scale": scale}
        if not args.no_pandas and (not args.pandas_scales
                                   or scale in args.pandas_scales.split(",")):
            before = machine_ticks()
            steps, status, wall = run_pandas(data, args.pandas_timeout,
                                             args.pandas_memory_gb)
            status += f"; steal {cpu_load(before, machine_ticks())[1]:.0%}"
            for st in steps:
                if st["step"].startswith("kmeans k="):
                    continue
                pandas_rows.append(f"| {scale} | {st['step']} | {st['seconds']:.1f} | "
                                   f"{st['peak_mb']:,} | |")
            last = steps[-1]["step"] if steps else "nothing"
            peak = max((s["peak_mb"] for s in steps), default=0)
            pandas_rows.append(f"| {scale} | total (wall) | {wall:.1f} | {peak:,} | {status}; "
                               f"last step done: {last} |")
            print("\n".join(pandas_rows[-3:]), flush=True)
        shutil.rmtree(here / "lakehouse", ignore_errors=True)
    text = "\n".join([*lines, "custseg run:", "", *spark_rows, "", "pandas + scikit-learn:", "",
                      *pandas_rows])
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
