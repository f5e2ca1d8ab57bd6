"""Media checks from the bytes themselves: what a file is, whether it is whole, and how long it plays.

A length is what a decoder plays, never what a header claims: audio is decoded to its end and its
samples counted. A header that claims more than the bytes play means the file is truncated or
damaged, and it is refused rather than sent. Pictures are measured from their header before a
pixel is decoded (so a decompression bomb is refused unopened) and then decoded in full, so a
truncated image is refused here and not by WaveSpeed. Every read of an input goes through a
reader whose single reads are capped, so memory stays bounded whatever a file holds.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import IO, TYPE_CHECKING, BinaryIO, TypeVar

import av
import filetype
from botocore.exceptions import BotoCoreError, ClientError

from .models import MAX_OUTPUT_SECONDS, MediaKind

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import InputContainer
    from av.video.stream import VideoStream
    from mypy_boto3_s3 import S3Client
    from PIL import Image

SNIFF_BYTES = 8_192
# No single read of an input asks S3 (or the disk) for more than this.
READ_CAP_BYTES = 8 * 1024 * 1024
# What the S3 reader fetches at a time (one ranged GET), and how many such blocks it keeps: large
# enough for few requests, small enough to hold in memory.
READ_BLOCK_BYTES = 1024 * 1024
KEPT_BLOCKS = 4

MEGABYTE = 1_000_000
# WaveSpeed's documented upload limits.
MAX_BYTES: dict[MediaKind, int] = {
    MediaKind.IMAGE: 20 * MEGABYTE,
    MediaKind.VIDEO: 100 * MEGABYTE,
    MediaKind.AUDIO: 50 * MEGABYTE,
}
# Pictures (images and video frames). The model renders 480p or 720p (at most 1280x720): a shorter
# side under 128 px leaves too few pixels for a face, and beyond 8192 px or 40 megapixels a picture
# only costs memory to decode (40 MP is 160 MB of pixels).
MIN_PICTURE_SIDE = 128
MAX_PICTURE_SIDE = 8_192
MAX_PICTURE_PIXELS = 40_000_000
# A decoder and a header may disagree by one audio frame (encoder delay and padding); this is added.
LENGTH_SLACK_SECONDS = Fraction(1, 20)
# Decoding stops here: a file this long is refused however much longer it is.
MAX_DECODED_SECONDS = int(2 * MAX_OUTPUT_SECONDS)
# Tags inside a WAV are parsed by FFmpeg into memory (several copies); ID3 tags in front of a file are skipped.
MAX_EMBEDDED_TAG_BYTES = 8 * MEGABYTE
# A video must show a picture within this many packets.
FIRST_PICTURE_PACKETS = 300
_MICROSECOND = Decimal("0.000001")
_DECODE_LIMIT = Fraction(MAX_DECODED_SECONDS)
_P = TypeVar("_P")


class MediaError(ValueError):
    """A file is not usable media; the message is written for the person who dropped it."""


@dataclass(frozen=True)
class Container:
    """A file format as people know it, and the file names that may hold it."""

    label: str
    extensions: frozenset[str]
    rename_to: str


def _container(label: str, *extensions: str) -> Container:
    return Container(label=label, extensions=frozenset(extensions), rename_to=extensions[0])


_ISO_MEDIA = "mov,mp4,m4a,3gp,3g2,mj2"
_MATROSKA = "matroska,webm"
# The formats WaveSpeed documents as accepted, keyed by FFmpeg's demuxer name or Pillow's format.
AUDIO_CONTAINERS: dict[str, Container] = {
    "mp3": _container("MP3", "mp3"),
    "wav": _container("WAV", "wav"),
    "ogg": _container("Ogg", "ogg", "opus"),
    "aac": _container("AAC (ADTS)", "aac"),
    "flac": _container("FLAC", "flac"),
    _MATROSKA: _container("WebM", "webm"),
    _ISO_MEDIA: _container("MP4 audio (M4A)", "m4a", "aac"),
}
VIDEO_CONTAINERS: dict[str, Container] = {
    _ISO_MEDIA: _container("MP4/QuickTime", "mp4", "mov", "m4v", "3gp"),
    "avi": _container("AVI", "avi"),
    "asf": _container("WMV", "wmv"),
    "flv": _container("FLV", "flv"),
    _MATROSKA: _container("WebM/Matroska", "webm", "mkv"),
    "ogg": _container("Ogg video", "ogv"),
}
_JPEG = _container("JPEG", "jpg", "jpeg")
IMAGE_FORMATS: dict[str, Container] = {
    "JPEG": _JPEG,
    "MPO": _JPEG,  # a camera's JPEG with extra pictures appended; Pillow opens it as MPO
    "PNG": _container("PNG", "png"),
    "WEBP": _container("WebP", "webp"),
    "GIF": _container("GIF", "gif"),
    "BMP": _container("BMP", "bmp"),
    "TIFF": _container("TIFF", "tiff"),
}
_PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
CONTAINERS: dict[MediaKind, dict[str, Container]] = {
    MediaKind.IMAGE: IMAGE_FORMATS,
    MediaKind.AUDIO: AUDIO_CONTAINERS,
    MediaKind.VIDEO: VIDEO_CONTAINERS,
}
EXTENSIONS: dict[MediaKind, frozenset[str]] = {
    kind: frozenset().union(*(c.extensions for c in formats.values())) for kind, formats in CONTAINERS.items()
}


@dataclass(frozen=True)
class Sniffed:
    kind: MediaKind | None
    extension: str | None
    mime: str | None


@dataclass(frozen=True)
class AudioLength:
    """How long a recording plays, and what its header claimed."""

    seconds: Decimal
    claimed_seconds: Decimal | None
    sample_rate: int
    codec: str
    container: str


@dataclass(frozen=True)
class MediaFacts:
    """What the checks learnt about one input."""

    kind: MediaKind
    container: str
    seconds: Decimal | None = None
    width: int | None = None
    height: int | None = None


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


def with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def describe(sniffed: Sniffed, head: bytes) -> str:
    if sniffed.mime:
        return with_article(f"{sniffed.mime} file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "in an unrecognised format"
    return "plain text"


def is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut off by the sniff window is still text.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def extension_of(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


def megabytes(size: int) -> str:
    return f"{size / MEGABYTE:.1f} MB"


_SMALLER_ADVICE = {
    MediaKind.IMAGE: "save it as JPEG or scale it down",
    MediaKind.AUDIO: "export it as MP3, AAC or Opus, or split it",
    MediaKind.VIDEO: "export it at a lower bitrate or resolution, or cut it shorter",
}


def check_name_and_size(filename: str, expected: MediaKind, size: int) -> None:
    """Refuse what the name and size alone rule out: an unsupported type, an empty or oversized file."""
    extension = extension_of(filename)
    if extension not in EXTENSIONS[expected]:
        allowed = ", ".join(sorted(EXTENSIONS[expected]))
        raise MediaError(f"{filename}: .{extension or '(none)'} is not a supported {expected} type ({allowed})")
    if size == 0:
        raise MediaError(f"{filename} is empty (0 bytes)")
    limit = MAX_BYTES[expected]
    if size > limit:
        raise MediaError(
            f"{filename} is {megabytes(size)}; WaveSpeed accepts {expected} files up to {limit // MEGABYTE} MB "
            f"({limit:,} bytes): {_SMALLER_ADVICE[expected]}"
        )


def check_head(filename: str, expected: MediaKind, head: bytes) -> None:
    """Refuse bytes that are plainly something else (text, or media of another kind) before decoding."""
    sniffed = sniff(head)
    if is_text(head) and sniffed.mime is None:
        raise MediaError(f"{filename} is named as {expected} but its bytes are plain text")
    other_kind = sniffed.kind is not None and sniffed.kind is not expected
    # An MP4-family container sniffs as video even when it only holds sound, and the reverse.
    sound_or_video = {sniffed.kind, expected} == {MediaKind.AUDIO, MediaKind.VIDEO}
    if other_kind and not sound_or_video:
        raise MediaError(f"{filename} is named as {expected} but its bytes are {describe(sniffed, head)}")


def check_media(stream: BinaryIO, filename: str, expected: MediaKind, size: int) -> MediaFacts:
    """Every check of one input, from its name to its last byte; raises ``MediaError`` for people.

    ``stream`` is seekable: the S3 reader (``open_s3_object``) in the pipeline, a local file in the CLI.
    """
    check_name_and_size(filename, expected, size)
    head = stream.read(SNIFF_BYTES)
    stream.seek(0)
    check_head(filename, expected, head)
    try:
        if expected is MediaKind.IMAGE:
            return check_image(stream, filename, head)
        if expected is MediaKind.AUDIO:
            length = measure_audio(stream, filename, head, checked=True)
            return MediaFacts(kind=expected, container=length.container, seconds=length.seconds)
        return check_video(stream, filename, head)
    except (MediaError, BotoCoreError, ClientError):
        raise
    except Exception as exc:  # hostile bytes may break a decoder in any way: the person hears of it
        raise MediaError(
            f"{filename} could not be read as {with_article(str(expected))} file ({type(exc).__name__}); "
            "the file is damaged or in an unusual form: export it again"
        ) from exc


# ---- pictures ---------------------------------------------------------------------------------------


def picture_problem(filename: str, width: int, height: int) -> str | None:
    size = f"{width}x{height} px"
    if min(width, height) < MIN_PICTURE_SIDE:
        return (
            f"{filename} is {size}; pictures need at least {MIN_PICTURE_SIDE} px on each side "
            "(the model renders 480p or 720p): use a larger picture"
        )
    if max(width, height) > MAX_PICTURE_SIDE:
        return (
            f"{filename} is {size}; pictures may be at most {MAX_PICTURE_SIDE} px on each side: "
            "scale it down (the model renders at most 1280x720)"
        )
    if width * height > MAX_PICTURE_PIXELS:
        return (
            f"{filename} is {size} ({width * height / 1e6:.1f} megapixels); pictures may have at most "
            f"{MAX_PICTURE_PIXELS // 1_000_000} megapixels: scale it down (the model renders at most 1280x720)"
        )
    return None


def _wrong_bytes(filename: str, expected: MediaKind, head: bytes) -> MediaError:
    sniffed = sniff(head)
    if (
        sniffed.kind is expected
        and {"tif": "tiff"}.get(str(sniffed.extension), sniffed.extension) not in EXTENSIONS[expected]
    ):
        labels = ", ".join(sorted({c.label for c in CONTAINERS[expected].values()}))
        return MediaError(
            f"{filename} holds {with_article(str(sniffed.mime))} picture, a format WaveSpeed does not take: "
            f"convert it to one of: {labels}"
        )
    if sniffed.kind is expected or sniffed.mime is None:
        return MediaError(
            f"{filename} could not be read as {with_article(str(expected))}: the file is truncated or damaged "
            "(or not a picture at all); export it again"
        )
    return MediaError(f"{filename} is named as {expected} but its bytes are {describe(sniffed, head)}")


def _same_format_or_refuse(filename: str, found: Container, kind_word: str) -> None:
    extension = extension_of(filename)
    if extension not in found.extensions:
        what = f"{found.label} audio" if kind_word == "audio" else with_article(f"{found.label} {kind_word}")
        raise MediaError(f"{filename} holds {what}; rename it to .{found.rename_to} or convert it")


def check_image(stream: BinaryIO, filename: str, head: bytes = b"") -> MediaFacts:
    """Pixel size from the header first, then a full decode: a picture must be whole to be sent."""
    from PIL import Image  # imported here: only submit reads pictures, fetch and reconcile never load Pillow

    Image.init()
    with warnings.catch_warnings():
        # Pillow's own bomb warning and its complaints about odd metadata: the limits here decide.
        warnings.simplefilter("ignore")
        try:
            picture = Image.open(stream, formats=_PILLOW_FORMATS)
        except Image.DecompressionBombError as exc:
            raise MediaError(
                f"{filename} declares a picture far larger than any allowed (a possible decompression bomb); "
                f"pictures may be at most {MAX_PICTURE_SIDE} px on each side and have at most "
                f"{MAX_PICTURE_PIXELS // 1_000_000} megapixels: scale it down"
            ) from exc
        except (BotoCoreError, ClientError):
            raise
        except Exception as exc:  # any failure to identify hostile bytes is a refusal
            raise _wrong_bytes(filename, MediaKind.IMAGE, head) from exc
        with picture:
            image_format = str(picture.format)
            width, height = picture.size
            found = IMAGE_FORMATS[image_format]
            _same_format_or_refuse(filename, found, "image")
            if problem := picture_problem(filename, width, height):
                raise MediaError(problem)
            _decode_whole_picture(picture, stream, filename, found)
    return MediaFacts(kind=MediaKind.IMAGE, container=found.label, width=width, height=height)


def _decode_whole_picture(picture: Image.Image, stream: BinaryIO, filename: str, found: Container) -> None:
    from PIL import Image

    damaged = f"{filename} is not a whole {found.label} image: the file is truncated or damaged; export it again"
    try:
        if picture.format in ("JPEG", "MPO"):
            # Decode every block at 1/8 scale: all the bytes are read, a fraction of the memory used.
            picture.draft("RGB", (1, 1))
        picture.load()
        if picture.format == "PNG":
            # Loading stops after the pixels; checking every chunk's CRC up to IEND finds a cut-off end.
            stream.seek(0)
            with Image.open(stream, formats=("PNG",)) as again:
                again.verify()
    except (BotoCoreError, ClientError):
        raise
    except Exception as exc:  # decoders raise many types on damaged bytes
        detail = str(exc).strip() or type(exc).__name__
        raise MediaError(f"{damaged} ({detail})") from exc


# ---- sound and video --------------------------------------------------------------------------------


class _SoundView:
    """What FFmpeg is shown of a file: no name (so the bytes alone identify it) and nothing of the ID3
    tags in front of it. Tags are not sound, and FFmpeg would copy them whole into memory (a private
    frame four times over, escaped), so a tag of any size costs neither a read nor a byte here."""

    def __init__(self, stream: IO[bytes], start: int) -> None:
        self._stream = stream
        self._start = start
        stream.seek(start)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(min(size, READ_CAP_BYTES) if size >= 0 else READ_CAP_BYTES)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset += self._start
        return max(0, self._stream.seek(offset, whence) - self._start)

    def tell(self) -> int:
        return max(0, self._stream.tell() - self._start)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def after_leading_tags(stream: IO[bytes]) -> int:
    """Where the bytes after any ID3v2 tags at the start of a file begin (0 when there are none)."""
    start = 0
    for _ in range(8):
        stream.seek(start)
        tag = stream.read(10)
        if len(tag) < 10 or tag[:3] != b"ID3" or any(byte & 0x80 for byte in tag[6:10]):
            break
        size = (tag[6] << 21) | (tag[7] << 14) | (tag[8] << 7) | tag[9]
        start += 10 + size + (10 if tag[5] & 0x10 else 0)
    stream.seek(0)
    return start


def _open_container(stream: IO[bytes], filename: str, expected: MediaKind, head: bytes) -> InputContainer:
    try:
        container = av.open(
            _SoundView(stream, after_leading_tags(stream)),
            mode="r",
            buffer_size=64 * 1024,
            # Tags in Latin-1 or any other encoding are common and say nothing about the sound.
            metadata_errors="replace",
        )
    except av.FFmpegError as exc:
        raise _undecodable(filename, expected, head, _reason(exc)) from exc
    if not container.streams:
        container.close()
        raise _undecodable(filename, expected, head, "no tracks found")
    return container


def _undecodable(filename: str, expected: MediaKind, head: bytes, reason: str) -> MediaError:
    sniffed = sniff(head)
    if sniffed.mime is not None and sniffed.kind not in (MediaKind.AUDIO, MediaKind.VIDEO):
        return MediaError(f"{filename} is named as {expected} but its bytes are {describe(sniffed, head)}")
    if expected is MediaKind.AUDIO:
        return MediaError(
            f"{filename} has no playable sound: its bytes could not be decoded as audio ({reason}); the file is "
            "truncated or damaged: export it again as MP3, WAV, M4A, Ogg, Opus, FLAC or WebM"
        )
    return MediaError(
        f"{filename} holds no playable video: its bytes could not be decoded ({reason}); the file is truncated "
        "or damaged: export it again as MP4, MOV, WebM or another accepted format"
    )


def _reason(exc: av.FFmpegError) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__


def _accepted_container(container: InputContainer, filename: str, expected: MediaKind) -> Container:
    name = container.format.name
    accepted = CONTAINERS[expected]
    if name not in accepted:
        if name.endswith("_pipe") or name in ("image2", "gif", "webp"):
            raise MediaError(f"{filename} is named as {expected} but its bytes are a picture ({name})")
        other = AUDIO_CONTAINERS.get(name) if expected is MediaKind.VIDEO else VIDEO_CONTAINERS.get(name)
        if other is not None:
            raise MediaError(f"{filename} is named as {expected} but its bytes are {with_article(other.label)} file")
        labels = ", ".join(sorted({c.label for c in accepted.values()}))
        raise MediaError(
            f"{filename} holds {container.format.long_name or name}, which WaveSpeed does not take as {expected}; "
            f"convert it to one of: {labels}"
        )
    found = accepted[name]
    _same_format_or_refuse(filename, found, "audio" if expected is MediaKind.AUDIO else "video")
    return found


def seconds_text(value: Fraction | Decimal) -> str:
    return f"{float(value):.2f} s"


def as_decimal(value: Fraction) -> Decimal:
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(_MICROSECOND, rounding=ROUND_HALF_UP)


def measure_audio(stream: BinaryIO, filename: str, head: bytes = b"", checked: bool = False) -> AudioLength:
    """Decode the first sound track to its end; ``checked`` also holds the container to WaveSpeed's list.

    The length is the samples decoded; for MP4-family files it is cut back to the track's declared
    length where the decoder's surplus is no more than one frame (the encoder's padding, which the
    edit list tells players to drop; other containers' decoders drop it themselves).
    A declared length more than one frame (plus 50 ms) beyond what decodes is refused: the bytes
    cannot play what the header promises.
    """
    if not head:
        head = stream.read(SNIFF_BYTES)
    # Read before FFmpeg owns the stream: it keeps its own position and must not be moved under it.
    riff = riff_facts(stream)
    if riff.tag_bytes > MAX_EMBEDDED_TAG_BYTES:
        raise MediaError(
            f"{filename} carries {megabytes(riff.tag_bytes)} of tags in an ID3 chunk; at most "
            f"{MAX_EMBEDDED_TAG_BYTES // MEGABYTE} MB of tags are read: remove them, or export the sound again"
        )
    header = _HeaderFacts(wav_seconds=riff.declared_seconds, mp3_counts_frames=mp3_declares_length(stream))
    container = _open_container(stream, filename, MediaKind.AUDIO, head)
    with container:
        label = _accepted_container(container, filename, MediaKind.AUDIO).label if checked else container.format.name
        audio = _first_audio(container)
        if audio is None:
            raise MediaError(f"{filename} has no playable sound: it holds no audio track")
        for other in container.streams:
            if other.index != audio.index:
                other.discard = av.stream.Discard.all
        # Everything of a stream is read while its container is open: closing it frees what they point into.
        codec = audio.codec_context.name
        sample_rate = audio.sample_rate
        container_name = container.format.name
        claimed = _declared_seconds(container, audio, header)
        played, frame = _decoded_seconds(container, audio, filename)
    if played <= 0:
        raise MediaError(f"{filename} has no playable sound (it plays 0 s); export it again")
    tolerance = frame + LENGTH_SLACK_SECONDS
    if claimed is not None and played < claimed - tolerance:
        raise MediaError(
            f"{filename} claims to play {seconds_text(claimed)} but its bytes play only {seconds_text(played)}: "
            "the file is truncated or damaged; export it again"
        )
    if is_iso_media(container_name) and claimed is not None and claimed < played <= claimed + tolerance:
        # MP4 keeps the encoder's padding among its samples and says in its edit list where sound ends.
        played = claimed
    return AudioLength(
        seconds=as_decimal(played),
        claimed_seconds=as_decimal(claimed) if claimed is not None else None,
        sample_rate=sample_rate,
        codec=codec,
        container=label,
    )


def is_iso_media(format_name: str) -> bool:
    return format_name == _ISO_MEDIA


@dataclass(frozen=True)
class _HeaderFacts:
    """What a sound file's own header says, read with this module's small parsers."""

    wav_seconds: Fraction | None
    mp3_counts_frames: bool


def playing_seconds(fileobj: BinaryIO, filename: str) -> Decimal:
    """How long a file's sound plays, decoded, whatever its container (an output video's, too)."""
    return measure_audio(fileobj, filename).seconds


def _first_audio(container: InputContainer) -> AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _decoded_seconds(container: InputContainer, audio: AudioStream, filename: str) -> tuple[Fraction, Fraction]:
    """Seconds decoded and the longest frame. Damaged packets are skipped, as players skip them."""
    played = Fraction(0)
    longest = Fraction(0)
    for packet in _readable(container.demux(audio)):
        try:
            frames = packet.decode()
        except av.FFmpegError:
            continue
        for frame in frames:
            rate = frame.sample_rate or audio.sample_rate
            if not rate:
                continue
            length = Fraction(frame.samples, rate)
            played += length
            longest = max(longest, length)
        if played > _DECODE_LIMIT:
            raise MediaError(
                f"{filename} plays longer than {MAX_DECODED_SECONDS} s; the limit is {MAX_OUTPUT_SECONDS} s "
                "(10 minutes) per job. Split it into shorter jobs."
            )
    if audio.codec_context.name.startswith("pcm_") and audio.sample_rate:
        longest = Fraction(1, audio.sample_rate)
    return played, longest


def _readable(packets: Iterator[_P]) -> Iterator[_P]:
    """Packets up to the first the container cannot read: what comes before is what plays."""
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError:
            return
        yield packet


def _declared_seconds(container: InputContainer, audio: AudioStream, header: _HeaderFacts) -> Fraction | None:
    """The length the file's own header declares, or ``None`` where FFmpeg only estimates one.

    MP3 declares a length only in a Xing, Info or VBRI frame, and ADTS AAC never: otherwise FFmpeg
    guesses from the bitrate. WAV is read here, since FFmpeg trims a WAV's declared size to the file.
    """
    name = container.format.name
    if name == "aac":
        return None
    if name == "wav":
        return header.wav_seconds
    if name == "mp3" and not header.mp3_counts_frames:
        return None
    if audio.duration is not None and audio.duration > 0 and audio.time_base is not None:
        return Fraction(audio.duration) * audio.time_base
    if container.duration is not None and container.duration > 0 and len(container.streams) == 1:
        return Fraction(container.duration, av.time_base)
    return None


_WAV_PCM_TAGS = {0x0001, 0x0003, 0xFFFE}


@dataclass(frozen=True)
class RiffFacts:
    """A WAV's declared length (``None`` for a size written as unknown, or not PCM) and the size of its
    ID3 chunks, which FFmpeg would copy into memory several times over."""

    declared_seconds: Fraction | None = None
    tag_bytes: int = 0


def riff_facts(stream: IO[bytes]) -> RiffFacts:
    """Walk a WAV's chunk headers (seeking over the chunks themselves); empty facts for anything else."""
    try:
        return _riff_facts(stream)
    finally:
        stream.seek(0)


def _riff_facts(stream: IO[bytes]) -> RiffFacts:
    stream.seek(0)
    riff = stream.read(12)
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        return RiffFacts()
    byte_rate, pcm = 0, False
    declared: Fraction | None = None
    tag_bytes = 0
    position = 12
    for _ in range(256):
        stream.seek(position)
        header = stream.read(8)
        if len(header) < 8:
            break
        chunk, size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk == b"fmt ":
            fmt = stream.read(16)
            if len(fmt) < 16:
                break
            tag, _, _, byte_rate = struct.unpack("<HHII", fmt[:12])
            pcm = tag in _WAV_PCM_TAGS
        elif chunk == b"data":
            if size in (0, 0xFFFFFFFF):
                break
            if pcm and byte_rate:
                declared = Fraction(size, byte_rate)
        elif chunk.lower() == b"id3 ":
            tag_bytes += size
        position += 8 + size + (size & 1)
    return RiffFacts(declared_seconds=declared, tag_bytes=tag_bytes)


_XING_OFFSETS = (13, 21, 36)


def mp3_declares_length(stream: IO[bytes]) -> bool:
    """Whether the first MPEG audio frame is a Xing/Info/VBRI frame, which counts the file's frames."""
    try:
        return _mp3_declares_length(stream)
    finally:
        stream.seek(0)


def _mp3_declares_length(stream: IO[bytes]) -> bool:
    stream.seek(after_leading_tags(stream))
    window = stream.read(8_192)
    for offset in range(len(window) - 1):
        if window[offset] == 0xFF and window[offset + 1] & 0xE0 == 0xE0:
            frame = window[offset : offset + 64]
            return any(frame[at : at + 4] in (b"Xing", b"Info") for at in _XING_OFFSETS) or frame[36:40] == b"VBRI"
    return False


def check_video(stream: BinaryIO, filename: str, head: bytes = b"") -> MediaFacts:
    """A video must show a picture of a usable size, and its bytes must reach its declared end."""
    if not head:
        head = stream.read(SNIFF_BYTES)
    container = _open_container(stream, filename, MediaKind.VIDEO, head)
    with container:
        found = _accepted_container(container, filename, MediaKind.VIDEO)
        video = next(
            (v for v in container.streams.video if not v.disposition & av.stream.Disposition.attached_pic), None
        )
        if video is None:
            raise MediaError(f"{filename} holds no video track; for a still picture, drop it as image")
        for other in container.streams:
            if other.index != video.index:
                other.discard = av.stream.Discard.all
        width, height = video.codec_context.width, video.codec_context.height
        if width and height and (problem := picture_problem(filename, width, height)):
            raise MediaError(problem)
        declared = _video_declared_seconds(container, video)
        shown, reached = _video_reach(container, video)
        # Read while the container is open: closing it frees what a stream's fields point into.
        rate = video.average_rate or video.guessed_rate
    if shown is None:
        raise MediaError(
            f"{filename} holds no playable video: its pictures could not be decoded (the file is truncated or "
            "damaged); export it again"
        )
    width, height = shown
    if problem := picture_problem(filename, width, height):
        raise MediaError(problem)
    frame = Fraction(1, int(rate)) if rate and int(rate) > 0 else Fraction(1, 10)
    if declared is not None and reached < declared - frame - 2 * LENGTH_SLACK_SECONDS:
        raise MediaError(
            f"{filename} claims to play {seconds_text(declared)} but its bytes hold only {seconds_text(reached)} "
            "of video: the file is truncated or damaged; export it again"
        )
    return MediaFacts(
        kind=MediaKind.VIDEO,
        container=found.label,
        seconds=as_decimal(min(reached, declared or reached)),
        width=width,
        height=height,
    )


def _video_declared_seconds(container: InputContainer, video: VideoStream) -> Fraction | None:
    if video.duration is not None and video.duration > 0 and video.time_base is not None:
        return Fraction(video.duration) * video.time_base
    if container.duration is not None and container.duration > 0:
        return Fraction(container.duration, av.time_base)
    return None


def _video_reach(container: InputContainer, video: VideoStream) -> tuple[tuple[int, int] | None, Fraction]:
    """The first picture's size (``None`` if none decodes early on) and how far the packets reach."""
    shown: tuple[int, int] | None = None
    reached = Fraction(0)
    start: Fraction | None = None
    interval = Fraction(1, int(video.average_rate)) if video.average_rate and int(video.average_rate) > 0 else None
    for count, packet in enumerate(_readable(container.demux(video))):
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is not None and packet.time_base is not None:
            at = Fraction(stamp) * packet.time_base
            start = at if start is None else min(start, at)
            length = Fraction(packet.duration) * packet.time_base if packet.duration else (interval or Fraction(0))
            reached = max(reached, at + length)
        if shown is None:
            if count >= FIRST_PICTURE_PACKETS:
                break
            try:
                for frame in packet.decode():
                    shown = (frame.width, frame.height)
                    break
            except av.FFmpegError:
                continue
    return shown, reached - (start or Fraction(0))


# ---- reading from S3 --------------------------------------------------------------------------------


class S3ObjectReader(io.RawIOBase):
    """A seekable view of one S3 object version in aligned blocks of ``READ_BLOCK_BYTES``.

    Each block is one ranged GET, well under ``READ_CAP_BYTES``; the last few blocks are kept, so the
    header parsers and FFmpeg's probing, which seek back and forth near a file's start and end, fetch
    each byte about once. With ``etag`` every GET asks for exactly that version (If-Match): the bytes
    checked are the bytes the job was made from, or the read fails with S3's 412.
    """

    def __init__(self, client: S3Client, bucket: str, key: str, size: int, etag: str | None = None) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._etag = etag
        self._position = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

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

    def _block(self, index: int) -> bytes:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        first = index * READ_BLOCK_BYTES
        last = min(self._size, first + READ_BLOCK_BYTES) - 1
        span = f"bytes={first}-{last}"
        if self._etag:
            answer = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=span, IfMatch=f'"{self._etag}"')
        else:
            answer = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=span)
        data = answer["Body"].read()
        self._blocks[index] = data
        while len(self._blocks) > KEPT_BLOCKS:
            self._blocks.popitem(last=False)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Up to the end of the block the position is in (a short read, as raw streams may make)."""
        if self._position >= self._size or len(buffer) == 0:
            return 0
        index, offset = divmod(self._position, READ_BLOCK_BYTES)
        block = self._block(index)
        count = min(len(buffer), len(block) - offset)
        if count <= 0:
            return 0
        buffer[:count] = block[offset : offset + count]
        self._position += count
        return count

    def readall(self) -> bytes:
        """The rest of the object, block by block (io's default would ask for 8 KiB at a time)."""
        parts: list[bytes] = []
        while self._position < self._size:
            chunk = bytearray(READ_BLOCK_BYTES)
            count = self.readinto(chunk)
            if count == 0:
                break
            parts.append(bytes(chunk[:count]))
        return b"".join(parts)


def open_s3_object(client: S3Client, bucket: str, key: str, size: int, etag: str | None = None) -> BinaryIO:
    """Buffered, so reads of any size are whole (as parsers expect) and small reads cost no GET."""
    return io.BufferedReader(S3ObjectReader(client, bucket, key, size, etag), buffer_size=64 * 1024)
