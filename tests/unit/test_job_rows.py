"""A job row stores what its key and spec do not already hold, and reads back as the same job,
whether written now or as whole rows were written before."""

from datetime import UTC, datetime

import pytest

from infinitetalk_core.models import Job, JobSpec, JobStatus, ModelName, Role
from infinitetalk_core.repository import (
    OTHER_DROP_KEYS_ATTRIBUTE,
    TOKEN_DIGEST_ATTRIBUTE,
    _attrs,
    _document,
    job_from_row,
    job_row,
)
from infinitetalk_core.webhooks import token_digest

NOW = datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=UTC)
INPUTS = {Role.IMAGE: "inbox/anna/image.png", Role.AUDIO: "inbox/anna/audio.wav"}


def a_job(name: str = "anna", drop_keys: list[str] | None = None, spec_name: str | None = None) -> Job:
    return Job(
        job_id=f"{name}-0123456789ab",
        job_name=name,
        status=JobStatus.SUBMITTED,
        status_since=NOW,
        created_at=NOW,
        spec=JobSpec(name=spec_name or name, model=ModelName.SINGLE, inputs=INPUTS),
        drop_keys=sorted([*INPUTS.values(), "inbox/anna/job.json"]) if drop_keys is None else drop_keys,
        task_id="t-1",
        output_keys=["outputs/anna/video.mp4"],
    )


def test_a_row_holds_the_inputs_the_name_and_the_id_once_and_reads_back_as_the_same_job() -> None:
    job = a_job()
    row = job_row(job)
    assert "job_id" not in row and "drop_keys" not in row and "name" not in row["spec"]["M"]
    assert row["pk"] == {"S": "JOB#anna-0123456789ab"}
    assert row[OTHER_DROP_KEYS_ATTRIBUTE] == {"L": [{"S": "inbox/anna/job.json"}]}
    assert row[TOKEN_DIGEST_ATTRIBUTE] == {"S": token_digest(job.webhook_token)}
    assert job_from_row(row) == job
    assert len(str(row)) < len(str(_attrs({"pk": "JOB#anna-0123456789ab", **_document(job)})))


def test_a_row_written_whole_before_reads_back_the_same() -> None:
    job = a_job()
    whole = _attrs({"pk": f"JOB#{job.job_id}", **_document(job)})
    assert job_from_row(whole) == job


@pytest.mark.parametrize(
    "drop_keys",
    [
        ["inbox/anna/image.png"],  # an input the listing did not keep (a long listing cut short)
        ["inbox/anna/job.json", "inbox/anna/audio.wav", "inbox/anna/image.png"],  # not in order
        [],
    ],
)
def test_drop_keys_that_the_inputs_cannot_rebuild_are_stored_as_they_are(drop_keys: list[str]) -> None:
    job = a_job(drop_keys=drop_keys)
    row = job_row(job)
    assert OTHER_DROP_KEYS_ATTRIBUTE not in row
    assert job_from_row(row) == job


def test_a_spec_named_otherwise_than_the_job_keeps_its_name() -> None:
    job = a_job(spec_name="other")
    assert job_row(job)["spec"]["M"]["name"] == {"S": "other"}
    assert job_from_row(job_row(job)) == job


def test_a_job_without_a_spec_keeps_every_drop_key() -> None:
    job = a_job().model_copy(update={"spec": None})
    row = job_row(job)
    assert [k["S"] for k in row["drop_keys"]["L"]] == job.drop_keys
    assert job_from_row(row) == job
