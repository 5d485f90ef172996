"""The driver JVM custseg starts: its collector, and the options a user sets kept."""

from __future__ import annotations

from custseg.runtime.session import driver_java_options


def test_the_session_driver_runs_the_parallel_collector(spark):
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory \
        .getGarbageCollectorMXBeans()
    names = {beans.get(i).getName() for i in range(beans.size())}
    assert names == {"PS Scavenge", "PS MarkSweep"}  # G1 would be "G1 Young Generation", ...


def test_a_collector_the_user_chose_is_kept_and_no_other_added():
    chosen = {"conf": {"spark.driver.extraJavaOptions": "-Xss4m -XX:+UseZGC"}}
    assert driver_java_options(chosen, None) == "-Xss4m -XX:+UseZGC"
    assert driver_java_options({"conf": {"spark.driver.extraJavaOptions": "-Xss4m"}}, None) \
        == "-Xss4m -XX:+UseParallelGC"


def test_the_log_file_goes_in_quotes_after_the_users_options(tmp_path):
    log = tmp_path / "a b.log"
    got = driver_java_options({"conf": {"spark.driver.extraJavaOptions": "-Xss4m"}}, str(log))
    assert got.startswith("-Xss4m -XX:+UseParallelGC -Dlog4j2.configurationFile=file:")
    assert got.endswith(f'"-Dcustseg.log.file={log}"')
