"""The broken-media set against the real S3 endpoint (moto's server over HTTP).

Every sample is checked by ``inspect_inputs`` through the ranged S3 reader: a bad one names what is
wrong, a good one is measured exactly as the WaveSpeed stand-in measures it on its own and priced by
the rule from that length. Then every bad sample, and every hostile name and manifest key, is dropped
for real: each ends in an error file a person can act on, with its inputs byte-for-byte untouched,
nothing sent to WaveSpeed, nothing in the ledger and nothing in a dead-letter queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
import pytest

from infinitetalk_core.billing import rule_book
from infinitetalk_core.intake import InputProblems, error_file_name, inspect_inputs
from infinitetalk_core.media import READ_BLOCK_BYTES, READ_CAP_BYTES
from infinitetalk_core.models import FailureKind, JobSpec, JobStatus, MediaKind, ModelName, Resolution, Role
from infinitetalk_core.storage import MediaBucket, StoredObject
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.e2e.helpers import expected_charge, ledger_lines
from tests.integration.conftest import start_stack
from tests.media_corpus import Sample, companions, corpus
from wavespeed_standin.render import audio_seconds

pytestmark = pytest.mark.integration

SAMPLES = {sample.case: sample for sample in corpus()}
BAD = sorted(case for case, sample in SAMPLES.items() if not sample.good)
# Spaces and letters beyond ASCII in every key: keys are names, not paths to be escaped by hand.
KEY_PREFIX = "library/Médiathèque de Zoë"
ROLE_FOR = {MediaKind.AUDIO: Role.AUDIO, MediaKind.IMAGE: Role.IMAGE, MediaKind.VIDEO: Role.VIDEO}
MODEL_FOR = {MediaKind.AUDIO: ModelName.SINGLE, MediaKind.IMAGE: ModelName.SINGLE, MediaKind.VIDEO: ModelName.VIDEO}


def sample_key(sample: Sample) -> str:
    return f"{KEY_PREFIX}/{sample.case}/prise n°1 {sample.filename}"


def companion_keys(sample: Sample) -> dict[Role, str]:
    return {
        Role(filename.rsplit(".", 1)[0]): f"{KEY_PREFIX}/{sample.case}/{filename}"
        for filename in companions(sample.kind)
    }


def inputs_of(sample: Sample) -> dict[Role, str]:
    return {ROLE_FOR[sample.kind]: sample_key(sample), **companion_keys(sample)}


@dataclass
class GetLog:
    """Every GetObject this test's client sends: its Range, as asked of S3."""

    ranges: list[str | None] = field(default_factory=list)

    def record(self, params: dict[str, Any], **_: Any) -> None:
        self.ranges.append(params.get("Range"))

    def sizes(self) -> list[int]:
        spans = [r.removeprefix("bytes=").split("-") for r in self.ranges if r]
        return [int(last) - int(first) + 1 for first, last in spans]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack() as running:
        yield running


@pytest.fixture(scope="module")
def uploaded(stack: LocalStack) -> dict[str, str]:
    """Every sample and its companions in the bucket; returns key -> a digest of its bytes and ETag."""
    for sample in SAMPLES.values():
        stack.put(sample_key(sample), sample.data)
        for filename, data in companions(sample.kind).items():
            stack.put(f"{KEY_PREFIX}/{sample.case}/{filename}", data)
    return fingerprints(stack, KEY_PREFIX + "/")


def fingerprints(stack: LocalStack, prefix: str) -> dict[str, str]:
    """Key -> ETag and SHA-256 of the bytes: proof that nothing was moved, changed or deleted."""
    found = {}
    for key in stack.keys(prefix):
        body = stack.s3.get_object(Bucket=stack.bucket, Key=key)
        found[key] = f"{body['ETag']} {hashlib.sha256(body['Body'].read()).hexdigest()}"
    return found


@pytest.fixture(scope="module")
def gets() -> GetLog:
    return GetLog()


@pytest.fixture(scope="module")
def bucket(stack: LocalStack, gets: GetLog) -> MediaBucket:
    """The pipeline's own bucket reader, on a client whose every GET is recorded."""
    client = boto3.client("s3", endpoint_url=stack.endpoint_url, region_name="us-east-1")
    client.meta.events.register("before-parameter-build.s3.GetObject", gets.record)
    return MediaBucket(client, stack.bucket)


def spec_for(sample: Sample) -> JobSpec:
    return JobSpec(name=sample.case, model=MODEL_FOR[sample.kind], inputs=inputs_of(sample))


def stored_objects(bucket: MediaBucket, spec: JobSpec) -> dict[str, StoredObject]:
    found = {key: bucket.head(key) for key in spec.inputs.values()}
    assert all(found.values()), found
    return {key: stored for key, stored in found.items() if stored is not None}


@pytest.mark.parametrize("case", sorted(SAMPLES))
def test_every_sample_is_judged_by_its_bytes_through_s3(
    case: str, bucket: MediaBucket, uploaded: dict[str, str]
) -> None:
    sample = SAMPLES[case]
    spec = spec_for(sample)
    objects = stored_objects(bucket, spec)
    if not sample.good:
        with pytest.raises(InputProblems) as refused:
            inspect_inputs(spec, objects, bucket)
        assert sample.problem is not None
        assert any(sample.problem in line for line in refused.value.problems), refused.value.problems
        assert all(line.startswith("prise n°1 ") for line in refused.value.problems), "the file is named"
        return
    inspected = inspect_inputs(spec, objects, bucket)
    # The stand-in decodes the very bytes on its own; the estimate must be exactly what it will render.
    track = sample.data if sample.kind is MediaKind.AUDIO else companions(sample.kind)["audio.wav"]
    rendered = audio_seconds(track, "audio")
    assert abs(float(inspected.output_seconds) - rendered) < 1e-6, (inspected.output_seconds, rendered)
    rules = rule_book().get("seeds-output-5s")
    seconds = inspected.output_seconds
    estimate = rules.charge(Resolution.P480, rules.billable_seconds(input_seconds=seconds, output_seconds=seconds))
    assert estimate.micros == expected_charge(rendered, "480p")


def test_every_input_read_is_a_ranged_get_within_the_cap(
    bucket: MediaBucket, gets: GetLog, uploaded: dict[str, str]
) -> None:
    if not gets.ranges:  # run on its own: read every sample again
        for case in sorted(SAMPLES):
            spec = spec_for(SAMPLES[case])
            with contextlib.suppress(InputProblems):
                inspect_inputs(spec, stored_objects(bucket, spec), bucket)
    assert gets.ranges and None not in gets.ranges, "no whole-object GET of an input"
    assert max(gets.sizes()) <= READ_CAP_BYTES


def test_a_large_recording_is_read_in_capped_gets_and_a_huge_tag_not_at_all(
    stack: LocalStack, bucket: MediaBucket, gets: GetLog
) -> None:
    """20 MB of WAV is read in 1 MiB GETs; a 20 MB MP3 whose tag is nearly all of it costs a few KiB of reads."""
    from tests.media_corpus import encode_audio, with_id3_tag

    rate, seconds = 48_000, 104
    frames = b"\x00\x00\x00\x00" * (rate * seconds)
    wav = b"RIFF" + (36 + len(frames)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    wav += (1).to_bytes(2, "little") + (2).to_bytes(2, "little") + rate.to_bytes(4, "little")
    wav += (rate * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (16).to_bytes(2, "little")
    wav += b"data" + len(frames).to_bytes(4, "little") + frames
    mp3 = with_id3_tag(encode_audio("mp3", "libmp3lame", 44_100), 20 * 1024 * 1024)
    image = portrait_png(width=256, height=256)
    cases = {"big-wav/audio.wav": wav, "big-tag/audio.mp3": mp3}
    for key, data in cases.items():
        stack.put(f"library/{key}", data)
    stack.put("library/big/image.png", image)
    measured = {}
    for key in cases:
        spec = JobSpec(
            name="big",
            model=ModelName.SINGLE,
            inputs={Role.AUDIO: f"library/{key}", Role.IMAGE: "library/big/image.png"},
        )
        gets.ranges.clear()
        inspected = inspect_inputs(spec, stored_objects(bucket, spec), bucket)
        measured[key] = (inspected.output_seconds, gets.sizes())
    wav_seconds, wav_gets = measured["big-wav/audio.wav"]
    assert wav_seconds == Decimal(seconds)
    assert max(wav_gets) <= READ_BLOCK_BYTES <= READ_CAP_BYTES
    assert len(wav_gets) <= len(wav) // READ_BLOCK_BYTES + 8, "each byte fetched about once"
    tag_seconds, tag_gets = measured["big-tag/audio.mp3"]
    assert abs(tag_seconds - Decimal("3.7")) < Decimal("0.03")
    assert sum(tag_gets) < 3 * READ_BLOCK_BYTES, f"{sum(tag_gets)} bytes read of {len(mp3)}"


def test_an_input_replaced_or_deleted_while_it_is_checked_is_a_problem_not_a_crash(
    stack: LocalStack, bucket: MediaBucket
) -> None:
    """Every read asks for the version the job was made from, so a job never mixes two uploads' bytes."""
    stack.put("library/race/image.png", portrait_png())
    stack.put("library/race/audio.wav", voice_wav(1.0))
    spec = JobSpec(
        name="race",
        model=ModelName.SINGLE,
        inputs={Role.IMAGE: "library/race/image.png", Role.AUDIO: "library/race/audio.wav"},
    )
    objects = stored_objects(bucket, spec)
    stack.put("library/race/audio.wav", voice_wav(2.0))
    with pytest.raises(InputProblems) as replaced:
        inspect_inputs(spec, objects, bucket)
    assert replaced.value.problems == ["audio.wav was replaced while it was being checked; upload the job again"]
    objects = stored_objects(bucket, spec)
    stack.s3.delete_object(Bucket=stack.bucket, Key="library/race/image.png")
    with pytest.raises(InputProblems) as deleted:
        inspect_inputs(spec, objects, bucket)
    assert deleted.value.problems == ["image.png was deleted while it was being checked; upload it again"]


# ---- real drops: error files, untouched inputs, no money, no dead letters --------------------------

LONG_NAME = "a" * 1_010


@dataclass(frozen=True)
class Hostile:
    """A drop that must be refused: its manifest (or folder) and the phrase its error file must hold."""

    name: str
    manifest: dict[str, Any] | bytes | None
    expected: str
    folder: dict[str, bytes] | None = None


def good_inputs() -> dict[str, str]:
    return {"image": "library/good/portrait.png", "audio": "library/good/voice.wav"}


HOSTILE = [
    Hostile("my talk", {"inputs": good_inputs()}, "job name 'my talk' is not usable"),
    Hostile("Chloé", {"inputs": good_inputs()}, "job name 'Chloé' is not usable"),
    # A control character at the end of a name (moto's server cannot hold a line break in a key; a tab it can).
    Hostile("talk\t", {"inputs": good_inputs()}, "job name 'talk\\t' is not usable"),
    Hostile(LONG_NAME, {"inputs": good_inputs()}, f"job name '{'a' * 100}... (1010 characters)' is not usable"),
    Hostile("empty-key", {"inputs": {**good_inputs(), "image": ""}}, "inputs.image: the key is empty"),
    Hostile("outputs-key", {"inputs": {**good_inputs(), "image": "outputs/other/video.mp4"}}, "is under outputs/"),
    Hostile("long-key", {"inputs": {**good_inputs(), "image": "k" * 1_025}}, "S3 keys are at most 1,024 bytes"),
    Hostile("long-letters-key", {"inputs": {**good_inputs(), "image": "é" * 513}}, "the key is 1,026 bytes long"),
    Hostile("newline-key", {"inputs": {**good_inputs(), "audio": "library/good/voice.wav\n"}}, "control character"),
    Hostile("surrogate-key", b'{"inputs": {"image": "\\ud800.png", "audio": "x.wav"}}', "not valid Unicode"),
    Hostile("spaced-key", {"inputs": {**good_inputs(), "image": "library/good/portrait.png "}}, "'library/good/"),
    Hostile("huge-manifest", json.dumps({"inputs": good_inputs(), "prompt": "x" * 1_100_000}).encode(), "1024 KiB"),
    Hostile(
        "huge-job-json",
        None,
        "job.json is larger than 1024 KiB",
        folder={"image.png": portrait_png(), "audio.wav": voice_wav(1.0), "job.json": b" " * 1_100_000 + b"{}"},
    ),
    Hostile(
        "many-strays",
        None,
        "more problems of the same kinds",
        folder={
            **{f"stray-{n:03d}.txt": b"x" for n in range(80)},
            "image.png": portrait_png(),
            "audio.wav": voice_wav(1.0),
            "job.json": b"{}",
        },
    ),
]


def drop_name(case: str) -> str:
    return f"bad-{case}"


@pytest.fixture(scope="module")
def dropped(stack: LocalStack, uploaded: dict[str, str]) -> dict[str, str]:
    """Every bad sample as a manifest, and every hostile drop; all at once, as careless users would."""
    stack.put("library/good/portrait.png", portrait_png())
    stack.put("library/good/voice.wav", voice_wav(1.0))
    submits_before = stack.standin.submit_count
    assert submits_before == 0
    for case in BAD:
        inputs = {role.value: key for role, key in inputs_of(SAMPLES[case]).items()}
        stack.put(f"inbox/{drop_name(case)}.json", json.dumps({"inputs": inputs}).encode())
    for hostile in HOSTILE:
        if hostile.folder is not None:
            stack.drop_folder(hostile.name, {k: v for k, v in hostile.folder.items() if k != "job.json"})
            stack.put(f"inbox/{hostile.name}/job.json", hostile.folder["job.json"])
        else:
            body = hostile.manifest if isinstance(hostile.manifest, bytes) else json.dumps(hostile.manifest).encode()
            stack.put(f"inbox/{hostile.name}.json", body)
    return fingerprints(stack, "library/")


def assert_refused_for_people(stack: LocalStack, name: str, expected: str) -> None:
    job = stack.wait_for(name, timeout=90)
    assert job.status is JobStatus.REJECTED and job.failure_kind is FailureKind.INVALID_INPUT, job
    error = stack.read_json(f"outputs/{error_file_name(name)}/error.json")
    assert error["status"] == "rejected" and error["inputs_untouched"] is True
    assert any(expected in line for line in error["problems"]), error["problems"]
    assert len(error["problems"]) <= 30 and "upload" in error["what_to_do"]
    assert ledger_lines(stack, job) == [] and job.estimate_micros == 0 and job.reserved_micros == 0


@pytest.mark.parametrize("case", BAD)
def test_a_bad_sample_dropped_gets_an_error_file_and_costs_nothing(
    stack: LocalStack, dropped: dict[str, str], case: str
) -> None:
    sample = SAMPLES[case]
    assert sample.problem is not None
    assert_refused_for_people(stack, drop_name(case), sample.problem)


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name.strip()[:20] or "blank" for h in HOSTILE])
def test_a_hostile_name_or_key_gets_an_error_file_and_costs_nothing(
    stack: LocalStack, dropped: dict[str, str], hostile: Hostile
) -> None:
    assert_refused_for_people(stack, hostile.name, hostile.expected)


def test_after_every_refusal_nothing_changed_nothing_was_sent_and_nothing_is_dead(
    stack: LocalStack, dropped: dict[str, str], uploaded: dict[str, str]
) -> None:
    for name in [drop_name(case) for case in BAD] + [hostile.name for hostile in HOSTILE]:
        stack.wait_for(name, timeout=90)
    assert fingerprints(stack, "library/") == dropped, "every input is byte-for-byte as dropped"
    assert {key: value for key, value in dropped.items() if key in uploaded} == uploaded
    assert stack.standin.submit_count == 0, "nothing was sent to WaveSpeed"
    totals, entries = stack.jobs.month(stack.newest_job(drop_name(BAD[0])).month)  # type: ignore[union-attr]
    assert entries == [] and all(t.charged_micros == 0 and t.reserved_micros == 0 for t in totals)
    assert all(count == 0 for count in stack.dead_letters().values()), stack.dead_letters()
