"""Runs whose data and results live in a real OpenStack Swift, reached through its S3 API
(boto3) and its Swift API (swiftclient, tempauth), and the failures a user can act on."""

from __future__ import annotations

import hashlib
import json
import os

import boto3
import pytest
import requests
from botocore.config import Config

from common.storage import StorageError
from common.storage.s3 import S3Store
from common.storage.swift import SwiftStore
from tests.conftest import make_zip, unstamped

pytestmark = pytest.mark.integration

TRAIN = (
    "ls $DATA_DIR | sort > $RESULT_DIR/seen.txt; cat $DATA_DIR/nested/b.csv; "
    "echo model > $RESULT_DIR/model.bin"
)


def s3_client(swift, secret="testing"):
    return boto3.client(
        "s3",
        endpoint_url=swift["s3_endpoint"],
        aws_access_key_id="test:tester",
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def s3_manifest(
    swift, data: str, results: str, command: str = TRAIN, secret="testing", endpoint=None
) -> str:
    conn = (
        f"endpoint_url: {endpoint or swift['s3_endpoint']}\n"
        f"    aws_access_key_id: test:tester\n    aws_secret_access_key: {secret}"
    )
    return f"""
model_definition:
  name: s3-run
  framework: {{name: python, version: "3.11"}}
  execution: {{command: "{command}", resource: small}}
training_data:
- connection:
    {conn}
  source: {{bucket: {data}, type: s3}}
training_results:
  connection:
    {conn}
  target: {{bucket: {results}, type: s3}}
"""


def swift_manifest(swift, data: str, results: str, command: str = TRAIN, password="testing") -> str:
    conn = (
        f"auth_url: {swift['auth_v1']}\n    user_name: test:tester\n"
        f"    password: {password}\n    region: RegionOne"
    )
    return f"""
model_definition:
  name: swift-run
  framework: {{name: python, version: "3.11"}}
  execution: {{command: "{command}", resource: small}}
training_data_reference:
- connection:
    {conn}
  source: {{bucket: {data}, type: bluemix_objectstore}}
training_results_reference:
  connection:
    {conn}
  target: {{bucket: {results}, type: bluemix_objectstore}}
"""


@pytest.fixture(scope="module")
def buckets(swift):
    client = s3_client(swift)
    for name in ("s3-data", "s3-results", "s3-empty", "sw-data", "sw-results"):
        client.create_bucket(Bucket=name)
    for bucket in ("s3-data", "sw-data"):
        client.put_object(Bucket=bucket, Key="a.csv", Body=b"1,2\n")
        client.put_object(Bucket=bucket, Key="nested/b.csv", Body=b"3,4\n")
    return client


def results_of(client, bucket: str, run_id: str) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{run_id}/")
    return {
        o["Key"][len(run_id) + 1 :]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listed.get("Contents", [])
    }


@pytest.mark.parametrize("kind", ["s3", "swift"])
def test_run_stages_from_and_stores_to_swift(stack, workers, swift, buckets, kind):
    if kind == "s3":
        run_id = stack.submit(s3_manifest(swift, "s3-data", "s3-results"))
        bucket = "s3-results"
    else:
        run_id = stack.submit(swift_manifest(swift, "sw-data", "sw-results"))
        bucket = "sw-results"
    done = stack.wait_ended(run_id)
    assert done["state"] == "COMPLETED", done["status_message"]
    stored = results_of(buckets, bucket, run_id)
    assert stored["seen.txt"] == b"a.csv\nnested\n"
    assert stored["model.bin"] == b"model\n"
    assert unstamped(stored["learner-1/training-log.txt"].decode()) == "3,4\n"
    assert stored["_submitted_code/model.zip"].startswith(b"PK")
    assert b"data: 2 objects, 8 bytes" in stored["learner-1/load-data.log"]
    assert not any(k.startswith("learner-1/log-chunks/") for k in stored)
    assert done["usage"]["staged_objects"] == 2 and done["usage"]["staged_bytes"] == 8


def test_an_empty_data_bucket_is_a_valid_run(stack, workers, swift, buckets):
    run_id = stack.submit(
        s3_manifest(swift, "s3-empty", "s3-results", command="ls $DATA_DIR | wc -l")
    )
    done = stack.wait_ended(run_id)
    assert done["state"] == "COMPLETED", done["status_message"]
    assert (
        unstamped(results_of(buckets, "s3-results", run_id)["learner-1/training-log.txt"].decode())
        == "0\n"
    )


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("s3-wrong-secret", "C103", "bucket 's3-data': cannot open the bucket: access denied"),
        (
            "swift-wrong-password",
            "C103",
            "bucket 'sw-data': cannot open the bucket: credentials refused",
        ),
        ("s3-missing-bucket", "C103", "bucket 'no-such-bucket': cannot open the bucket: bucket"),
        ("swift-missing-bucket", "C103", "bucket 'no-such-bucket': cannot open the bucket: bucket"),
        (
            "s3-unreachable",
            "S302",
            "s3 http://127.0.0.1:9, bucket 's3-data': cannot open the "
            "bucket: endpoint unreachable after retries",
        ),
    ],
)
def test_failures_name_the_store_the_bucket_and_the_reason(
    stack, workers, swift, buckets, case, code, words
):
    manifest = {
        "s3-wrong-secret": lambda: s3_manifest(swift, "s3-data", "s3-results", secret="nope"),
        "swift-wrong-password": lambda: swift_manifest(
            swift, "sw-data", "sw-results", password="nope"
        ),
        "s3-missing-bucket": lambda: s3_manifest(swift, "no-such-bucket", "s3-results"),
        "swift-missing-bucket": lambda: swift_manifest(swift, "no-such-bucket", "sw-results"),
        "s3-unreachable": lambda: s3_manifest(
            swift, "s3-data", "s3-results", endpoint="http://127.0.0.1:9"
        ),
    }[case]()
    run_id = stack.submit(manifest)
    done = stack.wait_ended(run_id)
    assert done["state"] == "FAILED"
    assert done["error_code"] == code
    assert words in done["status_message"], done["status_message"]
    assert "Traceback" not in done["status_message"]
    assert "nope" not in json.dumps(done)  # the wrong secret is not echoed either


@pytest.mark.parametrize("kind", ["s3", "swift"])
def test_a_100_mb_object_survives_a_round_trip(swift, buckets, tmp_path, kind):
    if kind == "s3":
        store, bucket = S3Store(swift["s3_endpoint"], "test:tester", "testing"), "s3-results"
    else:
        auth = {"auth_url": swift["auth_v1"], "user_name": "test:tester", "password": "testing"}
        store, bucket = SwiftStore(auth), "sw-results"
    src = tmp_path / "out" / "big.bin"
    src.parent.mkdir()
    with open(src, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1024 * 1024))
    stats = store.upload_dir(src.parent, bucket, "round-trip")  # multipart / SLO segments
    assert (stats.objects, stats.bytes) == (1, 100 * 1024 * 1024)
    back = tmp_path / "back.bin"
    store.get_file(bucket, "round-trip/big.bin", back)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_s3_staging_gets_each_object_without_asking_its_size_again(swift, tmp_path):
    """Sizes and ETags come from the listing: no HEAD, one plain GET per small object (an
    empty one too), ranged GETs (16 MB parts) each with If-Match for a large one, here a
    multipart upload (an SLO in Swift, ETag "…-3"); every byte as stored."""
    store = S3Store(swift["s3_endpoint"], "test:tester", "testing")
    store.client.create_bucket(Bucket="s3-bulk")
    sent = {f"small/{i}.bin": os.urandom(1000 + i) for i in range(5)}
    sent["empty.bin"] = b""
    sent["large.bin"] = os.urandom(40 * 1024 * 1024)
    for key, data in sent.items():
        if key != "large.bin":
            store.client.put_object(Bucket="s3-bulk", Key=key, Body=data)
    (tmp_path / "large.bin").write_bytes(sent["large.bin"])
    store.put_file(tmp_path / "large.bin", "s3-bulk", "large.bin")  # multipart
    etag = store.client.head_object(Bucket="s3-bulk", Key="large.bin")["ETag"]
    assert etag.endswith('-3"')
    calls = []
    store.client.meta.events.register(
        "provide-client-params.s3.*",
        lambda params, model, **kwargs: calls.append(
            (model.name, params.get("Range", ""), params.get("IfMatch"))
        ),
    )
    stats = store.download_all("s3-bulk", tmp_path / "got")
    assert (stats.objects, stats.bytes) == (7, sum(len(d) for d in sent.values()))
    mb16 = 16 * 1024 * 1024
    assert sorted(calls) == sorted(
        [("ListObjectsV2", "", None)]
        + [("GetObject", "", None)] * 6
        + [
            ("GetObject", f"bytes={start}-{end}", etag)
            for start, end in ((0, mb16 - 1), (mb16, 2 * mb16 - 1), (2 * mb16, ""))
        ]
    )
    for key, data in sent.items():
        assert (tmp_path / "got" / key).read_bytes() == data


def test_an_object_replaced_while_staged_fails_the_staging_and_leaves_no_part(swift, tmp_path):
    """The listing's ETag guards a large object's parts (If-Match): replaced between the
    listing and its parts, the staging fails naming the cause, and no half file stays."""
    store = S3Store(swift["s3_endpoint"], "test:tester", "testing")
    store.client.create_bucket(Bucket="s3-replaced")
    big = 20 * 1024 * 1024
    store.client.put_object(Bucket="s3-replaced", Key="kept.bin", Body=b"kept")
    store.client.put_object(Bucket="s3-replaced", Key="big.bin", Body=os.urandom(big))
    listed = store.list("s3-replaced")
    store.client.put_object(Bucket="s3-replaced", Key="big.bin", Body=os.urandom(big))
    store.list = lambda bucket, prefix="": listed  # the listing as it was before
    with pytest.raises(StorageError) as caught:
        store.download_all("s3-replaced", tmp_path / "got")
    assert "bucket 's3-replaced'" in str(caught.value)
    assert "changed while it was staged" in str(caught.value)
    assert not caught.value.user_fault
    assert not (tmp_path / "got" / "big.bin").exists()


def test_a_small_object_of_another_size_than_listed_fails_the_staging(swift, tmp_path):
    """A small object comes in one plain GET (no If-Match): what landed is checked against
    the listing, so one replaced by another size between the listing and its GET fails the
    staging, naming it, instead of passing for the listed object."""
    store = S3Store(swift["s3_endpoint"], "test:tester", "testing")
    store.client.create_bucket(Bucket="s3-resized")
    store.client.put_object(Bucket="s3-resized", Key="a.csv", Body=b"1,2\n")
    store.client.put_object(Bucket="s3-resized", Key="b.csv", Body=b"3,4\n")
    listed = store.list("s3-resized")
    store.client.put_object(Bucket="s3-resized", Key="b.csv", Body=b"3,4\n5,6\n")
    store.list = lambda bucket, prefix="": listed
    with pytest.raises(StorageError) as caught:
        store.download_all("s3-resized", tmp_path / "got")
    assert "object 'b.csv' changed while it was staged (listed with 4 bytes, 8 staged)" in str(
        caught.value
    )
    assert not caught.value.user_fault


@pytest.mark.parametrize(
    "secret, bucket, reason",
    [
        ("testing", "no-such-bucket", "bucket does not exist"),
        ("wrong", "s3-results", "credentials refused (wrong secret key)"),
    ],
)
def test_an_s3_write_refused_is_a_storage_error_naming_the_reason(
    swift, buckets, tmp_path, secret, bucket, reason
):
    """boto3's upload_file wraps the refusal (S3UploadFailedError): still the store's
    error, with the reason, never an exception the API would answer with a 500."""
    store = S3Store(swift["s3_endpoint"], "test:tester", secret)
    src = tmp_path / "one.txt"
    src.write_text("one")
    for put in (lambda: store.put_file(src, bucket, "some/key"),
                lambda: store.put_bytes(b"one", bucket, "some/key")):  # fmt: skip
        with pytest.raises(StorageError) as caught:
            put()
        assert caught.value.user_fault
        assert str(caught.value).endswith(f"bucket {bucket!r}: cannot write some/key: {reason}")


@pytest.mark.parametrize(
    "password, bucket, reason",
    [
        ("testing", "no-such-bucket", "bucket or object does not exist"),
        ("wrong", "sw-results", "credentials refused"),
    ],
)
def test_a_swift_write_from_memory_lands_whole_or_is_a_storage_error_naming_the_reason(
    swift, buckets, password, bucket, reason
):
    connection = {"auth_url": swift["auth_v1"], "user_name": "test:tester"}
    SwiftStore({**connection, "password": "testing"}).put_bytes(b"PK" * 1000, "sw-results", "m.zip")
    assert buckets.get_object(Bucket="sw-results", Key="m.zip")["Body"].read() == b"PK" * 1000
    with pytest.raises(StorageError) as caught:
        SwiftStore({**connection, "password": password}).put_bytes(b"one", bucket, "some/key")
    assert caught.value.user_fault
    assert str(caught.value).endswith(f"bucket {bucket!r}: cannot write some/key: {reason}")


def test_a_missing_object_is_a_storage_error_naming_it(swift, buckets, tmp_path):
    store = SwiftStore(
        {"auth_url": swift["auth_v1"], "user_name": "test:tester", "password": "testing"}
    )
    with pytest.raises(StorageError) as caught:
        store.get_file("sw-results", "no/such/object", tmp_path / "x")
    assert caught.value.user_fault
    assert "bucket 'sw-results': cannot read no/such/object" in str(caught.value)


@pytest.mark.parametrize("kind", ["s3", "swift"])
def test_stream_gives_an_objects_bytes_in_chunks_and_refuses_a_missing_one(swift, buckets, kind):
    if kind == "s3":
        store = S3Store(swift["s3_endpoint"], "test:tester", "testing")
    else:
        store = SwiftStore(
            {"auth_url": swift["auth_v1"], "user_name": "test:tester", "password": "testing"}
        )
    body = os.urandom(2_500_000)  # three chunks of the stream's 1 MiB
    buckets.put_object(Bucket="sw-results", Key=f"stream/{kind}.bin", Body=body)
    size, chunks = store.stream("sw-results", f"stream/{kind}.bin")
    pieces = list(chunks)
    assert size == len(body) and b"".join(pieces) == body and len(pieces) >= 3
    with pytest.raises(StorageError) as caught:
        store.stream("sw-results", "no/such/object")
    assert caught.value.user_fault
    assert "bucket 'sw-results': cannot read no/such/object" in str(caught.value)


@pytest.mark.parametrize("kind", ["s3", "swift"])
def test_the_artifact_store_can_be_a_bucket_shared_by_api_and_workers(
    stack, workers, swift, buckets, tmp_path, kind
):
    from tests.conftest import manifest_yaml

    bucket = f"artifacts-{kind}"
    buckets.create_bucket(Bucket=bucket)
    env = {
        "DLAAS_ARTIFACT_STORE": kind,
        "DLAAS_ARTIFACT_BUCKET": bucket,
        "DLAAS_ARTIFACT_ENDPOINT": swift["s3_endpoint"] if kind == "s3" else swift["auth_v1"],
        "DLAAS_ARTIFACT_USER": "test:tester",
        "DLAAS_ARTIFACT_KEY": "testing",
    }
    stack.bucket("data")
    stack.bucket("results")
    worker = stack.start_worker(f"artifacts-{kind}@test", "4,5,6,7", **env)
    try:
        with stack.api(f"api-artifacts-{kind}", **env) as url:
            zipped = make_zip({"train.sh": f"echo from {kind}\n"})
            answer = requests.post(
                f"{url}/v3/models",
                files={
                    "model_definition": ("m.zip", zipped),
                    "manifest": ("m.yml", manifest_yaml("bash train.sh", resource="large")),
                },
                headers=stack.headers(),
                timeout=10,
            )
            assert answer.status_code == 201, answer.text
            run_id = answer.json()["model_id"]
            done = stack.wait_ended(run_id)
        assert done["state"] == "COMPLETED", done["status_message"]
        assert done["worker"] == f"artifacts-{kind}@test"
        results = stack.store_root / "tests" / "results" / run_id
        assert (results / "_submitted_code" / "model.zip").read_bytes() == zipped
        assert unstamped((results / "learner-1" / "training-log.txt").read_text()) == (
            f"from {kind}\n"
        )
        assert not list(stack.artifact_dir.rglob(f"{run_id}*"))  # never in the local folder
        left = buckets.list_objects_v2(Bucket=bucket).get("Contents", [])
        assert [o["Key"] for o in left if o["Key"].startswith(run_id)] == []  # removed at the end
    finally:
        stack.stop(worker)


def keystone_connection(keystone, password=None) -> dict:
    return {
        "auth_url": keystone["auth_url"],
        "user_name": keystone["user"],
        "password": password or keystone["password"],
        "region": keystone["region"],
        "domain_name": keystone["domain"],
        "project_id": keystone["project_id"],
    }


def keystone_manifest(keystone, password=None) -> str:
    conn = "\n    ".join(f"{k}: {v}" for k, v in keystone_connection(keystone, password).items())
    return f"""
model_definition:
  name: keystone-run
  framework: {{name: python, version: "3.11"}}
  execution: {{command: "{TRAIN}", resource: small}}
training_data_reference:
- connection:
    {conn}
  source: {{bucket: ks-data, type: bluemix_objectstore}}
training_results_reference:
  connection:
    {conn}
  target: {{bucket: ks-results, type: bluemix_objectstore}}
"""


@pytest.fixture(scope="module")
def keystone_buckets(keystone, tmp_path_factory):
    from swiftclient.service import SwiftService

    store = SwiftStore(keystone_connection(keystone))
    with SwiftService(options=dict(store.options)) as service:
        for name in ("ks-data", "ks-results"):
            assert service.post(container=name)["success"]
    data = tmp_path_factory.mktemp("ks-data")
    (data / "nested").mkdir()
    (data / "a.csv").write_text("1,2\n")
    (data / "nested" / "b.csv").write_text("3,4\n")
    for path, key in ((data / "a.csv", "a.csv"), (data / "nested" / "b.csv", "nested/b.csv")):
        store.put_file(path, "ks-data", key)
    return store


def test_run_with_keystone_v3_credentials(stack, workers, keystone, keystone_buckets, tmp_path):
    run_id = stack.submit(keystone_manifest(keystone))
    done = stack.wait_ended(run_id)
    assert done["state"] == "COMPLETED", done["status_message"]
    assert done["manifest"]["training_data"]["connection"]["password"] == "<redacted>"
    keys = [o.key for o in keystone_buckets.list("ks-results", f"{run_id}/")]
    for expected in (
        "seen.txt",
        "model.bin",
        "learner-1/training-log.txt",
        "_submitted_code/model.zip",
    ):
        assert f"{run_id}/{expected}" in keys
    keystone_buckets.get_file("ks-results", f"{run_id}/seen.txt", tmp_path / "seen.txt")
    assert (tmp_path / "seen.txt").read_text() == "a.csv\nnested\n"
    # Its results stream back through the service with the same Keystone credentials.
    url = f"{stack.api_url}/v3/models/{run_id}/results"
    listed = requests.get(url, headers=stack.headers(), timeout=10).json()["files"]
    assert {"seen.txt", "model.bin"} <= {f["path"] for f in listed}
    got = requests.get(f"{url}/seen.txt", headers=stack.headers(), timeout=10)
    assert got.status_code == 200 and got.content == b"a.csv\nnested\n"


def test_keystone_wrong_password_is_c103(stack, workers, keystone, keystone_buckets):
    run_id = stack.submit(keystone_manifest(keystone, password="nope"))
    done = stack.wait_ended(run_id)
    assert done["state"] == "FAILED" and done["error_code"] == "C103"
    assert "bucket 'ks-data': cannot open the bucket: credentials refused" in done["status_message"]
