"""`dlaas download` and GET /v3/models/<id>/results[/<path>]: a run's results streamed through
the service from a local store, S3 and Swift (a real Swift, its S3 API and tempauth), byte for
byte what the run wrote; one file, a folder, all; another user's run answers 404."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import requests

from tests.conftest import manifest_yaml
from tests.e2e.test_cli_e2e import dlaas
from tests.e2e.test_object_storage import results_of, s3_client, s3_manifest, swift_manifest

pytestmark = pytest.mark.integration

# What the run writes: a nested file, a name with a space, and a 20 MB file of random bytes
# (large enough for the progress bar and for several of the service's 1 MiB chunks).
WRITE = (
    "mkdir -p $RESULT_DIR/nested/deeper; echo weights > $RESULT_DIR/nested/deeper/w.txt; "
    'echo spaced > "$RESULT_DIR/with space.txt"; '
    "head -c 20000000 /dev/urandom > $RESULT_DIR/model.bin; echo wrote"
)


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def local_run(stack, workers) -> str:
    stack.bucket("data"), stack.bucket("results")
    run_id = stack.submit(manifest_yaml(command=WRITE))
    done = stack.wait_ended(run_id)
    assert done["state"] == "COMPLETED", done["status_message"]
    return run_id


def test_download_all_gives_what_the_run_wrote_with_a_progress_bar(stack, local_run, tmp_path):
    stored = stack.bucket("results") / local_run
    done = dlaas(stack, "download", local_run, "--to", str(tmp_path / "all"))
    assert done.returncode == 0, done.stderr
    got = digests(tmp_path / "all")
    assert got == digests(stored)
    assert {"model.bin", "nested/deeper/w.txt", "with space.txt"} <= set(got)
    assert "learner-1/training-log.txt" in got and "_submitted_code/model.zip" in got
    assert (tmp_path / "all" / "model.bin").stat().st_size == 20_000_000
    assert not list((tmp_path / "all").rglob("*.part"))
    lines = done.stdout.splitlines()
    size = sum(p.stat().st_size for p in stored.rglob("*") if p.is_file())
    assert lines[-2] == f"Downloaded {len(got)} files ({size} bytes) to {tmp_path / 'all'}"
    assert lines[-1] == "OK"
    # The 20 MB file had a progress bar (on stderr); the small ones none.
    assert "model.bin" in done.stderr and "100%" in done.stderr
    assert "w.txt" not in done.stderr


def test_download_one_file_or_one_folder(stack, local_run, tmp_path):
    one = dlaas(stack, "download", local_run, "with space.txt", "--to", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert digests(tmp_path / "one") == {"with space.txt": hashlib.sha256(b"spaced\n").hexdigest()}
    folder = dlaas(stack, "download", local_run, "nested/", "--to", str(tmp_path / "f"), "--json")
    assert folder.returncode == 0, folder.stderr
    assert json.loads(folder.stdout)["files"] == [{"path": "nested/deeper/w.txt", "size": 8}]
    assert (tmp_path / "f" / "nested" / "deeper" / "w.txt").read_text() == "weights\n"
    # The default folder is ./ID, in the working directory.
    here = dlaas(stack, "download", local_run, "nested/deeper/w.txt", cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert (tmp_path / local_run / "nested" / "deeper" / "w.txt").read_text() == "weights\n"
    missing = dlaas(stack, "download", local_run, "nope.txt", "--to", str(tmp_path / "x"))
    assert missing.returncode == 1 and missing.stdout == "FAILED\n"
    assert missing.stderr.startswith(
        f"{local_run} has no result file or folder 'nope.txt' (its files: "
    )
    assert not (tmp_path / "x").exists()


def test_the_http_twin_lists_streams_and_refuses(stack, local_run):
    url = f"{stack.api_url}/v3/models/{local_run}/results"
    listed = requests.get(url, headers=stack.headers(), timeout=10).json()
    assert listed["results_location"]["prefix"] == f"{local_run}/"
    sizes = {f["path"]: f["size"] for f in listed["files"]}
    assert sizes["model.bin"] == 20_000_000 and listed["total_bytes"] == sum(sizes.values())
    got = requests.get(f"{url}/nested/deeper/w.txt", headers=stack.headers(), timeout=10)
    assert got.status_code == 200 and got.content == b"weights\n"
    assert got.headers["Content-Length"] == "8"
    assert got.headers["Content-Disposition"] == 'attachment; filename="w.txt"'
    absent = requests.get(f"{url}/nested/none.txt", headers=stack.headers(), timeout=10)
    assert absent.status_code == 404
    assert absent.json()["error"]["field"] == "path"
    # A path that would climb out of the run's folder (into another run's) is refused.
    for climb in ("nested/../../x", "nested/%2e%2e/%2e%2e/x"):
        refused = requests.get(f"{url}/{climb}", headers=stack.headers(), timeout=10)
        assert refused.status_code in (400, 404), (climb, refused.status_code)
        assert "error" in refused.json()


def test_another_users_run_answers_404_everywhere(stack, local_run, tmp_path):
    url = f"{stack.api_url}/v3/models/{local_run}/results"
    for path in ("", "/model.bin"):
        answer = requests.get(url + path, headers=stack.headers("bob"), timeout=10)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["message"] == f"no training run '{local_run}'"
    done = dlaas(stack, "download", local_run, "--to", str(tmp_path / "b"), user="bob")
    assert done.returncode == 1
    assert done.stderr.strip() == f"no training run '{local_run}' (HTTP 404)"
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def object_buckets(swift):
    client = s3_client(swift)
    for name in ("dl-data", "dl-s3-results", "dl-sw-results"):
        client.create_bucket(Bucket=name)
    client.put_object(Bucket="dl-data", Key="a.csv", Body=b"1,2\n")
    return client


@pytest.mark.parametrize("kind", ["s3", "swift"])
def test_download_from_s3_and_swift_gives_the_stored_bytes(
    stack, workers, swift, object_buckets, kind, tmp_path
):
    make = s3_manifest if kind == "s3" else swift_manifest
    bucket = f"dl-{'s3' if kind == 's3' else 'sw'}-results"
    run_id = stack.submit(make(swift, "dl-data", bucket, command=WRITE.replace('"', '\\"')))
    done = stack.wait_ended(run_id)
    assert done["state"] == "COMPLETED", done["status_message"]
    got = dlaas(stack, "download", run_id, "--to", str(tmp_path / kind))
    assert got.returncode == 0, got.stderr
    stored = results_of(object_buckets, bucket, run_id)
    assert digests(tmp_path / kind) == {
        key: hashlib.sha256(body).hexdigest() for key, body in stored.items()
    }
    assert len(stored["model.bin"]) == 20_000_000 and "with space.txt" in stored
