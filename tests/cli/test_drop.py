"""`infinitetalk drop`: files land under their role names, job.json last, and bad drops upload nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infinitetalk_cli import transfer
from infinitetalk_cli.drop import Upload
from infinitetalk_cli.main import app
from tests.cli.conftest import BUCKET, Stack, write_png, write_wav

runner = CliRunner()


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    return {
        "image": write_png(tmp_path / "Portrait Shot.PNG"),
        "audio": write_wav(tmp_path / "voice.wav", 1.5),
    }


def test_drop_uploads_files_by_role_and_job_json_last(
    stack: Stack, media: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    real_upload_one = transfer.upload_one

    def spy(s3: object, bucket: str, item: Upload, on_bytes: object) -> None:
        real_upload_one(s3, bucket, item, on_bytes)  # type: ignore[arg-type]
        order.append(item.key)

    monkeypatch.setattr(transfer, "upload_one", spy)
    result = runner.invoke(
        app,
        [
            *("drop", "--image", str(media["image"]), "--audio", str(media["audio"])),
            *("--resolution", "720p", "--seed", "42", "--name", "anchor"),
        ],
    )

    assert result.exit_code == 0, result.output
    assert order == ["inbox/anchor/audio.wav", "inbox/anchor/image.png", "inbox/anchor/job.json"]
    assert sorted(stack.keys()) == sorted(order)
    assert json.loads(stack.read_json_text("inbox/anchor/job.json")) == {"resolution": "720p", "seed": 42}
    assert (
        stack.s3.get_object(Bucket=BUCKET, Key="inbox/anchor/image.png")["Body"].read() == media["image"].read_bytes()
    )
    assert "anchor" in result.stdout
    assert f"s3://{BUCKET}/outputs/anchor/" in result.stdout


def test_drop_names_the_job_after_the_image_and_the_time_and_writes_only_the_options_set(
    stack: Stack, media: dict[str, Path]
) -> None:
    result = runner.invoke(app, ["drop", "--image", str(media["image"]), "--audio", str(media["audio"])])

    assert result.exit_code == 0, result.output
    keys = stack.keys()
    name = keys[0].split("/")[1]
    assert re.fullmatch(r"Portrait-Shot-\d{8}-\d{6}", name), name
    assert sorted(keys) == [f"inbox/{name}/audio.wav", f"inbox/{name}/image.png", f"inbox/{name}/job.json"]
    assert json.loads(stack.read_json_text(f"inbox/{name}/job.json")) == {}


def test_drop_accepts_a_short_model_name(stack: Stack, tmp_path: Path) -> None:
    image = write_png(tmp_path / "pair.png")
    left, right = write_wav(tmp_path / "a.wav", 1.0), write_wav(tmp_path / "b.wav", 1.0)
    result = runner.invoke(
        app,
        [
            *("drop", "--image", str(image), "--left-audio", str(left), "--right-audio", str(right)),
            *("--model", "multi", "--order", "left_right", "--name", "pair"),
        ],
    )

    assert result.exit_code == 0, result.output
    assert json.loads(stack.read_json_text("inbox/pair/job.json")) == {
        "model": "wavespeed-ai/infinitetalk/multi",
        "order": "left_right",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: {"--image": str(m["image"].with_name("nowhere.png"))}, "nowhere.png does not exist"),
        (lambda m: {"--image": str(m["audio"])}, ".wav is not a supported image type"),
        (lambda m: {"--resolution": "1080p"}, "--resolution: Input should be '480p' or '720p'"),
        (lambda m: {"--seed": "-2"}, "--seed: Input should be greater than or equal to -1"),
        (lambda m: {"--order": "left_right"}, "order applies only to two speakers"),
        (lambda m: {"--audio": None}, "infinitetalk needs --audio"),
        (lambda m: {"--name": "bad name!"}, "--name: job name 'bad name!' is not usable"),
    ],
    ids=["missing-file", "wrong-extension", "bad-resolution", "bad-seed", "order-for-one-speaker", "no-audio", "name"],
)
def test_drop_refuses_a_bad_drop_with_exit_2_and_uploads_nothing(
    stack: Stack, media: dict[str, Path], change: object, message: str
) -> None:
    arguments: dict[str, str | None] = {"--image": str(media["image"]), "--audio": str(media["audio"])}
    arguments.update(change(media))  # type: ignore[operator]
    argv = ["drop"] + [part for key, value in arguments.items() if value is not None for part in (key, value)]

    result = runner.invoke(app, argv)

    assert result.exit_code == 2, result.output
    assert "nothing was uploaded" in result.stderr
    assert message in result.stderr
    assert stack.keys() == []


def test_drop_refuses_audio_over_ten_minutes_before_uploading(stack: Stack, tmp_path: Path) -> None:
    image = write_png(tmp_path / "p.png")
    long_audio = write_wav(tmp_path / "long.wav", 601, rate=100)

    result = runner.invoke(app, ["drop", "--image", str(image), "--audio", str(long_audio), "--name", "long"])

    assert result.exit_code == 2, result.output
    assert "the limit is 600 s" in result.stderr
    assert stack.keys() == []


def test_drop_refuses_a_folder_holding_files_it_would_not_replace(stack: Stack, media: dict[str, Path]) -> None:
    stack.s3.put_object(Bucket=BUCKET, Key="inbox/anchor/audio.mp3", Body=b"older upload")

    result = runner.invoke(
        app, ["drop", "--image", str(media["image"]), "--audio", str(media["audio"]), "--name", "anchor"]
    )

    assert result.exit_code == 2, result.output
    assert "already holds audio.mp3" in result.stderr
    assert stack.keys() == ["inbox/anchor/audio.mp3"]


def test_drop_checks_files_before_looking_for_a_stack(media: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            *("--local-stack-file", str(tmp_path / "none.json")),
            *("drop", "--image", str(media["audio"]), "--audio", str(media["audio"])),
        ],
    )

    assert result.exit_code == 2
    assert "not a supported image type" in result.stderr
