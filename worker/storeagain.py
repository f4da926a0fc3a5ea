"""Results a run could not store (S303) are kept on its node; `dlaas store <run-id>` asks that
node to store them again, so no one has to reach the node. A thread of the worker's main
process serves the node's requests (`dlaas:worker:<name>:store`), not a pool process: a node
whose slots all run long trainings still answers at once.

A request is served with the run's own sealed credentials, as its Store phase would have
been: RESULT_DIR, the submitted zip and the logs under `<bucket>/<run-id>/`, the log chunks the
whole log replaces removed. The run stays FAILED S303 (an ended run has no way out of its
state): its `kept_results` says `stored`, its status message says where, and its usage counts
what was stored. A failure keeps the files and says why; the user may ask again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time

from common import stats
from common.clock import iso, utcnow
from common.crypto import CredentialsError
from common.layout import LOG_CHUNKS_PREFIX, STORE_LOG, learner_key, run_key
from common.manifest import Manifest, ManifestError
from common.run import Run
from common.storage import StorageError, open_store
from worker.attempt import note
from worker.context import WorkerContext
from worker.phases.store import store_results, unstored_dir, unstored_root
from worker.rundirs import RunDirs
from worker.tensorboard import TensorBoardSource, tensorboard_roots

log = logging.getLogger(__name__)


class StoreAgain(threading.Thread):
    def __init__(self, ctx: WorkerContext, poll_seconds: float = 1.0):
        super().__init__(name="dlaas-store-again", daemon=True)
        self.ctx = ctx
        self.poll_seconds = poll_seconds
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        self._resume()
        while not self._halt.is_set():
            try:
                run_id = self.ctx.runs.next_store_request(self.ctx.name, self.poll_seconds)
            except Exception as exc:  # Redis away: try again, bounded by the halt
                log.warning("store-again requests not read: %s", exc)
                self._halt.wait(self.poll_seconds)
                continue
            if run_id is not None:
                try:
                    serve(self.ctx, run_id)
                except Exception:
                    log.exception("%s: storing its kept results again failed", run_id)

    def _resume(self) -> None:
        """A request this worker's earlier process was serving when it stopped is served
        again (the request itself left the list when that process took it)."""
        kept = unstored_root(self.ctx.settings.work_dir)
        for path in sorted(kept.iterdir()) if kept.is_dir() else ():
            try:
                run = self.ctx.runs.get(path.name)
                if run is not None and run.kept_results.get("state") == "storing":
                    serve(self.ctx, path.name)
            except Exception:
                log.exception("%s: storing its kept results again failed", path.name)


def serve(ctx: WorkerContext, run_id: str) -> str:
    """Store the kept results of `run_id` again; returns the state its `kept_results`
    ends in (`stored`, `failed`), or `ignored` for a request that is not this node's."""
    run = ctx.runs.get(run_id)
    if run is None or run.kept_results.get("node") != ctx.name:
        log.info("%s: store-again request ignored (no such run, or not kept here)", run_id)
        return "ignored"
    dirs = RunDirs(unstored_dir(ctx.settings.work_dir, run_id))
    _mark(ctx, run, state="storing", started_at=iso(utcnow()), message="")
    began = time.monotonic()
    try:
        if not dirs.root.is_dir():
            raise FileNotFoundError(f"nothing is kept at {dirs.root} on {ctx.name} any more")
        store, bucket, where = _results_store(ctx, run)
        note(dirs, f"storing again, as {run.kept_results.get('requested_by')} asked", STORE_LOG)
        roots, named = tensorboard_roots(
            run.manifest.get("tensorboard_in", ""), dirs.log, dirs.result
        )
        event_files = TensorBoardSource(roots, named).stored_keys()
        stored = store_results(
            store, bucket, run_id, dirs.result, dirs.model_zip, dirs.log, None, event_files
        )
        took = time.monotonic() - began
        note(
            dirs,
            f"stored {stored.objects} objects, {stored.bytes} bytes in {took:.2f} s",
            STORE_LOG,
        )
        store.put_file(dirs.log / STORE_LOG, bucket, run_key(run_id, learner_key(STORE_LOG)))
        for chunk in store.list(bucket, run_key(run_id, LOG_CHUNKS_PREFIX)):
            store.delete(bucket, chunk.key)
    except (StorageError, CredentialsError, ManifestError, OSError) as exc:
        log.warning("%s: kept results not stored again: %s", run_id, exc)
        if dirs.log.is_dir():
            note(dirs, f"storing again failed: {exc}", STORE_LOG)
        _mark(ctx, run, state="failed", at=iso(utcnow()), message=str(exc))
        return "failed"
    usage = dict(
        run.usage,
        stored_bytes=stored.bytes,
        stored_objects=stored.objects,
        storing_seconds=round(took, 3),
    )
    first = run.status_message.split("\n", 1)[0]
    _mark(
        ctx,
        run,
        state="stored",
        at=iso(utcnow()),
        objects=stored.objects,
        bytes=stored.bytes,
        message=f"stored {stored.objects} objects ({stored.bytes} bytes) in {where}",
        status_message=(
            f"results stored again in {where} ({stored.objects} objects, {stored.bytes} "
            f"bytes) at {run.kept_results.get('requested_by')}'s request; first: {first}"
        ),
        usage=usage,
    )
    stats.add_transfers(ctx.runs.redis, {"stored_bytes": stored.bytes})
    shutil.rmtree(dirs.root, ignore_errors=True)
    log.info("%s: kept results stored again in %s", run_id, where)
    return "stored"


def _results_store(ctx: WorkerContext, run: Run):
    manifest = Manifest.from_dict(run.manifest).with_connections(ctx.box.open(run.credentials))
    results = manifest.training_results
    store = open_store(results, ctx.settings.local_store_root)
    store.check_bucket(results.bucket)
    return store, results.bucket, f"{results.type.value} {results.bucket}/{run.id}/"


def _mark(ctx: WorkerContext, run: Run, status_message: str = "", usage=None, **kept) -> None:
    """The run's `kept_results` (and, once stored, its message and usage), fenced by its
    last claim: an ended run is claimed no more, so this only fails for a deleted run."""
    run.kept_results = dict(run.kept_results, **kept)
    fields = {"kept_results": run.kept_results}
    if status_message:
        fields["status_message"] = status_message
    if usage is not None:
        fields["usage"] = usage
    ctx.runs.update(run.id, run.attempt, **fields)
