"""The three storages behave alike: local paths, a classic session's Hadoop FS and pyarrow.fs
(both on file:// URIs, the one remote scheme this machine has)."""

from __future__ import annotations

import os

import pytest

from custseg.io import storage


@pytest.fixture(params=["local", "hadoop", "arrow"])
def store(request, spark, tmp_path):
    kind = request.param
    if kind == "local":
        return storage.LocalStorage(), str(tmp_path)
    made = storage.HadoopStorage(spark) if kind == "hadoop" else storage.ArrowStorage()
    return made, f"file://{tmp_path}"


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
    got = [(os.path.basename(name), size) for name, size, _ in fs.files(f"{base}/d")]
    assert got == [("a.csv", 5), ("b.csv", 2)]
    assert [s for _, s, _ in fs.files(f"{base}/d/a.csv")] == [5]


def test_a_uri_without_a_classic_session_goes_to_pyarrow(spark):
    assert isinstance(storage.for_path("s3://bucket/lh/_custseg/run.lock"), storage.ArrowStorage)
    assert isinstance(storage.for_path("gs://b/x", spark), storage.HadoopStorage)
    assert isinstance(storage.for_path("/tmp/x", spark), storage.LocalStorage)
