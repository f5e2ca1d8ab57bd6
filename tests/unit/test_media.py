"""The media rules on bytes made here: lengths are decoded, headers that lie are refused, pictures are
measured before they are decoded, and no read is larger than the cap."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import wave
from decimal import Decimal
from typing import Any

import pytest

from infinitetalk_core.media import (
    MAX_DECODED_SECONDS,
    MAX_PICTURE_PIXELS,
    MAX_PICTURE_SIDE,
    MIN_PICTURE_SIDE,
    READ_BLOCK_BYTES,
    READ_CAP_BYTES,
    MediaError,
    check_media,
    check_name_and_size,
    measure_audio,
    open_s3_object,
    picture_problem,
    playing_seconds,
)
from infinitetalk_core.models import MediaKind
from tests import media_corpus as corpus

SAMPLE_RATE = 8_000


def wav_bytes(seconds: float, rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack("<h", 0) * round(seconds * rate))
    return buffer.getvalue()


def with_declared_seconds(data: bytes, seconds: float, rate: int = SAMPLE_RATE) -> bytes:
    """The WAV with its data chunk resized to declare ``seconds`` of 16-bit mono sound."""
    edited = bytearray(data)
    at = edited.find(b"data")
    edited[at + 4 : at + 8] = struct.pack("<I", round(seconds * rate) * 2)
    return bytes(edited)


def check(filename: str, kind: MediaKind, data: bytes) -> Any:
    return check_media(io.BytesIO(data), filename, kind, len(data))


def refusal(filename: str, kind: MediaKind, data: bytes) -> str:
    with pytest.raises(MediaError) as refused:
        check(filename, kind, data)
    return str(refused.value)


# ---- sound ------------------------------------------------------------------------------------------


def test_a_wav_plays_exactly_its_samples() -> None:
    assert check("audio.wav", MediaKind.AUDIO, wav_bytes(2.5)).seconds == Decimal("2.5")


@pytest.mark.parametrize(
    ("filename", "make"),
    [
        ("audio.mp3", lambda: corpus.encode_audio("mp3", "libmp3lame", 44_100)),
        ("audio.opus", lambda: corpus.encode_audio("ogg", "libopus", 48_000)),
        ("audio.flac", lambda: corpus.encode_audio("flac", "flac", 44_100)),
        ("audio.webm", lambda: corpus.encode_audio("webm", "libopus", 48_000)),
        ("audio.aac", lambda: corpus.encode_audio("adts", "aac", 44_100)),
        ("audio.ogg", lambda: corpus.encode_audio("ogg", "vorbis", 44_100, layout="stereo")),
    ],
)
def test_each_format_plays_its_length_to_within_one_frame(filename: str, make: Any) -> None:
    seconds = check(filename, MediaKind.AUDIO, make()).seconds
    assert abs(seconds - Decimal(str(corpus.SECONDS))) <= Decimal("0.047"), seconds  # 2048 samples at 44.1 kHz


def test_an_m4a_plays_what_its_edit_list_declares_not_the_encoders_padding() -> None:
    """AAC decodes to whole 1024-sample frames; the MP4 says where the sound ends, and players stop there."""
    data = corpus.encode_audio("ipod", "aac", 44_100, container_options={"movflags": "faststart"})
    assert check("audio.m4a", MediaKind.AUDIO, data).seconds == Decimal("3.7")


def test_the_truncated_mp3_that_was_charged_is_refused_in_plain_words() -> None:
    """1 KB of an MP3 whose Xing header claims 3.7 s: once delivered as a silent video and charged."""
    data = corpus.encode_audio("mp3", "libmp3lame", 44_100)[:1024]
    message = refusal("audio.mp3", MediaKind.AUDIO, data)
    assert message.startswith("audio.mp3 claims to play 3.70 s but its bytes play only 0.")
    assert message.endswith("the file is truncated or damaged; export it again")


def test_a_header_may_claim_up_to_one_frame_and_50_ms_more_than_plays() -> None:
    """PCM frames are one sample long, so the tolerance is 50 ms and one sample."""
    sound = wav_bytes(2.0)
    within = with_declared_seconds(sound, 2.0 + 0.05)
    beyond = with_declared_seconds(sound, 2.0 + 0.05 + 2 / SAMPLE_RATE)
    assert check("audio.wav", MediaKind.AUDIO, within).seconds == Decimal("2")
    assert "claims to play 2.05 s but its bytes play only 2.00 s" in refusal("audio.wav", MediaKind.AUDIO, beyond)


def test_a_header_that_claims_less_than_the_bytes_hold_is_played_as_declared() -> None:
    """Decoders stop where the WAV's data chunk ends; what plays is what is charged."""
    shorter = with_declared_seconds(wav_bytes(3.0), 1.25)
    assert check("audio.wav", MediaKind.AUDIO, shorter).seconds == Decimal("1.25")


def test_an_mp3_without_a_length_header_is_measured_and_not_held_to_a_bitrate_guess() -> None:
    data = corpus.encode_audio("mp3", "libmp3lame", 44_100, container_options={"write_xing": "0"})
    length = measure_audio(io.BytesIO(data), "audio.mp3", checked=True)
    assert length.claimed_seconds is None
    # Without LAME's gapless tag the decoder also plays the encoder's delay and padding: under two frames.
    assert Decimal("3.7") <= length.seconds < Decimal("3.7") + Decimal(2 * 1152) / 44_100


def test_decoding_stops_at_twice_the_job_limit() -> None:
    long = wav_bytes(MAX_DECODED_SECONDS + 30, rate=1_000)
    message = refusal("audio.wav", MediaKind.AUDIO, long)
    assert f"plays longer than {MAX_DECODED_SECONDS} s; the limit is 600 s (10 minutes) per job" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)), "audio.wav has no playable sound"),
        (wav_bytes(0), "audio.wav has no playable sound"),
        (b"", "audio.wav is empty (0 bytes)"),
    ],
)
def test_sound_that_does_not_play_is_refused(data: bytes, expected: str) -> None:
    assert expected in refusal("audio.wav", MediaKind.AUDIO, data)


def test_the_container_is_read_from_the_bytes_not_the_name(tmp_path: Any) -> None:
    """A file on disk carries its name into FFmpeg unless hidden: the bytes alone must decide."""
    path = tmp_path / "audio.mp3"
    path.write_bytes(wav_bytes(1.0))
    with path.open("rb") as stream, pytest.raises(MediaError, match=r"audio\.mp3 holds WAV audio; rename it to \.wav"):
        check_media(stream, path.name, MediaKind.AUDIO, path.stat().st_size)


def test_an_output_video_is_measured_whatever_its_name() -> None:
    data = corpus.encode_audio("ipod", "aac", 44_100)
    assert playing_seconds(io.BytesIO(data), "video.mp4") == Decimal("3.7")


@pytest.mark.parametrize(
    ("filename", "data", "expected"),
    [
        (
            "audio.mp3",
            corpus.png_declaring(200, 200),
            "audio.mp3 is named as audio but its bytes are an image/png file",
        ),
        ("audio.wav", b"a transcript\n" * 40, "audio.wav is named as audio but its bytes are plain text"),
        ("video.mp4", b"%PDF-1.7\n" + bytes(range(256)) * 4, "its bytes are an application/pdf file"),
    ],
)
def test_wrong_bytes_are_named_in_good_grammar(filename: str, data: bytes, expected: str) -> None:
    kind = MediaKind.VIDEO if filename.startswith("video") else MediaKind.AUDIO
    assert expected in refusal(filename, kind, data)


# ---- sizes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "limit", "filename"),
    [(MediaKind.IMAGE, 20, "image.png"), (MediaKind.AUDIO, 50, "audio.wav"), (MediaKind.VIDEO, 100, "video.mp4")],
)
def test_byte_limits_follow_wavespeeds_and_are_named(kind: MediaKind, limit: int, filename: str) -> None:
    check_name_and_size(filename, kind, limit * 1_000_000)
    with pytest.raises(MediaError, match=f"WaveSpeed accepts {kind} files up to {limit} MB"):
        check_name_and_size(filename, kind, limit * 1_000_000 + 1)


# ---- pictures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "limit"),
    [
        (MIN_PICTURE_SIDE - 1, 400, f"at least {MIN_PICTURE_SIDE} px on each side"),
        (400, MIN_PICTURE_SIDE - 1, f"at least {MIN_PICTURE_SIDE} px on each side"),
        (MAX_PICTURE_SIDE + 1, MIN_PICTURE_SIDE, f"at most {MAX_PICTURE_SIDE} px on each side"),
        (16, 16, f"at least {MIN_PICTURE_SIDE} px"),
    ],
)
def test_pictures_outside_the_side_limits_are_refused_by_name(width: int, height: int, limit: str) -> None:
    message = refusal("image.png", MediaKind.IMAGE, corpus.picture("PNG", width, height))
    assert f"image.png is {width}x{height} px" in message and limit in message


def test_the_limits_themselves_are_allowed() -> None:
    assert check("image.png", MediaKind.IMAGE, corpus.picture("PNG", MIN_PICTURE_SIDE, MIN_PICTURE_SIDE)).width == 128
    wide = check("image.png", MediaKind.IMAGE, corpus.picture("PNG", MAX_PICTURE_SIDE, MIN_PICTURE_SIDE))
    assert (wide.width, wide.height) == (MAX_PICTURE_SIDE, MIN_PICTURE_SIDE)


def test_the_megapixel_limit_is_exact_and_read_from_the_header() -> None:
    """8000x5000 is exactly 40 MP and allowed; one row more is not, and a header saying so is refused unread."""
    assert MAX_PICTURE_PIXELS == 8_000 * 5_000
    assert picture_problem("image.png", 8_000, 5_000) is None
    assert "at most 40 megapixels" in str(picture_problem("image.png", 8_000, 5_001))
    assert "is 8000x6000 px (48.0 megapixels)" in refusal(
        "image.png", MediaKind.IMAGE, corpus.png_declaring(8_000, 6_000)
    )


def test_a_decompression_bomb_is_refused_before_a_pixel_is_decoded() -> None:
    """12000x12000 would be 432 MB of pixels; the refusal costs neither time nor memory."""
    bomb = corpus.png_declaring(12_000, 12_000)
    tracemalloc.start()
    started = time.perf_counter()
    message = refusal("image.png", MediaKind.IMAGE, bomb)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "image.png is 12000x12000 px; pictures may be at most 8192 px on each side" in message
    assert elapsed < 1.0 and peak < 4 * 1024 * 1024


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_a_truncated_picture_is_refused_before_it_is_sent(image_format: str) -> None:
    whole = corpus.picture(image_format, 320, 240)
    extension = {"JPEG": "jpg"}.get(image_format, image_format.lower())
    assert check(f"image.{extension}", MediaKind.IMAGE, whole).width == 320
    message = refusal(f"image.{extension}", MediaKind.IMAGE, whole[: len(whole) * 2 // 3])
    assert "truncated or damaged" in message and message.startswith(f"image.{extension}")


def test_a_png_missing_only_its_end_chunk_is_refused() -> None:
    whole = corpus.picture("PNG", 320, 240)
    assert "not a whole PNG image" in refusal("image.png", MediaKind.IMAGE, whole[:-12])


def test_a_picture_whose_bytes_are_another_format_is_named() -> None:
    message = refusal("image.png", MediaKind.IMAGE, corpus.picture("JPEG"))
    assert message == "image.png holds a JPEG image; rename it to .jpg or convert it"


# ---- video ------------------------------------------------------------------------------------------


def test_a_video_must_hold_a_decodable_picture_stream() -> None:
    facts = check("video.webm", MediaKind.VIDEO, corpus.encode_video("webm", "libvpx"))
    assert (facts.width, facts.height, facts.seconds) == (176, 144, Decimal("1"))
    sound_only = corpus.encode_audio("ipod", "aac", 44_100)
    assert "video.mp4 holds no video track" in refusal("video.mp4", MediaKind.VIDEO, sound_only)
    cut = corpus.encode_video("webm", "libvpx")[:1024]
    assert "holds no playable video" in refusal("video.webm", MediaKind.VIDEO, cut)


# ---- reading ----------------------------------------------------------------------------------------


class RecordingS3:
    """Serves one object from memory and records every ranged GET, as S3 would answer it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[dict[str, Any]] = []

    def get_object(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        first, last = (int(part) for part in request["Range"].removeprefix("bytes=").split("-"))
        return {"Body": io.BytesIO(self.data[first : last + 1])}

    def sizes(self) -> list[int]:
        spans = [r["Range"].removeprefix("bytes=").split("-") for r in self.requests]
        return [int(last) - int(first) + 1 for first, last in spans]


def test_no_single_read_asks_for_more_than_the_cap() -> None:
    data = bytes(range(256)) * (40 * 1024 * 1024 // 256)
    s3 = RecordingS3(data)
    with open_s3_object(s3, "bucket", "inbox/x/audio.mp3", len(data), etag="abc") as stream:  # type: ignore[arg-type]
        assert stream.read(len(data)) == data
        stream.seek(0)
        assert stream.read() == data
    assert max(s3.sizes()) <= READ_CAP_BYTES
    assert len(s3.requests) >= 2 * len(data) // READ_CAP_BYTES
    assert all(r["IfMatch"] == '"abc"' for r in s3.requests), "every read asks for the version checked"


def test_a_huge_tag_in_front_of_an_mp3_is_never_read() -> None:
    """A 200 MB ID3 tag once became one 210 MB GET; tags are not sound, so now they are skipped unread."""
    sound = corpus.encode_audio("mp3", "libmp3lame", 44_100)
    tagged = corpus.with_id3_tag(sound, 40 * 1024 * 1024)
    s3 = RecordingS3(tagged)
    tracemalloc.start()
    with open_s3_object(s3, "bucket", "k", len(tagged)) as stream:  # type: ignore[arg-type]
        facts = check_media(stream, "audio.mp3", MediaKind.AUDIO, len(tagged))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert facts.seconds == check("audio.mp3", MediaKind.AUDIO, sound).seconds
    assert max(s3.sizes()) <= READ_CAP_BYTES
    assert sum(s3.sizes()) < 3 * READ_BLOCK_BYTES, "the tag's 40 MiB are not fetched"
    assert peak < 4 * READ_BLOCK_BYTES, f"peak {peak / 2**20:.1f} MiB"


def test_a_wav_carrying_megabytes_of_id3_tags_is_refused_without_parsing_them() -> None:
    sound = wav_bytes(1.0)
    tag = corpus.with_id3_tag(b"", 9 * 1024 * 1024)
    chunk = b"id3 " + struct.pack("<I", len(tag)) + tag
    riff = sound[:4] + struct.pack("<I", len(sound) - 8 + len(chunk)) + sound[8:] + chunk
    message = refusal("audio.wav", MediaKind.AUDIO, riff)
    assert "audio.wav carries 9.4 MB of tags in an ID3 chunk; at most 8 MB of tags are read" in message
    small = corpus.with_id3_tag(b"", 1024)
    chunk = b"id3 " + struct.pack("<I", len(small)) + small
    assert check("audio.wav", MediaKind.AUDIO, sound + chunk).seconds == Decimal("1")


def test_checking_a_recording_fetches_each_byte_once() -> None:
    """The parsers and FFmpeg seek back to the start and out to the end; kept blocks make that free."""
    sound = wav_bytes(200.0, rate=16_000)  # 6.4 MB: several blocks
    s3 = RecordingS3(sound)
    with open_s3_object(s3, "bucket", "k", len(sound)) as stream:  # type: ignore[arg-type]
        assert check_media(stream, "audio.wav", MediaKind.AUDIO, len(sound)).seconds == Decimal(200)
    assert sum(s3.sizes()) == len(sound)
    assert max(s3.sizes()) == READ_BLOCK_BYTES


def wav_with_tag(seconds: float, title: bytes) -> bytes:
    """A WAV carrying a LIST/INFO title of raw bytes, as older recorders write them (often Latin-1)."""
    plain = wav_bytes(seconds)
    fmt_and_data = plain[12:]
    value = title + b"\x00" * (2 - len(title) % 2)
    info = b"INFO" + b"INAM" + struct.pack("<I", len(value)) + value
    chunk = b"LIST" + struct.pack("<I", len(info)) + info
    body = b"WAVE" + fmt_and_data[:24] + chunk + fmt_and_data[24:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("title", [b"\xff\xfe(bad", b"Caf\xe9 ol\xe9", b"\x80\x81\x82"])
def test_tags_in_any_encoding_neither_crash_nor_change_the_length(title: bytes) -> None:
    data = wav_with_tag(2.0, title)
    facts = check_media(io.BytesIO(data), "audio.wav", MediaKind.AUDIO, len(data))
    assert facts.seconds == Decimal(2)
    assert playing_seconds(io.BytesIO(data), "audio.wav") == Decimal(2)


def test_a_decoder_failing_in_an_unforeseen_way_is_a_refusal_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    import infinitetalk_core.media as media

    def broken(*_: Any, **__: Any) -> Any:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(media, "measure_audio", broken)
    data = wav_bytes(1.0)
    with pytest.raises(MediaError, match=r"audio\.wav could not be read as an audio file \(UnicodeDecodeError\)"):
        check_media(io.BytesIO(data), "audio.wav", MediaKind.AUDIO, len(data))
