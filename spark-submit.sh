#!/usr/bin/env bash
# Submit a custseg job to any Spark master, shipping the library and the Delta jars.
#
#   ./spark-submit.sh [--master URL] [other spark-submit options] jobs/STAGE.py [job arguments]
#
# The library goes on --py-files as dist/custseg.zip, so executors (and a driver on the
# cluster) need no custseg install; the Delta jars come from the local cache (resolved from
# Maven Central once) via --jars. Default master: local[*].
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  make -C "$HERE" setup >&2
fi
PY="$VENV/bin/python"

MASTER="local[*]"
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --master) MASTER="$2"; shift 2 ;;
    --master=*) MASTER="${1#--master=}"; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [[ ${#ARGS[@]} -eq 0 ]]; then
  echo "usage: $0 [--master URL] [spark-submit options] jobs/STAGE.py [job arguments]" >&2
  exit 2
fi

# the zip, the jars, Spark's home, the driver's class archive (when the driver runs here) and
# the settings custseg's own sessions start with, in one Python process: custseg/runtime/submit.py
SETTINGS="$(PYTHONPATH="$HERE/lib" "$PY" -m custseg.runtime.submit "$HERE/dist" "${ARGS[@]}")"
eval "$SETTINGS"
export SPARK_HOME
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}"

exec "$SPARK_HOME/bin/spark-submit" \
  --master "$MASTER" \
  --py-files "$ZIP" \
  --jars "$JARS" \
  "${CONF[@]}" \
  --driver-java-options "-Dlog4j2.configurationFile=file:$HERE/conf/log4j2.properties $CDS" \
  "${ARGS[@]}"
