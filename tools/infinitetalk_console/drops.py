"""Drops from the browser: the files wait on this machine until the pipeline's rules accept them.

The browser sends each file to the console (on this machine, so it takes a moment), then the form's
options. The console runs the very checks ``infinitetalk drop`` runs (the core's rules for names,
options, roles, bytes and audio length) on the files themselves; only when they pass does anything
go to the bucket, one object after the other with ``job.json`` last, while the page shows the bytes.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from infinitetalk_cli.drop import DropPlan, DropRefused, leftover_problems, plan_drop
from infinitetalk_cli.transfer import upload_one
from infinitetalk_core.media import MAX_BYTES, MediaError, check_name_and_size
from infinitetalk_core.models import ROLE_KIND, Role, utc_now
from infinitetalk_core.storage import MediaBucket

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MAX_OPEN_DROPS = 16
# A drop the browser left behind (tab closed half way) is forgotten after this long.
ABANDONED_SECONDS = 3_600
FINISHED_KEPT_SECONDS = 600
COPY_CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FLAG = re.compile(r"(?<![\w-])--([a-z]+(?:-[a-z]+)*)")

State = Literal["staging", "uploading", "done", "failed"]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class DropProblem(Exception):
    """The request cannot be served; ``status`` is the HTTP status, ``problems`` what to tell the person."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = problems


def form_text(problem: str) -> str:
    """The command line's flag names as the form names its fields: ``--left-audio`` is ``left_audio``."""
    return _FLAG.sub(lambda match: match.group(1).replace("-", "_"), problem)


def safe_filename(filename: str) -> str:
    """The base name only, in characters any file system takes; the extension is what the checks read."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("-", base).strip("-.") or "file"
    return cleaned[-120:]


@dataclass
class FileProgress:
    label: str
    size: int
    sent: int = 0


@dataclass
class StagedDrop:
    drop_id: str
    folder: Path
    touched: float
    files: dict[Role, Path] = field(default_factory=dict)
    state: State = "staging"
    name: str = ""
    progress: list[FileProgress] = field(default_factory=list)
    error: str = ""


class DropDesk:
    """Staged drops by id; each is checked once and uploaded once, then its local copies are removed."""

    def __init__(
        self,
        s3: S3Client,
        bucket: MediaBucket,
        clock: Callable[[], datetime] = utc_now,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._clock = clock
        self._log = log
        self._root = Path(tempfile.mkdtemp(prefix="infinitetalk-console-"))
        self._drops: dict[str, StagedDrop] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    def open(self) -> str:
        with self._lock:
            self._forget_old()
            if sum(1 for d in self._drops.values() if d.state in {"staging", "uploading"}) >= MAX_OPEN_DROPS:
                raise DropProblem(429, [f"{MAX_OPEN_DROPS} drops are already open; finish or close one first"])
            drop_id = secrets.token_hex(12)
            folder = self._root / drop_id
            folder.mkdir()
            self._drops[drop_id] = StagedDrop(drop_id=drop_id, folder=folder, touched=time.monotonic())
            return drop_id

    def _get(self, drop_id: str, state: State | None = None) -> StagedDrop:
        drop = self._drops.get(drop_id)
        if drop is None:
            raise DropProblem(404, ["this drop is not open (it finished, or was left too long): start again"])
        if state is not None and drop.state != state:
            raise DropProblem(409, [f"this drop is already {drop.state}"])
        drop.touched = time.monotonic()
        return drop

    def stage(self, drop_id: str, role_name: str, filename: str, body: Readable, length: int) -> None:
        """Keep one file for one role; a second file for the same role replaces the first."""
        try:
            role = Role(role_name)
        except ValueError:
            raise DropProblem(
                400, [f"{role_name!r} is not an input role ({', '.join(r.value for r in Role)})"]
            ) from None
        with self._lock:
            drop = self._get(drop_id, "staging")
            target_dir = drop.folder / role.value
        try:
            # The pipeline's own name and size rule, before a byte is staged.
            check_name_and_size(filename, ROLE_KIND[role], length)
        except MediaError as exc:
            raise DropProblem(413 if length > MAX_BYTES[ROLE_KIND[role]] else 400, [f"{role.value}: {exc}"]) from None
        shutil.rmtree(target_dir, ignore_errors=True)
        target_dir.mkdir()
        target = target_dir / safe_filename(filename)
        remaining = length
        with target.open("wb") as out:
            while remaining > 0:
                chunk = body.read(min(COPY_CHUNK, remaining))
                if not chunk:
                    raise DropProblem(400, [f"{role.value}: the file arrived cut short; send it again"])
                out.write(chunk)
                remaining -= len(chunk)
        with self._lock:
            drop.files[role] = target

    def submit(self, drop_id: str, fields: Mapping[str, object]) -> DropPlan:
        """Check the staged files and the form with the pipeline's rules; start the upload when they pass.

        On refusal the staged files are removed and nothing has been written to the bucket.
        """
        with self._lock:
            drop = self._get(drop_id, "staging")
            drop.state = "uploading"  # no second submit of the same files while this one is checked
        try:
            plan = self._plan(drop, fields)
        except DropProblem:
            self.discard(drop_id)
            raise
        with self._lock:
            drop.name = plan.name
            drop.progress = [FileProgress(upload.label, upload.size) for upload in plan.uploads]
        threading.Thread(target=self._upload, args=(drop, plan), name=f"drop-{plan.name}", daemon=True).start()
        return plan

    def _plan(self, drop: StagedDrop, fields: Mapping[str, object]) -> DropPlan:
        def text(key: str) -> str | None:
            value = fields.get(key)
            return (str(value).strip() or None) if value is not None else None

        seed: object | None = text("seed")
        if isinstance(seed, str) and re.fullmatch(r"-?\d+", seed):
            seed = int(seed)
        options = {
            "model": text("model"),
            "prompt": text("prompt"),
            "resolution": text("resolution"),
            "seed": seed,
            "order": text("order"),
        }
        files: dict[Role, Path | None] = dict(drop.files)
        try:
            plan = plan_drop(files, options, text("name"), self._clock())
        except DropRefused as exc:
            raise DropProblem(422, [form_text(p) for p in exc.problems]) from exc
        if problems := leftover_problems(plan, self._bucket.list(plan.folder)):
            raise DropProblem(422, [form_text(p) for p in problems])
        return plan

    def _upload(self, drop: StagedDrop, plan: DropPlan) -> None:
        """In the plan's order, each object whole before the next: ``job.json``, last, starts the job."""
        try:
            for index, upload in enumerate(plan.uploads):
                progress = drop.progress[index]

                def sent(count: int, progress: FileProgress = progress) -> None:
                    with self._lock:
                        progress.sent = min(progress.size, progress.sent + count)

                upload_one(self._s3, self._bucket.bucket, upload, sent)
                with self._lock:
                    progress.sent = progress.size
            with self._lock:
                drop.state = "done"
            self._log(f"dropped {plan.name} ({plan.model.short}): {len(plan.uploads)} objects in {plan.folder}")
        except Exception as exc:  # noqa: BLE001 - any failure must reach the page, not a thread's stderr
            with self._lock:
                drop.state = "failed"
                drop.error = f"the upload stopped: {exc}"
            self._log(f"drop {plan.name} failed: {exc}")
        finally:
            shutil.rmtree(drop.folder, ignore_errors=True)

    def progress(self, drop_id: str) -> dict[str, object]:
        with self._lock:
            drop = self._get(drop_id)
            return {
                "state": drop.state,
                "name": drop.name,
                "error": drop.error,
                "files": [{"label": p.label, "size": p.size, "sent": p.sent} for p in drop.progress],
            }

    def discard(self, drop_id: str) -> None:
        with self._lock:
            drop = self._drops.get(drop_id)
            if drop is None or (drop.state == "uploading" and drop.progress):
                return
            del self._drops[drop_id]
        shutil.rmtree(drop.folder, ignore_errors=True)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for drop_id, drop in list(self._drops.items()):
            age = now - drop.touched
            if (drop.state == "staging" and age > ABANDONED_SECONDS) or (
                drop.state in {"done", "failed"} and age > FINISHED_KEPT_SECONDS
            ):
                del self._drops[drop_id]
                shutil.rmtree(drop.folder, ignore_errors=True)
