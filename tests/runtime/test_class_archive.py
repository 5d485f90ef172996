"""The driver JVM's class archive: which one a JVM maps, when one is recorded, what is swept.
That a run records one and the next maps it is in tests/e2e/test_pipeline_run.py."""

from __future__ import annotations

import os
import time

from custseg.runtime import class_archive


def test_an_archive_belongs_to_its_jars(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSTSEG_CDS_DIR", str(tmp_path / "cds"))
    jar = tmp_path / "extra.jar"
    jar.write_bytes(b"one")
    first = class_archive.archive_path([str(jar)])
    assert first.parent == tmp_path / "cds"
    assert class_archive.archive_path([str(jar)]) == first
    jar.write_bytes(b"other")  # a jar replaced by another version: another archive
    assert class_archive.archive_path([str(jar)]) not in (first, None)
    assert class_archive.archive_path([]) != first


def test_mapped_when_there_recorded_only_when_asked_and_never_over_the_users(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("CUSTSEG_CDS_DIR", str(tmp_path))
    monkeypatch.setattr(class_archive, "_pending", None)
    final = class_archive.archive_path([])
    assert class_archive.java_options([], "", record=False) == ""
    recording = class_archive.java_options([], "-Xmx1g", record=True)
    assert f'"-XX:ArchiveClassesAtExit={final}.{os.getpid()}.partial"' in recording
    assert class_archive._pending.final == final
    final.write_bytes(b"archive")
    mapped = class_archive.java_options([], "", record=True)
    assert f'"-XX:SharedArchiveFile={final}"' in mapped
    assert "ArchiveClassesAtExit" not in mapped
    for own in ("-Xshare:off", "-XX:SharedArchiveFile=/mine.jsa", "-XX:ArchiveClassesAtExit=x"):
        assert class_archive.java_options([], own, record=True) == ""


def test_halves_left_by_failed_runs_are_swept_and_recent_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSTSEG_CDS_DIR", str(tmp_path))
    monkeypatch.setattr(class_archive, "_pending", None)
    old, recent = tmp_path / "driver-a.jsa.1.partial", tmp_path / "driver-a.jsa.2.partial"
    for f in (old, recent):
        f.write_bytes(b"half")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    class_archive.java_options([], "", record=True)
    assert not old.exists() and recent.exists()


def test_spark_submit_maps_the_archive_only_when_the_driver_runs_here(tmp_path, monkeypatch):
    """spark-submit.sh's options, decided as spark-submit decides the deploy mode: its flag,
    then ``$DEPLOY_MODE``, then ``--conf``, then the properties file; client by default."""
    monkeypatch.setenv("CUSTSEG_CDS_DIR", str(tmp_path))
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path / "conf"))
    monkeypatch.delenv("DEPLOY_MODE", raising=False)
    job = ["jobs/ingest.py", "--input", "in.csv"]
    assert class_archive.submit_options([], job) == ""  # nothing recorded yet
    final = class_archive.archive_path([])
    final.write_bytes(b"archive")
    mapped = f'"-XX:SharedArchiveFile={final}" -Xlog:cds*=off'
    assert class_archive.submit_options([], job) == mapped
    for here in (["--verbose", "--deploy-mode", "client"], ["--name", "x.py"],
                 ["--deploy-mode", "client", "--conf", "spark.submit.deployMode=cluster"]):
        assert class_archive.submit_options([], [*here, *job]) == mapped, here
    assert class_archive.submit_options([], [*job, "--deploy-mode", "cluster"]) == mapped
    for there in (["--deploy-mode", "cluster"], ["--deploy-mode=cluster"],
                  ["--supervise", "-c", "spark.submit.deployMode=cluster"],
                  ["--conf=spark.submit.deployMode=cluster"]):
        assert class_archive.submit_options([], [*there, *job]) == "", there
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "spark-defaults.conf").write_text(
        "spark.master  yarn\nspark.submit.deployMode  cluster\n")
    assert class_archive.submit_options([], job) == ""
    own = tmp_path / "own.conf"
    own.write_text("spark.submit.deployMode=client\n")
    assert class_archive.submit_options([], ["--properties-file", str(own), *job]) == mapped
    monkeypatch.setenv("DEPLOY_MODE", "client")
    assert class_archive.submit_options([], job) == mapped
    assert class_archive.submit_options([], ["--driver-java-options", "-Xshare:off", *job]) == ""


def test_spark_submit_sh_reads_every_value_back_through_the_shell(tmp_path, monkeypatch):
    """spark-submit.sh evaluates ``custseg.runtime.submit``'s output: folders with spaces,
    quotes and a dollar sign, the archive's quoted option and the launch settings come back
    whole in bash."""
    import subprocess
    import sys
    from pathlib import Path

    import pyspark

    from custseg.runtime.jars import ensure_delta_jars
    from custseg.runtime.spark_conf import LAUNCH_CONF

    cds, dist = tmp_path / "cds 'x'", tmp_path / "dist $HOME"
    monkeypatch.setenv("CUSTSEG_CDS_DIR", str(cds))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[2] / "lib"))
    monkeypatch.delenv("SPARK_HOME", raising=False)
    jars = ensure_delta_jars()
    archive = class_archive.archive_path(jars)
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"archive")
    script = (f'eval "$("{sys.executable}" -m custseg.runtime.submit "$0" jobs/ingest.py)"; '
              'printf "%s\\n" "$ZIP" "$JARS" "$SPARK_HOME" "$CDS" "${CONF[@]}"')
    conf = [a for k, v in LAUNCH_CONF.items() for a in ("--conf", f"{k}={v}")]
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in conf
    for mode, cds_option in (("client", f'"-XX:SharedArchiveFile={archive}" -Xlog:cds*=off'),
                             ("cluster", "")):
        monkeypatch.setenv("DEPLOY_MODE", mode)
        out = subprocess.run(["bash", "-c", script, str(dist)], capture_output=True, text=True,
                             check=True).stdout.split("\n")
        assert out[:4] == [str(dist / "custseg.zip"), ",".join(jars),
                           os.path.dirname(pyspark.__file__), cds_option], mode
        assert out[4:-1] == conf
        assert (dist / "custseg.zip").is_file()
