"""`infinitetalk drop` refuses, before uploading a byte, exactly what the pipeline refuses: by decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from infinitetalk_cli.main import app
from tests.cli.conftest import Stack, write_png, write_wav
from tests.media_corpus import encode_audio, picture

runner = CliRunner()


def test_the_truncated_mp3_is_refused_before_anything_is_uploaded(stack: Stack, tmp_path: Path) -> None:
    """1 KB of an MP3 whose header claims 3.7 s: once uploaded and charged as a silent video."""
    audio = tmp_path / "voice.mp3"
    audio.write_bytes(encode_audio("mp3", "libmp3lame", 44_100)[:1024])
    result = runner.invoke(app, ["drop", "--image", str(write_png(tmp_path / "p.png")), "--audio", str(audio)])
    assert result.exit_code == 2, result.output
    assert "--audio: voice.mp3 claims to play 3.70 s but its bytes play only 0.08 s" in result.stderr
    assert "export it again" in result.stderr and "nothing was uploaded" in result.stderr
    assert stack.keys() == []


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((16, 16), "is 16x16 px; pictures need at least 128 px on each side"),
        ((9_000, 130), "is 9000x130 px; pictures may be at most 8192 px on each side"),
    ],
)
def test_a_picture_of_unusable_size_is_refused_by_the_named_limit(
    stack: Stack, tmp_path: Path, size: tuple[int, int], expected: str
) -> None:
    image = tmp_path / "tiny.png"
    image.write_bytes(picture("PNG", *size))
    result = runner.invoke(app, ["drop", "--image", str(image), "--audio", str(write_wav(tmp_path / "a.wav", 1.0))])
    assert result.exit_code == 2, result.output
    assert f"--image: tiny.png {expected}" in result.stderr.replace("\n", " ")
    assert stack.keys() == []


def test_an_opus_recording_is_accepted_and_uploaded_under_its_role(stack: Stack, tmp_path: Path) -> None:
    audio = tmp_path / "voice.opus"
    audio.write_bytes(encode_audio("ogg", "libopus", 48_000))
    result = runner.invoke(
        app, ["drop", "--image", str(write_png(tmp_path / "p.png")), "--audio", str(audio), "--name", "opus"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(stack.keys()) == ["inbox/opus/audio.opus", "inbox/opus/image.png", "inbox/opus/job.json"]
