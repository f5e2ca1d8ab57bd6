"""Domain models: what a job is, what it asks WaveSpeed for, and the shapes stored and sent."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

MAX_OUTPUT_SECONDS = Decimal(600)
# S3's limit on a key, in bytes of UTF-8.
MAX_KEY_BYTES = 1_024
# Where the pipeline writes; nothing under it is ever an input.
OUTPUTS_PREFIX = "outputs/"
SEED_MIN = -1
SEED_MAX = 2_147_483_647


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """One fixed-width UTC format, so stored times sort as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Timestamp = Annotated[datetime, PlainSerializer(iso, return_type=str, when_used="json")]


class ModelName(StrEnum):
    """The WaveSpeed model paths this pipeline drives."""

    SINGLE = "wavespeed-ai/infinitetalk"
    MULTI = "wavespeed-ai/infinitetalk/multi"
    VIDEO = "wavespeed-ai/infinitetalk/video-to-video"

    @property
    def short(self) -> str:
        return {"wavespeed-ai/infinitetalk": "infinitetalk"}.get(self.value, self.value.rsplit("/", 1)[-1])


class Resolution(StrEnum):
    P480 = "480p"
    P720 = "720p"


class SpeakerOrder(StrEnum):
    """How two speakers' tracks are laid out: together, or one after the other."""

    MEANWHILE = "meanwhile"
    LEFT_RIGHT = "left_right"
    RIGHT_LEFT = "right_left"


class Role(StrEnum):
    """What an input file is for; also the file's base name in a drop folder."""

    IMAGE = "image"
    AUDIO = "audio"
    LEFT_AUDIO = "left_audio"
    RIGHT_AUDIO = "right_audio"
    MASK_IMAGE = "mask_image"
    VIDEO = "video"


class MediaKind(StrEnum):
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


ROLE_KIND: dict[Role, MediaKind] = {
    Role.IMAGE: MediaKind.IMAGE,
    Role.MASK_IMAGE: MediaKind.IMAGE,
    Role.AUDIO: MediaKind.AUDIO,
    Role.LEFT_AUDIO: MediaKind.AUDIO,
    Role.RIGHT_AUDIO: MediaKind.AUDIO,
    Role.VIDEO: MediaKind.VIDEO,
}

REQUIRED_ROLES: dict[ModelName, frozenset[Role]] = {
    ModelName.SINGLE: frozenset({Role.IMAGE, Role.AUDIO}),
    ModelName.MULTI: frozenset({Role.IMAGE, Role.LEFT_AUDIO, Role.RIGHT_AUDIO}),
    ModelName.VIDEO: frozenset({Role.VIDEO, Role.AUDIO}),
}

OPTIONAL_ROLES: dict[ModelName, frozenset[Role]] = {
    ModelName.SINGLE: frozenset({Role.MASK_IMAGE}),
    ModelName.MULTI: frozenset(),
    ModelName.VIDEO: frozenset({Role.MASK_IMAGE}),
}


class JobOptions(BaseModel):
    """The options a user may set in ``job.json`` or a manifest; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName | None = None
    prompt: str | None = Field(default=None, max_length=5_000)
    resolution: Resolution = Resolution.P480
    seed: int = Field(default=-1, ge=SEED_MIN, le=SEED_MAX)
    order: SpeakerOrder | None = None


def check_input_key(key: str) -> str:
    """A manifest's input key: something S3 can name, and never the pipeline's own outputs."""
    if not key:
        raise ValueError("the key is empty; give the S3 key of the file, for example library/people/ana.png")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError("the key is not valid Unicode text") from exc
    if size > MAX_KEY_BYTES:
        raise ValueError(f"the key is {size:,} bytes long; S3 keys are at most {MAX_KEY_BYTES:,} bytes (UTF-8)")
    if any(ord(character) < 32 or ord(character) == 127 for character in key):
        raise ValueError(f"the key {key!r} holds a control character (such as a line break); no input is named so")
    if key.startswith(OUTPUTS_PREFIX):
        raise ValueError(f"{key!r} is under {OUTPUTS_PREFIX}, where the pipeline writes; inputs are never read there")
    return key


InputKey = Annotated[str, AfterValidator(check_input_key)]


class Manifest(JobOptions):
    """``inbox/<name>.json``: options plus the bucket keys of the inputs, by role."""

    inputs: dict[Role, InputKey] = Field(min_length=1)


class JobSpec(BaseModel):
    """A validated job: which model, which S3 objects for which role, which options."""

    model_config = ConfigDict(frozen=True)

    name: str
    model: ModelName
    inputs: dict[Role, str]
    prompt: str | None = None
    resolution: Resolution = Resolution.P480
    seed: int = -1
    order: SpeakerOrder | None = None

    def request_body(self, urls: dict[Role, str]) -> dict[str, object]:
        """The JSON body WaveSpeed expects, inputs replaced by URLs it can read."""
        body: dict[str, object] = {role.value: urls[role] for role in sorted(self.inputs)}
        body["resolution"] = self.resolution.value
        body["seed"] = self.seed
        if self.prompt:
            body["prompt"] = self.prompt
        if self.model is ModelName.MULTI:
            body["order"] = (self.order or SpeakerOrder.MEANWHILE).value
        return body


class JobStatus(StrEnum):
    """Where a job is; every change is a conditional write from a known status."""

    RECEIVED = "received"  # job row and budget reservation exist; nothing sent yet
    SUBMITTING = "submitting"  # a submit POST may be in flight
    SUBMITTED = "submitted"  # WaveSpeed accepted it; waiting for the webhook
    UNCERTAIN = "uncertain"  # the submit answer was lost; a task may exist
    # WaveSpeed's history lists tasks this job may own that cannot be told apart; never guessed
    HELD = "held"
    REPORTED = "reported"  # WaveSpeed says it finished; the fetch is queued
    DELIVERED = "delivered"  # outputs are in the bucket and the charge is in the ledger
    FAILED = "failed"  # WaveSpeed failed it, refused it, or its submission could not be settled
    REJECTED = "rejected"  # inputs, options or budget refused before any money was at stake


TERMINAL_STATUSES = frozenset({JobStatus.DELIVERED, JobStatus.FAILED, JobStatus.REJECTED})


class FailureKind(StrEnum):
    INVALID_INPUT = "invalid_input"
    BUDGET = "budget"
    REFUSED_BY_API = "refused_by_api"
    GENERATION_FAILED = "generation_failed"
    SUBMIT_UNKNOWN = "submit_unknown"
    DELIVERY_FAILED = "delivery_failed"
    SUBMIT_FAILED = "submit_failed"  # every submission's answer lost, and the history proves no task was made
    RESULT_UNREADABLE = "result_unreadable"  # a task exists, but its result could not be read for too long


class Job(BaseModel):
    """A row of the jobs table."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    job_name: str
    status: JobStatus
    status_since: Timestamp
    created_at: Timestamp
    spec: JobSpec | None = None
    drop_keys: list[str] = Field(default_factory=list)
    month: str = ""
    rule_set: str = ""
    input_seconds: Decimal | None = None
    estimate_micros: int = 0
    reserved_micros: int = 0
    task_id: str | None = None
    failure_kind: FailureKind | None = None
    error: str | None = None
    output_keys: list[str] = Field(default_factory=list)
    output_seconds: Decimal | None = None
    billed_seconds: int | None = None
    charged_micros: int | None = None
    nsfw_flags: list[bool] = Field(default_factory=list)
    inference_ms: int | None = None
    submit_attempts: int = 0
    # The span of the latest submission run, which the task its POST may have made was created in.
    submit_started_at: Timestamp | None = None
    submit_ended_at: Timestamp | None = None
    # Submissions sent again because WaveSpeed's history proved the earlier ones made no task.
    resubmissions: int = 0
    # Since when the result endpoint has failed for this submitted job (cleared by a readable answer).
    result_unreadable_since: Timestamp | None = None
    event_published: bool = False
    # When the job first reached these statuses (the row keeps them as it moves; see TIMED_STATUSES).
    submitted_at: Timestamp | None = None
    reported_at: Timestamp | None = None
    delivered_at: Timestamp | None = None
    failed_at: Timestamp | None = None
    # Made with the row and carried only in the webhook URL given to WaveSpeed for this job: a signed
    # delivery moves this job only when it came to that URL. Never logged, published or written to a file.
    webhook_token: str = Field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)


class LedgerEntry(BaseModel):
    """One job's line in the ledger: estimate at submit, charge at delivery, and the rules used."""

    job_id: str
    job_name: str
    month: str
    model: ModelName
    resolution: Resolution
    outcome: Literal["delivered", "failed"]
    rule_set: str
    input_seconds: Decimal
    output_seconds: Decimal | None = None
    billed_seconds: int
    rate_micros_per_second: int
    estimate_micros: int
    charged_micros: int
    task_id: str
    recorded_at: Timestamp


class MonthTotal(BaseModel):
    """Totals for one month, overall (model and resolution ``None``) or per model and resolution."""

    month: str
    model: ModelName | None = None
    resolution: Resolution | None = None
    jobs: int = 0
    billed_seconds: int = 0
    charged_micros: int = 0
    reserved_micros: int = 0


def micros_to_usd(micros: int) -> Decimal:
    return (Decimal(micros) / Decimal(1_000_000)).quantize(Decimal("0.000001"))


def usd_text(micros: int) -> str:
    """Money for people: dollars with the cents and any sub-cent digits that matter."""
    value = micros_to_usd(micros).normalize()
    text = f"{value:f}"
    whole, _, frac = text.partition(".")
    return f"${whole}.{(frac + '00')[: max(2, len(frac))]}"
