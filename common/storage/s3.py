"""S3 (IBM Cloud Object Storage, AWS, Swift's s3api...) through boto3. Parallel, retrying,
multipart transfers are boto3's transfer manager's job: every object of a bucket goes through
one manager, which runs them (and the parts of large ones) concurrently."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from s3transfer.subscribers import BaseSubscriber

from common.storage.base import (
    ObjectInfo,
    StorageError,
    TransferProgress,
    TransferStats,
    files_to_upload,
)

USER_FAULTS = {
    "NoSuchBucket": "bucket does not exist",
    "InvalidAccessKeyId": "credentials refused (access key unknown)",
    "SignatureDoesNotMatch": "credentials refused (wrong secret key)",
    "AccessDenied": "access denied",
    "AuthorizationHeaderMalformed": "credentials refused",
    "InvalidBucketName": "invalid bucket name",
    "403": "access denied",
    "404": "bucket or object does not exist",
}
TRANSFER = TransferConfig(
    multipart_threshold=16 * 1024 * 1024,
    multipart_chunksize=16 * 1024 * 1024,
    max_concurrency=16,
    use_threads=True,
)


class S3Store:
    def __init__(self, endpoint_url: str, access_key: str, secret_key: str, region: str = ""):
        self.description = f"s3 {endpoint_url}"
        try:
            self.client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name=region or "us-east-1",
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"mode": "standard", "max_attempts": 5},
                    connect_timeout=5,
                    read_timeout=60,
                    max_pool_connections=32,
                    # GetObject without x-amz-checksum-mode (boto3's behaviour before 1.36).
                    # With it, s3transfer sends a HEAD before every download to learn the
                    # full object's checksum; without, it starts with the first part's GET:
                    # a third fewer requests for small objects, ~30% faster staging from
                    # Swift's S3 API (benchmarks/staging.py), which returns no checksums to
                    # validate anyway. Uploads still send theirs.
                    response_checksum_validation="when_required",
                ),
            )
        except ValueError as exc:
            raise StorageError(f"{self.description}: {exc}", user_fault=True) from None

    def _error(self, exc: Exception, bucket: str, what: str) -> StorageError:
        where = f"{self.description}, bucket {bucket!r}"
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in USER_FAULTS:
                return StorageError(f"{where}: {what}: {USER_FAULTS[code]}", user_fault=True)
            return StorageError(f"{where}: {what}: {code or exc}")
        if isinstance(
            exc,
            botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError,
        ):
            return StorageError(f"{where}: {what}: endpoint unreachable after retries")
        if isinstance(exc, botocore.exceptions.BotoCoreError | OSError):
            return StorageError(f"{where}: {what}: {exc}")
        raise exc

    def check_bucket(self, bucket: str) -> None:
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:
            raise self._error(exc, bucket, "cannot open the bucket") from None

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            return [
                ObjectInfo(o["Key"], o["Size"])
                for page in pages
                for o in page.get("Contents", [])
                if not o["Key"].endswith("/")
            ]
        except Exception as exc:
            raise self._error(exc, bucket, "cannot list") from None

    def download_all(
        self,
        bucket: str,
        dest: Path,
        should_stop: Callable[[], bool] | None = None,
        progress: TransferProgress | None = None,
    ) -> TransferStats:
        objects = self.list(bucket)
        stats = TransferStats()
        progress = progress or TransferProgress("downloading")
        progress.expect(len(objects), sum(o.size for o in objects))
        subscribers = [_Counting(progress)]
        try:
            with create_transfer_manager(self.client, TRANSFER) as manager:
                futures = []
                for obj in objects:
                    if should_stop is not None and should_stop():
                        break
                    target = _inside(dest, obj.key)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    futures.append(
                        (
                            obj,
                            manager.download(bucket, obj.key, str(target), subscribers=subscribers),
                        )
                    )
                for obj, future in futures:
                    future.result()
                    stats.add(obj.size)
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(exc, bucket, "download failed") from None
        return stats

    def upload_dir(
        self, src: Path, bucket: str, prefix: str, progress: TransferProgress | None = None
    ) -> TransferStats:
        stats = TransferStats()
        items = files_to_upload(src, prefix)
        progress = progress or TransferProgress("storing")
        progress.expect(len(items), sum(p.stat().st_size for p, _ in items))
        subscribers = [_Counting(progress)]
        try:
            with create_transfer_manager(self.client, TRANSFER) as manager:
                futures = [
                    (path, manager.upload(str(path), bucket, key, subscribers=subscribers))
                    for path, key in items
                ]
                for path, future in futures:
                    future.result()
                    stats.add(path.stat().st_size)
        except Exception as exc:
            raise self._error(exc, bucket, "upload failed") from None
        return stats

    def put_file(self, src: Path, bucket: str, key: str) -> None:
        try:
            self.client.upload_file(str(src), bucket, key, Config=TRANSFER)
        except Exception as exc:
            raise self._error(exc, bucket, f"cannot write {key}") from None

    def get_file(self, bucket: str, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(bucket, key, str(dest), Config=TRANSFER)
        except Exception as exc:
            raise self._error(exc, bucket, f"cannot read {key}") from None

    def delete(self, bucket: str, key: str) -> None:
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise self._error(exc, bucket, f"cannot delete {key}") from None


class _Counting(BaseSubscriber):
    """Feeds the transfer manager's progress callbacks into a TransferProgress."""

    def __init__(self, progress: TransferProgress):
        self.progress = progress

    def on_progress(self, future, bytes_transferred, **kwargs):
        self.progress.add_bytes(bytes_transferred)

    def on_done(self, future, **kwargs):
        self.progress.object_done()


def _inside(dest: Path, key: str) -> Path:
    target = (dest / key).resolve()
    if dest.resolve() not in target.parents:
        raise StorageError(f"object key {key!r} would land outside DATA_DIR", user_fault=True)
    return target
