"""OpenStack Swift through python-swiftclient's SwiftService, which runs object transfers
(and the segments of large uploads) on its own thread pools with retries. Auth: tempauth (v1,
an auth_url ending in /auth/v1.0) or Keystone v3 (user, password, project, domain, region)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

from swiftclient.client import Connection
from swiftclient.exceptions import ClientException
from swiftclient.service import SwiftError, SwiftService, SwiftUploadObject

from common.storage.base import (
    STREAM_CHUNK,
    ListedDownloads,
    ObjectInfo,
    StorageError,
    TransferProgress,
    TransferStats,
    files_to_upload,
    target_inside,
)

SEGMENT_BYTES = 64 * 1024 * 1024  # larger files are uploaded as SLO segments, in parallel
THREADS = 16


class SwiftStore(ListedDownloads):
    def __init__(self, connection: dict[str, str]):
        auth_url = connection["auth_url"]
        self.description = f"swift {auth_url}"
        options = {
            "retries": 3,
            "object_dd_threads": THREADS,
            "object_uu_threads": THREADS,
            "segment_threads": THREADS,
        }
        if auth_url.rstrip("/").endswith("/v1.0"):
            options.update(
                auth=auth_url,
                auth_version="1.0",
                user=connection["user_name"],
                key=connection["password"],
            )
        else:
            options.update(
                auth_version="3",
                os_auth_url=auth_url,
                os_username=connection["user_name"],
                os_password=connection["password"],
                os_project_id=connection.get("project_id"),
                os_project_name=connection.get("project_name"),
                os_user_domain_name=connection.get("user_domain_name")
                or connection.get("domain_name"),
                os_project_domain_name=connection.get("domain_name"),
                os_region_name=connection.get("region"),
            )
        self.options = options
        # The same credentials for swiftclient's Connection, which streams one object's GET.
        self.connection_options = {
            "authurl": auth_url,
            "user": connection["user_name"],
            "key": connection["password"],
            "retries": 3,
        }
        if options["auth_version"] == "3":
            self.connection_options.update(
                auth_version="3",
                os_options={
                    "project_id": options["os_project_id"],
                    "project_name": options["os_project_name"],
                    "user_domain_name": options["os_user_domain_name"],
                    "project_domain_name": options["os_project_domain_name"],
                    "region_name": options["os_region_name"],
                },
            )

    def _service(self) -> SwiftService:
        return SwiftService(options=self.options)

    def _error(self, error, container: str, what: str) -> StorageError:
        where = f"{self.description}, bucket {container!r}"
        status = getattr(error, "http_status", None)
        if status is None and isinstance(error, SwiftError):
            status = getattr(error.exception, "http_status", None)
        if status == 401:
            return StorageError(f"{where}: {what}: credentials refused", user_fault=True)
        if status == 403:
            return StorageError(f"{where}: {what}: access denied", user_fault=True)
        if status == 404:
            return StorageError(
                f"{where}: {what}: bucket or object does not exist", user_fault=True
            )
        lines = [line for line in str(error).splitlines() if line.strip()]
        text = lines[0] if lines else type(error).__name__
        if status is None and "unauthorized" in text.lower():  # Keystone said no
            return StorageError(f"{where}: {what}: credentials refused", user_fault=True)
        if status is None and ("connect" in text.lower() or "refused" in text.lower()):
            return StorageError(f"{where}: {what}: endpoint unreachable after retries")
        return StorageError(f"{where}: {what}: {text}")

    def _check(self, result: dict, container: str, what: str) -> dict:
        if not result.get("success", False):
            raise self._error(result.get("error") or SwiftError("failed"), container, what)
        return result

    def check_bucket(self, bucket: str) -> None:
        with self._service() as service:
            try:
                self._check(service.stat(container=bucket), bucket, "cannot open the bucket")
            except (SwiftError, ClientException) as exc:
                raise self._error(exc, bucket, "cannot open the bucket") from None

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        with self._service() as service:
            try:
                for page in service.list(container=bucket, options={"prefix": prefix or None}):
                    self._check(page, bucket, "cannot list")
                    out += [
                        ObjectInfo(o["name"], int(o["bytes"]), o.get("hash"))
                        for o in page["listing"]
                        if "name" in o and not o["name"].endswith("/")
                    ]
            except (SwiftError, ClientException) as exc:
                raise self._error(exc, bucket, "cannot list") from None
        return sorted(out, key=lambda o: o.key)

    def download_objects(
        self,
        bucket: str,
        objects: list[ObjectInfo],
        dest: Path,
        should_stop: Callable[[], bool] | None = None,
        progress: TransferProgress | None = None,
    ) -> TransferStats:
        progress = progress or TransferProgress("downloading")
        root = dest.resolve()
        for obj in objects:
            target_inside(root, obj.key)
        stats = TransferStats()
        if not objects:
            return stats
        with self._service() as service:
            try:
                results = service.download(
                    container=bucket,
                    objects=[o.key for o in objects],
                    options={"out_directory": str(dest), "checksum": True},
                )
                for result in results:
                    self._check(result, bucket, f"download of {result.get('object')} failed")
                    stats.add(int(result.get("read_length", 0)))
                    progress.add_bytes(int(result.get("read_length", 0)))
                    progress.object_done()
                    if should_stop is not None and should_stop():
                        break
            except (SwiftError, ClientException) as exc:
                raise self._error(exc, bucket, "download failed") from None
        return stats

    def _upload(
        self, bucket: str, items: list[tuple[Path, str]], progress: TransferProgress | None = None
    ) -> TransferStats:
        stats = TransferStats()
        if not items:
            return stats
        sizes = {key: path.stat().st_size for path, key in items}
        progress = progress or TransferProgress("storing")
        progress.expect(len(items), sum(sizes.values()))
        uploads = [SwiftUploadObject(str(path), object_name=key) for path, key in items]
        with self._service() as service:
            try:
                options = {"segment_size": SEGMENT_BYTES, "use_slo": True}
                for result in service.upload(bucket, uploads, options=options):
                    if result.get("action") not in ("upload_object", "upload_segment"):
                        continue
                    self._check(result, bucket, f"upload of {result.get('object')} failed")
                    if result["action"] == "upload_object":
                        progress.add_bytes(sizes.get(result.get("object"), 0))
                        progress.object_done()
            except (SwiftError, ClientException) as exc:
                raise self._error(exc, bucket, "upload failed") from None
        stats.bytes = sum(path.stat().st_size for path, _ in items)
        stats.objects = len(items)
        return stats

    def upload_dir(
        self, src: Path, bucket: str, prefix: str, progress: TransferProgress | None = None
    ) -> TransferStats:
        self.check_bucket(bucket)
        return self._upload(bucket, files_to_upload(src, prefix), progress)

    def put_file(self, src: Path, bucket: str, key: str) -> None:
        self._upload(bucket, [(src, key)])

    def put_bytes(self, data: bytes, bucket: str, key: str) -> None:
        connection = Connection(**self.connection_options)
        try:
            # A file-like body: swiftclient rewinds it to send it again after a new token.
            connection.put_object(bucket, key, contents=io.BytesIO(data), content_length=len(data))
        except (ClientException, SwiftError, OSError) as exc:
            raise self._error(exc, bucket, f"cannot write {key}") from None
        finally:
            connection.close()

    def get_file(self, bucket: str, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._service() as service:
            try:
                for result in service.download(
                    container=bucket, objects=[key], options={"out_file": str(dest)}
                ):
                    self._check(result, bucket, f"cannot read {key}")
            except (SwiftError, ClientException) as exc:
                raise self._error(exc, bucket, f"cannot read {key}") from None

    def stream(self, bucket: str, key: str) -> tuple[int, Iterator[bytes]]:
        connection = Connection(**self.connection_options)
        try:
            headers, body = connection.get_object(bucket, key, resp_chunk_size=STREAM_CHUNK)
        except (ClientException, SwiftError, OSError) as exc:
            connection.close()
            raise self._error(exc, bucket, f"cannot read {key}") from None

        def chunks() -> Iterator[bytes]:
            try:
                yield from body
            except (ClientException, OSError) as exc:
                raise self._error(exc, bucket, f"cannot read {key}") from None
            finally:
                connection.close()

        return int(headers["content-length"]), chunks()

    def delete(self, bucket: str, key: str) -> None:
        with self._service() as service:
            try:
                for result in service.delete(container=bucket, objects=[key]):
                    error = result.get("error")
                    if not result.get("success") and getattr(error, "http_status", 0) != 404:
                        raise self._error(error, bucket, f"cannot delete {key}")
            except (SwiftError, ClientException) as exc:
                raise self._error(exc, bucket, f"cannot delete {key}") from None
