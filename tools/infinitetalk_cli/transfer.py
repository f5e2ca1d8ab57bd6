"""Uploads and downloads with a progress bar: media files can be large, and silence looks like a hang."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from infinitetalk_core.storage import StoredObject

from .drop import Upload

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def upload_one(s3: S3Client, bucket: str, item: Upload, on_bytes: Callable[[int], None]) -> None:
    """Put one object; returns only when it is whole in the bucket, which keeps the upload order real."""
    extra = {"ContentType": item.content_type}
    if item.path is not None:
        s3.upload_file(str(item.path), bucket, item.key, ExtraArgs=extra, Callback=on_bytes)
    else:
        s3.upload_fileobj(io.BytesIO(item.body or b""), bucket, item.key, ExtraArgs=extra, Callback=on_bytes)


def upload_all(s3: S3Client, bucket: str, uploads: Sequence[Upload], console: Console) -> None:
    """One after the other, in the given order: the last one is the trigger."""
    with _progress(console) as progress:
        for item in uploads:
            task = progress.add_task(item.label, total=item.size)
            upload_one(s3, bucket, item, partial(progress.advance, task))
            progress.update(task, completed=item.size)


def download_all(
    s3: S3Client, bucket: str, objects: Sequence[StoredObject], into: Path, console: Console
) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with _progress(console) as progress:
        for stored in objects:
            target = into / stored.filename
            task = progress.add_task(stored.filename, total=stored.size)
            s3.download_file(bucket, stored.key, str(target), Callback=partial(progress.advance, task))
            progress.update(task, completed=stored.size)
            paths.append(target)
    return paths
