import io
import struct
import wave
from decimal import Decimal

import pytest

from infinitetalk_core.media import MediaError, check_kind, playing_seconds
from infinitetalk_core.models import MediaKind

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack("<h", 0) * int(seconds * rate))
    return buffer.getvalue()


def test_a_real_image_passes() -> None:
    check_kind("image.png", MediaKind.IMAGE, len(PNG), PNG)
    check_kind("image.jpeg", MediaKind.IMAGE, len(JPEG), JPEG)


@pytest.mark.parametrize(
    ("filename", "kind", "data", "message"),
    [
        ("image.png", MediaKind.IMAGE, b"hello, this is text", "its bytes are plain text"),
        ("image.png", MediaKind.IMAGE, JPEG, "holds a JPG image; rename it to .jpg"),
        ("image.png", MediaKind.IMAGE, b"", "is empty (0 bytes)"),
        ("image.gif", MediaKind.IMAGE, PNG, ".gif is not a supported image type"),
        ("audio.mp3", MediaKind.AUDIO, PNG, "named as audio but its bytes are a image/png file"),
        ("video.mp4", MediaKind.VIDEO, wav_bytes(0.1), "named as video"),
    ],
)
def test_files_that_are_not_what_their_names_say_are_refused(
    filename: str, kind: MediaKind, data: bytes, message: str
) -> None:
    with pytest.raises(MediaError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_kind(filename, kind, len(data), data[:8192])


def test_audio_length_is_read_from_the_bytes() -> None:
    data = wav_bytes(2.5)
    check_kind("audio.wav", MediaKind.AUDIO, len(data), data)
    assert playing_seconds(io.BytesIO(data), "audio.wav") == Decimal("2.5")


def test_unreadable_and_silent_audio_is_refused() -> None:
    with pytest.raises(MediaError, match="could not be read as audio"):
        playing_seconds(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEjunk"), "audio.wav")
    with pytest.raises(MediaError, match="length 0 s"):
        playing_seconds(io.BytesIO(wav_bytes(0)), "audio.wav")
