"""The model store under concurrency and tampering: conditional writes (moto's S3 over HTTP, and local files),
the training lock, and the checks a promoted pointer must pass before its model is read."""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from ndr_jobs.datasets import conditional, storage
from ndr_jobs.model import artifacts, registry

BUCKET = "ndr-models"
logging.getLogger("werkzeug").setLevel(logging.ERROR)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store root: a local directory, or a bucket of moto's S3 server (real HTTP, real conditional headers)."""
    monkeypatch.delenv(storage.LOCAL_S3_ENV, raising=False)
    if request.param == "local":
        return str(tmp_path / "store")
    endpoint = request.getfixturevalue("moto_endpoint")
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/tenant"


def store_of(root: str) -> registry.ModelStore:
    return registry.ModelStore(root, "ndr-prod", "v1")


def model(n: int) -> bytes:
    return f"model-{n}".encode() * 10


def first_reads_meet(monkeypatch: pytest.MonkeyPatch, path_suffix: str, parties: int) -> None:
    """Make the first read of ``path_suffix`` in each of ``parties`` threads wait for the others' first read: every
    thread then writes against the same tag, and all but one must lose the conditional write."""
    barrier = threading.Barrier(parties, timeout=30)
    seen: set[int] = set()
    guard = threading.Lock()
    real = conditional.read

    def read(path: str) -> conditional.Versioned | None:
        found = real(path)
        with guard:
            first = path.endswith(path_suffix) and len(seen) < parties and threading.get_ident() not in seen
            if first:
                seen.add(threading.get_ident())
        if first:
            barrier.wait()
        return found

    monkeypatch.setattr(conditional, "read", read)


def in_threads(*calls: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_racing_publishes_one_wins_the_other_retries_and_takes_the_next_version(
    root: str, monkeypatch: pytest.MonkeyPatch
):
    store = store_of(root)
    first_reads_meet(monkeypatch, "index.json", 2)
    a, b = in_threads(
        lambda: store.publish_counted("run-a", model(1), {"k": "a"}),
        lambda: store.publish_counted("run-b", model(2), {"k": "b"}),
    )
    assert not isinstance(a, BaseException) and not isinstance(b, BaseException), (a, b)
    assert sorted([a[1], b[1]]) == [0, 1]  # one conflict, lost by exactly one of them
    assert {a[0]["version"], b[0]["version"]} == {1, 2}
    index = store.index()
    assert [(v["version"], v["run_key"]) for v in index["versions"]] == sorted(
        [(a[0]["version"], "run-a"), (b[0]["version"], "run-b")]
    )
    for entry, data in ((a[0], model(1)), (b[0], model(2))):
        assert storage.read_bytes(entry["model_uri"]) == data
        assert artifacts.read_json(entry["metadata_uri"])["model_sha256"] == artifacts.sha256(data)
    assert store.publish("run-a", model(1), {"k": "a"}) == a[0]  # idempotent per run key


def test_many_concurrent_publishes_converge_on_distinct_consecutive_versions(root: str):
    store = store_of(root)
    keys = [f"run-{i}" for i in range(8)]
    results = in_threads(*[lambda k=k, i=i: store.publish_counted(k, model(i), {}) for i, k in enumerate(keys)])
    assert not any(isinstance(r, BaseException) for r in results), results
    versions = store.index()["versions"]
    assert sorted(v["version"] for v in versions) == list(range(1, 9))
    assert sorted(v["run_key"] for v in versions) == keys


def test_a_writer_that_keeps_losing_fails_cleanly(root: str):
    path = storage.join(root, "contended.json")
    conditional.write(path, b"0", None)

    def always_overtaken(found: conditional.Versioned | None) -> tuple[bytes, None]:
        assert found is not None
        conditional.write(path, str(int(found.data) + 1).encode(), found.tag)  # someone else got in first
        return b"mine", None

    with pytest.raises(conditional.RetriesExhaustedError, match="3 conditional writes in a row lost"):
        conditional.update(path, always_overtaken, attempts=3, backoff=0.0)
    assert storage.read_bytes(path) == b"3"  # every competing write landed; the loser wrote nothing


def test_conditional_writes_create_once_and_replace_only_the_version_read(root: str):
    path = storage.join(root, "pointer.json")
    tag = conditional.write(path, b"one", None)
    with pytest.raises(conditional.PreconditionFailedError):
        conditional.write(path, b"again", None)
    new = conditional.write(path, b"two", tag)
    with pytest.raises(conditional.PreconditionFailedError):
        conditional.write(path, b"three", tag)  # stale tag
    found = conditional.read(path)
    assert found is not None and found.data == b"two" and found.tag == new
    with pytest.raises(conditional.PreconditionFailedError):
        conditional.write(storage.join(root, "absent.json"), b"x", tag)


def pointer_for(store: registry.ModelStore, entry: dict[str, Any]) -> dict[str, Any]:
    return {"project_name": store.project, "feature_spec_version": store.feature_spec_version,
            "run_key": entry["run_key"], "model_version": entry["version"], "model_uri": entry["model_uri"],
            "model_sha256": entry["model_sha256"]}  # fmt: skip


def test_promotion_over_a_pointer_that_moved_is_refused(root: str):
    store = store_of(root)
    one, two = store.publish("run-1", model(1), {}), store.publish("run-2", model(2), {})
    _, tag = store.promoted_versioned()
    store.promote(pointer_for(store, one), tag)  # None: only if nothing is promoted
    with pytest.raises(conditional.PreconditionFailedError):
        store.promote(pointer_for(store, two), None)
    current, tag = store.promoted_versioned()
    assert current is not None and current["run_key"] == "run-1"
    store.promote(pointer_for(store, two), tag)
    with pytest.raises(conditional.PreconditionFailedError):
        store.promote(pointer_for(store, one), tag)
    assert store.load_promoted_model() == (pointer_for(store, two), model(2))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_uri": "s3://elsewhere/evil/model.tar.gz"}, "names model 's3://elsewhere"),
        ({"model_sha256": "0" * 64}, "disagree on version 1's model_sha256"),
        ({"model_version": 7}, "version 7, which"),
        ({"model_version": "1"}, "no valid model_version"),
        ({"project_name": "other"}, "names project_name 'other'"),
        ({"run_key": "run-x"}, "disagree on version 1's run_key"),
    ],
)
def test_a_tampered_pointer_is_refused(root: str, change: dict[str, Any], message: str):
    store = store_of(root)
    entry = store.publish("run-1", model(1), {})
    if "model_version" in change and change["model_version"] == 7:
        change = {**change, "model_uri": storage.join(store.version_dir(7), "model.tar.gz")}
    storage.write_text(store.promoted_path, json.dumps({**pointer_for(store, entry), **change}))
    with pytest.raises(registry.UntrustedModelError, match=message):
        store.load_promoted_model()


def test_a_tampered_model_is_refused(root: str):
    store = store_of(root)
    entry = store.publish("run-1", model(1), {})
    store.promote(pointer_for(store, entry))
    storage.write_bytes(entry["model_uri"], model(666))
    with pytest.raises(registry.UntrustedModelError, match="does not match the promoted model's sha256"):
        store.load_promoted_model()


def test_a_republish_repairs_a_version_whose_files_were_not_written(root: str):
    store = store_of(root)
    entry = store.publish("run-1", model(1), {"k": 1})
    storage.delete_prefix(store.version_dir(1))  # as if the first attempt stopped after claiming the version
    assert store.publish("run-1", model(1), {"k": 1}) == entry
    assert storage.read_bytes(entry["model_uri"]) == model(1)
    with pytest.raises(artifacts.ArtifactError, match="published as version 1 with another model"):
        store.publish("run-1", model(2), {})


def test_the_training_lock_admits_one_run_until_released_or_expired(root: str):
    store = store_of(root)
    a, b = registry.TrainingLock(store, "run-a", 600), registry.TrainingLock(store, "run-b", 600)
    a.acquire(now=1000.0)
    a.acquire(now=1100.0)  # the holder renews
    with pytest.raises(registry.TrainingLockHeldError, match="'run-a' of project 'ndr-prod' holds .* until"):
        b.acquire(now=1200.0)
    assert b.acquire(now=1701.0)["run_key"] == "run-b"  # run-a's lease ran out (1100 + 600)
    assert not a.release()  # not run-a's any more: left alone
    with pytest.raises(registry.TrainingLockHeldError, match="'run-b'"):
        a.acquire(now=1702.0)
    assert b.release()
    assert a.acquire(now=1703.0)["run_key"] == "run-a"


def test_an_operator_unlocks_a_dead_runs_lock_only_while_it_holds_it(root: str, capsys: pytest.CaptureFixture[str]):
    store = store_of(root)
    registry.TrainingLock(store, "run-dead").acquire()
    with pytest.raises(registry.TrainingLockHeldError) as held:
        registry.TrainingLock(store, "run-b").acquire()
    command = str(held.value).split("if it died: ", 1)[1].rstrip(")").split()
    assert command[:4] == ["python", "-m", "ndr_jobs.model.registry", "unlock"]
    assert registry.main(["lock", "--root", root, "--project", store.project]) == 0
    assert json.loads(capsys.readouterr().out)["run_key"] == "run-dead"
    assert registry.main(["unlock", "--root", root, "--project", store.project, "--run-key", "run-b"]) == 1
    assert "not held by run 'run-b' (holder: 'run-dead')" in capsys.readouterr().err
    assert registry.main(command[3:]) == 0  # the command the error printed
    assert registry.TrainingLock(store, "run-b").acquire()["run_key"] == "run-b"
    assert registry.main(command[3:]) == 1  # run-b holds it now: never broken by the stale command


def test_racing_runs_take_the_training_lock_once(root: str, monkeypatch: pytest.MonkeyPatch):
    store = store_of(root)
    first_reads_meet(monkeypatch, "training.lock.json", 2)
    results = in_threads(*[lambda k=k: registry.TrainingLock(store, k).acquire() for k in ("run-a", "run-b")])
    held = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, registry.TrainingLockHeldError)]
    assert len(held) == 1 and len(refused) == 1, results
    assert json.loads(storage.read_bytes(registry.TrainingLock(store, "x").path))["run_key"] == held[0]["run_key"]


def test_the_lock_lease_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    store = store_of(str(tmp_path))
    monkeypatch.setenv(registry.LOCK_SECONDS_ENV, "900")
    assert registry.TrainingLock.for_run(store, "r").lease_seconds == 900
    for bad in ("5", "ten", "-900", "99999999"):
        monkeypatch.setenv(registry.LOCK_SECONDS_ENV, bad)
        with pytest.raises(ValueError, match=registry.LOCK_SECONDS_ENV):
            registry.TrainingLock.for_run(store, "r")
