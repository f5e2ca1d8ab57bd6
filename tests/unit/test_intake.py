from datetime import UTC, datetime, timedelta

import pytest

from infinitetalk_core.intake import (
    MAX_LISTED_PROBLEMS,
    Candidate,
    Drop,
    Waiting,
    assess_folder,
    bounded_problems,
    drop_for_key,
    error_file_name,
    job_id_for,
    name_problem,
    parse_options,
)
from infinitetalk_core.models import JobOptions, Manifest, ModelName, Resolution, Role, SpeakerOrder
from infinitetalk_core.storage import DOCUMENT_LIMIT_BYTES, StoredObject

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


# ---- names and keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["talk", "a", "A.b_c-9", "9" * 100])
def test_usable_names_pass(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["talk\n", "talk\r\n", "\ntalk", "talk ", "my talk", "Chloé", "-talk", ".talk", "", "9" * 101, "a/b"]
)
def test_a_name_is_matched_whole(name: str) -> None:
    """A trailing newline once passed the pattern's ``$``."""
    problem = name_problem(name)
    assert problem is not None and "is not usable" in problem and "ASCII letters" in problem


def manifest_problems(document: str) -> list[str]:
    options, problems = parse_options("inbox/talk.json", document.encode(), Manifest)
    assert (options is None) == bool(problems)
    return problems


GOOD_AUDIO = '"audio": "library/voice.wav"'


@pytest.mark.parametrize(
    ("image_key", "expected"),
    [
        ('""', "inputs.image: the key is empty"),
        ('"outputs/talk/video.mp4"', "'outputs/talk/video.mp4' is under outputs/, where the pipeline writes"),
        (f'"{"k" * 1025}"', "the key is 1,025 bytes long; S3 keys are at most 1,024 bytes (UTF-8)"),
        (f'"{"é" * 513}"', "the key is 1,026 bytes long"),
        ('"library/portrait.png\\n"', "holds a control character (such as a line break)"),
        ('"library/\\u0000.png"', "holds a control character"),
        ('"\\ud800.png"', "the key is not valid Unicode text"),
    ],
)
def test_manifest_keys_are_checked_before_anything_is_read(image_key: str, expected: str) -> None:
    problems = manifest_problems(f'{{"inputs": {{"image": {image_key}, {GOOD_AUDIO}}}}}')
    assert any(expected in p and p.startswith("inbox/talk.json: inputs.image: ") for p in problems), problems
    assert not any("Value error" in p for p in problems)


@pytest.mark.parametrize(
    "key",
    [
        "k" * 1024,
        "é" * 512,
        "library/Médiathèque de Zoë/prise n°1.png",
        "outputs",
        "Outputs/x.png",
        "inbox/talk/image.png",
    ],
)
def test_manifest_keys_up_to_1024_bytes_with_any_letters_are_accepted(key: str) -> None:
    assert manifest_problems(f'{{"inputs": {{"image": "{key}", {GOOD_AUDIO}}}}}') == []


def test_a_document_over_the_limit_is_refused_unparsed() -> None:
    options, problems = parse_options("inbox/talk/job.json", b" " * (DOCUMENT_LIMIT_BYTES + 1), JobOptions)
    assert options is None and problems == [
        "inbox/talk/job.json is larger than 1024 KiB; options and manifests are small"
    ]


def test_problems_are_bounded_for_one_error_file_and_one_row() -> None:
    many = [f"stray-{n}.txt: unexpected file" for n in range(1_000)] + ["x" * 10_000]
    shown = bounded_problems(many)
    assert len(shown) == MAX_LISTED_PROBLEMS
    assert shown[-1] == f"... and {len(many) - MAX_LISTED_PROBLEMS + 1} more problems of the same kinds"
    assert shown[:-1] == many[: MAX_LISTED_PROBLEMS - 1]
    assert bounded_problems(["x" * 10_000])[0].endswith("...") and len(bounded_problems(["x" * 10_000])[0]) == 600
    assert bounded_problems(many[:3]) == many[:3]


@pytest.mark.parametrize(
    ("name", "kept"),
    [("talk", True), ("my talk", True), ("Chloé", True), ("a" * 900, True), ("a" * 1_000, False), ("talk\t", False)],
)
def test_an_error_file_goes_where_its_name_says_unless_no_key_can_hold_it(name: str, kept: bool) -> None:
    where = error_file_name(name)
    assert (where == name) is kept
    assert len(f"outputs/{where}/error.json".encode()) <= 1024
    if not kept:
        assert where == error_file_name(name) and where != error_file_name(name + "x"), "stable and distinct"
        assert all(ch.isascii() and (ch.isalnum() or ch in "-._") for ch in where)
