"""Turn the ``drop`` arguments into the objects to upload, refusing locally what the pipeline would refuse.

Every check here is the core's own (roles, extensions, sizes, every byte of every file, the decoded
audio length, pixel sizes, options, name), run before a byte is uploaded, so a mistake costs a second
instead of an upload and an error file.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from pydantic import ValidationError

from infinitetalk_core.billing import output_seconds_for
from infinitetalk_core.intake import (
    OPTIONS_FILE,
    drop_for_key,
    infer_model,
    length_problem,
    name_problem,
    spec_problems,
)
from infinitetalk_core.media import MediaError, check_media
from infinitetalk_core.models import MAX_OUTPUT_SECONDS, ROLE_KIND, JobOptions, JobSpec, MediaKind, ModelName, Role
from infinitetalk_core.storage import INBOX_PREFIX, StoredObject, outputs_prefix

MODEL_ALIASES = {model.short: model.value for model in ModelName}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_STAMP_FORMAT = "%Y%m%d-%H%M%S"


class DropRefused(Exception):
    """The drop would be refused; nothing was uploaded. Each problem is one line for the user."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def flag(role: Role) -> str:
    return "--" + role.value.replace("_", "-")


@dataclass(frozen=True)
class Upload:
    """One object to put: a local file, or the options document held in memory."""

    key: str
    size: int
    content_type: str
    path: Path | None = None
    body: bytes | None = None

    @property
    def label(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DropPlan:
    name: str
    model: ModelName
    options: dict[str, object]
    uploads: list[Upload]

    @property
    def folder(self) -> str:
        return f"{INBOX_PREFIX}{self.name}/"

    @property
    def outputs(self) -> str:
        return outputs_prefix(self.name)


def default_name(files: Mapping[Role, Path], now: datetime) -> str:
    """The image's (or video's) file stem plus a timestamp, reduced to what job names allow."""
    source = files.get(Role.VIDEO) or files.get(Role.IMAGE) or next(iter(files.values()), None)
    stamp = now.strftime(_STAMP_FORMAT)
    stem = _UNSAFE.sub("-", source.stem if source else "").strip("-._")
    stem = stem[: 100 - len(stamp) - 1].rstrip("-._")
    return f"{stem}-{stamp}" if stem else f"job-{stamp}"


def parse_options(raw: Mapping[str, object | None]) -> tuple[JobOptions | None, list[str]]:
    """Only the options the user set, validated by the same model the pipeline reads ``job.json`` with."""
    given = {key: value for key, value in raw.items() if value is not None}
    if isinstance(model := given.get("model"), str):
        given["model"] = MODEL_ALIASES.get(model, model)
    try:
        return JobOptions.model_validate(given), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"--{where}: {error['msg']} (got {error.get('input')!r})")
        return None, problems


def _file_problems(role: Role, path: Path, lengths: dict[str, Decimal]) -> list[str]:
    """The pipeline's own checks of one file's bytes; an audio file's decoded length goes into ``lengths``."""
    if not path.exists():
        return [f"{flag(role)}: {path} does not exist"]
    if not path.is_file():
        return [f"{flag(role)}: {path} is not a file"]
    try:
        with path.open("rb") as stream:
            facts = check_media(stream, path.name, ROLE_KIND[role], path.stat().st_size)
    except MediaError as exc:
        return [f"{flag(role)}: {exc}"]
    if ROLE_KIND[role] is MediaKind.AUDIO and facts.seconds is not None:
        lengths[role.value] = facts.seconds
    return []


def _length_problems(spec: JobSpec, lengths: dict[str, Decimal]) -> list[str]:
    """The 10-minute limit, from the lengths measured as the pipeline measures them."""
    seconds = output_seconds_for(spec.model, lengths, spec.order)
    return [length_problem(spec, lengths, seconds)] if seconds > MAX_OUTPUT_SECONDS else []


def plan_drop(
    files: Mapping[Role, Path | None], raw_options: Mapping[str, object | None], name: str | None, now: datetime
) -> DropPlan:
    """Check everything that can be checked without the bucket; raises with every problem at once."""
    given = {role: path for role, path in files.items() if path is not None}
    options, problems = parse_options(raw_options)
    job_name = name if name is not None else default_name(given, now)
    if problem := name_problem(job_name):
        problems.append(f"--name: {problem}")
    model = (options.model if options else None) or infer_model(given)
    shape, missing = spec_problems(model, set(given), options or JobOptions())
    problems.extend(shape)
    if missing:
        needed = " and ".join(flag(role) for role in sorted(missing))
        problems.append(f"{model.short} needs {needed}")
    lengths: dict[str, Decimal] = {}
    file_problems = [p for role, path in sorted(given.items()) for p in _file_problems(role, path, lengths)]
    problems.extend(file_problems)
    if options is not None and not problems:
        spec = JobSpec(
            name=job_name,
            model=model,
            inputs={role: _key(job_name, role, path) for role, path in given.items()},
            resolution=options.resolution,
            order=options.order,
        )
        problems.extend(_length_problems(spec, lengths))
    if problems or options is None:
        raise DropRefused(problems)

    document = options.model_dump(mode="json", exclude_unset=True)
    body = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    uploads = [
        Upload(
            key=_key(job_name, role, path),
            size=path.stat().st_size,
            content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
            path=path,
        )
        for role, path in sorted(given.items())
    ]
    # job.json is the trigger: it goes last, after every file it refers to.
    uploads.append(
        Upload(
            key=f"{INBOX_PREFIX}{job_name}/{OPTIONS_FILE}", size=len(body), content_type="application/json", body=body
        )
    )
    return DropPlan(name=job_name, model=model, options=document, uploads=uploads)


def _key(name: str, role: Role, path: Path) -> str:
    return f"{INBOX_PREFIX}{name}/{role.value}{path.suffix.lower()}"


def leftover_problems(plan: DropPlan, existing: list[StoredObject]) -> list[str]:
    """Objects already in the folder that this drop would not replace, and the pipeline would read with it."""
    ours = {upload.key for upload in plan.uploads}
    stale = sorted(o.filename for o in existing if o.key not in ours and drop_for_key(o.key) is not None)
    if not stale:
        return []
    return [
        f"{plan.folder} already holds {', '.join(stale)}, which this drop would not replace and the pipeline "
        f"would read along with it: pass another --name, or delete those objects first"
    ]
