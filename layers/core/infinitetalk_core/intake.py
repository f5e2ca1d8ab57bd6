"""From objects in the inbox to a job spec: the drop rules, in one place.

A folder ``inbox/<name>/`` starts when every file its model needs is there and either
``job.json`` is its newest file (the trigger) or no file has arrived for the settle time. A manifest
``inbox/<name>.json`` starts at once. A job's id is its name plus a digest of the exact
objects it was made from, so a repeated event maps to the same job and a re-upload to a new one.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from botocore.exceptions import ClientError
from pydantic import ValidationError

from .billing import output_seconds_for
from .media import EXTENSIONS, MediaError, check_media
from .models import (
    MAX_OUTPUT_SECONDS,
    OPTIONAL_ROLES,
    REQUIRED_ROLES,
    ROLE_KIND,
    JobOptions,
    JobSpec,
    Manifest,
    MediaKind,
    ModelName,
    Role,
    SpeakerOrder,
)
from .storage import DOCUMENT_LIMIT_BYTES, INBOX_PREFIX, MAX_KEY_BYTES, MediaBucket, StoredObject, outputs_prefix

OPTIONS_FILE = "job.json"
# Room left after ``outputs/<name>/`` for the longest file name written there (error.json, result.json, video-2.mp4).
OUTPUT_FILE_NAME_BYTES = 32
# An unfinished upload holds its folder back until the folder has been quiet this long.
ABANDONED_UPLOAD_SECONDS = 3_600
# Matched whole (``fullmatch``): a trailing newline is not a name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# An error file names this many problems at most, each at most this long: a folder of ten thousand
# stray files, or a job.json of ten thousand unknown options, still makes one readable file and one row.
MAX_LISTED_PROBLEMS = 30
MAX_PROBLEM_CHARS = 600
MAX_LISTED_KEYS = 50


class InputProblems(Exception):
    """Everything wrong with a drop, each line written for the person who made it."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Drop:
    """Where a user put a job: a folder, a manifest, or a file the rules do not recognise."""

    name: str
    kind: Literal["folder", "manifest", "stray"]
    key: str
    # The object whose upload announced a folder drop; ``None`` for a re-check of the folder.
    arrived: str | None = field(default=None, compare=False)
    # When the file that led to this look landed (S3's eventTime), carried by the re-checks it asks for.
    arrived_at: datetime | None = field(default=None, compare=False)

    @property
    def cannot_be_ready_yet(self) -> bool:
        """A folder file other than job.json just arrived: the folder is newer than its settle time and
        job.json (if any) is not the newest file, so looking now would only say "wait"."""
        return self.kind == "folder" and self.arrived is not None and not self.arrived.endswith("/" + OPTIONS_FILE)


@dataclass(frozen=True)
class Waiting:
    """The folder is not ready yet; look again after this many seconds."""

    seconds: int


@dataclass(frozen=True)
class Candidate:
    """A drop whose objects are settled: its id is fixed, its contents not yet checked."""

    job_id: str
    name: str
    objects: list[StoredObject]
    spec: JobSpec | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InspectedInputs:
    audio_seconds: dict[str, Decimal]
    output_seconds: Decimal


def drop_for_key(key: str) -> Drop | None:
    """Which drop an inbox key belongs to; ``None`` for keys outside the inbox or hidden files."""
    if not key.startswith(INBOX_PREFIX):
        return None
    rest = key[len(INBOX_PREFIX) :]
    head, slash, tail = rest.partition("/")
    if not head or head.startswith(".") or (slash and (not tail or tail.rsplit("/", 1)[-1].startswith("."))):
        return None
    if slash:
        return Drop(name=head, kind="folder", key=f"{INBOX_PREFIX}{head}/", arrived=key)
    if head.lower().endswith(".json"):
        return Drop(name=head[: -len(".json")], kind="manifest", key=key)
    return Drop(name=head.rsplit(".", 1)[0] or head, kind="stray", key=key)


def job_id_for(name: str, objects: Iterable[StoredObject]) -> str:
    digest = hashlib.sha256()
    for item in sorted(objects, key=lambda o: o.key):
        digest.update(f"{item.key}\0{item.etag}\0{item.last_modified.isoformat()}\n".encode())
    return f"{name}-{digest.hexdigest()[:12]}"


def name_problem(name: str) -> str | None:
    if NAME_PATTERN.fullmatch(name):
        return None
    shown = name if len(name) <= 120 else f"{name[:100]}... ({len(name)} characters)"
    return (
        f"job name {shown!r} is not usable: use 1-100 ASCII letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(character) in ("Cc", "Cs") for character in text)


def error_file_name(name: str) -> str:
    """Where a refused drop's error file goes: ``outputs/<name>/``, unless that key cannot be written
    or read back by a person (too long, control characters), when a shortened, cleaned name with a
    digest of the real one is used instead."""
    room = MAX_KEY_BYTES - OUTPUT_FILE_NAME_BYTES
    if len(outputs_prefix(name).encode("utf-8", "surrogatepass")) <= room and not has_control_characters(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:80] or "unnamed"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned}-{digest}"


def bounded_problems(problems: Sequence[str]) -> list[str]:
    """At most ``MAX_LISTED_PROBLEMS`` lines of at most ``MAX_PROBLEM_CHARS`` each, saying how many were left out."""
    shown = [p if len(p) <= MAX_PROBLEM_CHARS else p[: MAX_PROBLEM_CHARS - 3] + "..." for p in problems]
    if len(shown) <= MAX_LISTED_PROBLEMS:
        return shown
    hidden = len(shown) - (MAX_LISTED_PROBLEMS - 1)
    return [*shown[: MAX_LISTED_PROBLEMS - 1], f"... and {hidden} more problems of the same kinds"]


def _options_problems(source: str, exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(document)"
        if error["type"] == "extra_forbidden":
            problems.append(f"{source}: unknown option {where!r}")
        else:
            problems.append(f"{source}: {where}: {error['msg'].removeprefix('Value error, ')}")
    return problems


def parse_options(source: str, raw: bytes, model_cls: type[JobOptions]) -> tuple[JobOptions | None, list[str]]:
    if len(raw) > DOCUMENT_LIMIT_BYTES:
        return None, [f"{source} is larger than {DOCUMENT_LIMIT_BYTES // 1024} KiB; options and manifests are small"]
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{source} is not valid JSON: {exc}"]
    if not isinstance(document, dict):
        return None, [f"{source} must hold a JSON object"]
    try:
        return model_cls.model_validate(document), []
    except ValidationError as exc:
        return None, _options_problems(source, exc)


def infer_model(roles: Iterable[Role]) -> ModelName:
    present = set(roles)
    if Role.VIDEO in present:
        return ModelName.VIDEO
    if present & {Role.LEFT_AUDIO, Role.RIGHT_AUDIO}:
        return ModelName.MULTI
    return ModelName.SINGLE


def role_of(filename: str) -> Role | None:
    stem = filename.rsplit(".", 1)[0].lower()
    try:
        return Role(stem)
    except ValueError:
        return None


def spec_problems(model: ModelName, roles: set[Role], options: JobOptions) -> tuple[list[str], set[Role]]:
    """Problems of shape (which files for which model, options that do not apply), and what is missing."""
    problems: list[str] = []
    allowed = REQUIRED_ROLES[model] | OPTIONAL_ROLES[model]
    for role in sorted(roles - allowed):
        problems.append(f"{role.value} is not an input of {model.short}; it takes {', '.join(sorted(allowed))}")
    missing = set(REQUIRED_ROLES[model] - roles)
    if options.order is not None and model is not ModelName.MULTI:
        problems.append(f"order applies only to two speakers (infinitetalk/multi), not {model.short}")
    return problems, missing


def missing_text(roles: Iterable[Role]) -> str:
    parts = []
    for role in sorted(roles):
        extensions = ", ".join(f".{e}" for e in sorted(EXTENSIONS[ROLE_KIND[role]]))
        parts.append(f"missing {role.value} (a file named {role.value} with one of {extensions})")
    return "; ".join(parts)


def assess_folder(
    drop: Drop,
    objects: list[StoredObject],
    options_raw: bytes | None,
    now: datetime,
    settle_seconds: int,
    uploading: Sequence[str] = (),
) -> Waiting | Candidate | None:
    """Decide whether a folder is ready, still arriving, or wrong; ``None`` for an empty folder.

    ``uploading`` names keys whose (multipart) upload has begun but not finished: a large
    recording can take longer than the settle time, and the folder is not complete without it.
    """
    visible = [o for o in objects if not o.filename.startswith(".")]
    if not visible:
        return None
    newest = max(o.last_modified for o in visible)
    age = (now - newest).total_seconds()
    still_uploading = any(not key.rsplit("/", 1)[-1].startswith(".") for key in uploading)
    if still_uploading and age < ABANDONED_UPLOAD_SECONDS:
        return Waiting(seconds=max(1, settle_seconds))
    settled = age >= settle_seconds
    options_object = next((o for o in visible if o.filename == OPTIONS_FILE), None)
    # job.json starts a folder only when it came last: a file newer than it means the folder
    # is being uploaded again, and the new job.json (or the settle time) decides.
    triggered = options_object is not None and options_object.last_modified >= newest

    problems: list[str] = []
    if problem := name_problem(drop.name):
        problems.append(problem)
    by_role: dict[Role, StoredObject] = {}
    for item in visible:
        relative = item.key[len(drop.key) :]
        if "/" in relative:
            problems.append(f"{relative}: sub-folders are not read; put every file directly in {drop.key}")
        elif item.filename == OPTIONS_FILE:
            continue
        elif (role := role_of(item.filename)) is None:
            expected = ", ".join(r.value for r in Role)
            problems.append(f"{item.filename}: unexpected file; files are named by role ({expected}) or {OPTIONS_FILE}")
        elif role in by_role:
            problems.append(f"two files for {role.value}: {by_role[role].filename} and {item.filename}; keep one")
        else:
            by_role[role] = item

    options: JobOptions | None = JobOptions()
    if options_raw is not None:
        options, option_problems = parse_options(f"{drop.key}{OPTIONS_FILE}", options_raw, JobOptions)
        problems.extend(option_problems)

    model = (options.model if options else None) or infer_model(by_role)
    shape_problems, missing = spec_problems(model, set(by_role), options or JobOptions())
    if missing and not settled:
        return Waiting(seconds=max(1, int(settle_seconds - age) + 1))
    if not triggered and not settled:
        return Waiting(seconds=max(1, int(settle_seconds - age) + 1))
    problems.extend(shape_problems)
    if missing:
        problems.append(missing_text(missing))

    job_id = job_id_for(drop.name, visible)
    if problems or options is None:
        return Candidate(job_id=job_id, name=drop.name, objects=visible, problems=problems)
    spec = JobSpec(
        name=drop.name,
        model=model,
        inputs={role: item.key for role, item in by_role.items()},
        prompt=options.prompt,
        resolution=options.resolution,
        seed=options.seed,
        order=options.order,
    )
    return Candidate(job_id=job_id, name=drop.name, objects=visible, spec=spec)


def assess_manifest(drop: Drop, bucket: MediaBucket) -> Candidate | None:
    """A manifest names its inputs anywhere in the bucket; they must exist when it lands."""
    manifest_object = bucket.head(drop.key)
    if manifest_object is None:
        return None
    problems: list[str] = []
    if problem := name_problem(drop.name):
        problems.append(problem)
    raw = bucket.read_document(drop.key)
    if raw is None:
        return None
    parsed, option_problems = parse_options(drop.key, raw, Manifest)
    problems.extend(option_problems)
    objects = [manifest_object]
    if not isinstance(parsed, Manifest):
        return Candidate(job_id=job_id_for(drop.name, objects), name=drop.name, objects=objects, problems=problems)

    found: dict[Role, StoredObject] = {}
    for role, key in sorted(parsed.inputs.items()):
        shown = key if key == key.strip() else repr(key)
        try:
            stored = bucket.head(key)
        except ClientError as exc:
            if error_code(exc) not in ACCESS_DENIED:
                raise
            problems.append(
                f"{role.value}: s3://{bucket.bucket}/{shown} cannot be read by the pipeline (access denied)"
            )
            continue
        if stored is None:
            problems.append(f"{role.value}: s3://{bucket.bucket}/{shown} does not exist")
        else:
            found[role] = stored
            objects.append(stored)
    model = parsed.model or infer_model(parsed.inputs)
    shape_problems, missing = spec_problems(model, set(parsed.inputs), parsed)
    problems.extend(shape_problems)
    if missing:
        problems.append("manifest inputs: " + ", ".join(f"missing {r.value}" for r in sorted(missing)))
    job_id = job_id_for(drop.name, objects)
    if problems:
        return Candidate(job_id=job_id, name=drop.name, objects=objects, problems=problems)
    spec = JobSpec(
        name=drop.name,
        model=model,
        inputs={role: item.key for role, item in found.items()},
        prompt=parsed.prompt,
        resolution=parsed.resolution,
        seed=parsed.seed,
        order=parsed.order,
    )
    return Candidate(job_id=job_id, name=drop.name, objects=objects, spec=spec)


ACCESS_DENIED = frozenset({"403", "AccessDenied", "Forbidden"})
_GONE = frozenset({"404", "NoSuchKey", "NotFound"})
_CHANGED = frozenset({"412", "PreconditionFailed"})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def inspect_inputs(spec: JobSpec, objects: dict[str, StoredObject], bucket: MediaBucket) -> InspectedInputs:
    """Check every input's bytes, end to end, and measure the audio; raises with every problem found.

    Each input is read as the exact version the job was made from; one deleted or replaced while it
    is checked is a problem to report, not a failure to retry.
    """
    problems: list[str] = []
    lengths: dict[str, Decimal] = {}
    for role, key in sorted(spec.inputs.items()):
        stored = objects[key]
        kind = ROLE_KIND[role]
        filename = stored.filename or stored.key
        try:
            with bucket.open(stored) as stream:
                facts = check_media(stream, filename, kind, stored.size)
        except MediaError as exc:
            problems.append(str(exc))
            continue
        except ClientError as exc:
            if error_code(exc) in _GONE:
                problems.append(f"{filename} was deleted while it was being checked; upload it again")
                continue
            if error_code(exc) in _CHANGED:
                problems.append(f"{filename} was replaced while it was being checked; upload the job again")
                continue
            raise
        if kind is MediaKind.AUDIO and facts.seconds is not None:
            lengths[role.value] = facts.seconds
    if problems:
        raise InputProblems(problems)
    output_seconds = output_seconds_for(spec.model, lengths, spec.order)
    if output_seconds > MAX_OUTPUT_SECONDS:
        raise InputProblems([length_problem(spec, lengths, output_seconds)])
    return InspectedInputs(audio_seconds=lengths, output_seconds=output_seconds)


def length_problem(spec: JobSpec, lengths: dict[str, Decimal], output_seconds: Decimal) -> str:
    limit = f"the limit is {MAX_OUTPUT_SECONDS} s (10 minutes) per job"
    if spec.model is not ModelName.MULTI:
        return f"audio is {output_seconds:.1f} s long; {limit}. Split it into shorter jobs."
    order = spec.order or SpeakerOrder.MEANWHILE
    left, right = lengths["left_audio"], lengths["right_audio"]
    if order is SpeakerOrder.MEANWHILE:
        return (
            f"with order=meanwhile the video lasts as long as the longer track ({output_seconds:.1f} s: "
            f"left {left:.1f} s, right {right:.1f} s); {limit}"
        )
    return (
        f"with order={order.value} the tracks play one after the other: left {left:.1f} s + right {right:.1f} s "
        f"= {output_seconds:.1f} s; {limit}"
    )
