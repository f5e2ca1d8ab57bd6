"""The media bucket: listing drops, reading inputs, presigning, writing outputs atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from .models import MAX_KEY_BYTES as MAX_KEY_BYTES
from .models import OUTPUTS_PREFIX as OUTPUTS_PREFIX

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

INBOX_PREFIX = "inbox/"
# job.json and manifests: read with one ranged GET of at most this many bytes (and one more, to tell).
DOCUMENT_LIMIT_BYTES = 1024 * 1024
# Constant memory whatever the video size: one 8 MiB part read ahead while the one before it uploads.
# A second part read ahead buys no speed (the download is the slower side) and costs 8 MiB more
# (`make bench` measures both: peak RSS growth and throughput for a 1 GiB output).
STREAMING_TRANSFER = TransferConfig(
    multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, max_concurrency=2
)
# Not a constructor argument of boto3's TransferConfig; s3transfer reads it for streams it cannot seek.
STREAMING_TRANSFER.max_in_memory_upload_chunks = 1


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str
    last_modified: datetime

    @property
    def filename(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def outputs_prefix(job_name: str) -> str:
    return f"{OUTPUTS_PREFIX}{job_name}/"


class MediaBucket:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def list(self, prefix: str) -> list[StoredObject]:
        found: list[StoredObject] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found.append(StoredObject(item["Key"], item["Size"], item["ETag"].strip('"'), item["LastModified"]))
        return found

    def uploads_in_progress(self, prefix: str) -> tuple[str, ...]:
        """Keys under ``prefix`` whose multipart upload has begun and not finished (nor been aborted)."""
        answer = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return tuple(upload["Key"] for upload in answer.get("Uploads", []))

    def head(self, key: str) -> StoredObject | None:
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return StoredObject(key, meta["ContentLength"], meta["ETag"].strip('"'), meta["LastModified"])

    def read_document(self, key: str, limit: int = DOCUMENT_LIMIT_BYTES) -> bytes | None:
        """At most ``limit + 1`` bytes in one ranged GET (so a caller can tell it is too large); ``None`` if gone."""
        from .media import READ_CAP_BYTES  # media brings FFmpeg and Pillow: only the functions that read media load it

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{min(limit, READ_CAP_BYTES)}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # an empty object
                return b""
            raise
        return body["Body"].read()

    def read_bytes(self, key: str, limit: int = DOCUMENT_LIMIT_BYTES) -> bytes:
        data = self.read_document(key, limit)
        if data is None:
            raise FileNotFoundError(f"{key} does not exist")
        if len(data) > limit:
            raise ValueError(f"{key} is larger than {limit} bytes")
        return data

    def open(self, stored: StoredObject) -> BinaryIO:
        """The exact version ``stored`` describes (If-Match on its ETag), in ranged GETs of at most 8 MiB."""
        from .media import open_s3_object

        return open_s3_object(self.client, self.bucket, stored.key, stored.size, stored.etag)

    def open_stream(self, key: str) -> IO[bytes]:
        """The whole object as a stream of ranged GETs, none larger than ``READ_CAP_BYTES``."""
        stored = self.head(key)
        if stored is None:
            raise FileNotFoundError(f"{key} does not exist")
        return self.open(stored)

    def put_json(self, key: str, document: Any) -> None:
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def presign(self, key: str, expiry_seconds: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expiry_seconds
        )

    def upload_stream(self, key: str, stream: IO[bytes], content_type: str) -> None:
        """Multipart upload from a stream: the object appears whole or not at all."""
        self.client.upload_fileobj(
            stream, self.bucket, key, ExtraArgs={"ContentType": content_type}, Config=STREAMING_TRANSFER
        )
