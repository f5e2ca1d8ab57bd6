"""Good and broken media made at run time: every accepted format, and the ways a file goes wrong.

Nothing binary is committed. Sound and video are encoded with PyAV (Ogg Theora with imageio-ffmpeg's
ffmpeg), pictures with Pillow, and the broken ones are cut or edited from good ones, so each sample
says exactly what is wrong with it. A good sample has ``problem=None``; a bad one names a phrase its
error must contain.
"""

from __future__ import annotations

import io
import struct
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import imageio_ffmpeg
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.video.stream import VideoStream
from PIL import Image

from infinitetalk_core.models import MediaKind
from local_stack.samples import portrait_png, voice_wav

SECONDS = 3.7  # long enough to hold many frames, short enough to encode in milliseconds
VIDEO_SIZE = (176, 144)  # QCIF: the one size every encoder here (H.263 included) takes
VIDEO_SECONDS = 1.0
VIDEO_RATE = 5


@dataclass(frozen=True)
class Sample:
    """One input file: its case name, file name, role kind, bytes, and what must be said about it."""

    case: str
    filename: str
    kind: MediaKind
    data: bytes
    problem: str | None = None

    @property
    def good(self) -> bool:
        return self.problem is None


# ---- encoders ---------------------------------------------------------------------------------------


def encode_audio(
    fmt: str,
    codec: str,
    rate: int,
    seconds: float = SECONDS,
    layout: str = "mono",
    container_options: dict[str, str] | None = None,
) -> bytes:
    """``seconds`` of speech-like sound in ``fmt``/``codec``, resampled to what the encoder takes."""
    with _output_file() as target, av.open(io.BytesIO(voice_wav(seconds)), mode="r") as source:
        with av.open(str(target), "w", format=fmt, options=container_options or {}) as out:
            _encode_sound(source, out, codec, rate, layout)
        return target.read_bytes()


def _encode_sound(source: InputContainer, out: OutputContainer, codec: str, rate: int, layout: str) -> None:
    stream = out.add_stream(codec, rate=rate, options={"strict": "experimental"})
    assert isinstance(stream, AudioStream)
    stream.layout = layout
    formats = stream.codec_context.codec.audio_formats
    assert formats, f"{codec} names no sample format"
    resampler = av.AudioResampler(
        format=formats[0].name, layout=layout, rate=rate, frame_size=stream.codec_context.frame_size or None
    )
    for frame in source.decode(audio=0):
        for resampled in resampler.resample(frame):
            out.mux(stream.encode(resampled))
    for resampled in resampler.resample(None):
        out.mux(stream.encode(resampled))
    out.mux(stream.encode(None))


@contextmanager
def _output_file() -> Iterator[Path]:
    """A file to write to: MP4's faststart rewrites its output by name, which a BytesIO cannot do."""
    with tempfile.TemporaryDirectory(prefix="media-corpus-") as folder:
        yield Path(folder) / "out"


@cache
def _still() -> Image.Image:
    return Image.open(io.BytesIO(portrait_png(width=VIDEO_SIZE[0], height=VIDEO_SIZE[1]))).convert("RGB")


def encode_video(
    fmt: str,
    codec: str,
    size: tuple[int, int] = VIDEO_SIZE,
    seconds: float = VIDEO_SECONDS,
    container_options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
) -> bytes:
    """A short clip of the portrait, ``seconds`` long at 5 frames a second."""
    picture = _still().resize(size)
    with _output_file() as target:
        with av.open(str(target), "w", format=fmt, options=container_options or {}) as out:
            _encode_pictures(out, picture, codec, size, seconds, codec_options or {})
        return target.read_bytes()


def _encode_pictures(
    out: OutputContainer,
    picture: Image.Image,
    codec: str,
    size: tuple[int, int],
    seconds: float,
    options: dict[str, str],
) -> None:
    stream = out.add_stream(codec, rate=VIDEO_RATE, options=options)
    assert isinstance(stream, VideoStream)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    for index in range(round(seconds * VIDEO_RATE)):
        frame = av.VideoFrame.from_image(picture).reformat(format="yuv420p")  # type: ignore[no-untyped-call]
        frame.pts = index
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def theora_ogv() -> bytes:
    """Ogg Theora, the usual .ogv, made with imageio-ffmpeg's ffmpeg (PyAV's build has no Theora encoder)."""
    with tempfile.TemporaryDirectory() as folder:
        still = Path(folder) / "still.png"
        _still().save(still)
        target = Path(folder) / "clip.ogv"
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
        command += ["-loop", "1", "-framerate", str(VIDEO_RATE), "-i", str(still), "-t", f"{VIDEO_SECONDS}"]
        command += ["-c:v", "libtheora", "-pix_fmt", "yuv420p", str(target)]
        subprocess.run(command, check=True, timeout=60, capture_output=True)
        return target.read_bytes()


def picture(image_format: str, width: int = 320, height: int = 240, **save: object) -> bytes:
    image = Image.open(io.BytesIO(portrait_png(width=width, height=height))).convert("RGB")
    if image_format == "GIF":
        image = image.convert("P")
    out = io.BytesIO()
    image.save(out, format=image_format, **save)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header for a huge picture with a few rows of pixels: what a decompression bomb looks like unopened."""
    rows = zlib.compress((b"\x00" + b"\x00" * (3 * width)) * 4, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is edited to claim another size."""
    data = bytearray(picture("JPEG"))
    at = data.find(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(picture("GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


# ---- edits that make a header lie -------------------------------------------------------------------


def wav_claiming(data: bytes, factor: int) -> bytes:
    """The WAV with its data chunk's size multiplied: the header promises more than the bytes hold."""
    edited = bytearray(data)
    at = edited.find(b"data")
    size = struct.unpack("<I", edited[at + 4 : at + 8])[0]
    edited[at + 4 : at + 8] = struct.pack("<I", min(0xFFFFFFF0, size * factor))
    return bytes(edited)


def wav_declaring_less(data: bytes, fraction: Fraction) -> bytes:
    edited = bytearray(data)
    at = edited.find(b"data")
    size = struct.unpack("<I", edited[at + 4 : at + 8])[0]
    edited[at + 4 : at + 8] = struct.pack("<I", int(size * fraction) // 2 * 2)
    return bytes(edited)


def mp3_claiming(data: bytes, factor: int) -> bytes:
    """The MP3 with its Xing/Info frame count multiplied."""
    edited = bytearray(data)
    at = max(edited.find(b"Xing"), edited.find(b"Info"))
    flags = struct.unpack(">I", edited[at + 4 : at + 8])[0]
    assert flags & 1, "the Xing frame counts frames"
    frames = struct.unpack(">I", edited[at + 8 : at + 12])[0]
    edited[at + 8 : at + 12] = struct.pack(">I", frames * factor)
    return bytes(edited)


def flac_claiming(data: bytes, factor: int) -> bytes:
    """The FLAC with STREAMINFO's total sample count multiplied."""
    edited = bytearray(data)
    assert edited[:4] == b"fLaC"
    packed = int.from_bytes(edited[18:26], "big")
    total = packed & ((1 << 36) - 1)
    packed = (packed & ~((1 << 36) - 1)) | (total * factor)
    edited[18:26] = packed.to_bytes(8, "big")
    return bytes(edited)


def with_id3_tag(data: bytes, tag_bytes: int) -> bytes:
    """An ID3v2.3 tag with one private frame of ``tag_bytes`` in front of an MP3 (as cover art would be)."""
    payload = b"owner\x00" + bytes(tag_bytes)
    frame = b"PRIV" + struct.pack(">I", len(payload)) + b"\x00\x00" + payload
    size = len(frame)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + syncsafe + frame + data


def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "a zip archive appended to a picture")
    return out.getvalue()


# ---- the corpus -------------------------------------------------------------------------------------

A = MediaKind.AUDIO
I = MediaKind.IMAGE  # noqa: E741 - a one-letter alias keeps the table readable
V = MediaKind.VIDEO
CLAIMS = "but its bytes play only"
CUT = "the file is truncated or damaged"
NO_SOUND = "has no playable sound"


@cache
def good_audio() -> dict[str, bytes]:
    """Every audio format WaveSpeed takes, by file name."""
    return {
        "audio.mp3": encode_audio("mp3", "libmp3lame", 44_100),
        "audio.wav": voice_wav(SECONDS),
        "audio.ogg": encode_audio("ogg", "vorbis", 44_100, layout="stereo"),
        "audio.opus": encode_audio("ogg", "libopus", 48_000),
        "audio.aac": encode_audio("adts", "aac", 44_100),
        "audio.flac": encode_audio("flac", "flac", 44_100),
        "audio.webm": encode_audio("webm", "libopus", 48_000),
        "audio.m4a": encode_audio("ipod", "aac", 44_100, container_options={"movflags": "faststart"}),
    }


@cache
def good_images() -> dict[str, bytes]:
    return {
        "image.png": picture("PNG"),
        "image.jpg": picture("JPEG"),
        "image.jpeg": picture("JPEG", quality=70),
        "image.webp": picture("WEBP"),
        "image.gif": picture("GIF"),
        "image.bmp": picture("BMP"),
        "image.tiff": picture("TIFF", compression="tiff_deflate"),
    }


@cache
def good_videos() -> dict[str, bytes]:
    faststart = {"movflags": "faststart"}
    return {
        "video.mp4": encode_video("mp4", "libx264", container_options=faststart),
        "video.mov": encode_video("mov", "libx264"),
        "video.m4v": encode_video("mp4", "mpeg4"),
        "video.3gp": encode_video("3gp", "h263"),
        "video.avi": encode_video("avi", "mpeg4"),
        "video.wmv": encode_video("asf", "wmv2"),
        "video.flv": encode_video("flv", "flv"),
        "video.webm": encode_video("webm", "libvpx"),
        "video.mkv": encode_video("matroska", "libx264"),
        "video.ogv": theora_ogv(),
    }


def _cut(data: bytes, size: int | float) -> bytes:
    return data[: int(size) if size >= 1 else int(len(data) * size)]


@cache
def corpus() -> tuple[Sample, ...]:
    """Every sample, good and bad; names are unique, so each can be a test id and a drop name."""
    audio, images, videos = good_audio(), good_images(), good_videos()
    samples: list[Sample] = []

    def add(case: str, filename: str, kind: MediaKind, data: bytes, problem: str | None = None) -> None:
        samples.append(Sample(case, filename, kind, data, problem))

    for filename, data in audio.items():
        add(f"good-{filename.replace('.', '-')}", filename, A, data)
    for filename, data in images.items():
        add(f"good-{filename.replace('.', '-')}", filename, I, data)
    for filename, data in videos.items():
        add(f"good-{filename.replace('.', '-')}", filename, V, data)

    # Sound whose header promises more than its bytes play, in each container that declares a length.
    add("mp3-cut-to-1kb", "audio.mp3", A, _cut(audio["audio.mp3"], 1024), CLAIMS)
    add("mp3-xing-claims-ten-times", "audio.mp3", A, mp3_claiming(audio["audio.mp3"], 10), CUT)
    add("wav-cut-to-1kb", "audio.wav", A, _cut(audio["audio.wav"], 1024), CLAIMS)
    add("wav-header-claims-ten-times", "audio.wav", A, wav_claiming(audio["audio.wav"], 10), CUT)
    add("flac-cut-in-half", "audio.flac", A, _cut(audio["audio.flac"], 0.5), CLAIMS)
    add("flac-streaminfo-claims-ten-times", "audio.flac", A, flac_claiming(audio["audio.flac"], 10), CUT)
    add("m4a-cut-in-half", "audio.m4a", A, _cut(audio["audio.m4a"], 0.5), CLAIMS)
    add("webm-cut-to-1kb", "audio.webm", A, _cut(audio["audio.webm"], 1024), CLAIMS)
    # Containers without a declared length: cut to their headers they play nothing.
    add("ogg-cut-to-headers", "audio.ogg", A, _cut(audio["audio.ogg"], 600), NO_SOUND)
    add("opus-cut-to-headers", "audio.opus", A, _cut(audio["audio.opus"], 300), NO_SOUND)
    add("aac-cut-to-40-bytes", "audio.aac", A, _cut(audio["audio.aac"], 40), NO_SOUND)
    m4a_moov_last = encode_audio("ipod", "aac", 44_100)
    add("m4a-index-at-end-cut", "audio.m4a", A, _cut(m4a_moov_last, 0.8), NO_SOUND)
    # Wrong bytes for the name.
    add("audio-zero-bytes", "audio.mp3", A, b"", "is empty (0 bytes)")
    add("audio-plain-text", "audio.wav", A, b"this is a transcript, not a recording\n" * 20, "plain text")
    add("audio-png-bytes", "audio.mp3", A, images["image.png"], "its bytes are an image/png file")
    add("audio-pdf-bytes", "audio.mp3", A, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 8, "application/pdf")
    add("audio-random-bytes", "audio.mp3", A, bytes((n * 7919) % 251 for n in range(20_000)), NO_SOUND)
    add("wav-holding-mp3", "audio.wav", A, audio["audio.mp3"], "holds MP3 audio; rename it to .mp3")
    add("m4a-holding-adts", "audio.m4a", A, audio["audio.aac"], "rename it to .aac")
    add("mp3-holding-flac", "audio.mp3", A, audio["audio.flac"], "holds FLAC audio; rename it to .flac")
    add("wav-header-then-garbage", "audio.wav", A, b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)), NO_SOUND)
    add("audio-video-only", "audio.m4a", A, videos["video.mp4"], "holds no audio track")
    add("audio-named-mp4", "audio.mp4", A, audio["audio.m4a"], ".mp4 is not a supported audio type")
    # Polyglots: bytes that begin as one thing and go on as another.
    add("polyglot-png-then-mp3", "audio.mp3", A, images["image.png"] + audio["audio.mp3"], "image/png")
    add("polyglot-webp-riff-as-wav", "audio.wav", A, images["image.webp"], "image/webp")
    add("polyglot-mp3-then-png", "image.png", I, audio["audio.mp3"] + images["image.png"], "audio/mpeg")
    add("polyglot-jpeg-then-zip", "image.jpg", I, images["image.jpg"] + zip_bytes())  # a whole JPEG: accepted
    add("polyglot-png-signature-then-html", "image.png", I, b"\x89PNG\r\n\x1a\n<html>hello</html>" * 4, "damaged")
    add("polyglot-gif-magic-then-script", "image.gif", I, b"GIF89a" + b"<script>alert(1)</script>", "damaged")
    # Pictures of unusable size, and decompression bombs refused from their headers.
    add("image-16x16", "image.png", I, picture("PNG", 16, 16), "at least 128 px on each side")
    add("image-127-wide", "image.png", I, picture("PNG", 127, 400), "at least 128 px on each side")
    add("image-12000x12000-png", "image.png", I, png_declaring(12_000, 12_000), "at most 8192 px on each side")
    add("image-12000x12000-jpeg", "image.jpg", I, jpeg_declaring(12_000, 12_000), "at most 8192 px on each side")
    add("image-8000x6000-png", "image.png", I, png_declaring(8_000, 6_000), "at most 40 megapixels")
    add("image-gif-65535-screen", "image.gif", I, gif_declaring(65_535, 65_535), "at most 8192 px on each side")
    add("image-smallest-allowed", "image.png", I, picture("PNG", 128, 128))
    add("image-widest-allowed", "image.png", I, picture("PNG", 8_192, 128))
    # Truncated pictures.
    for filename in ("image.png", "image.jpg", "image.webp", "image.gif", "image.bmp", "image.tiff"):
        extension = filename.rsplit(".", 1)[1]
        add(f"image-{extension}-cut-in-half", filename, I, _cut(images[filename], 0.5), "truncated or damaged")
    add("image-png-without-iend", "image.png", I, images["image.png"][:-12], "truncated or damaged")
    add("image-png-named-jpg", "image.jpg", I, images["image.png"], "holds a PNG image; rename it to .png")
    add("image-zero-bytes", "image.png", I, b"", "is empty (0 bytes)")
    add("image-plain-text", "image.png", I, b"a note, not a picture\n", "plain text")
    add("image-named-tif", "image.tif", I, images["image.tiff"], ".tif is not a supported image type")
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(512)
    add("image-heic-named-jpg", "image.jpg", I, heic, "holds an image/heic picture, a format WaveSpeed does not take")
    # Video.
    # Every frame a key frame, so the first pictures survive the cut.
    long_mp4 = encode_video(
        "mp4", "libx264", seconds=4.0, container_options={"movflags": "faststart"}, codec_options={"g": "1"}
    )
    add("mp4-cut-in-half", "video.mp4", V, _cut(long_mp4, 0.5), "claims to play 4.00 s")
    add("mov-index-at-end-cut", "video.mov", V, _cut(videos["video.mov"], 0.8), CUT)
    add("webm-video-cut-to-1kb", "video.webm", V, _cut(videos["video.webm"], 1024), "holds no playable video")
    long_avi = encode_video("avi", "mpeg4", seconds=4.0)
    add("avi-cut-in-half", "video.avi", V, _cut(long_avi, 0.6), CUT)
    add("video-sound-only", "video.mp4", V, audio["audio.m4a"], "holds no video track")
    add("video-holding-wav", "video.mp4", V, audio["audio.wav"], "named as video")
    add("video-png-bytes", "video.mp4", V, images["image.png"], "image/png")
    add("video-too-small", "video.mp4", V, encode_video("mp4", "libx264", size=(96, 64)), "at least 128 px")
    add("video-mkv-named-mp4", "video.mp4", V, videos["video.mkv"], "rename it to .webm")
    add("video-zero-bytes", "video.mp4", V, b"", "is empty (0 bytes)")
    add("video-plain-text", "video.mp4", V, b"just words\n" * 50, "plain text")
    assert len({sample.case for sample in samples}) == len(samples), "case names are unique"
    return tuple(samples)


def companions(kind: MediaKind) -> dict[str, bytes]:
    """Good files for the other roles of a job whose one sample is under test, by file name."""
    if kind is MediaKind.AUDIO:
        return {"image.png": portrait_png(width=256, height=256)}
    return {"audio.wav": voice_wav(2.0)}
