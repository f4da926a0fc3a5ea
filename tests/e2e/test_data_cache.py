"""The node's data cache against a real Swift through its S3 API: a warm staging takes
nothing from the store, a changed and a new object are all a third one fetches, two stagings
at once fetch a shared object once, eviction under a small limit, a broken cache degrades to
plain staging; and through real workers: `show` says what came from where, and a run that
changes or deletes its DATA_DIR harms no later run."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from common.storage.s3 import S3Store
from tests.conftest import unstamped
from tests.e2e.test_cli_e2e import dlaas
from tests.e2e.test_object_storage import s3_client, s3_manifest
from tests.e2e.test_watch import scrape
from worker.datacache import DataCache, object_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(swift):
    return S3Store(swift["s3_endpoint"], "test:tester", "testing")


def bucket_with(store, name: str, objects: dict[str, bytes]) -> None:
    store.client.create_bucket(Bucket=name)
    for key, body in objects.items():
        store.client.put_object(Bucket=name, Key=key, Body=body)


def counting(store):
    """The GETs the store answers from now on, by key."""
    gets = []
    store.client.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )
    return gets


def files(root) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_warm_staging_fetches_nothing_and_a_changed_one_only_what_changed(store, tmp_path):
    sent = {f"part-{i}.bin": os.urandom(2000 + i) for i in range(5)} | {"nested/x.csv": b"1,2\n"}
    bucket_with(store, "cache-a", sent)
    cache = DataCache(tmp_path / "cache", 10**9)
    cold = cache.stage(store, "cache-a", _fresh(tmp_path / "run-1"))
    assert (cold.fetched.objects, cold.cached.objects) == (6, 0)
    gets = counting(store)
    warm = cache.stage(store, "cache-a", _fresh(tmp_path / "run-2"))
    assert (warm.fetched.objects, warm.cached.objects, warm.cached.bytes) == (
        0,
        6,
        sum(map(len, sent.values())),
    )
    assert gets == []  # listed with the run's own credentials, nothing downloaded
    assert files(tmp_path / "run-2") == sent
    # One object changed, one added: exactly those two come from the store.
    store.client.put_object(Bucket="cache-a", Key="part-2.bin", Body=b"changed")
    store.client.put_object(Bucket="cache-a", Key="new.bin", Body=b"new")
    third = cache.stage(store, "cache-a", _fresh(tmp_path / "run-3"))
    assert sorted(gets) == ["new.bin", "part-2.bin"]
    assert (third.fetched.objects, third.cached.objects) == (2, 5)
    assert files(tmp_path / "run-3") == sent | {"part-2.bin": b"changed", "new.bin": b"new"}
    if os.geteuid() == 0:  # hard links to root's read-only files
        staged = tmp_path / "run-3" / "part-0.bin"
        assert staged.stat().st_nlink >= 3 and staged.stat().st_mode & 0o777 == 0o444


def test_two_stagings_at_once_fetch_a_shared_object_once(store, tmp_path):
    bucket_with(store, "cache-b", {"big.bin": os.urandom(8 * 1024 * 1024), "small.bin": b"s"})
    cache = DataCache(tmp_path / "cache", 10**9)
    gets = counting(store)
    done = {}
    start = threading.Barrier(2)

    def stage(name):
        start.wait(timeout=10)
        done[name] = cache.stage(store, "cache-b", _fresh(tmp_path / name))

    threads = [threading.Thread(target=stage, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(gets) == ["big.bin", "small.bin"]  # once each, for both stagings
    assert sum(s.fetched.objects for s in done.values()) == 2
    assert sum(s.cached.objects for s in done.values()) == 2
    assert files(tmp_path / "one") == files(tmp_path / "two")


def test_eviction_keeps_the_cache_under_its_limit_but_never_a_file_in_use(store, tmp_path):
    bucket_with(store, "cache-c", {f"{i}.bin": os.urandom(1000) for i in range(4)})
    bucket_with(store, "cache-d", {f"{i}.bin": os.urandom(1000) for i in range(4)})
    cache = DataCache(tmp_path / "cache", 4500)
    in_use = _fresh(tmp_path / "run-c")
    cache.stage(store, "cache-c", in_use)
    if os.geteuid() != 0:
        pytest.skip("files in use are known by their links: the worker links only as root")
    second = cache.stage(store, "cache-d", _fresh(tmp_path / "run-d"))
    # All eight are linked from a DATA_DIR: none may go, though past the limit.
    assert second.evicted == 0
    for path in in_use.iterdir():
        path.unlink()  # run-c ends: its DATA_DIR is removed
    third = cache.stage(store, "cache-d", _fresh(tmp_path / "run-d2"))
    assert third.evicted == 4 and third.cached.objects == 4
    kept = [p for p in (tmp_path / "cache" / "objects").rglob("*") if p.is_file()]
    assert len(kept) == 4 and sum(p.stat().st_size for p in kept) <= 4500


def test_a_broken_cache_degrades_to_plain_staging_with_a_warning(store, tmp_path):
    bucket_with(store, "cache-e", {"a.bin": b"a", "b.bin": b"b"})
    broken = tmp_path / "cache"
    broken.write_text("a file where the cache folder should be")
    staged = DataCache(broken, 10**9).stage(store, "cache-e", _fresh(tmp_path / "run"))
    assert staged.warning.startswith(f"data cache {broken} not used (")
    assert staged.fetched.objects == 2 and staged.cached.objects == 0
    assert files(tmp_path / "run") == {"a.bin": b"a", "b.bin": b"b"}


def test_an_unwritable_cache_folder_degrades_to_plain_staging_with_a_warning(store, tmp_path):
    # Root writes through any mode; an immutable folder (chattr +i) refuses even root.
    bucket_with(store, "cache-f", {"a.bin": b"a", "b.bin": b"b"})
    frozen = tmp_path / "cache"
    frozen.mkdir()
    made = subprocess.run(["chattr", "+i", str(frozen)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not allowed here: {made.stderr.strip()}")
    try:
        staged = DataCache(frozen, 10**9).stage(store, "cache-f", _fresh(tmp_path / "run"))
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)
    assert staged.warning.startswith(f"data cache {frozen} not used (")
    assert staged.fetched.objects == 2 and staged.cached.objects == 0
    assert files(tmp_path / "run") == {"a.bin": b"a", "b.bin": b"b"}
    assert list(frozen.iterdir()) == []


def test_cache_names_change_with_the_etag_and_size():
    from common.storage.base import ObjectInfo

    one = object_key("s3 http://x", "b", ObjectInfo("k", 3, '"e1"'))
    assert one == object_key("s3 http://x", "b", ObjectInfo("k", 3, "e1"))
    assert one != object_key("s3 http://x", "b", ObjectInfo("k", 3, '"e2"'))
    assert one != object_key("s3 http://x", "b", ObjectInfo("k", 4, '"e1"'))
    assert one != object_key("s3 http://y", "b", ObjectInfo("k", 3, '"e1"'))
    assert object_key("local store /x", "b", ObjectInfo("k", 3)) is None


# A run that tries to change its data: append, overwrite, chmod, delete, replace.
VANDAL = (
    "cat $DATA_DIR/a.csv > $RESULT_DIR/seen.txt; "
    "echo vandal >> $DATA_DIR/a.csv 2>/dev/null; chmod 666 $DATA_DIR/a.csv 2>/dev/null; "
    "echo vandal > $DATA_DIR/nested/b.csv 2>/dev/null; rm -f $DATA_DIR/nested/b.csv; "
    "echo forged > $DATA_DIR/nested/b.csv; true"
)


def test_through_workers_show_tells_where_data_came_from_and_no_run_harms_the_next(
    stack, workers, swift
):
    client = s3_client(swift)
    client.create_bucket(Bucket="cache-runs")
    client.create_bucket(Bucket="cache-results")
    client.put_object(Bucket="cache-runs", Key="a.csv", Body=b"1,2\n")
    client.put_object(Bucket="cache-runs", Key="nested/b.csv", Body=b"3,4\n")
    manifest = s3_manifest(swift, "cache-runs", "cache-results", command=VANDAL)
    before = scrape(stack.api_url)
    first = stack.wait_ended(stack.submit(manifest))
    assert first["state"] == "COMPLETED", first["status_message"]
    second = stack.wait_ended(stack.submit(manifest))
    assert second["state"] == "COMPLETED", second["status_message"]
    usage = second["usage"]
    assert (usage["cached_objects"], usage["fetched_objects"]) == (2, 0)
    assert usage["cached_bytes"] == 8 and usage["staged_objects"] == 2
    # The second run saw the original bytes, though the first tried to change them.
    seen = client.get_object(Bucket="cache-results", Key=f"{second['model_id']}/seen.txt")
    assert seen["Body"].read() == b"1,2\n"
    check = s3_manifest(
        swift, "cache-runs", "cache-results", command="cat $DATA_DIR/a.csv $DATA_DIR/nested/b.csv"
    )
    third = stack.wait_ended(stack.submit(check))
    log = (
        client.get_object(
            Bucket="cache-results", Key=f"{third['model_id']}/learner-1/training-log.txt"
        )["Body"]
        .read()
        .decode()
    )
    assert unstamped(log) == "1,2\n3,4\n"
    # /metrics counts the node's hits and misses: 2 fetched by the first, 4 hits after.
    after = scrape(stack.api_url)
    node = (("node", first["worker"]),)

    def counted(name):
        return after.get((name, node), 0) - before.get((name, node), 0)

    assert first["worker"] == second["worker"] == third["worker"]
    assert counted("dlaas_data_cache_misses_total") == 2
    assert counted("dlaas_data_cache_hits_total") == 4
    assert counted("dlaas_data_cache_hit_bytes_total") == 16
    shown = dlaas(stack, "show", "trained-models", second["model_id"])
    assert "2 objects (8 bytes) from the node's cache, 0 (0 bytes) from the store" in shown.stdout


def _fresh(path):
    path.mkdir(parents=True)
    return path
