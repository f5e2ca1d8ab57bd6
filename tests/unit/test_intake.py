from datetime import UTC, datetime, timedelta

import pytest

from infinitetalk_core.intake import Candidate, Drop, Waiting, assess_folder, drop_for_key, job_id_for
from infinitetalk_core.models import ModelName, Resolution, Role, SpeakerOrder
from infinitetalk_core.storage import StoredObject

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
FOLDER = Drop(name="talk", kind="folder", key="inbox/talk/")


def obj(name: str, age: float = 60, etag: str = "e1", size: int = 100) -> StoredObject:
    return StoredObject(f"inbox/talk/{name}", size, etag, NOW - timedelta(seconds=age))


def assess(objects: list[StoredObject], options: bytes | None = None, settle: int = 30) -> Waiting | Candidate | None:
    return assess_folder(FOLDER, objects, options, NOW, settle)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("inbox/talk/image.png", Drop("talk", "folder", "inbox/talk/")),
        ("inbox/talk/job.json", Drop("talk", "folder", "inbox/talk/")),
        ("inbox/talk.json", Drop("talk", "manifest", "inbox/talk.json")),
        ("inbox/portrait.png", Drop("portrait", "stray", "inbox/portrait.png")),
        ("outputs/talk/video.mp4", None),
        ("inbox/.DS_Store", None),
        ("inbox/talk/.hidden", None),
        ("inbox/", None),
    ],
)
def test_keys_map_to_drops(key: str, expected: Drop | None) -> None:
    assert drop_for_key(key) == expected


def test_a_complete_folder_with_job_json_starts_at_once() -> None:
    objects = [obj("image.png", age=1), obj("audio.mp3", age=1), obj("job.json", age=0)]
    verdict = assess(objects, b'{"resolution": "720p", "prompt": "smile"}')
    assert isinstance(verdict, Candidate) and verdict.spec is not None
    assert verdict.spec.model is ModelName.SINGLE
    assert verdict.spec.resolution is Resolution.P720
    assert verdict.spec.inputs == {Role.IMAGE: "inbox/talk/image.png", Role.AUDIO: "inbox/talk/audio.mp3"}


def test_a_folder_without_job_json_waits_until_it_has_settled() -> None:
    objects = [obj("image.png", age=5), obj("audio.mp3", age=10)]
    verdict = assess(objects)
    assert verdict == Waiting(seconds=26)
    settled = assess([obj("image.png", age=31), obj("audio.mp3", age=40)])
    assert isinstance(settled, Candidate) and settled.spec is not None and not settled.problems


def test_a_half_uploaded_folder_waits_even_with_job_json() -> None:
    verdict = assess([obj("image.png", age=1), obj("job.json", age=1)], b"{}")
    assert isinstance(verdict, Waiting)


def test_a_folder_being_uploaded_again_waits_for_its_new_job_json() -> None:
    """A re-upload's first file must not start a job from new media mixed with the old files."""
    mixed = [obj("image.png", age=1, etag="new"), obj("audio.mp3", age=90), obj("job.json", age=90)]
    assert isinstance(assess(mixed, b"{}"), Waiting)
    redone = [obj("image.png", age=2, etag="new"), obj("audio.mp3", age=1, etag="new"), obj("job.json", age=1)]
    assert isinstance(assess(redone, b"{}"), Candidate)
    left_alone = [obj("image.png", age=31, etag="new"), obj("audio.mp3", age=90), obj("job.json", age=90)]
    assert isinstance(assess(left_alone, b"{}"), Candidate)


def test_a_folder_with_an_upload_still_running_waits_instead_of_failing() -> None:
    objects = [obj("image.png", age=120)]
    verdict = assess_folder(FOLDER, objects, None, NOW, 30, uploading=["inbox/talk/audio.wav"])
    assert verdict == Waiting(seconds=30)
    assert isinstance(assess_folder(FOLDER, objects, None, NOW, 30, uploading=["inbox/talk/.part"]), Candidate)
    abandoned = [obj("image.png", age=3_601)]
    assert isinstance(assess_folder(FOLDER, abandoned, None, NOW, 30, uploading=["inbox/talk/audio.wav"]), Candidate)


def test_a_settled_incomplete_folder_names_what_is_missing() -> None:
    verdict = assess([obj("image.png", age=100)])
    assert isinstance(verdict, Candidate) and verdict.spec is None
    assert any("missing audio" in p and ".mp3" in p for p in verdict.problems)


def test_files_choose_the_model() -> None:
    multi = assess([obj("image.png"), obj("left_audio.wav"), obj("right_audio.wav")])
    video = assess([obj("video.mp4"), obj("audio.wav"), obj("mask_image.png")])
    assert isinstance(multi, Candidate) and multi.spec and multi.spec.model is ModelName.MULTI
    assert isinstance(video, Candidate) and video.spec and video.spec.model is ModelName.VIDEO


def test_problems_are_written_for_people() -> None:
    objects = [obj("imgae.png"), obj("audio.mp3"), obj("audio.wav"), obj("job.json")]
    verdict = assess(objects, b'{"resolution": "1080p", "seed": -5, "colour": "red", "order": "left_right"}')
    assert isinstance(verdict, Candidate) and verdict.spec is None
    text = "\n".join(verdict.problems)
    assert "imgae.png: unexpected file" in text
    assert "two files for audio" in text
    assert "resolution" in text and "'480p' or '720p'" in text
    assert "seed" in text and "greater than or equal to -1" in text
    assert "unknown option 'colour'" in text


def test_order_applies_to_two_speakers_only() -> None:
    verdict = assess([obj("image.png"), obj("audio.mp3"), obj("job.json")], b'{"order": "left_right"}')
    assert isinstance(verdict, Candidate)
    assert any("order applies only to two speakers" in p for p in verdict.problems)
    multi = assess(
        [obj("image.png"), obj("left_audio.mp3"), obj("right_audio.mp3"), obj("job.json")], b'{"order": "right_left"}'
    )
    assert isinstance(multi, Candidate) and multi.spec and multi.spec.order is SpeakerOrder.RIGHT_LEFT


def test_an_explicit_model_that_does_not_fit_the_files_is_refused() -> None:
    verdict = assess(
        [obj("image.png"), obj("audio.mp3"), obj("job.json")], b'{"model": "wavespeed-ai/infinitetalk/multi"}'
    )
    assert isinstance(verdict, Candidate)
    text = "\n".join(verdict.problems)
    assert "audio is not an input of multi" in text and "missing left_audio" in text


def test_broken_json_is_reported() -> None:
    verdict = assess([obj("image.png"), obj("audio.mp3"), obj("job.json")], b'{"resolution": ')
    assert isinstance(verdict, Candidate) and any("not valid JSON" in p for p in verdict.problems)


def test_job_ids_repeat_for_the_same_objects_and_change_for_new_bytes() -> None:
    same = [obj("image.png"), obj("audio.mp3")]
    assert job_id_for("talk", same) == job_id_for("talk", list(reversed(same)))
    reuploaded = [obj("image.png"), obj("audio.mp3", etag="e2")]
    assert job_id_for("talk", same) != job_id_for("talk", reuploaded)
    assert job_id_for("talk", same).startswith("talk-")


def test_an_empty_folder_is_nothing_to_do() -> None:
    assert assess([]) is None
