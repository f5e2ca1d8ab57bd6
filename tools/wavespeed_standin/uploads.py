"""WaveSpeed's media storage, reached by the three upload paths real clients use.

``POST /media/upload/binary`` (multipart ``file``; answers ``download_url``, ``type``, ``filename``,
``size``), ``POST /upload`` (multipart ``file``; answers ``url``; images up to 20 MB, videos 100 MB,
audio 50 MB: 413 above, 400 for a format it does not take) and the official SDK's ticket:
``POST /media/uploads`` answers an ``upload_url`` to PUT the bytes to and the ``download_url`` to
hand to a model. The ticket's field names are this stand-in's reading of that flow; the documented
facts are the two URLs and the PUT.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

MediaKind = Literal["image", "video", "audio"]
MiB = 1024 * 1024

# The formats WaveSpeed documents as accepted, by file extension.
EXTENSIONS: dict[str, MediaKind] = {
    **dict.fromkeys(("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"), "image"),
    **dict.fromkeys(("mp4", "avi", "mov", "wmv", "flv", "mkv", "3gp", "ogv"), "video"),
    **dict.fromkeys(("mp3", "wav", "ogg", "aac", "flac", "m4a", "opus"), "audio"),
}
# WebM holds video or audio; the declared type decides, video otherwise.
AMBIGUOUS_EXTENSIONS = frozenset({"webm"})
# The same formats by declared content type, for a file named without an extension.
CONTENT_TYPES: dict[str, MediaKind] = {
    **dict.fromkeys(
        ("image/jpeg", "image/jpg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"), "image"
    ),
    **dict.fromkeys(
        (
            "video/mp4",
            "video/x-msvideo",
            "video/quicktime",
            "video/x-ms-wmv",
            "video/x-flv",
            "video/webm",
            "video/x-matroska",
            "video/3gpp",
            "video/ogg",
        ),
        "video",
    ),
    **dict.fromkeys(
        (
            "audio/mpeg",
            "audio/mp3",
            "audio/wav",
            "audio/x-wav",
            "audio/wave",
            "audio/ogg",
            "audio/aac",
            "audio/flac",
            "audio/x-flac",
            "audio/webm",
            "audio/mp4",
            "audio/x-m4a",
            "audio/opus",
        ),
        "audio",
    ),
}
# ``POST /upload``'s documented size limits.
UPLOAD_LIMITS: dict[MediaKind, int] = {"image": 20 * MiB, "video": 100 * MiB, "audio": 50 * MiB}
TICKET_LIFETIME = timedelta(hours=1)


class UploadRefused(Exception):
    """An upload WaveSpeed would refuse: 400 (format) or 413 (size), with a message a person can act on."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def media_kind(filename: str, content_type: str) -> MediaKind:
    """Image, video or audio, from the file's extension, else its declared type; 400 for anything else."""
    declared = content_type.split(";", 1)[0].strip().lower()
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension in AMBIGUOUS_EXTENSIONS:
        return "audio" if declared.startswith("audio/") else "video"
    if extension in EXTENSIONS:
        return EXTENSIONS[extension]
    if not extension and declared in CONTENT_TYPES:
        return CONTENT_TYPES[declared]
    raise UploadRefused(
        400,
        f"unsupported file format: {filename!r} ({declared or 'no content type'}); accepted are images "
        "JPG, JPEG, PNG, WebP, GIF, BMP, TIFF; videos MP4, AVI, MOV, WMV, FLV, WebM, MKV, 3GP, OGV; "
        "audio MP3, WAV, OGG, AAC, FLAC, WebM, M4A, Opus",
    )


def check_upload_size(kind: MediaKind, size: int) -> None:
    limit = UPLOAD_LIMITS[kind]
    if size > limit:
        raise UploadRefused(413, f"the {kind} is {size} bytes; the limit for {kind} uploads is {limit // MiB} MB")


@dataclass(frozen=True)
class StoredMedia:
    filename: str
    content_type: str
    kind: MediaKind
    content: bytes
    stored_at: datetime


@dataclass(frozen=True)
class UploadTicket:
    """What ``POST /media/uploads`` hands out: where to PUT the bytes, and where they will be read."""

    ticket_id: str
    token: str
    media_id: str
    filename: str
    content_type: str
    kind: MediaKind
    expires_at: datetime


class MediaStore:
    """Uploaded files by id; each is deleted after the retention time, like everything WaveSpeed keeps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._media: dict[str, StoredMedia] = {}
        self._tickets: dict[str, UploadTicket] = {}

    def put(self, filename: str, content_type: str, kind: MediaKind, content: bytes, now: datetime) -> str:
        media_id = uuid.uuid4().hex
        with self._lock:
            self._media[media_id] = StoredMedia(filename, content_type, kind, content, now)
        return media_id

    def get(self, media_id: str, filename: str) -> StoredMedia | None:
        with self._lock:
            stored = self._media.get(media_id)
        return stored if stored is not None and stored.filename == filename else None

    def open_ticket(self, filename: str, content_type: str, kind: MediaKind, now: datetime) -> UploadTicket:
        ticket = UploadTicket(
            ticket_id=uuid.uuid4().hex,
            token=secrets.token_urlsafe(24),
            media_id=uuid.uuid4().hex,
            filename=filename,
            content_type=content_type,
            kind=kind,
            expires_at=now + TICKET_LIFETIME,
        )
        with self._lock:
            self._tickets[ticket.ticket_id] = ticket
        return ticket

    def fill_ticket(self, ticket_id: str, token: str, content: bytes, now: datetime) -> UploadTicket | None:
        """Store a PUT's bytes under the ticket's media id; ``None`` for an unknown, forged or expired ticket."""
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            if ticket is None or not secrets.compare_digest(ticket.token, token) or now > ticket.expires_at:
                return None
            self._media[ticket.media_id] = StoredMedia(ticket.filename, ticket.content_type, ticket.kind, content, now)
            return ticket

    def purge(self, stored_before: datetime) -> int:
        with self._lock:
            old = [media_id for media_id, stored in self._media.items() if stored.stored_at < stored_before]
            for media_id in old:
                del self._media[media_id]
            for ticket_id in [t for t, ticket in self._tickets.items() if ticket.expires_at < stored_before]:
                del self._tickets[ticket_id]
            return len(old)
