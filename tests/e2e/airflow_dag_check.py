"""Run by the Airflow venv's Python: load dags/ with Airflow's own DagBag and print what the test
checks (import errors, tasks in topological order, their commands rendered by Airflow's Jinja
for a scheduled run, retries) as JSON."""

import json
import sys

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
RUN_ID = "scheduled__2026-11-23T02:00:00+00:00"
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "schedule": str(getattr(dag.timetable, "_expression", dag.timetable)),
        "max_active_runs": dag.max_active_runs,
        "order": [t.task_id for t in dag.topological_sort()],
        "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids),
                              "downstream": sorted(t.downstream_task_ids),
                              "retries": t.retries, "command": t.bash_command,
                              "rendered": t.render_template(
                                  t.bash_command, {"params": dict(dag.params), "run_id": RUN_ID})}
                  for t in dag.tasks},
    }
print(json.dumps(out))
