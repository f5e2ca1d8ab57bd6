"""A cold start builds only what its function touches; a folder is listed only when it may be ready."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from infinitetalk_core import clients
from infinitetalk_core.intake import Drop, drop_for_key
from infinitetalk_core.pipeline import FolderCheck, Pipeline, PipelineOnFirstUse, build_pipeline
from infinitetalk_core.settings import Settings
from infinitetalk_core.submission import assess

FACTORIES = {
    "s3": clients.s3_client,
    "sqs": clients.sqs_client,
    "dynamodb": clients.dynamodb_client,
    "events": clients.events_client,
    "secretsmanager": clients.secrets_client,
    "sns": clients.sns_client,
}


def built_clients() -> set[str]:
    return {name for name, factory in FACTORIES.items() if factory.cache_info().currsize}


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    clients.reset_clients()
    yield Settings.model_validate(
        {
            "MEDIA_BUCKET": "media",
            "JOBS_TABLE": "jobs",
            "LEDGER_TABLE": "ledger",
            "SUBMIT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/submit",
            "FETCH_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/fetch",
            "EVENT_BUS_NAME": "jobs",
            "API_KEY_SECRET_ID": "api-key",
            "WEBHOOK_SECRET_ID": "webhook-secret",
        }
    )
    clients.reset_clients()


def test_building_the_pipeline_builds_no_client(settings: Settings) -> None:
    pipeline = build_pipeline(settings)
    assert isinstance(pipeline, PipelineOnFirstUse)
    assert built_clients() == set()


def test_the_callbacks_parts_build_only_their_own_clients(settings: Settings) -> None:
    pipeline = build_pipeline(settings)
    jobs, queues = pipeline.jobs, pipeline.queues
    assert built_clients() == {"dynamodb", "sqs"}
    assert pipeline.jobs is jobs and pipeline.queues is queues  # made once, then kept
    assert queues.submit_url == settings.submit_queue_url
    assert "wavespeed" not in vars(pipeline) and "bucket" not in vars(pipeline)


def test_every_part_is_built_on_demand_and_may_be_replaced(settings: Settings) -> None:
    pipeline = build_pipeline(settings)
    assert pipeline.bucket.bucket == "media"
    assert pipeline.events is not None
    assert pipeline.wavespeed is not None
    assert built_clients() == {"s3", "events"}  # the HTTP client is no AWS client; no secret was read
    stand_in = cast(Any, SimpleNamespace(bucket="other"))
    pipeline.bucket = stand_in
    assert pipeline.bucket is stand_in


def test_a_file_in_a_folder_names_its_drop_and_its_arrival() -> None:
    drop = drop_for_key("inbox/a/image.png")
    assert drop == Drop(name="a", kind="folder", key="inbox/a/")
    assert drop is not None and drop.arrived == "inbox/a/image.png" and drop.cannot_be_ready_yet
    options = drop_for_key("inbox/a/job.json")
    assert options is not None and not options.cannot_be_ready_yet
    assert not Drop(name="a", kind="folder", key="inbox/a/").cannot_be_ready_yet  # a re-check looks
    manifest = drop_for_key("inbox/a.json")
    assert manifest is not None and not manifest.cannot_be_ready_yet


@dataclass
class Recorded:
    listed: list[str] = field(default_factory=list)
    uploads_asked: list[str] = field(default_factory=list)
    sent: list[tuple[FolderCheck, int]] = field(default_factory=list)
    latest_arrival: dict[str, datetime] = field(default_factory=dict)


class FakeJobs:
    """The folder-arrival rule of the repository, kept in memory: the latest time noted per folder."""

    def __init__(self, recorded: Recorded) -> None:
        self.recorded = recorded

    def note_folder_arrival(self, name: str, arrived_at: datetime) -> None:
        latest = self.recorded.latest_arrival.get(name)
        if latest is None or latest < arrived_at:
            self.recorded.latest_arrival[name] = arrived_at

    def folder_arrival_after(self, name: str, arrived_at: datetime) -> bool:
        latest = self.recorded.latest_arrival.get(name)
        return latest is not None and latest > arrived_at


class FakeBucket:
    def __init__(self, recorded: Recorded) -> None:
        self.recorded = recorded

    def list(self, prefix: str) -> list[Any]:
        self.recorded.listed.append(prefix)
        return []

    def uploads_in_progress(self, prefix: str) -> tuple[str, ...]:
        self.recorded.uploads_asked.append(prefix)
        return ()

    def read_document(self, key: str) -> bytes | None:
        return None


class FakeQueues:
    def __init__(self, recorded: Recorded) -> None:
        self.recorded = recorded

    def send_submit(self, message: FolderCheck, delay_seconds: int = 0) -> None:
        self.recorded.sent.append((message, delay_seconds))


def fake_pipeline(recorded: Recorded, settle_seconds: int = 30) -> Pipeline:
    return cast(
        Pipeline,
        SimpleNamespace(
            bucket=FakeBucket(recorded),
            queues=FakeQueues(recorded),
            jobs=FakeJobs(recorded),
            settings=SimpleNamespace(folder_settle_seconds=settle_seconds),
            clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        ),
    )


def test_a_new_file_schedules_a_look_after_the_settle_time_without_listing() -> None:
    recorded = Recorded()
    drop = drop_for_key("inbox/talk/audio.wav")
    assert drop is not None
    assert assess(drop, fake_pipeline(recorded, settle_seconds=30)) is None
    assert recorded.listed == [] and recorded.uploads_asked == []
    assert recorded.sent == [(FolderCheck(name="talk", prefix="inbox/talk/"), 31)]


@pytest.mark.parametrize("key", ["inbox/talk/job.json", None], ids=["job.json arrived", "folder re-check"])
def test_job_json_or_a_re_check_lists_the_folder(key: str | None) -> None:
    recorded = Recorded()
    drop = drop_for_key(key) if key else Drop(name="talk", kind="folder", key="inbox/talk/")
    assert drop is not None
    assert assess(drop, fake_pipeline(recorded)) is None  # the folder is empty
    assert recorded.listed == ["inbox/talk/"]
    assert recorded.uploads_asked == []  # an empty folder is not ready: no uploads listing either


def test_a_replaced_copy_keeps_the_parts_it_was_not_given(settings: Settings) -> None:
    pipeline = build_pipeline(settings)
    stand_in = cast(Any, SimpleNamespace(name="a stand-in API client"))
    copy = dataclasses.replace(pipeline, wavespeed=stand_in)
    assert copy.wavespeed is stand_in and pipeline.wavespeed is not stand_in
    assert copy.jobs is pipeline.jobs and copy.settings is settings
    assert copy.api_key is pipeline.api_key


def landed(key: str, second: float) -> Drop:
    """A folder file's event, as S3 announces it: the key and when S3 finished storing it."""
    drop = drop_for_key(key)
    assert drop is not None
    return dataclasses.replace(drop, arrived_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second))


def test_each_files_look_carries_its_landing_and_only_the_latest_files_look_lists() -> None:
    recorded = Recorded()
    pipeline = fake_pipeline(recorded)
    for second, name in enumerate(["image.png", "left_audio.wav", "right_audio.wav"]):
        assert assess(landed(f"inbox/duo/{name}", second), pipeline) is None
    assert recorded.listed == []
    looks = [message for message, _ in recorded.sent]
    assert [look.arrived_at for look in looks] == [landed("inbox/duo/x", s).arrived_at for s in range(3)]
    for look in looks:  # each comes back after the settle time
        assert (
            assess(Drop(name=look.name, kind="folder", key=look.prefix, arrived_at=look.arrived_at), pipeline) is None
        )
    assert recorded.listed == ["inbox/duo/"]  # the two earlier files' looks were left to the last one's


def test_job_json_landing_last_lists_at_once_and_the_earlier_files_looks_list_nothing() -> None:
    recorded = Recorded()
    pipeline = fake_pipeline(recorded)
    assert assess(landed("inbox/talk/image.png", 0), pipeline) is None
    assert assess(landed("inbox/talk/job.json", 1), pipeline) is None
    assert recorded.listed == ["inbox/talk/"]
    ((look, _),) = recorded.sent  # the image's look (the fake folder is empty: job.json's look asks for none)
    assess(Drop(name="talk", kind="folder", key="inbox/talk/", arrived_at=look.arrived_at), pipeline)
    assert recorded.listed == ["inbox/talk/"]  # job.json's listing saw the image: its look lists nothing


def test_files_landing_in_the_same_instant_each_list_and_an_unstamped_look_always_lists() -> None:
    recorded = Recorded()
    pipeline = fake_pipeline(recorded)
    assess(landed("inbox/same/image.png", 5), pipeline)
    assess(landed("inbox/same/audio.wav", 5), pipeline)
    for message, _ in list(recorded.sent):
        assess(Drop(name="same", kind="folder", key="inbox/same/", arrived_at=message.arrived_at), pipeline)
    assess(Drop(name="same", kind="folder", key="inbox/same/"), pipeline)  # a look from before landings were noted
    assert recorded.listed == ["inbox/same/"] * 3
