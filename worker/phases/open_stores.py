"""The run's credentials unsealed, its data and results stores opened, both buckets checked:
a wrong key or a missing bucket fails the run here, before anything moves."""

from __future__ import annotations

from common.crypto import CredentialsError
from common.manifest import Manifest
from common.states import ErrorCode
from common.storage import StorageError, open_store
from worker.attempt import Attempt, RunFailed
from worker.pipeline import Phase


def storage_code(exc: StorageError, otherwise: ErrorCode) -> ErrorCode:
    """The user's fault (C103: credentials, bucket) or the service's (`otherwise`)."""
    return ErrorCode.CREDENTIALS if exc.user_fault else otherwise


class OpenStores(Phase):
    name = "open stores"

    def run(self, attempt: Attempt) -> None:
        ctx, run = attempt.ctx, attempt.run
        try:
            connections = ctx.box.open(run.credentials)
        except CredentialsError as exc:
            raise RunFailed(
                ErrorCode.WORKER_ERROR, f"cannot read the run's credentials: {exc}"
            ) from None
        manifest = attempt.manifest = Manifest.from_dict(run.manifest).with_connections(connections)
        opened = []
        for label, store in (
            ("data store", manifest.training_data),
            ("results store", manifest.training_results),
        ):
            try:
                opened.append(open_store(store, ctx.settings.local_store_root))
                opened[-1].check_bucket(store.bucket)
            except StorageError as exc:
                code = storage_code(exc, ErrorCode.DATA_STAGING)
                raise RunFailed(code, f"{label}: {exc}") from None
        attempt.data_store, attempt.results_store = opened
