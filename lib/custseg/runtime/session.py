"""Build the SparkSession with Delta Lake, locally or under spark-submit / a managed cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from custseg.config import Config
from custseg.runtime import class_archive
from custseg.runtime.jars import ensure_delta_jars
from custseg.runtime.spark_conf import LAUNCH_CONF

SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"


def is_classic(spark: object) -> bool:
    """True for a session with a JVM gateway; False for Spark Connect, which has no
    SparkContext (job descriptions, local properties and log levels live on its server)."""
    return spark is not None and not type(spark).__module__.startswith("pyspark.sql.connect")


def active_is_classic() -> bool:
    """True when this process's session is a classic one, in any thread. A classic session is
    active only in the JVM thread that made it, so ``getActiveSession`` finds none in a new
    thread; ``active`` falls back to the default session there."""
    from pyspark.sql import SparkSession

    return is_classic(SparkSession.active())


def parallelism(spark: SparkSession) -> int:
    """Tasks that keep the cluster's cores busy: the default parallelism of a classic session,
    the shuffle partitions over Spark Connect."""
    if is_classic(spark):
        return spark.sparkContext.defaultParallelism  # classic only: Connect has no SparkContext
    return int(spark.conf.get("spark.sql.shuffle.partitions"))


def sql_defaults(sc: dict) -> dict[str, str]:
    """Settings custseg applies unless the user has set them.

    - A partitioned write (bronze by batch, history by date) sorts each task's rows by the
      partition value first unless it may keep a few files open at once; with one value per
      task, as here, that sort of the full rows is pure cost (it spilled 12 GB at 27M lines).
    - Delta replays a table's log in 50 tasks, sized for tables of 100,000s of files; ours hold
      hundreds, and every read and commit paid for 50 near-empty tasks (129 of the 237 Spark
      stage-seconds of an 800-customer run). The shuffle partitions are the configured measure
      of the cluster's parallelism.
    """
    return {"spark.sql.maxConcurrentOutputFileWriters": "4",
            SNAPSHOT_PARTITIONS: str(sc["shuffle_partitions"])}


# HotSpot's own thresholds for handing a method to its optimising compiler (C2), JDK 17
_TIER4_DEFAULTS = {"Tier4InvocationThreshold": 5000, "Tier4MinInvocationThreshold": 600,
                   "Tier4CompileThreshold": 15000, "Tier4BackEdgeThreshold": 40000}


# HotSpot leaves any method of more than 8,000 bytes of bytecode (its HugeMethodLimit) to the
# interpreter for good. Spark's whole-stage code generation makes such methods for wide rows
# and long expressions: on 5.4 million lines, refine's parse and classification took 9 to 10 s
# with this flag and 15 to 17 s without it. Only what gets compiled changes.
COMPILE_HUGE_METHODS = "-XX:-DontCompileHugeMethods"


def jit_options(scale: int) -> str:
    """Driver JVM flags that make C2 wait until a method has run ``scale`` times as often as
    by default (1: the JVM's own thresholds).

    A custseg driver runs mostly short-lived planning code: in an 800-customer run C2 spent 84
    of the JVM's 160 CPU seconds compiling 7,661 methods (``-XX:+CITime``), on two cores that
    the stages need too. Methods that stay hot (task loops, the planner's core) still reach C2,
    a little later. What is computed does not change: only when code gets compiled.
    """
    if scale == 1:
        return ""
    return " ".join(f"-XX:{flag}={value * scale}" for flag, value in _TIER4_DEFAULTS.items())


def _launched_by_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ or SparkSession.getActiveSession() is not None


def remote_url(cfg: Config) -> str | None:
    """The Spark Connect server to use: ``spark.remote`` (``--remote``), else ``SPARK_REMOTE``."""
    return cfg["spark"]["remote"] or os.environ.get("SPARK_REMOTE") or None


def _connect(url: str, sc: dict) -> SparkSession:
    """A Spark Connect session; the server owns the master, jars and Delta settings, and the
    session takes custseg's SQL settings."""
    spark = SparkSession.builder.remote(url).getOrCreate()
    settings = {"spark.sql.shuffle.partitions": str(sc["shuffle_partitions"]),
                "spark.sql.session.timeZone": "UTC",
                "spark.databricks.delta.schema.autoMerge.enabled": "false",
                **sql_defaults(sc)}
    for key, value in settings.items():
        spark.conf.set(key, value)
    return spark


def build_spark(cfg: Config, log_file: str | None = None,
                record_classes: bool = False) -> SparkSession:
    """A SparkSession with Delta enabled.

    With a Spark Connect URL (``spark.remote`` or ``SPARK_REMOTE``) the session is a Connect
    client of that server. Under spark-submit (or in a notebook with a session already running)
    the master, jars and Delta settings come from the launcher and are left alone. A plain
    ``python`` or ``custseg`` launch starts its own JVM with the configured master and the
    cached Delta jars; with ``log_file`` its log goes there instead of the console. That JVM
    maps the class archive of an earlier run (``spark.class_archive``), or records one when
    ``record_classes`` and there is none (see ``class_archive``), compiles methods later
    (``spark.jit_scale``, see ``jit_options``) and compiles huge ones too
    (``COMPILE_HUGE_METHODS``).
    """
    sc = cfg["spark"]
    if url := remote_url(cfg):
        return _connect(url, sc)
    if _launched_by_spark_submit():
        spark = SparkSession.builder.appName(sc["app_name"]).getOrCreate()
        spark.conf.set("spark.sql.shuffle.partitions", str(sc["shuffle_partitions"]))
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        for key, value in sql_defaults(sc).items():
            if spark.conf.get(key, None) is None:
                spark.conf.set(key, value)
        return spark
    jars_dir = cfg["delta"]["jars_dir"]
    jars = ensure_delta_jars(Path(jars_dir) if jars_dir else None)
    builder = (
        SparkSession.builder.master(sc["master"])
        .appName(sc["app_name"])
        .config("spark.jars", ",".join(jars))
        .config("spark.driver.memory", sc["driver_memory"])
        .config("spark.sql.shuffle.partitions", str(sc["shuffle_partitions"]))
        .config("spark.ui.enabled", str(sc["ui_enabled"]).lower())
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
    )
    for key, value in {**LAUNCH_CONF, **sql_defaults(sc)}.items():
        builder = builder.config(key, value)
    for key, value in sc["conf"].items():
        builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    if options := driver_options(sc, jars, log_file, record_classes):
        builder = builder.config("spark.driver.extraJavaOptions", options)
    spark = builder.getOrCreate()
    if is_classic(spark):
        spark.sparkContext.setLogLevel(LOG_LEVEL)  # classic only: Connect has no SparkContext
    return spark


def driver_options(sc: dict, jars: list[str], log_file: str | None,
                   record_classes: bool) -> str:
    """The options of the driver JVM custseg launches: huge methods compiled
    (``COMPILE_HUGE_METHODS``) and the JIT thresholds, then the user's
    ``spark.driver.extraJavaOptions`` (a flag given twice takes its last value, so the user's
    win), the log file and the class archive."""
    user_options = str(sc["conf"].get("spark.driver.extraJavaOptions", ""))
    options = [COMPILE_HUGE_METHODS, jit_options(sc["jit_scale"]), user_options]
    if log_file and "log4j2.configurationFile" not in str(sc["conf"]):
        config = Path(__file__).with_name("log4j2-file.properties")
        options += [f"-Dlog4j2.configurationFile={config.as_uri()}",
                    f'"-Dcustseg.log.file={log_file}"']  # quoted: a path may hold spaces
    if sc["class_archive"]:
        from pyspark import SparkContext

        jvm_running = SparkContext._gateway is not None  # getOrCreate launches none then
        options.append(class_archive.java_options(jars, user_options,
                                                  record_classes and not jvm_running))
    return " ".join(o for o in options if o)


LOG_LEVEL = "ERROR"  # for the sessions custseg starts; spark-submit's come from log4j2.properties


@contextmanager
def quiet_logs(spark: SparkSession) -> Iterator[None]:
    """Keep Spark's own error log (task failures with Java stack traces) off the console
    inside the block, where every failure is turned into one line for the user. Afterwards
    the level is custseg's (ERROR), or WARN as conf/log4j2.properties sets for spark-submit."""
    if not is_classic(spark):
        yield
        return
    sc = spark.sparkContext  # classic only (returned above for Connect)
    sc.setLogLevel("FATAL")
    try:
        yield
    finally:
        sc.setLogLevel("WARN" if "PYSPARK_GATEWAY_PORT" in os.environ else LOG_LEVEL)


BYTES_PER_PARTITION = 64 << 20


def partitions_for(input_bytes: int | None, most: int) -> int:
    """Shuffle partitions for an input of ``input_bytes`` (compressed, on disk): one per
    64 MB, at least 2 and at most ``most`` (``spark.shuffle_partitions``); ``most`` when the
    size is unknown. A small input in 16 partitions pays for 16 near-empty tasks in every
    shuffle: on the UCI data the features at one date took 6.4 s in 16 partitions and 3.5 s
    in 2."""
    if input_bytes is None:
        return most
    return max(min(2, most), min(most, -(-input_bytes // BYTES_PER_PARTITION)))


ADAPTIVE = "spark.sql.adaptive.enabled"


def _set_by_user(spark: SparkSession, key: str, cfg: Config) -> bool:
    """Whether ``key`` came from ``spark.conf`` or the launcher (``--conf``, a cluster's
    settings) rather than from Spark's default."""
    if key in cfg["spark"]["conf"]:
        return True
    return is_classic(spark) and spark.sparkContext.getConf().contains(key)  # classic only


def size_partitions(spark: SparkSession, input_bytes: int | None, cfg: Config
                    ) -> tuple[int, bool]:
    """Set the session's shuffle partitions (and Delta's log-replay tasks) for the input size
    when ``spark.adaptive_partitions`` is on; return the number in effect and whether adaptive
    query execution is on.

    Below one partition's worth of input (64 MB) adaptive execution is turned off too, unless
    the user set it: its runtime statistics have nothing to re-plan there, while every query
    pays for a job per query stage and a re-plan after each (UCI runs: a median of 170.9 s of
    stages without it, 183.9 s with it).
    """
    sc = cfg["spark"]
    n = (partitions_for(input_bytes, sc["shuffle_partitions"]) if sc["adaptive_partitions"]
         else sc["shuffle_partitions"])
    spark.conf.set("spark.sql.shuffle.partitions", str(n))
    spark.conf.set(SNAPSHOT_PARTITIONS, str(n))
    if sc["adaptive_partitions"] and not _set_by_user(spark, ADAPTIVE, cfg):
        small = input_bytes is not None and input_bytes < BYTES_PER_PARTITION
        spark.conf.set(ADAPTIVE, str(not small).lower())
    return n, str(spark.conf.get(ADAPTIVE, "true")).lower() == "true"
