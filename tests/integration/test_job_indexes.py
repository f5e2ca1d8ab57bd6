"""The jobs table's indexes, as the template makes them with either projection, against moto's server.

Every reader finds jobs by index key and reads the rows whole, so a stack whose indexes carry keys
only (the default) and an older one whose indexes carry whole rows answer alike.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infinitetalk_core.models import Job, JobSpec, JobStatus, ModelName, Role, utc_now
from infinitetalk_core.repository import JobRepository, StaleTransition
from tests.cli.conftest import table_properties

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["KEYS_ONLY", "ALL"])
def jobs(request: pytest.FixtureRequest, endpoint: str) -> JobRepository:
    projection = str(request.param)
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    suffix = uuid.uuid4().hex[:8]
    client.create_table(TableName=f"jobs-{suffix}", **table_properties("JobsTable", JobIndexProjection=projection))
    client.create_table(TableName=f"ledger-{suffix}", **table_properties("LedgerTable"))
    described = client.describe_table(TableName=f"jobs-{suffix}")["Table"]["GlobalSecondaryIndexes"]
    assert {index["Projection"]["ProjectionType"] for index in described} == {projection}
    return JobRepository(client, f"jobs-{suffix}", f"ledger-{suffix}")


def new_job(name: str, age_seconds: float) -> Job:
    made = utc_now() - timedelta(seconds=age_seconds)
    return Job(
        job_id=f"{name}-{uuid.uuid4().hex[:12]}",
        job_name=name,
        status=JobStatus.RECEIVED,
        status_since=made,
        created_at=made,
        spec=JobSpec(
            name=name,
            model=ModelName.SINGLE,
            inputs={Role.IMAGE: f"inbox/{name}/image.png", Role.AUDIO: f"inbox/{name}/audio.wav"},
            prompt="a calm voice",
        ),
        month=made.strftime("%Y-%m"),
        input_seconds=Decimal("2.5"),
        estimate_micros=150_000,
        reserved_micros=150_000,
    )


def test_jobs_in_a_status_come_whole_oldest_first_and_not_once_they_moved_on(jobs: JobRepository) -> None:
    older, newer, moved = new_job("a", 30), new_job("b", 20), new_job("c", 10)
    for job in (older, newer, moved):
        jobs.create_with_reservation(job, budget_micros=0)
    jobs.transition(moved, JobStatus.SUBMITTING, [JobStatus.RECEIVED])
    found = jobs.in_status(JobStatus.RECEIVED, utc_now())
    assert [j.job_id for j in found] == [older.job_id, newer.job_id]
    assert found[0] == older  # the whole row: spec, prompt, money, the token
    assert [j.job_id for j in jobs.in_status(JobStatus.RECEIVED, utc_now(), limit=1)] == [older.job_id]
    assert jobs.in_status(JobStatus.RECEIVED, older.status_since) == []  # not since before then
    assert [j.job_id for j in jobs.in_status(JobStatus.SUBMITTING, utc_now() + timedelta(seconds=1))] == [moved.job_id]


def test_the_jobs_of_a_name_come_whole_newest_first(jobs: JobRepository) -> None:
    first, second, other = new_job("same", 20), new_job("same", 10), new_job("other", 5)
    for job in (first, second, other):
        jobs.create_with_reservation(job, budget_micros=0)
    assert jobs.by_name("same") == [second, first]
    assert jobs.by_name("nobody") == []


def test_marking_an_event_sent_changes_the_flag_alone(jobs: JobRepository) -> None:
    job = new_job("marked", 5)
    jobs.create_with_reservation(job, budget_micros=0)
    jobs.mark_published(job)
    time.sleep(0.01)
    (found,) = jobs.in_status(JobStatus.RECEIVED, utc_now())
    assert found == job.model_copy(update={"event_published": True})
    with pytest.raises(StaleTransition):
        jobs.mark_published(job.model_copy(update={"status": JobStatus.SUBMITTED}))
