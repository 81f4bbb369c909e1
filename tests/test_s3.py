"""Object storage in and out against a real S3-compatible server (moto) on loopback, started and stopped
here, with dummy credentials and S3_ENDPOINT_URL. Read back with streaming's own StreamingDataset."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import boto3
import pytest
from moto import server as moto_server

from ettin_data import remote, run, storage
from ettin_data.config import ConvertConfig
from ettin_data.errors import ConfigError, InputError
from ettin_data.mds import UnitReader, find_units
from ettin_data.stages import convert
from ettin_data.worker import UnitJob

pytestmark = [pytest.mark.s3, pytest.mark.slow, pytest.mark.timeout(120)]

BUCKET = "ettin"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
         "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 (random port) with one bucket; env set for boto3 and streaming."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in (*CREDS, "S3_ENDPOINT_URL", "AWS_SHARED_CREDENTIALS_FILE",
                                            "AWS_CONFIG_FILE", "AWS_PROFILE")}
    try:
        host, port = server.get_host_and_port()
        os.environ.update(CREDS, S3_ENDPOINT_URL=f"http://{host}:{port}")
        os.environ.pop("AWS_PROFILE", None)
        client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        storage._STORES.clear()  # cached clients point at the stopped server


def remote_tree(client, prefix: str) -> dict[str, bytes]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k[len(prefix) + 1:]: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def local_samples(root: Path) -> list[tuple[str, str]]:
    return [(s["id"], s["text"]) for u in find_units(root) for s in UnitReader(root / u).iter_samples(["id", "text"])]


def test_convert_to_s3_is_the_local_dataset(s3, tmp_path, text_dataset, monkeypatch):
    uploads: list[str] = []
    real_upload = storage.Store.upload

    def recording(self, rel):
        uploads.append(rel)
        return real_upload(self, rel)

    monkeypatch.setattr(storage.Store, "upload", recording)
    url = f"s3://{BUCKET}/text"
    summary = run(ConvertConfig(inputs=["builtin:python-docs"], output=url, docs_per_shard=50, workers=1,
                                        cache_dir=str(tmp_path / "cache")))
    assert summary["complete"] and summary["output"] == url and summary["documents"] == 247
    # Every object equals the local run's file, byte for byte; nothing else was uploaded.
    assert remote_tree(s3, "text") == tree(text_dataset)
    # Order: each unit's .done after all its files; the source's .done after its units; index.json last.
    for i, rel in enumerate(uploads):
        if rel.endswith("/.done"):
            folder = rel[: -len(".done")]
            assert all(not r.startswith(folder) or r.endswith("/.done") for r in uploads[i + 1:]), rel
    assert uploads[-1] == "index.json" and uploads[-2] == "ettin_meta.json"
    assert uploads.index("python-docs/.done") > max(uploads.index(f"python-docs/split_0000{k}/.done") for k in range(5))
    # The staged shards are gone once uploaded (the dataset lives remotely; only small files come back).
    staged = storage.local_path(url, str(tmp_path / "cache"), "out0")
    assert (staged / "index.json").is_file() and not list(staged.rglob("shard.*"))

    # Read back with mosaicml-streaming itself.
    from streaming import StreamingDataset

    ds = StreamingDataset(remote=url, local=str(tmp_path / "read"), shuffle=False, batch_size=1)
    got = [(ds[i]["id"], ds[i]["text"]) for i in range(len(ds))]
    assert got == local_samples(text_dataset)

    # Rerun: every unit's marker exists remotely, so nothing is redone or re-uploaded but the root files.
    uploads.clear()
    again = run(ConvertConfig(inputs=["builtin:python-docs"], output=url, docs_per_shard=50, workers=1,
                                      cache_dir=str(tmp_path / "cache2")))
    assert again["units_run"] == 0 and again["units_skipped"] == 1 and again["complete"]
    assert not any(r.startswith("python-docs/") for r in uploads)
    assert remote_tree(s3, "text") == tree(text_dataset)


def test_unit_without_remote_marker_is_redone(s3, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(3):
        (src / f"part{k}.jsonl").write_text("".join(json.dumps({"id": f"{k}-{i}", "text": f"doc {k} {i} " * 20}) + "\n"
                                                    for i in range(30)))
    plain = tmp_path / "plain"
    run(ConvertConfig(inputs=[str(src)], output=str(plain), docs_per_shard=10, workers=1))
    url = f"s3://{BUCKET}/parts"

    def run_to_s3(workers):
        return run(ConvertConfig(inputs=[str(src)], output=url, docs_per_shard=10, workers=workers,
                                 cache_dir=str(tmp_path / "cache")))

    assert run_to_s3(1)["units_run"] == 3  # (workers > 1: each pool process imports streaming+torch, ~10 s here)
    assert remote_tree(s3, "parts") == tree(plain)
    s3.delete_object(Bucket=BUCKET, Key="parts/part1/.done")  # as if killed before its marker was uploaded
    s = run_to_s3(1)
    assert s["units_run"] == 1 and s["units_skipped"] == 2 and s["complete"]
    assert remote_tree(s3, "parts") == tree(plain)


def test_remote_input_and_output_through_the_cli(s3, tmp_path, text_dataset, token_dataset):
    """tokenize s3://.../text -> s3://.../tokens: inputs mirrored (shards on demand), byte-identical output."""
    from typer.testing import CliRunner

    from ettin_data.cli import app

    for rel, data in tree(text_dataset).items():  # an input written by another machine
        s3.put_object(Bucket=BUCKET, Key=f"in-text/{rel}", Body=data)
    cache = tmp_path / "cache"
    args = ["tokenize", f"s3://{BUCKET}/in-text", "-o", f"s3://{BUCKET}/tokens", "-t", "builtin:modernbert", "-w", "1",
            "--cache-dir", str(cache), "--json", "-q"]
    r = CliRunner().invoke(app, [*args, "--dry-run"])  # a dry run takes the same path, and writes nothing
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)["plan"]
    assert plan["units"] == 5 and len(plan["to_do"]) == 5 and plan["already_done"] == []
    assert remote_tree(s3, "tokens") == {}
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["complete"] and summary["output"] == f"s3://{BUCKET}/tokens"
    got, want = remote_tree(s3, "tokens"), tree(token_dataset)
    assert sorted(got) == sorted(want)
    # Only the metadata records where the input came from.
    differ = sorted(k for k in want if got[k] != want[k])
    assert differ == [".ettin_settings.json", "ettin_meta.json"]
    meta = json.loads(got["ettin_meta.json"])
    assert meta["inputs"] == [f"s3://{BUCKET}/in-text"] and meta["upstream"][0]["stage"] == "convert"
    assert {k: v for k, v in meta.items() if k != "inputs"} == {
        k: v for k, v in json.loads(want["ettin_meta.json"]).items() if k != "inputs"}
    r = CliRunner().invoke(app, ["chunk", f"s3://{BUCKET}/tokens", "-o", str(tmp_path / "x"), "--dry-run", "--json",
                                 "--cache-dir", str(cache)])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["plan"]["to_do"]) == 5 and not (tmp_path / "x").exists()
    # The input cache holds the units' shards, fetched by the workers that read them.
    mirror = storage.local_path(f"s3://{BUCKET}/in-text", str(cache), "in")
    assert sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("shard.*")) == sorted(
        k for k in tree(text_dataset) if "/shard." in k)


def test_missing_bucket_and_missing_credentials_are_one_line(s3, tmp_path, monkeypatch):
    cfg = ConvertConfig(inputs=["builtin:python-docs"], output="s3://no-such-bucket/x", workers=1,
                        cache_dir=str(tmp_path))
    with pytest.raises(InputError) as e:
        run(cfg)
    assert str(e.value) == ("s3://no-such-bucket/x: bucket 'no-such-bucket' does not exist (or is not visible "
                            "with these credentials); create it or fix the URL")
    from typer.testing import CliRunner

    from ettin_data.cli import app

    r = CliRunner().invoke(app, ["convert", "builtin:python-docs", "-o", "s3://no-such-bucket/x", "-q"])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [f"error: {e.value}"]

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    storage._STORES.clear()
    with pytest.raises(ConfigError, match=r"^s3://ettin/y: no credentials for the object store .*AWS_ACCESS_KEY_ID"):
        run(ConvertConfig(inputs=["builtin:python-docs"], output=f"s3://{BUCKET}/y", workers=1,
                                  cache_dir=str(tmp_path)))
    storage._STORES.clear()


def test_unit_wrapper_pickles_for_process_pools_and_ray():
    import pickle

    io = remote.UnitIO(UnitJob(convert.Convert()), (("s3://b/out", "/tmp/x/out"),), (("s3://b/in", "/tmp/x/in"),))
    back = pickle.loads(pickle.dumps(io))
    assert (back.outputs, back.inputs, back.keep) == (io.outputs, io.inputs, io.keep)
    assert type(back.fn) is UnitJob and type(back.fn.stage) is convert.Convert


def _keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return {o["Key"][len(prefix) + 1:] for page in pages for o in page.get("Contents", [])}


def test_two_runs_on_one_s3_output_the_second_stops_with_the_lock_line(s3, tmp_path, text_dataset):
    """The lock of a remote output is an object in the bucket (created only if absent), taken before anything
    is written: a second run from anywhere (another cache dir: another machine) stops at once, plain or rank.
    Meanwhile the output is marked incomplete in the bucket; at the end lock and marker are gone."""
    import subprocess
    import sys
    import time

    import streaming.base.storage.upload  # noqa: F401 - imported before the race: it takes seconds (torch)
    from typer.testing import CliRunner

    from ettin_data.cli import app

    url = f"s3://{BUCKET}/conc"
    units = [str(text_dataset / "python-docs" / f"split_0000{k}") for k in range(2)]
    here = Path(__file__).parent
    env = {**os.environ, "SLEEPY_SECONDS": "3", "ETTIN_DATA_LOGS": "0",
           "PYTHONPATH": os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, "-m", "sleepy_stage", "tokenize", *units, "-o", url, "-t",
                              "builtin:modernbert", "-w", "1", "-q", "--cache-dir", str(tmp_path / "c1")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not {".ettin_lock", ".ettin_incomplete", "tokenizer.json"} <= _keys(s3, "conc"):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run did not get going"
            time.sleep(0.05)
        for extra in ((), ("--rank", "1", "--world", "2")):
            r = CliRunner().invoke(app, ["tokenize", *units, "-o", url, "-t", "builtin:modernbert", "-q",
                                         "--cache-dir", str(tmp_path / "c2"), *extra])
            lines = r.stderr.strip().splitlines()
            assert r.exit_code == 2 and len(lines) == 1, r.stderr
            assert f"{url} is in use by another run" in lines[0] and f"delete {url}/.ettin_lock" in lines[0]
        assert first.poll() is None, "the first run ended before the second ones were refused: make it slower"
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    keys = _keys(s3, "conc")
    assert "index.json" in keys and not {k for k in keys if k.startswith((".ettin_lock", ".ettin_incomplete"))}


def test_an_s3_output_sees_the_buckets_units_and_a_stale_lock_object(s3, tmp_path, text_dataset):
    url = f"s3://{BUCKET}/shared"
    unit = text_dataset / "python-docs" / "split_00000"
    for p in unit.iterdir():  # another dataset's unit, written there by another machine
        s3.put_object(Bucket=BUCKET, Key=f"shared/other/{p.name}", Body=p.read_bytes())
    cfg = ConvertConfig(inputs=["builtin:python-docs"], output=url, workers=1, cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=rf"^{url} holds MDS units this dataset did not write \(other\)"):
        run(cfg)
    assert _keys(s3, "shared") == {f"other/{p.name}" for p in unit.iterdir()}  # nothing written nor deleted
    for p in unit.iterdir():
        s3.delete_object(Bucket=BUCKET, Key=f"shared/other/{p.name}")
    stale = {"holder": "pid 4242 on gone-host", "rank": 0, "world": 1, "since": "2026-12-01T00:00:00Z"}
    s3.put_object(Bucket=BUCKET, Key="shared/.ettin_lock", Body=json.dumps(stale).encode())
    with pytest.raises(ConfigError, match=rf"pid 4242 on gone-host since 2026-12-01.*delete {url}/.ettin_lock"):
        run(cfg)
    s3.delete_object(Bucket=BUCKET, Key="shared/.ettin_lock")
    assert run(cfg)["complete"] and ".ettin_lock" not in _keys(s3, "shared")
