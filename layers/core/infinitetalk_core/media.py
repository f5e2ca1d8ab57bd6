"""Media checks from the bytes themselves: what a file really is, and how long it plays."""

from __future__ import annotations

import io
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, TYPE_CHECKING, BinaryIO

import filetype
import mutagen

from .models import MediaKind

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

EXTENSIONS: dict[MediaKind, frozenset[str]] = {
    MediaKind.IMAGE: frozenset({"png", "jpg", "jpeg", "webp"}),
    MediaKind.AUDIO: frozenset({"mp3", "wav", "m4a", "aac", "ogg", "flac"}),
    MediaKind.VIDEO: frozenset({"mp4", "mov", "webm", "m4v"}),
}
SNIFF_BYTES = 8_192
_SAME_FORMAT = {"jpeg": "jpg"}


class MediaError(ValueError):
    """A file is not usable media; the message is written for the person who dropped it."""


@dataclass(frozen=True)
class Sniffed:
    kind: MediaKind | None
    extension: str | None
    mime: str | None


def sniff(head: bytes) -> Sniffed:
    """Guess a file's type from its first bytes, ignoring its name."""
    guess = filetype.guess(head)
    if guess is None:
        return Sniffed(kind=None, extension=None, mime=None)
    mime: str = guess.mime
    extension: str = guess.extension
    if mime.startswith("image/"):
        kind: MediaKind | None = MediaKind.IMAGE
    elif mime.startswith("audio/") or extension == "m4a":
        kind = MediaKind.AUDIO
    elif mime.startswith("video/"):
        kind = MediaKind.VIDEO
    else:
        kind = None
    return Sniffed(kind=kind, extension=extension, mime=mime)


def describe(sniffed: Sniffed, head: bytes) -> str:
    if sniffed.mime:
        return f"a {sniffed.mime} file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "in an unrecognised format"
    return "plain text"


def check_kind(filename: str, expected: MediaKind, size: int, head: bytes) -> None:
    """Refuse empty files, files of the wrong kind, and images whose bytes contradict their extension."""
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension not in EXTENSIONS[expected]:
        allowed = ", ".join(sorted(EXTENSIONS[expected]))
        raise MediaError(f"{filename}: .{extension or '(none)'} is not a supported {expected} type ({allowed})")
    if size == 0:
        raise MediaError(f"{filename} is empty (0 bytes)")
    sniffed = sniff(head)
    # An MP4-family container holding only sound is common for .m4a/.aac files.
    # AAC in an MP4 container sniffs as video, and raw ADTS AAC has no magic number filetype knows.
    aac_family = expected is MediaKind.AUDIO and extension in {"m4a", "aac"} and sniffed.kind in {MediaKind.VIDEO, None}
    if sniffed.kind is not expected and not aac_family:
        raise MediaError(f"{filename} is named as {expected} but its bytes are {describe(sniffed, head)}")
    if expected is MediaKind.IMAGE and sniffed.extension:
        real = _SAME_FORMAT.get(sniffed.extension, sniffed.extension)
        if real != _SAME_FORMAT.get(extension, extension):
            raise MediaError(f"{filename} holds a {real.upper()} image; rename it to .{real} or convert it")


def playing_seconds(fileobj: IO[bytes], filename: str) -> Decimal:
    """Playing time read from the container or stream headers, exact to the microsecond."""
    try:
        audio = mutagen.File(fileobj)
    except Exception as exc:
        raise MediaError(f"{filename} could not be read as audio: {exc}") from exc
    if audio is None or getattr(audio, "info", None) is None:
        raise MediaError(f"{filename} could not be read as audio: unrecognised format")
    length = float(getattr(audio.info, "length", 0.0) or 0.0)
    if length <= 0:
        raise MediaError(f"{filename} has no playable sound (length 0 s)")
    return Decimal(str(round(length, 6)))


class S3ObjectReader(io.RawIOBase):
    """A seekable view of an S3 object through ranged GETs: headers are read, the rest is skipped."""

    def __init__(self, client: S3Client, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._position = 0
        self.name = key

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._position >= self._size or len(buffer) == 0:
            return 0
        end = min(self._size, self._position + len(buffer)) - 1
        response = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={self._position}-{end}")
        data = response["Body"].read()
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def open_s3_object(client: S3Client, bucket: str, key: str, size: int) -> BinaryIO:
    """Buffered so that header parsers' many small reads cost a few ranged GETs."""
    return io.BufferedReader(S3ObjectReader(client, bucket, key, size), buffer_size=64 * 1024)
