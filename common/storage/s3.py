"""S3 (IBM Cloud Object Storage, AWS, Swift's s3api...) through boto3. Parallel, retrying,
multipart transfers are boto3's transfer manager's job: every object of a bucket goes through
one manager, which runs them (and the parts of large ones) concurrently."""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

import boto3
import boto3.exceptions
import botocore.exceptions
import botocore.session
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.utils import parse_timestamp
from s3transfer.exceptions import (
    RetriesExceededError,
    S3DownloadFailedError,
    S3UploadFailedError,
)
from s3transfer.subscribers import BaseSubscriber

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

USER_FAULTS = {
    "NoSuchBucket": "bucket does not exist",
    "NoSuchKey": "object does not exist",
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


def _parse_timestamp(value):
    """botocore's timestamp parser with fast paths for the two forms S3 sends: ISO 8601 in
    listings and RFC 7231 in Last-Modified headers. botocore's own (dateutil) costs ~80 us
    a call, twice per staged object (its listing entry, its GET): a tenth of the client's
    CPU for a bucket of small objects."""
    if isinstance(value, str):
        try:
            if value.endswith("GMT"):
                return parsedate_to_datetime(value)
            if value.endswith("Z"):
                return datetime.datetime.fromisoformat(value[:-1] + "+00:00")
        except (TypeError, ValueError):
            pass
    return parse_timestamp(value)


class _Sessions:
    """One boto3 session per process, shared by every store: its loader keeps the S3 model
    and endpoint rules once read, so the stores of the next run are made in a few ms instead
    of re-reading ~100 ms of JSON each. Clients are made under a lock (a session is not
    thread-safe); a client, once made, is."""

    lock = threading.Lock()
    session: boto3.session.Session | None = None

    @classmethod
    def client(cls, **kwargs):
        with cls.lock:
            if cls.session is None:
                core = botocore.session.get_session()
                core.get_component("response_parser_factory").set_parser_defaults(
                    timestamp_parser=_parse_timestamp
                )
                cls.session = boto3.session.Session(botocore_session=core)
            return cls.session.client("s3", **kwargs)


def warm_up() -> None:
    """Reads the S3 model and endpoint rules now (a worker calls this once at start), so
    that no run pays for it and the objects stay out of the garbage collector's way."""
    _Sessions.client(
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="-",
        aws_secret_access_key="-",
        region_name="us-east-1",
    )


class S3Store(ListedDownloads):
    def __init__(self, endpoint_url: str, access_key: str, secret_key: str, region: str = ""):
        self.description = f"s3 {endpoint_url}"
        try:
            self.client = _Sessions.client(
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
                ),
            )
        except ValueError as exc:
            raise StorageError(f"{self.description}: {exc}", user_fault=True) from None
        except botocore.exceptions.BotoCoreError as exc:  # e.g. the node's AWS config file
            raise StorageError(f"{self.description}: cannot make a client: {exc}") from None

    def _error(self, exc: BaseException, bucket: str, what: str) -> StorageError:
        where = f"{self.description}, bucket {bucket!r}"
        if isinstance(exc, S3DownloadFailedError) and "ETag" in str(exc):
            # s3transfer's word for a 412 on a part's If-Match (see _Listed)
            return _changed_while_staged(
                f"{where}: {what}", "an object", "its ETag no longer matches the listing's"
            )
        if isinstance(exc, RetriesExceededError | boto3.exceptions.RetriesExceededError):
            if exc.last_exception is not None:
                return self._error(exc.last_exception, bucket, what)
        if isinstance(
            exc, S3UploadFailedError | S3DownloadFailedError | boto3.exceptions.S3UploadFailedError
        ):
            # boto3 and s3transfer wrap the client's error; its code is what tells
            cause = exc.__cause__ or exc.__context__
            if cause is not None:
                return self._error(cause, bucket, what)
            return StorageError(f"{where}: {what}: {exc}")
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
                ObjectInfo(o["Key"], o["Size"], o.get("ETag"))
                for page in pages
                for o in page.get("Contents", [])
                if not o["Key"].endswith("/")
            ]
        except Exception as exc:
            raise self._error(exc, bucket, "cannot list") from None

    def download_objects(
        self,
        bucket: str,
        objects: list[ObjectInfo],
        dest: Path,
        should_stop: Callable[[], bool] | None = None,
        progress: TransferProgress | None = None,
    ) -> TransferStats:
        progress = progress or TransferProgress("downloading")
        stats = TransferStats()
        subscribers = [_Counting(progress), _Finishing()]
        root = dest.resolve()
        made: set[Path] = set()
        try:
            with create_transfer_manager(self.client, TRANSFER) as manager:
                futures = []
                for obj in objects:
                    if should_stop is not None and should_stop():
                        break
                    target = target_inside(root, obj.key)
                    if target.parent not in made:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        made.add(target.parent)
                    staged = _StagedFile(target)
                    future = manager.download(
                        bucket, obj.key, staged, subscribers=[_Listed(obj), *subscribers]
                    )
                    futures.append((obj, staged, future))
                for obj, staged, future in futures:
                    future.result()
                    landed = staged.landed()
                    if landed != obj.size:
                        raise _changed_while_staged(
                            f"{self.description}, bucket {bucket!r}: download failed",
                            f"object {obj.key!r}",
                            f"listed with {obj.size} bytes, {landed} staged",
                        )
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

    def put_bytes(self, data: bytes, bucket: str, key: str) -> None:
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as exc:
            raise self._error(exc, bucket, f"cannot write {key}") from None

    def get_file(self, bucket: str, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(bucket, key, str(dest), Config=TRANSFER)
        except Exception as exc:
            raise self._error(exc, bucket, f"cannot read {key}") from None

    def stream(self, bucket: str, key: str) -> tuple[int, Iterator[bytes]]:
        try:
            answer = self.client.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise self._error(exc, bucket, f"cannot read {key}") from None
        body = answer["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(STREAM_CHUNK)
            except Exception as exc:
                raise self._error(exc, bucket, f"cannot read {key}") from None
            finally:
                body.close()

        return int(answer["ContentLength"]), chunks()

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


def _changed_while_staged(where: str, which: str, why: str) -> StorageError:
    """Not the user's fault, and passing: the next staging takes the object as it is then."""
    return StorageError(
        f"{where}: {which} changed while it was staged ({why}); staging again takes the new one"
    )


class _StagedFile:
    """Where one object is staged. s3transfer writes a seekable target in place at the
    offsets of its parts, where a file name costs it a temporary name, a rename and one more
    task per object: about a fifth of the client's CPU for a bucket of small objects. The
    file is opened at its first write (a bucket of thousands never holds more files open
    than transfers in flight) and closed when its transfer ends (`_Finishing`); a failed
    transfer's file is removed. Every write is flushed at once, so that a full disk fails the
    transfer's write task rather than a close in a callback, where s3transfer would only log
    it; what finally landed is checked against the listing (`landed`)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._file = open(self.path, "wb")  # closed by finish()
        return self._file

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._open().seek(offset, whence)

    def tell(self) -> int:
        return self._open().tell()

    def write(self, data: bytes) -> int:
        file = self._open()
        written = file.write(data)
        file.flush()
        return written

    def finish(self, failed: bool) -> None:
        try:
            if self._file is not None:
                self._file.close()
            elif not failed:
                self.path.touch()  # an empty object: nothing was written
        except OSError:
            failed = True  # a file that did not close is not trusted: removed like a failure
        if failed:
            self.path.unlink(missing_ok=True)

    def landed(self) -> int | None:
        """Bytes on disk once finished; None when the file is missing (failed, removed)."""
        try:
            return self.path.stat().st_size
        except OSError:
            return None


class _Listed(BaseSubscriber):
    """Tells s3transfer an object's size and ETag from the bucket's listing before its
    download is planned. Knowing both, it neither sends a HEAD first nor opens with a ranged
    GET of the first part: an object under the part size is one plain GET (a ranged one
    costs Swift's proxy and object server ~0.8 ms more each), a larger one's parts are all
    asked for at once, each with If-Match on that ETag, so an object replaced meanwhile
    fails the run instead of mixing two versions."""

    def __init__(self, obj: ObjectInfo):
        self.obj = obj

    def on_queued(self, future, **kwargs):
        future.meta.provide_transfer_size(self.obj.size)
        if self.obj.etag:
            # an entity tag is quoted in If-Match; a store that lists it bare still gets it so
            bare = self.obj.etag.strip('"')
            future.meta.provide_object_etag(f'"{bare}"')


class _Finishing(BaseSubscriber):
    """Closes each staged file once its transfer is done (every part written)."""

    def on_done(self, future, **kwargs):
        try:
            future.result()
            failed = False
        except BaseException:
            failed = True
        future.meta.call_args.fileobj.finish(failed)
