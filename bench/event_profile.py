"""Where a run's time went, from its Spark event log: the slowest SQL executions and jobs.

    python bench/event_profile.py EVENT_LOG_DIR_OR_FILE [--top 15] [--run-log run.log]

Reads the event log that ``scale_bench.py --event-logs`` keeps (plain or zstd, through the
``zstd`` command) and prints the SQL executions and the jobs outside them (MLlib fits, RDD
actions) by wall time, each with its call site or ``custseg write`` description, the custseg
stage it ran in (the ``custseg.stage`` job property, or the ``[stage] start`` lines of
``--run-log`` for logs written before it existed) and its task time, so a slow stage points at the
query or fit to fix.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

SQL_START = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart"
SQL_END = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd"


def events(path: Path) -> Iterator[dict]:
    """Every event of the log at ``path`` (a file, or a folder of rolled event files)."""
    files = sorted(p for p in path.rglob("events_*")) if path.is_dir() else [path]
    for f in files:
        if f.suffix == ".zstd":
            proc = subprocess.run(["zstd", "-dcq", str(f)], capture_output=True)
            text = proc.stdout.decode("utf-8", "replace")
        else:
            text = f.read_text()
        for line in text.splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # the unfinished last line of a log still being written


def stage_windows(run_log: Path | None) -> list[tuple[float, str]]:
    """(epoch ms, stage) at each ``[stage] start`` line of a custseg log."""
    if not run_log:
        return []
    out = []
    for line in run_log.read_text().splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)\S*\s.*\[(\w+)\] start$", line.strip())
        if m:
            when = dt.datetime.fromisoformat(m.group(1).replace(" ", "T"))
            out.append((when.replace(tzinfo=dt.UTC).timestamp() * 1000, m.group(2)))
    return out


def stage_of(x: dict, windows: list[tuple[float, str]]) -> str:
    """The custseg stage of a job or execution: its ``custseg.stage`` property, else the
    stage whose start line came last before it."""
    if x.get("stage"):
        return x["stage"]
    name = "-"
    for start, stage in windows:
        if start <= x["start"] + 1000:
            name = stage
    return name


def profile(path: Path) -> tuple[list[dict], list[dict]]:
    """SQL executions and jobs outside any, each with start, wall and task milliseconds."""
    sql: dict[int, dict] = {}
    jobs: dict[int, dict] = {}
    stage_job: dict[int, int] = {}
    task_ms: dict[int, float] = defaultdict(float)
    for e in events(path):
        kind = e.get("Event")
        if kind == SQL_START:
            sql[e["executionId"]] = {"start": e["time"], "what": e.get("description", ""),
                                     "where": (e.get("details") or "").splitlines()[:1],
                                     "root": e.get("rootExecutionId", e["executionId"]),
                                     "jobs": []}
        elif kind == SQL_END and e["executionId"] in sql:
            sql[e["executionId"]]["end"] = e["time"]
        elif kind == "SparkListenerJobStart":
            props = e.get("Properties") or {}
            jobs[e["Job ID"]] = {"start": e["Submission Time"],
                                 "sql": props.get("spark.sql.execution.id"),
                                 "stage": props.get("custseg.stage"),
                                 "what": props.get("callSite.short", ""),
                                 "where": [props.get("spark.job.description", "")]}
            for s in e.get("Stage IDs", []):
                stage_job[s] = e["Job ID"]
        elif kind == "SparkListenerJobEnd" and e["Job ID"] in jobs:
            jobs[e["Job ID"]]["end"] = e["Completion Time"]
        elif kind == "SparkListenerTaskEnd":
            job = stage_job.get(e.get("Stage ID"))
            metrics = e.get("Task Metrics") or {}
            if job is not None:
                task_ms[job] += metrics.get("Executor Run Time", 0)
    # Nested executions (Delta runs queries inside a write) count towards their root only.
    for jid, j in jobs.items():
        j["task_ms"] = task_ms[jid]
        if j["sql"] is not None and int(j["sql"]) in sql:
            child = sql[int(j["sql"])]
            sql.get(int(child["root"]), child)["jobs"].append(jid)
    roots = [s for i, s in sql.items() if int(s["root"]) == i and "end" in s]
    for s in roots:
        s["task_ms"] = sum(jobs[j]["task_ms"] for j in s["jobs"])
        s["stage"] = next((jobs[j]["stage"] for j in s["jobs"] if jobs[j]["stage"]), None)
    loose = [j for j in jobs.values() if j["sql"] is None or int(j["sql"]) not in sql]
    return roots, [j for j in loose if "end" in j]


def main() -> None:
    """Print the slowest SQL executions and loose jobs, and the wall time per custseg stage."""
    ap = argparse.ArgumentParser()
    ap.add_argument("path", type=Path)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--run-log", type=Path)
    args = ap.parse_args()
    windows = stage_windows(args.run_log)
    executions, loose = profile(args.path)
    items = [("sql", s) for s in executions] + [("job", j) for j in loose]
    per_stage: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for _, x in items:
        per_stage[stage_of(x, windows)] += (x["end"] - x["start"]) / 1000
        count[stage_of(x, windows)] += 1
    print("Spark wall seconds by custseg stage (SQL executions and loose jobs): "
          + ", ".join(f"{k} {v:,.0f}" for k, v in per_stage.items()))
    print("Queries and loose jobs by custseg stage: "
          + ", ".join(f"{k} {v:,}" for k, v in count.items()))
    print(f"\n{'kind':<5}{'stage':<10}{'wall s':>8}{'task s':>9}  what / where")
    for kind, x in sorted(items, key=lambda kx: kx[1]["start"] - kx[1]["end"])[:args.top]:
        where = " ".join(x["where"])[:90]
        print(f"{kind:<5}{stage_of(x, windows):<10}"
              f"{(x['end'] - x['start']) / 1000:>8.1f}{x['task_ms'] / 1000:>9.1f}  "
              f"{x['what'][:70]} | {where}")


if __name__ == "__main__":
    main()
