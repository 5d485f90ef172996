import pytest

from custseg.config import load_config
from custseg.errors import ConfigError


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg["input"]["columns"]["invoice_no"] == "InvoiceNo"
    assert cfg["spark"]["master"] == "local[*]"


def test_set_overrides_and_types():
    cfg = load_config(overrides=["spark.shuffle_partitions=3", "input.sheet=Sheet1",
                                 "spark.conf={spark.executor.memory: 2g}"])
    assert cfg["spark"]["shuffle_partitions"] == 3
    assert cfg["input"]["sheet"] == "Sheet1"
    assert cfg["spark"]["conf"] == {"spark.executor.memory": "2g"}


@pytest.mark.parametrize("override, fragment", [
    ("spark.shuffle_partiton=3", "unknown config key 'spark.shuffle_partiton'"),
    ("nope=1", "unknown config key 'nope'"),
    ("spark.shuffle_partitions=abc", "'spark.shuffle_partitions' must be an integer"),
    ("spark.shuffle_partitions=0", "must be at least 1"),
    ("spark.ui_enabled=maybe", "'spark.ui_enabled' must be a boolean"),
    ("input.format=xls", "'input.format' must be one of"),
    ("input.encoding=klingon", "not a known encoding"),
    ("input.columns.invoice_no=null", "'input.columns.invoice_no' is required"),
    ("input.columns.colour=Colour", "unknown config key 'input.columns.colour'"),
    ("input.date_formats=[]", "non-empty list"),
    ("noequals", "expected key.path=value"),
    ("report.purchase_nature={bulk_min_items: 500, reseller_min_items: 100}",
     "needs 1 < bulk_min_items < reseller_min_items"),
    ("report.purchase_nature.bulk_min_items=many", "'report.purchase_nature.bulk_min_items' "
     "must be an integer"),
    ("report.growth_months=0", "'report.growth_months' must be at least 1"),
    ("cluster.sweep_sample=10", "'cluster.sweep_sample' must be at least 100, got 10"),
    ("cluster.algorithm=dbscan", "'cluster.algorithm' must be one of kmeans, bisecting_kmeans, "
     "gaussian_mixture, got 'dbscan'"),
    ("cluster.resamples=1", "'cluster.resamples' must be at least 2, got 1"),
    ("cluster.resample_fraction=0", "'cluster.resample_fraction' must be in (0, 1]"),
    ("cluster.min_stability=1.5", "'cluster.min_stability' (an adjusted Rand index) must be"),
    ("cluster.silhouette_tolerance=-0.1", "'cluster.silhouette_tolerance' must be in [0, 2]"),
    ("drift.psi_threshold=-1", "'drift.psi_threshold' must be positive"),
    ("dashboard.top_customers=0", "'dashboard.top_customers' must be at least 1"),
    ("dashboard.retain_segments=[At Risk, Whales]", "'dashboard.retain_segments' names "
     "segments that 'segment.segments' does not have: Whales"),
    ("dashboard.actions={Whales: call them}", "'dashboard.actions' names segments"),
    ("dashboard.actions={Champions: ''}", "'dashboard.actions' needs a text for Champions"),
    ("clv.bootstrap.confidence=1", "--set clv.bootstrap.confidence=1: "
     "'clv.bootstrap.confidence' must be in [0.5, 1), got 1.0"),
    ("spark.conf={spark.jars: [a, b]}", "'spark.conf.spark.jars' must be a string, number or "
     "boolean"),
    ("audiences={lapsed: {segments: [Gone]}}", "'audiences.lapsed': unknown segment 'Gone'"),
    ("segment.segments=[{name: All, r: [1, 2, 3, 4, 5], f: [1, 2, 3, 4, 6]}]",
     "'segment.segments[0].f[4]' must be at most 5, got 6"),
])
def test_bad_values_are_one_clear_line(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_amount_instead_of_quantity_and_price():
    cfg = load_config(overrides=["input.columns.quantity=null", "input.columns.unit_price=null",
                                 "input.columns.amount=Total"])
    assert cfg["input"]["columns"]["amount"] == "Total"
    with pytest.raises(ConfigError, match="either 'amount' or both"):
        load_config(overrides=["input.columns.quantity=null"])


def test_config_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("input:\n  sheet: Data\n")
    assert load_config(str(good))["input"]["sheet"] == "Data"
    bad = tmp_path / "bad.yaml"
    bad.write_text("input:\n  shet: Data\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'input.shet'"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_an_error_names_the_source_that_gave_the_key(tmp_path):
    """Sources are checked together (a file may need a --set to be complete), and the message
    names the last one that gave the key at fault."""
    conf = tmp_path / "totals.yaml"
    conf.write_text("input:\n  columns:\n    quantity: null\n    unit_price: null\n")
    with pytest.raises(ConfigError, match=r"^config file .*totals.yaml: 'input.columns' needs"):
        load_config(str(conf), ["spark.shuffle_partitions=3"])
    cfg = load_config(str(conf), ["input.columns.amount=Total"])
    assert cfg["input"]["columns"]["amount"] == "Total"
    with pytest.raises(ConfigError, match=r"^--set cluster.k_max=2: 'cluster.k_min' and"):
        load_config(str(conf), ["input.columns.amount=Total", "cluster.k_max=2"])


def test_dashboard_actions_are_replaced_whole():
    cfg = load_config(overrides=["dashboard.actions={Champions: Thank them}"])
    assert cfg["dashboard"]["actions"] == {"Champions": "Thank them"}
    assert len(load_config()["dashboard"]["actions"]) == 10


def test_the_session_replays_delta_logs_in_the_configured_parallelism(spark, cfg):
    """Delta's 50-task log replay is replaced by the shuffle partitions (2 in the tests)."""
    from custseg.runtime.session import SNAPSHOT_PARTITIONS

    assert spark.conf.get(SNAPSHOT_PARTITIONS) == str(cfg["spark"]["shuffle_partitions"]) == "2"


def test_the_session_keeps_two_thousand_generated_classes(spark):
    """Spark's default of 100 made a run compile about 600 of its classes twice; the value is
    static, so the JVM the tests share must have been started with it."""
    assert spark.conf.get("spark.sql.codegen.cache.maxEntries") == "2000"
    assert spark.sparkContext.getConf().get("spark.sql.codegen.cache.maxEntries") == "2000"


def test_small_inputs_run_without_adaptive_execution_unless_the_user_set_it(spark):
    """One shuffle partition per 64 MB of input (at least 2, at most 16 here); below 64 MB
    adaptive query execution goes off, unless spark.conf sets it or the sizing is off."""
    from custseg.runtime.session import ADAPTIVE, SNAPSHOT_PARTITIONS, size_partitions

    sized = load_config(overrides=["spark.shuffle_partitions=16"])
    user = load_config(overrides=["spark.shuffle_partitions=16",
                                  "spark.conf={spark.sql.adaptive.enabled: false}"])
    fixed = load_config(overrides=["spark.shuffle_partitions=16",
                                   "spark.adaptive_partitions=false"])
    try:
        assert size_partitions(spark, 10 << 20, sized) == (2, False)
        assert spark.conf.get(ADAPTIVE) == "false"
        assert spark.conf.get(SNAPSHOT_PARTITIONS) == "2"
        assert size_partitions(spark, 200 << 20, sized) == (4, True)  # 200 / 64, rounded up
        assert size_partitions(spark, 10 << 20, sized) == (2, False)
        assert size_partitions(spark, None, sized) == (16, True)  # size unknown
        spark.conf.set(ADAPTIVE, "False")
        assert size_partitions(spark, 200 << 20, user) == (4, False)  # as the user set it
        spark.conf.set(ADAPTIVE, "TRUE")
        assert size_partitions(spark, 10 << 20, user) == (2, True)
        spark.conf.set(ADAPTIVE, "true")
        assert size_partitions(spark, 10 << 20, fixed) == (16, True)
    finally:
        for key, value in ((ADAPTIVE, "true"), ("spark.sql.shuffle.partitions", "2"),
                           (SNAPSHOT_PARTITIONS, "2")):
            spark.conf.set(key, value)


TIER4 = ("Tier4InvocationThreshold", "Tier4MinInvocationThreshold", "Tier4CompileThreshold",
         "Tier4BackEdgeThreshold")


HUGE = "DontCompileHugeMethods"


def _flags(java: str, *options: str, names: tuple[str, ...] = TIER4) -> dict:
    """The values of the flags ``names`` that a JVM started with ``options`` ends up with, as
    it reports them: integers for the Tier4 thresholds, else the JVM's text."""
    import subprocess

    out = subprocess.run([java, *options, "-XX:+PrintFlagsFinal", "-version"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return {r[1]: int(r[3]) if r[1] in TIER4 else r[3] for r in rows
            if len(r) > 3 and r[1] in names}


def test_the_driver_jvm_compiles_later_and_huge_methods_and_the_users_flags_win(spark):
    """The session's driver JVM (built by build_spark with the default jit_scale, 4) holds
    four times the JDK's own Tier4 thresholds, as a plain JVM of the same JDK reports them, and
    compiles huge methods, which the JDK does not by default; a flag in the user's
    spark.driver.extraJavaOptions beats custseg's, and jit_scale 1 leaves the JDK's
    thresholds."""
    import shlex

    from custseg.runtime.session import driver_options

    jvm = spark.sparkContext._jvm  # classic: the test session
    java = f"{jvm.java.lang.System.getProperty('java.home')}/bin/java"
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
    jdk = _flags(java)
    assert sorted(jdk) == sorted(TIER4)
    assert {f: int(bean.getVMOption(f).getValue()) for f in TIER4} == {
        f: 4 * v for f, v in jdk.items()}
    assert _flags(java, names=(HUGE,)) == {HUGE: "true"}
    assert bean.getVMOption(HUGE).getValue() == "false"

    def options(*overrides: str) -> list[str]:
        sc = load_config(overrides=["spark.class_archive=false", *overrides])["spark"]
        return shlex.split(driver_options(sc, [], None, False))

    user = options("spark.conf={spark.driver.extraJavaOptions: "
                   "'-XX:Tier4InvocationThreshold=7000'}")
    assert _flags(java, *user) == {**{f: 4 * v for f, v in jdk.items()},
                                   "Tier4InvocationThreshold": 7000}
    assert options("spark.jit_scale=1") == ["-XX:-DontCompileHugeMethods"]
    assert _flags(java, *options("spark.conf={spark.driver.extraJavaOptions: "
                                 "'-XX:+DontCompileHugeMethods'}"), names=(HUGE,)) == {
        HUGE: "true"}
    assert _flags(java, *options("spark.jit_scale=2")) == {f: 2 * v for f, v in jdk.items()}
