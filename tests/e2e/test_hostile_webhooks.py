"""The public webhook endpoint, attacked: no request an outsider can make moves a job or costs money.

Every variant goes over real HTTP to the local stack's callback endpoint and must get a 4xx (or,
while the stored secret is a placeholder, the documented 503) with every table item, every S3
object and every queue's messages byte-identical before and after. The stack is shared by the
module; once its jobs are in place its pollers and schedule are stopped, so a message a refused
delivery might have queued would still be there to be seen. The last tests prove the same
harness does see a change: a genuine delivery moves its job, and its replay moves nothing.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest

from infinitetalk_core.models import FailureKind, Job, JobSpec, JobStatus, ModelName, Role
from infinitetalk_core.pipeline import get_pipeline
from infinitetalk_core.repository import TaskAlreadyCharged
from local_stack import LocalStack, StackOptions
from local_stack.calls import CallRecorder
from local_stack.samples import portrait_png, voice_wav
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.e2e

WEBHOOK_PATH = "/webhooks/wavespeed"
MIB = 1024 * 1024


def signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """WaveSpeed's recipe written out again, independent of the code under test."""
    key = secret.removeprefix("whsec_").encode()
    return "v3," + hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed(
    body: bytes, secret: str, *, webhook_id: str | None = None, timestamp: int | str | None = None
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": signature(secret, webhook_id, stamp, body),
    }


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass
class World:
    """The jobs under attack, one in each status a delivery might move or must not move."""

    stack: LocalStack
    secret: str
    delivered: Job  # its genuine webhook came and was charged
    waiting: Job  # submitted; its task finished but its webhook never came
    uncertain: Job  # the submit answer was lost; a task exists for it
    unknown: Job  # settled as submit_unknown; a task exists for it
    delivered_webhook_id: str  # the id of the charged job's genuine, accepted delivery
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> its task's genuine webhook body

    def token(self, job: Job) -> str:
        return job.webhook_token

    def body(self, job: Job, **changes: Any) -> bytes:
        return encode({**self.payloads[job.job_id], **changes})

    def query(self, job: Job, token: str | None = None) -> str:
        return f"job={job.job_id}&token={job.webhook_token if token is None else token}"


@dataclass(frozen=True)
class Request:
    method: str = "POST"
    path: str = WEBHOOK_PATH
    query: str = ""
    headers: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes | None = None  # sent as it is over a socket, for what an HTTP client will not send


@dataclass(frozen=True)
class Attack:
    name: str
    build: Callable[[World], Request]
    expect: int
    stored_secret: str | None = None  # the webhook secret in Secrets Manager while this one runs
    base64_bodies: bool = False
    rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None


# ---- the shared stack and its jobs -------------------------------------------------------------


def crafted_job(stack: LocalStack, name: str) -> Job:
    """A job row as submit makes it, over inputs under library/ (no inbox event, so nothing else runs)."""
    stack.put(f"library/{name}/image.png", portrait_png())
    stack.put(f"library/{name}/audio.wav", voice_wav(1.0))
    now = time.time()
    return Job.model_validate(
        {
            "job_id": f"{name}-{uuid.uuid4().hex[:12]}",
            "job_name": name,
            "status": JobStatus.RECEIVED,
            "status_since": now,
            "created_at": now,
            "spec": JobSpec(
                name=name,
                model=ModelName.SINGLE,
                inputs={Role.IMAGE: f"library/{name}/image.png", Role.AUDIO: f"library/{name}/audio.wav"},
            ),
            "month": time.strftime("%Y-%m", time.gmtime(now)),
            "rule_set": "seeds-output-5s",
            "input_seconds": Decimal(1),
            "estimate_micros": 150_000,
            "reserved_micros": 150_000,
        }
    )


def job_sent_to_wavespeed(stack: LocalStack, name: str) -> tuple[Job, str]:
    """A ``submitting`` job and the task WaveSpeed made for it, with the job's own webhook URL."""
    pipeline = get_pipeline()
    job = crafted_job(stack, name)
    pipeline.jobs.create_with_reservation(job, budget_micros=0)
    job = pipeline.jobs.transition(job, JobStatus.SUBMITTING, [JobStatus.RECEIVED], submit_attempts=1)
    assert job.spec is not None
    urls = {role: pipeline.bucket.presign(key, 3600) for role, key in job.spec.inputs.items()}
    task = pipeline.wavespeed.submit(job.spec.model, job.spec.request_body(urls), pipeline.webhook_url_for(job))
    return job, task.id


def job_whose_answer_was_lost(stack: LocalStack, name: str) -> tuple[Job, str]:
    """An ``uncertain`` job and the task WaveSpeed did create for it."""
    job, task_id = job_sent_to_wavespeed(stack, name)
    job = get_pipeline().jobs.transition(job, JobStatus.UNCERTAIN, [JobStatus.SUBMITTING], error="submit answer lost")
    return job, task_id


def queues_are_quiet(stack: LocalStack) -> bool:
    for logical_id, resource in stack.template.resources.items():
        if resource["Type"] != "AWS::SQS::Queue":
            continue
        attributes = stack.sqs.get_queue_attributes(QueueUrl=stack.resource(logical_id), AttributeNames=["All"])
        counts = {str(k): v for k, v in attributes["Attributes"].items()}
        if any(int(v) for k, v in counts.items() if k.startswith("ApproximateNumberOfMessages")):
            return False
    return True


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    options = StackOptions(
        parameters={"FolderSettleSeconds": "3"},
        environment={"SECRET_MAX_AGE_SECONDS": "0"},  # a changed secret counts at the next request
        reconcile_every_seconds=0,  # no schedule: nothing but the requests below moves a job
    )
    with LocalStack(options) as stack:
        files = {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)}
        stack.drop_folder("delivered", files, {})
        delivered = stack.wait_for("delivered", timeout=60)
        assert delivered.status is JobStatus.DELIVERED, delivered.error

        stack.standin.faults.drop_webhook_rate = 1.0  # from here on no genuine webhook arrives by itself
        stack.drop_folder("waiting", files, {})
        waiting = stack.wait_for("waiting", statuses={"submitted"}, timeout=60)
        uncertain, uncertain_task = job_whose_answer_was_lost(stack, "uncertain")
        unknown, unknown_task = job_whose_answer_was_lost(stack, "unknown")
        get_pipeline().fail_before_task(
            unknown, FailureKind.SUBMIT_UNKNOWN, "no webhook within the grace period", [JobStatus.UNCERTAIN]
        )
        assert stack.standin.wait_idle(60)
        wait_until(lambda: queues_are_quiet(stack), timeout=30)
        for poller in stack.pollers:
            poller.thread.stop()
        for poller in stack.pollers:
            poller.thread.join(timeout=10)
        assert queues_are_quiet(stack)

        tasks = stack.standin.tasks
        rows = {job.job_id: stack.jobs.get(job.job_id) for job in (delivered, waiting, uncertain, unknown)}
        now = {job_id: row for job_id, row in rows.items() if row is not None}
        task_of = {
            delivered.job_id: delivered.task_id,
            waiting.job_id: waiting.task_id,
            uncertain.job_id: uncertain_task,
            unknown.job_id: unknown_task,
        }
        found = World(
            stack=stack,
            secret=stack.standin.webhook_secret,
            delivered=now[delivered.job_id],
            waiting=now[waiting.job_id],
            uncertain=now[uncertain.job_id],
            unknown=now[unknown.job_id],
            delivered_webhook_id=next(
                d.webhook_id for d in stack.standin.webhook_deliveries if d.task_id == delivered.task_id
            ),
            payloads={job_id: tasks[str(task_id)].webhook_payload() for job_id, task_id in task_of.items()},
        )
        assert found.uncertain.status is JobStatus.UNCERTAIN and found.uncertain.task_id is None
        assert found.unknown.status is JobStatus.FAILED and found.unknown.failure_kind is FailureKind.SUBMIT_UNKNOWN
        assert all(payload["status"] == "completed" for payload in found.payloads.values())
        yield found


@pytest.fixture
def stored_secret(world: World) -> Iterator[Callable[[str], None]]:
    secret_id = world.stack.resource("WaveSpeedWebhookSecret")

    def store(value: str) -> None:
        world.stack.aws.secrets.put_secret_value(SecretId=secret_id, SecretString=value)

    yield store
    store(world.secret)


@pytest.fixture(autouse=True)
def plain_front_door(world: World) -> Iterator[None]:
    yield
    world.stack.api.options.base64_bodies = False
    world.stack.api.options.rewrite_event = None


# ---- proof that nothing changed ----------------------------------------------------------------


# The bytes of each object version seen. A write always makes a new version (a new LastModified and,
# for different bytes, a new ETag), so an object listed with the same key, ETag, size and time as
# before holds the same bytes, and only new versions need reading again.
_DIGESTS: dict[tuple[str, str, int, str], str] = {}


def dump(stack: LocalStack) -> str:
    """Every table item, every object (key, ETag, bytes), every upload and every queue's messages."""
    state: dict[str, Any] = {}
    for logical_id, resource in sorted(stack.template.resources.items()):
        if resource["Type"] == "AWS::DynamoDB::Table":
            items: list[str] = []
            kwargs: dict[str, Any] = {"TableName": stack.resource(logical_id), "ConsistentRead": True}
            while True:
                page = stack.aws.dynamodb.scan(**kwargs)
                items.extend(json.dumps(item, sort_keys=True) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            state[logical_id] = sorted(items)
        elif resource["Type"] == "AWS::SQS::Queue":
            url = stack.resource(logical_id)
            attributes = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            counts = {str(k): v for k, v in attributes.items() if k.startswith("ApproximateNumberOfMessages")}
            messages = []
            if any(int(v) for v in counts.values()):  # moto's counts are exact: all zero means no message
                messages = stack.sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
                ).get("Messages", [])
            state[logical_id] = {
                "counts": counts,
                "messages": sorted(f"{m['MessageId']} {m['MD5OfBody']} {m['Body']}" for m in messages),
            }
    objects = []
    for listing in stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket):
        for stored in listing.get("Contents", []):
            version = (stored["Key"], stored["ETag"], stored["Size"], stored["LastModified"].isoformat())
            if version not in _DIGESTS:
                data = stack.s3.get_object(Bucket=stack.bucket, Key=stored["Key"])["Body"].read()
                _DIGESTS[version] = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
            objects.append([*version, _DIGESTS[version]])
    state["objects"] = objects
    uploads = stack.s3.list_multipart_uploads(Bucket=stack.bucket).get("Uploads", [])
    state["uploads"] = sorted(f"{u['Key']} {u['UploadId']}" for u in uploads)
    return json.dumps(state, sort_keys=True, indent=1)


def assert_unchanged(before: str, after: str) -> None:
    if before != after:
        diff = "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after", lineterm=""))
        pytest.fail(f"stored state changed:\n{diff[:6000]}")


def send(world: World, request: Request) -> int:
    api = world.stack.api.base_url
    if request.raw is not None:
        host, port = api.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(request.raw)
            status_line = connection.makefile("rb").readline()
        return int(status_line.split()[1])
    url = f"{api}{request.path}" + (f"?{request.query}" if request.query else "")
    answer = httpx.request(request.method, url, headers=request.headers, content=request.body, timeout=60)
    return answer.status_code


# ---- the attacks -------------------------------------------------------------------------------


def to_waiting(body: Callable[[World], bytes], headers: Callable[[World, bytes], Any]) -> Callable[[World], Request]:
    """A request for the submitted job, at its own URL with its own token."""

    def build(w: World) -> Request:
        data = body(w)
        return Request(query=w.query(w.waiting), headers=headers(w, data), body=data)

    return build


def waiting_body(w: World) -> bytes:
    return w.body(w.waiting)


def genuine(w: World, data: bytes) -> dict[str, str]:
    return signed(data, w.secret)


def signed_with(key: str) -> Callable[[World, bytes], dict[str, str]]:
    return lambda w, data: signed(data, key)


def signed_at(offset: int) -> Callable[[World, bytes], dict[str, str]]:
    return lambda w, data: signed(data, w.secret, timestamp=int(time.time()) + offset)


def timestamp_text(make: Callable[[int], str]) -> Callable[[World, bytes], dict[str, str]]:
    return lambda w, data: signed(data, w.secret, timestamp=make(int(time.time())))


def without(*names: str) -> Callable[[World, bytes], dict[str, str]]:
    return lambda w, data: {k: v for k, v in signed(data, w.secret).items() if k not in names}


def signature_header(make: Callable[[str], str]) -> Callable[[World, bytes], dict[str, str]]:
    def headers(w: World, data: bytes) -> dict[str, str]:
        good = signed(data, w.secret)
        return {**good, "webhook-signature": make(good["webhook-signature"])}

    return headers


def tampered(change: Callable[[bytes, World], bytes]) -> Callable[[World], Request]:
    """Signed genuinely, then changed on the way."""

    def build(w: World) -> Request:
        data = w.body(w.waiting)
        return Request(query=w.query(w.waiting), headers=signed(data, w.secret), body=change(data, w))

    return build


def repointed(
    target: Callable[[World], str], source: Callable[[World], Job] | None = None
) -> Callable[[World], Request]:
    """A genuine delivery for one job (the submitted one by default), sent with another query."""

    def build(w: World) -> Request:
        job = source(w) if source else w.waiting
        data = w.body(job)
        return Request(query=target(w), headers=signed(data, w.secret), body=data)

    return build


def for_uncertain(make_body: Callable[[World], bytes]) -> Callable[[World], Request]:
    """Signed genuinely, at the uncertain job's own URL with its own token: only the body can stop it."""

    def build(w: World) -> Request:
        data = make_body(w)
        return Request(query=w.query(w.uncertain), headers=signed(data, w.secret), body=data)

    return build


def uncertain_task_id(task_id: object) -> Callable[[World], bytes]:
    return lambda w: w.body(w.uncertain, id=task_id)


def other_method(method: str) -> Callable[[World], Request]:
    def build(w: World) -> Request:
        data = w.body(w.waiting)
        return Request(method=method, query=w.query(w.waiting), headers=signed(data, w.secret), body=data)

    return build


def other_path(path: str) -> Callable[[World], Request]:
    def build(w: World) -> Request:
        data = w.body(w.waiting)
        return Request(path=path, query=w.query(w.waiting), headers=signed(data, w.secret), body=data)

    return build


def raw_request(
    head: Callable[[World, bytes], str], body: Callable[[World], bytes] = waiting_body
) -> Callable[[World], Request]:
    def build(w: World) -> Request:
        data = body(w)
        return Request(raw=head(w, data).replace("\n", "\r\n").encode() + data)

    return build


def signed_head(w: World, data: bytes, request_line: str, extra: str) -> str:
    headers = "".join(f"{k}: {v}\n" for k, v in signed(data, w.secret).items())
    return f"{request_line}\nhost: 127.0.0.1\n{headers}{extra}\n"


def flag_as_base64(transform: Callable[[str], str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What a front door that mislabels bodies would hand over: the flag set, the body transformed."""

    def rewrite(event: dict[str, Any]) -> dict[str, Any]:
        body = event["body"]
        text = base64.b64decode(body).decode() if event["isBase64Encoded"] else body
        return {**event, "isBase64Encoded": True, "body": transform(text)}

    return rewrite


def base64_of_another_body(event: dict[str, Any]) -> dict[str, Any]:
    other = json.dumps({**json.loads(event["body"]), "outputs": ["https://cdn.wavespeed.ai/other.mp4"]})
    return {**event, "isBase64Encoded": True, "body": base64.b64encode(other.encode()).decode()}


def oversized(w: World) -> Request:
    data = w.body(w.waiting, input={"prompt": "x" * MIB})
    return Request(query=w.query(w.waiting), headers=signed(data, w.secret), body=data)


def over_api_limit(w: World) -> Request:
    data = b"{" + b" " * (10 * MIB) + b"}"
    return Request(query=w.query(w.waiting), headers=signed(data, w.secret), body=data)


def placeholder(name: str, stored: str, signing_key: str | None) -> Attack:
    """The stored secret is a placeholder; the delivery is signed with ``signing_key`` (``None``: the real one)."""
    headers = genuine if signing_key is None else signed_with(signing_key)
    return Attack(f"stored-secret-{name}", to_waiting(waiting_body, headers), 503, stored_secret=stored)


def strip_padding(text: str) -> str:
    """Base64 of the body with its padding taken off (or, if it had none, its last character)."""
    encoded = base64.b64encode(text.encode()).decode()
    return encoded.rstrip("=") if encoded.endswith("=") else encoded[:-1]


def with_urlsafe_characters(w: World) -> bytes:
    """A genuine body whose base64 needs '+' or '/', so the URL-safe alphabet spells it differently."""
    for spaces in range(3):
        data = w.body(w.waiting, error="?>?>?>?>" + " " * spaces)
        if base64.urlsafe_b64encode(data) != base64.b64encode(data):
            return data
    raise AssertionError("no body with '+' or '/' in its base64")


def replayed(target: Callable[[World], str]) -> Callable[[World], Request]:
    """The charged job's genuine delivery, with its original webhook id, sent with another query."""

    def build(w: World) -> Request:
        data = w.body(w.delivered)
        return Request(query=target(w), headers=signed(data, w.secret, webhook_id=w.delivered_webhook_id), body=data)

    return build


ATTACKS: list[Attack] = [
    # forged: signed with anything but the real secret
    Attack("forged-random-secret", to_waiting(waiting_body, signed_with(f"whsec_{uuid.uuid4().hex}")), 401),
    Attack("forged-replace-me", to_waiting(waiting_body, signed_with("replace-me")), 401),
    Attack("forged-not-set", to_waiting(waiting_body, signed_with("not-set")), 401),
    Attack("forged-empty-key", to_waiting(waiting_body, signed_with("")), 401),
    Attack(
        "forged-key-with-prefix-kept",
        to_waiting(waiting_body, lambda w, data: signed(data, "whsec_whsec_" + w.secret.removeprefix("whsec_"))),
        401,
    ),
    Attack(
        "forged-with-the-api-key", to_waiting(waiting_body, lambda w, data: signed(data, w.stack.standin.api_key)), 401
    ),
    # stale and future
    # Just outside the 300 s tolerance; the exact edge is in tests/unit/test_webhooks.py, with a fixed clock.
    # Here the request is signed with a whole-second clock and checked a moment later, so the margin is wider.
    Attack("stale-330s", to_waiting(waiting_body, signed_at(-330)), 401),
    Attack("stale-1h", to_waiting(waiting_body, signed_at(-3600)), 401),
    Attack("future-330s", to_waiting(waiting_body, signed_at(330)), 401),
    Attack("future-1d", to_waiting(waiting_body, signed_at(86_400)), 401),
    Attack("timestamp-zero", to_waiting(waiting_body, timestamp_text(lambda now: "0")), 401),
    Attack("timestamp-milliseconds", to_waiting(waiting_body, timestamp_text(lambda now: str(now * 1000))), 401),
    Attack("timestamp-plus-sign", to_waiting(waiting_body, timestamp_text(lambda now: f"+{now}")), 401),
    Attack("timestamp-underscores", to_waiting(waiting_body, timestamp_text(lambda now: f"{now:_}")), 401),
    Attack("timestamp-fraction", to_waiting(waiting_body, timestamp_text(lambda now: f"{now}.0")), 401),
    # missing headers
    Attack("no-webhook-id", to_waiting(waiting_body, without("webhook-id")), 401),
    Attack("no-webhook-timestamp", to_waiting(waiting_body, without("webhook-timestamp")), 401),
    Attack("no-webhook-signature", to_waiting(waiting_body, without("webhook-signature")), 401),
    Attack(
        "no-webhook-headers",
        to_waiting(waiting_body, without("webhook-id", "webhook-timestamp", "webhook-signature")),
        401,
    ),
    # malformed signature headers
    Attack("signature-without-version", to_waiting(waiting_body, signature_header(lambda s: s.split(",", 1)[1])), 401),
    Attack("signature-version-only", to_waiting(waiting_body, signature_header(lambda s: "v3")), 401),
    Attack("signature-v1", to_waiting(waiting_body, signature_header(lambda s: s.replace("v3,", "v1,"))), 401),
    Attack("signature-truncated", to_waiting(waiting_body, signature_header(lambda s: s[:-2])), 401),
    Attack("signature-extended", to_waiting(waiting_body, signature_header(lambda s: s + "00")), 401),
    Attack("signature-empty-digest", to_waiting(waiting_body, signature_header(lambda s: "v3,")), 401),
    Attack(
        "signature-base64-not-hex",
        to_waiting(waiting_body, signature_header(lambda s: "v3," + base64.b64encode(bytes.fromhex(s[3:])).decode())),
        401,
    ),
    Attack(
        "signature-many-bogus",
        to_waiting(waiting_body, signature_header(lambda s: " ".join(["v3," + "0" * 64] * 200))),
        401,
    ),
    Attack(
        "signature-header-twice",
        to_waiting(
            waiting_body, lambda w, data: [*signed(data, w.secret).items(), ("webhook-signature", "v3," + "0" * 64)]
        ),
        401,
    ),
    Attack(
        "webhook-id-header-twice",
        to_waiting(waiting_body, lambda w, data: [*signed(data, w.secret).items(), ("webhook-id", "msg_other")]),
        401,
    ),
    Attack(
        "signature-for-another-webhook-id",
        to_waiting(waiting_body, lambda w, data: {**signed(data, w.secret), "webhook-id": "msg_substituted"}),
        401,
    ),
    Attack(
        "webhook-id-too-long-but-signed",
        to_waiting(waiting_body, lambda w, data: signed(data, w.secret, webhook_id="m" * 3000)),
        401,
    ),
    # tampered bodies
    Attack("tampered-trailing-space", tampered(lambda data, w: data + b" "), 401),
    Attack("tampered-reserialised", tampered(lambda data, w: json.dumps(json.loads(data), indent=1).encode()), 401),
    Attack("tampered-status", tampered(lambda data, w: data.replace(b'"completed"', b'"failed"')), 401),
    Attack(
        "tampered-task-id",
        tampered(lambda data, w: data.replace(str(w.waiting.task_id).encode(), b"f" * 32)),
        401,
    ),
    Attack("tampered-outputs", tampered(lambda data, w: data.replace(b"http://", b"https://evil.example/")), 401),
    Attack("tampered-truncated", tampered(lambda data, w: data[:-1]), 401),
    Attack("tampered-emptied", tampered(lambda data, w: b""), 401),
    Attack("tampered-bom", tampered(lambda data, w: b"\xef\xbb\xbf" + data), 401),
    # a genuine delivery re-pointed with the query (the signature does not cover it)
    Attack("repointed-to-uncertain-with-own-token", repointed(lambda w: w.query(w.uncertain, w.token(w.waiting))), 403),
    Attack("repointed-to-unknown-with-own-token", repointed(lambda w: w.query(w.unknown, w.token(w.waiting))), 403),
    Attack("repointed-to-delivered-with-own-token", repointed(lambda w: w.query(w.delivered, w.token(w.waiting))), 403),
    Attack("repointed-to-no-such-job", repointed(lambda w: f"job=nobody-0123456789ab&token={w.token(w.waiting)}"), 403),
    Attack("repointed-to-uncertain-without-token", repointed(lambda w: f"job={w.uncertain.job_id}"), 403),
    Attack(
        "repointed-to-a-row-key", repointed(lambda w: f"job=JOB%23{w.waiting.job_id}&token={w.token(w.waiting)}"), 403
    ),
    Attack(
        "repointed-to-a-nul-suffixed-id",
        repointed(lambda w: f"job={w.waiting.job_id}%00&token={w.token(w.waiting)}"),
        403,
    ),
    Attack("repointed-to-a-huge-id", repointed(lambda w: f"job={'j' * 3000}&token={w.token(w.waiting)}"), 403),
    Attack("replayed-to-uncertain-with-its-token", replayed(lambda w: w.query(w.uncertain, w.token(w.delivered))), 403),
    Attack("replayed-to-unknown-without-token", replayed(lambda w: f"job={w.unknown.job_id}"), 403),
    Attack("replayed-to-waiting-with-its-token", replayed(lambda w: w.query(w.waiting, w.token(w.delivered))), 403),
    Attack("replayed-with-a-guessed-token", replayed(lambda w: w.query(w.uncertain, "A" * 43)), 403),
    # missing, wrong and foreign tokens at the right job
    Attack("token-missing", repointed(lambda w: f"job={w.waiting.job_id}"), 403),
    Attack("token-empty", repointed(lambda w: f"job={w.waiting.job_id}&token="), 403),
    Attack("token-of-another-job", repointed(lambda w: w.query(w.waiting, w.token(w.uncertain))), 403),
    Attack("token-of-the-delivered-job", repointed(lambda w: w.query(w.waiting, w.token(w.delivered))), 403),
    Attack("token-truncated", repointed(lambda w: w.query(w.waiting, w.token(w.waiting)[:-1])), 403),
    Attack("token-extended", repointed(lambda w: w.query(w.waiting, w.token(w.waiting) + "x")), 403),
    Attack("token-case-swapped", repointed(lambda w: w.query(w.waiting, w.token(w.waiting).swapcase())), 403),
    Attack(
        "token-stored-digest",
        repointed(lambda w: w.query(w.waiting, hashlib.sha256(w.token(w.waiting).encode()).hexdigest())),
        403,
    ),
    Attack("token-with-trailing-space", repointed(lambda w: w.query(w.waiting, w.token(w.waiting) + "%20")), 403),
    # duplicated query parameters
    Attack(
        "duplicate-job-own-first",
        repointed(lambda w: f"job={w.waiting.job_id}&job={w.uncertain.job_id}&token={w.token(w.waiting)}"),
        400,
    ),
    Attack(
        "duplicate-job-other-first",
        repointed(lambda w: f"job={w.uncertain.job_id}&job={w.waiting.job_id}&token={w.token(w.waiting)}"),
        400,
    ),
    Attack(
        "duplicate-token-foreign-first",
        repointed(lambda w: f"job={w.waiting.job_id}&token={w.token(w.uncertain)}&token={w.token(w.waiting)}"),
        400,
    ),
    Attack("duplicate-token-same-twice", repointed(lambda w: w.query(w.waiting) + f"&token={w.token(w.waiting)}"), 400),
    Attack("query-with-empty-field", repointed(lambda w: w.query(w.waiting) + "&&x=1"), 400),
    # the body's task: shapes that must never reach a URL, another task, another model, no prediction
    Attack("task-id-path-traversal", for_uncertain(uncertain_task_id("../../webhook/secret#")), 400),
    Attack("task-id-encoded-traversal", for_uncertain(uncertain_task_id("%2e%2e%2f%2e%2e%2fwebhook%2fsecret")), 400),
    Attack("task-id-uppercase", for_uncertain(uncertain_task_id("ABCDEF0123456789" * 2)), 400),
    Attack("task-id-31-hex", for_uncertain(uncertain_task_id("a" * 31)), 400),
    Attack("task-id-33-hex", for_uncertain(uncertain_task_id("a" * 33)), 400),
    Attack("task-id-empty", for_uncertain(uncertain_task_id("")), 400),
    Attack("task-id-number", for_uncertain(uncertain_task_id(12345)), 400),
    Attack("task-id-newline", for_uncertain(uncertain_task_id("a" * 32 + "\n")), 400),
    Attack("task-id-arabic-digits", for_uncertain(uncertain_task_id("\u0660" * 32)), 400),
    Attack(
        "task-of-another-model",
        for_uncertain(lambda w: w.body(w.uncertain, model="wavespeed-ai/infinitetalk/multi")),
        403,
    ),
    Attack(
        "task-of-another-job-at-its-own-url",
        lambda w: Request(
            query=w.query(w.waiting), headers=signed(w.body(w.uncertain), w.secret), body=w.body(w.uncertain)
        ),
        403,
    ),
    Attack("body-not-json", for_uncertain(lambda w: b"completed"), 400),
    Attack("body-json-array", for_uncertain(lambda w: b"[]"), 400),
    Attack("body-empty-object", for_uncertain(lambda w: b"{}"), 400),
    Attack("body-unknown-status", for_uncertain(lambda w: w.body(w.uncertain, status="done")), 400),
    # base64 tricks
    Attack(
        "base64-text-of-the-signed-body",
        lambda w: Request(
            query=w.query(w.waiting),
            headers=signed(w.body(w.waiting), w.secret),
            body=base64.b64encode(w.body(w.waiting)),
        ),
        401,
    ),
    Attack(
        "base64-text-of-the-signed-body-through-a-base64-front-door",
        lambda w: Request(
            query=w.query(w.waiting),
            headers=signed(w.body(w.waiting), w.secret),
            body=base64.b64encode(w.body(w.waiting)),
        ),
        401,
        base64_bodies=True,
    ),
    Attack("flagged-base64-but-plain", to_waiting(waiting_body, genuine), 401, rewrite=flag_as_base64(lambda t: t)),
    Attack(
        "flagged-base64-padding-stripped", to_waiting(waiting_body, genuine), 401, rewrite=flag_as_base64(strip_padding)
    ),
    Attack(
        "flagged-base64-extra-padding",
        to_waiting(waiting_body, genuine),
        401,
        rewrite=flag_as_base64(lambda t: base64.b64encode(t.encode()).decode() + "=="),
    ),
    Attack(
        "flagged-base64-line-wrapped",
        to_waiting(waiting_body, genuine),
        401,
        rewrite=flag_as_base64(lambda t: base64.encodebytes(t.encode()).decode()),
    ),
    Attack(
        "flagged-base64-urlsafe-alphabet",
        to_waiting(with_urlsafe_characters, genuine),
        401,
        rewrite=flag_as_base64(lambda t: base64.urlsafe_b64encode(t.encode()).decode()),
    ),
    Attack("base64-of-a-different-body", to_waiting(waiting_body, genuine), 401, rewrite=base64_of_another_body),
    # size
    Attack("oversized-signed-body", oversized, 413),
    Attack("over-api-gateway-limit", over_api_limit, 413),
    Attack(
        "content-length-not-a-number",
        raw_request(
            lambda w, data: signed_head(
                w, data, f"POST {WEBHOOK_PATH}?{w.query(w.waiting)} HTTP/1.1", "content-length: ten\n"
            )
        ),
        400,
    ),
    Attack(
        "chunked-over-api-gateway-limit",
        raw_request(
            lambda w, data: (
                signed_head(
                    w, data, f"POST {WEBHOOK_PATH}?{w.query(w.waiting)} HTTP/1.1", "transfer-encoding: chunked\n"
                )
                + f"{10 * MIB + 1:x}\n"
            ),
            lambda w: b"x" * 4096,
        ),
        413,
    ),
    # other methods and paths
    *[
        Attack(f"method-{m.lower()}", other_method(m), 404)
        for m in ("GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PROPFIND")
    ],
    Attack("path-trailing-slash", other_path(WEBHOOK_PATH + "/"), 404),
    Attack("path-other-case", other_path("/webhooks/WaveSpeed"), 404),
    Attack("path-parent", other_path("/webhooks"), 404),
    Attack("path-root", other_path("/"), 404),
    Attack("path-double-slash", other_path("/" + WEBHOOK_PATH), 404),
    Attack("path-encoded-slash", other_path("/webhooks%2Fwavespeed"), 404),
    Attack(
        "path-dot-segments",
        raw_request(
            lambda w, data: signed_head(
                w,
                data,
                f"POST /webhooks/x/../wavespeed?{w.query(w.waiting)} HTTP/1.1",
                f"content-length: {len(data)}\n",
            )
        ),
        404,
    ),
    # the stored secret is still a placeholder: refuse everything, even correctly signed deliveries
    placeholder("replace-me", "replace-me", "replace-me"),
    placeholder("not-set", "not-set", "not-set"),
    placeholder("changeme", "changeme", "changeme"),
    placeholder("prefix-only", "whsec_", "whsec_"),
    placeholder("too-short", "whsec_short", "whsec_short"),
    placeholder("json-replace-me", '{"secret": "replace-me"}', "replace-me"),
    placeholder("not-set-real-signature", "not-set", None),
    placeholder("replace-me-real-signature", "replace-me", None),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_a_hostile_delivery_is_refused_and_changes_nothing(
    world: World, attack: Attack, stored_secret: Callable[[str], None]
) -> None:
    if attack.stored_secret is not None:
        stored_secret(attack.stored_secret)
    world.stack.api.options.base64_bodies = attack.base64_bodies
    world.stack.api.options.rewrite_event = attack.rewrite
    before = dump(world.stack)
    request = attack.build(world)  # signed just before it is sent, so its timestamp is as old as it says
    status = send(world, request)
    after = dump(world.stack)
    assert status == attack.expect
    assert_unchanged(before, after)


def test_the_suite_is_as_broad_as_promised() -> None:
    assert len(ATTACKS) >= 50
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)


# ---- the harness sees a change: genuine deliveries still work, once --------------------------------


def fetch_once(stack: LocalStack) -> None:
    (fetcher,) = [poller for poller in stack.pollers if poller.function.name == "fetch"]
    assert fetcher.poll_once() >= 1


def assert_delivered_and_charged_once(stack: LocalStack, job_id: str) -> None:
    delivered = stack.jobs.get(job_id)
    assert delivered is not None and delivered.status is JobStatus.DELIVERED
    _, entries = stack.jobs.month(delivered.month)
    assert [e.charged_micros for e in entries if e.job_id == job_id] == [150_000]


def test_every_jobs_webhook_url_carries_its_own_token_which_the_row_compares_only_by_digest(world: World) -> None:
    (delivery,) = {d.url for d in world.stack.standin.webhook_deliveries if d.task_id == world.delivered.task_id}
    assert delivery.endswith(f"?job={world.delivered.job_id}&token={world.delivered.webhook_token}")
    row = world.stack.aws.dynamodb.get_item(
        TableName=world.stack.jobs_table, Key={"pk": {"S": f"JOB#{world.delivered.job_id}"}}
    )["Item"]
    assert row["webhook_token_sha256"]["S"] == hashlib.sha256(world.delivered.webhook_token.encode()).hexdigest()
    tokens = {world.token(job) for job in (world.delivered, world.waiting, world.uncertain, world.unknown)}
    assert len(tokens) == 4


def test_a_refused_delivery_keeps_its_id_and_the_genuine_one_moves_its_job_once(world: World) -> None:
    stack, job = world.stack, world.uncertain
    data = world.body(job)
    headers = signed(data, world.secret)
    url = f"{stack.webhook_url}"

    before = dump(stack)
    refused = httpx.post(
        url, params={"job": job.job_id, "token": world.token(world.waiting)}, headers=headers, content=data
    )
    assert refused.status_code == 403
    assert_unchanged(before, dump(stack))

    accepted = httpx.post(f"{url}?{world.query(job)}", headers=headers, content=data)  # the same webhook id
    assert (accepted.status_code, accepted.json()) == (200, {"outcome": "accepted"})
    moved = stack.jobs.get(job.job_id)
    assert (
        moved is not None and moved.status is JobStatus.REPORTED and moved.task_id == world.payloads[job.job_id]["id"]
    )
    after_accept = dump(stack)
    assert after_accept != before
    row = stack.aws.dynamodb.get_item(TableName=stack.jobs_table, Key={"pk": {"S": f"JOB#{job.job_id}"}})["Item"]
    assert row["webhook_ids"] == {"SS": [headers["webhook-id"]]}  # the refused delivery did not use the id up

    replay = httpx.post(f"{url}?{world.query(job)}", headers=headers, content=data)
    assert (replay.status_code, replay.json()) == (200, {"outcome": "replay"})
    assert_unchanged(after_accept, dump(stack))

    fetch_once(stack)
    assert_delivered_and_charged_once(stack, job.job_id)


def test_a_task_charged_to_one_job_is_never_charged_to_another(world: World) -> None:
    """Were a delivery of the charged job's task ever bound to another job, that job stays uncharged and told."""
    stack, job, owner = world.stack, world.unknown, world.delivered
    _, entries_before = stack.jobs.month(owner.month)
    data = world.body(owner)
    answer = httpx.post(f"{stack.webhook_url}?{world.query(job)}", headers=signed(data, world.secret), content=data)
    assert (answer.status_code, answer.json()) == (200, {"outcome": "accepted"})  # its own token: bound to it
    fetch_once(stack)

    released = stack.jobs.get(job.job_id)
    assert released is not None
    assert (released.status, released.failure_kind, released.task_id) == (
        JobStatus.FAILED,
        FailureKind.SUBMIT_UNKNOWN,
        None,
    )
    assert released.reserved_micros == 0 and released.charged_micros is None
    totals, entries = stack.jobs.month(owner.month)
    assert [e for e in entries if e.job_id == job.job_id] == []
    assert sorted(e.model_dump_json() for e in entries if e.job_id != job.job_id) == sorted(
        e.model_dump_json() for e in entries_before
    )
    assert next(t for t in totals if t.model is None).reserved_micros >= 0
    error = stack.read_json(f"outputs/{job.job_name}/error.json")
    assert owner.job_id in error["problems"][0] and str(owner.task_id) in error["problems"][0]
    assert stack.keys(f"outputs/{job.job_name}/") == [f"outputs/{job.job_name}/error.json"]

    # The ledger itself refuses a second charge for the task, in the charge's own transaction.
    pipeline = get_pipeline()
    assert pipeline.jobs.claim_task(str(owner.task_id), job.job_id) == owner.job_id
    before = dump(stack)
    (owner_entry,) = [e for e in entries if e.job_id == owner.job_id]
    reported = pipeline.jobs.transition(released, JobStatus.REPORTED, [JobStatus.FAILED], task_id=owner.task_id)
    between = dump(stack)
    entry = owner_entry.model_copy(update={"job_id": job.job_id, "job_name": job.job_name})
    with pytest.raises(TaskAlreadyCharged) as refused:
        pipeline.jobs.settle(reported, JobStatus.DELIVERED, [JobStatus.REPORTED], entry, None)
    assert refused.value.owner_job_id == owner.job_id
    assert_unchanged(between, dump(stack))
    assert before != between


def test_a_delivery_for_a_job_that_holds_its_task_is_one_write_and_its_replay_one_refused_write(world: World) -> None:
    """The common case costs the least the webhook must do: one conditional UpdateItem and the fetch message."""
    stack = world.stack
    job, task_id = job_sent_to_wavespeed(stack, "holds-its-task")
    job = get_pipeline().jobs.record_task(job, JobStatus.SUBMITTED, [JobStatus.SUBMITTING], task_id)
    wait_until(lambda: stack.standin.tasks[task_id].is_final, timeout=30)
    data = encode(stack.standin.tasks[task_id].webhook_payload())
    headers = signed(data, world.secret)
    callback = stack.functions["callback"].spec.logical_id

    def callback_calls() -> list[str]:
        with CallRecorder() as recorder:
            answer = httpx.post(f"{stack.webhook_url}?{world.query(job)}", headers=headers, content=data)
        calls = recorder.by_function().get(callback, [])
        return [
            answer.json()["outcome"],
            *(f"{c.service}.{c.operation}" for c in calls if c.service != "secretsmanager"),
        ]

    assert callback_calls() == ["accepted", "dynamodb.UpdateItem", "sqs.SendMessage"]
    after_accept = dump(stack)
    assert callback_calls() == ["replay", "dynamodb.UpdateItem"]
    assert_unchanged(after_accept, dump(stack))
    fetch_once(stack)
    assert_delivered_and_charged_once(stack, job.job_id)
