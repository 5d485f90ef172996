"""Local paths and pyarrow.fs URIs behave alike (file:// is the one remote scheme this machine
has), and Hadoop's scheme names and S3 settings reach the right pyarrow file system."""

from __future__ import annotations

import os
import threading

import pytest
from pyarrow import fs as pafs

from custseg.io import storage


@pytest.fixture(params=["local", "arrow"])
def store(request, tmp_path):
    if request.param == "local":
        return storage.LocalStorage(), str(tmp_path)
    return storage.ArrowStorage(settle=0.05), f"file://{tmp_path}"


def test_create_is_exclusive_and_write_replaces(store):
    fs, base = store
    path = f"{base}/sub/lock"
    assert not fs.exists(path) and fs.read_text(path) is None
    assert fs.create(path, '{"run": "a"}') is True
    assert fs.create(path, '{"run": "b"}') is False
    assert fs.read_text(path) == '{"run": "a"}'
    fs.write(path, "þ replaced")
    assert fs.read_text(path) == "þ replaced"
    fs.delete(path)
    fs.delete(path)  # a missing file is no error
    assert not fs.exists(path)


def test_files_lists_every_file_below_with_its_size(store, tmp_path):
    fs, base = store
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a.csv").write_bytes(b"12345")
    (tmp_path / "d" / "e" / "b.csv").write_bytes(b"xy")
    got = [(name, size) for name, size, _ in fs.files(f"{base}/d")]
    assert got == [(f"{base}/d/a.csv", 5), (f"{base}/d/e/b.csv", 2)]
    assert [s for _, s, _ in fs.files(f"{base}/d/a.csv")] == [5]
    assert fs.files(f"{base}/nothing/here") == []


def test_of_runs_that_both_find_no_lock_only_one_keeps_it(tmp_path):
    """Both writers pass the existence check before either writes (the barrier): the read-back
    after ``settle`` lets exactly one of them win."""
    path = f"file://{tmp_path}/_custseg/run.lock"
    gate = threading.Barrier(2)

    class Racing(storage.ArrowStorage):
        def exists(self, p: str) -> bool:
            found = super().exists(p)
            gate.wait(timeout=10)
            return found

    won: dict[str, bool] = {}

    def take(name: str) -> None:
        won[name] = Racing(settle=0.5).create(path, f'{{"run": "{name}"}}')

    threads = [threading.Thread(target=take, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won.values()) == [False, True]
    winner = next(n for n, ok in won.items() if ok)
    assert storage.ArrowStorage().read_text(path) == f'{{"run": "{winner}"}}'


def test_hadoop_scheme_names_map_to_pyarrow_file_systems(spark):
    got, inner = storage.arrow_fs("dbfs:/mnt/lh/_custseg/run.lock")
    assert isinstance(got, pafs.LocalFileSystem) and inner == "/dbfs/mnt/lh/_custseg/run.lock"
    got, inner = storage.arrow_fs("abfss://cont@acct.dfs.core.windows.net/lh/x")
    assert got.type_name == "abfs" and inner == "cont/lh/x"
    settings = {"spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
                "spark.hadoop.fs.s3a.access.key": "key",
                "spark.hadoop.fs.s3a.secret.key": "secret",
                "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1"}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        got, inner = storage.arrow_fs("s3a://bucket/lh/_custseg/run.lock", spark)
    finally:
        for key in settings:
            spark.conf.unset(key)
    want = pafs.S3FileSystem(endpoint_override="http://127.0.0.1:9000", access_key="key",
                             secret_key="secret", region="eu-west-1")
    assert inner == "bucket/lh/_custseg/run.lock" and got.equals(want)
    assert not got.equals(pafs.S3FileSystem(endpoint_override="http://127.0.0.1:9001",
                                            access_key="key", secret_key="secret",
                                            region="eu-west-1"))


def test_a_uri_goes_to_pyarrow_and_a_path_to_the_standard_library(spark):
    assert isinstance(storage.for_path("s3://bucket/lh/_custseg/run.lock"), storage.ArrowStorage)
    assert isinstance(storage.for_path("gs://b/x", spark), storage.ArrowStorage)
    assert isinstance(storage.for_path("/tmp/x", spark), storage.LocalStorage)


def test_copy_tree_reaches_both_sides_by_uri_or_path(tmp_path):
    (tmp_path / "src" / "m").mkdir(parents=True)
    (tmp_path / "src" / "m" / "part").write_text("model", encoding="utf-8")
    storage.copy_tree(str(tmp_path / "src"), f"file://{tmp_path}/dst")
    assert (tmp_path / "dst" / "m" / "part").read_text(encoding="utf-8") == "model"
    storage.delete_tree(f"file://{tmp_path}/dst")
    assert not os.path.exists(tmp_path / "dst")
