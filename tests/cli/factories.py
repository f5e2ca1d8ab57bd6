"""Job rows as the pipeline writes them, for the CLI to read back."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from infinitetalk_core.models import Job, JobSpec, JobStatus, ModelName, Resolution, Role, utc_now


def make_job(
    name: str, status: JobStatus, *, digest: str = "0123456789ab", at: datetime | None = None, **changes: Any
) -> Job:
    now = at or utc_now()
    spec = JobSpec(
        name=name,
        model=ModelName.SINGLE,
        inputs={Role.IMAGE: f"inbox/{name}/image.png", Role.AUDIO: f"inbox/{name}/audio.wav"},
        resolution=Resolution.P480,
    )
    fields: dict[str, Any] = {
        "job_id": f"{name}-{digest}",
        "job_name": name,
        "status": status,
        "status_since": now,
        "created_at": now,
        "spec": spec,
        "month": now.strftime("%Y-%m"),
        "rule_set": "seeds-output-5s",
        "input_seconds": Decimal("7.4"),
        "estimate_micros": 240_000,
        **changes,
    }
    return Job.model_validate(fields)
