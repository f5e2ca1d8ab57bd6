"""Tasks and the machinery that runs them: render workers, a timeline for waits, webhook senders."""

from __future__ import annotations

import heapq
import itertools
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from .faults import Faults
from .history import HistoryQuery
from .inputs import MODELS, speaker_order
from .net import DownloadFailed, NotLoopback, download, readable_url, require_loopback
from .render import (
    MAX_OUTPUT_SECONDS,
    Layout,
    RenderError,
    RenderPlan,
    audio_seconds,
    output_seconds,
    render,
    still_frame,
)
from .webhooks import SignedMessage, sign_message

TaskStatus = Literal["created", "processing", "completed", "failed"]
FINAL: frozenset[str] = frozenset({"completed", "failed"})
WEBHOOK_TRIES = 3
LAYOUTS: dict[str, Layout] = {"meanwhile": "meanwhile", "left_right": "left_right", "right_left": "right_left"}

Log = Callable[[str], None]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class PlannedFaults:
    """Faults decided when the task is created, so a knob set just before a submit hits that task
    even while earlier tasks are still running."""

    fail: bool = False
    fail_error: str = "Inference failed"
    drop_webhook: bool = False
    bad_signature: bool = False
    webhook_copies: int = 1
    webhook_delay_seconds: float = 0.0
    empty_outputs: bool = False
    seconds_per_output_second: float | None = None

    @classmethod
    def draw(cls, faults: Faults) -> PlannedFaults:
        return cls(
            fail=faults.draw("fail"),
            fail_error=faults.fail_error,
            drop_webhook=faults.draw("drop_webhook"),
            bad_signature=faults.draw("bad_signature"),
            webhook_copies=max(1, int(faults.webhook_copies)),
            webhook_delay_seconds=max(0.0, float(faults.webhook_delay_seconds)),
            empty_outputs=faults.draw("empty_outputs"),
            seconds_per_output_second=faults.seconds_per_output_second,
        )


@dataclass
class Task:
    """One prediction, as WaveSpeed would hold it."""

    id: str
    model: str
    input: dict[str, Any]
    webhook_url: str | None
    result_url: str
    created_at: datetime
    planned: PlannedFaults = field(default_factory=PlannedFaults)
    status: TaskStatus = "created"
    outputs: list[str] = field(default_factory=list)
    has_nsfw_contents: list[bool] = field(default_factory=list)
    error: str = ""
    output_seconds: float | None = None
    inference_ms: int = 0
    completed_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def prediction(self) -> dict[str, Any]:
        """The ``data`` of a submit or result answer."""
        return {
            "id": self.id,
            "model": self.model,
            "outputs": list(self.outputs),
            "urls": {"get": self.result_url},
            "has_nsfw_contents": list(self.has_nsfw_contents),
            "status": self.status,
            "created_at": iso(self.created_at),
            "error": self.error,
            "timings": {"inference": self.inference_ms},
        }

    def history_item(self) -> dict[str, Any]:
        """One entry of the prediction history: the prediction and its run time, never its ``input``."""
        return {**self.prediction(), "executionTime": self.inference_ms}

    def webhook_payload(self) -> dict[str, Any]:
        """The webhook body: the prediction plus the request body, in WaveSpeed's field order."""
        data = self.prediction()
        return {
            "id": data["id"],
            "model": data["model"],
            "input": self.input,
            "outputs": data["outputs"],
            "urls": data["urls"],
            "has_nsfw_contents": data["has_nsfw_contents"],
            "status": data["status"],
            "created_at": data["created_at"],
            "error": data["error"],
            "timings": data["timings"],
        }


@dataclass(frozen=True)
class Delivery:
    """One webhook POST the stand-in made (every copy and every retry is its own entry)."""

    task_id: str
    webhook_id: str
    url: str
    status: str
    http_status: int | None
    forged: bool
    copy: int
    attempt: int
    error: str = ""
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class TaskBoard:
    """All shared state behind one condition, so "idle" is judged from a consistent view."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.tasks: dict[str, Task] = {}
        self.outputs: dict[str, bytes] = {}
        self.deliveries: list[Delivery] = []
        self.submit_count = 0
        self.webhooks_pending = 0

    def add(self, task: Task) -> None:
        with self.changed:
            self.tasks[task.id] = task
            self.submit_count += 1
            self.changed.notify_all()

    def prediction(self, task_id: str) -> dict[str, Any] | None:
        with self.changed:
            task = self.tasks.get(task_id)
            return task.prediction() if task else None

    def output(self, task_id: str) -> bytes | None:
        with self.changed:
            return self.outputs.get(task_id)

    def history(self, query: HistoryQuery) -> tuple[int, list[dict[str, Any]]]:
        """(total, one page) of the tasks the query selects, newest first, as WaveSpeed lists them."""
        with self.changed:
            selected = [task for task in self.tasks.values() if query.selects(task)]
            selected.sort(key=lambda task: (task.created_at, task.id), reverse=True)
            start = (query.page - 1) * query.page_size
            return len(selected), [task.history_item() for task in selected[start : start + query.page_size]]

    def purge(self, made_before: datetime) -> list[str]:
        """Delete finished tasks (result, output, history entry) made before a moment; returns their ids."""
        with self.changed:
            old = [task.id for task in self.tasks.values() if task.is_final and task.created_at < made_before]
            for task_id in old:
                del self.tasks[task_id]
                self.outputs.pop(task_id, None)
            return old

    def record(self, delivery: Delivery) -> None:
        with self.changed:
            self.deliveries.append(delivery)

    def webhook_done(self) -> None:
        with self.changed:
            self.webhooks_pending -= 1
            self.changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(self._idle, timeout)

    def _idle(self) -> bool:
        # Called with the lock held: a task turns final and its webhook is counted in one step.
        return self.webhooks_pending == 0 and all(task.is_final for task in self.tasks.values())


class Workers:
    """A fixed set of daemon threads: unlike ThreadPoolExecutor, queued work never delays exit."""

    def __init__(self, count: int, name: str, log: Log) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._log = log
        self._stopped = False
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True) for n in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, work: Callable[[], None]) -> None:
        self._queue.put(work)

    def stop(self) -> None:
        """Queued work is dropped, not run: a stopped stand-in must not keep rendering in the background."""
        self._stopped = True
        for _ in self._threads:
            self._queue.put(None)

    def _run(self) -> None:
        while (work := self._queue.get()) is not None and not self._stopped:
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - a worker must survive any one job
                self._log(f"internal error in {threading.current_thread().name}: {type(exc).__name__}: {exc}")


class Timeline:
    """One daemon thread that runs short callbacks at a due time, so no wait holds a render slot."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="standin-timeline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        with self._wake:
            heapq.heappush(self._due, (when, next(self._order), callback))
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (not self._due or self._due[0][0] > time.monotonic()):
                    self._wake.wait(None if not self._due else self._due[0][0] - time.monotonic())
                if self._stopped:
                    return
                _, _, callback = heapq.heappop(self._due)
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 - the timeline must survive any one callback
                self._log(f"internal error on the timeline: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class RunnerSettings:
    webhook_secret: str
    seconds_per_output_second: float
    min_processing_seconds: float
    frame_rate: int
    video_height: int | None  # None: the height the job asked for (480p or 720p), as the real model renders


@dataclass
class _Outcome:
    video: bytes | None = None
    error: str = ""
    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)


class TaskRunner:
    """Takes created tasks through download, render, the simulated wait, completion and webhook."""

    def __init__(
        self,
        board: TaskBoard,
        settings: RunnerSettings,
        http: httpx.Client,
        output_url: Callable[[str], str],
        log: Log,
    ) -> None:
        self._board = board
        self._settings = settings
        self._http = http
        self._output_url = output_url
        self._log = log
        # Two render slots: the target machine has two cores and ffmpeg is the heavy part.
        self._renderers = Workers(2, "standin-render", log)
        self._senders = Workers(4, "standin-webhook", log)
        self._timeline = Timeline(log)

    def start(self) -> None:
        self._renderers.start()
        self._senders.start()
        self._timeline.start()

    def stop(self) -> None:
        self._renderers.stop()
        self._senders.stop()
        self._timeline.stop()

    def enqueue(self, task: Task) -> None:
        self._renderers.submit(lambda: self._process(task))

    # --- render worker -------------------------------------------------------------------------

    def _process(self, task: Task) -> None:
        outcome = _Outcome()
        try:
            with tempfile.TemporaryDirectory(prefix="standin-") as folder:
                self._prepare_and_render(task, Path(folder), outcome)
        except (DownloadFailed, RenderError) as exc:
            outcome.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - any surprise must still end the task, readably
            outcome.error = f"internal error: {type(exc).__name__}: {exc}"
        if task.planned.fail and not outcome.error:
            outcome.error = task.planned.fail_error or "Inference failed"
            outcome.video = None
        per_second = task.planned.seconds_per_output_second
        if per_second is None:
            per_second = self._settings.seconds_per_output_second
        simulated = (outcome.seconds or 0.0) * max(0.0, per_second)
        due = outcome.started + max(self._settings.min_processing_seconds, simulated)
        self._timeline.call_at(due, lambda: self._finish(task, outcome))

    def _prepare_and_render(self, task: Task, folder: Path, outcome: _Outcome) -> None:
        spec = MODELS[task.model]
        media = {name: download(self._http, name, str(task.input[name])) for name in spec.required}
        if "mask_image" in task.input and spec.mask and task.input["mask_image"]:
            download(self._http, "mask_image", str(task.input["mask_image"]))
        order = speaker_order(spec, task.input)
        fields = list(spec.audio_fields)
        if order == "right_left":
            fields.reverse()
        lengths = [audio_seconds(media[name], name) for name in fields]
        layout = "single" if len(fields) == 1 else LAYOUTS[order]
        seconds = output_seconds(layout, lengths)
        if seconds > MAX_OUTPUT_SECONDS:
            raise RenderError(f"the output would be {seconds:.1f} s long; the limit is {MAX_OUTPUT_SECONDS:.0f} s")
        outcome.seconds = seconds
        with self._board.changed:
            task.status = "processing"
            task.output_seconds = seconds
        self._log(f"task {task.id} processing: {seconds:.3f} s of video")
        if task.planned.fail:
            return
        if spec.visual == "video":
            visual = folder / "visual"
            visual.write_bytes(media["video"])
        else:
            visual = folder / "visual.png"
            still_frame(media["image"], "image", visual)
        tracks: list[Path] = []
        for name in fields:
            track = folder / name
            track.write_bytes(media[name])
            tracks.append(track)
        plan = RenderPlan(
            visual=visual,
            visual_is_video=spec.visual == "video",
            audio=tuple(tracks),
            layout=layout,
            seconds=seconds,
            frame_rate=self._settings.frame_rate,
            height=self._settings.video_height or int(str(task.input.get("resolution", "480p")).removesuffix("p")),
        )
        outcome.video = render(plan, folder / "video.mp4")

    # --- timeline ------------------------------------------------------------------------------

    def _finish(self, task: Task, outcome: _Outcome) -> None:
        payload: dict[str, Any] | None = None
        with self._board.changed:
            task.inference_ms = int((time.monotonic() - outcome.started) * 1000)
            task.completed_at = datetime.now(UTC)
            if outcome.error or outcome.video is None:
                task.status = "failed"
                task.error = outcome.error or "Inference failed"
            else:
                self._board.outputs[task.id] = outcome.video
                task.outputs = [] if task.planned.empty_outputs else [self._output_url(task.id)]
                task.has_nsfw_contents = [] if task.planned.empty_outputs else [False]
                task.status = "completed"
            if task.webhook_url and not task.planned.drop_webhook:
                payload = task.webhook_payload()
                self._board.webhooks_pending += 1
            self._board.changed.notify_all()
        detail = f" ({task.error})" if task.error else ""
        self._log(f"task {task.id} {task.status}{detail}")
        if task.webhook_url and payload is None:
            self._log(f"webhook for task {task.id} dropped (fault)")
        if payload is not None:
            body = payload
            due = time.monotonic() + task.planned.webhook_delay_seconds
            self._timeline.call_at(due, lambda: self._senders.submit(lambda: self._deliver(task, body)))

    # --- webhook sender ------------------------------------------------------------------------

    def _deliver(self, task: Task, payload: dict[str, Any]) -> None:
        """Signed when sent, not when the task finished, so a delayed webhook is still fresh."""
        try:
            message = sign_message(payload, self._settings.webhook_secret, forged=task.planned.bad_signature)
            for copy in range(1, task.planned.webhook_copies + 1):
                self._send_copy(task, message, copy)
        finally:
            self._board.webhook_done()

    def _send_copy(self, task: Task, message: SignedMessage, copy: int) -> None:
        """Up to three tries for connection errors and 5xx; a 4xx is an answer and is not retried."""
        url = str(task.webhook_url)
        for attempt in range(1, WEBHOOK_TRIES + 1):
            code: int | None = None
            error = ""
            retry = False
            try:
                require_loopback(url)
                response = self._http.post(url, content=message.body, headers=message.headers, follow_redirects=False)
                code = response.status_code
                retry = code >= 500
            except NotLoopback as exc:
                error = f"refused: {exc}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                retry = True
            self._board.record(
                Delivery(
                    task_id=task.id,
                    webhook_id=message.webhook_id,
                    url=url,
                    status=task.status,
                    http_status=code,
                    forged=message.forged,
                    copy=copy,
                    attempt=attempt,
                    error=error,
                )
            )
            forged = " forged" if message.forged else ""
            self._log(
                f"webhook{forged} {message.webhook_id} for task {task.id} ({task.status}) to {readable_url(url)}: "
                f"{code if code is not None else error} [copy {copy}, try {attempt}]"
            )
            if not retry or attempt == WEBHOOK_TRIES:
                return
            time.sleep(0.2 * 2 ** (attempt - 1))
