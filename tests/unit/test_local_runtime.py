"""The local runtime's Lambda rules on a tiny handler: environments, concurrency, timeouts, per-invocation state.

No AWS endpoint is needed: a refused call is refused before it is sent, and nothing listens on
the address a call would go to, so a call that did leave would fail differently.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from aws_lambda_powertools import Metrics

from local_stack import faults
from local_stack.runtime import (
    Environment,
    FunctionCrashed,
    FunctionThrottled,
    FunctionTimedOut,
    Invocation,
    InvocationScopedFormatter,
    LocalFunction,
    current_invocation,
    scope_metrics,
)
from local_stack.template import FunctionSpec

HANDLER = """
import json, time
import boto3, httpx

calls = 0

def handler(event, context):
    global calls
    calls += 1
    time.sleep(event.get("sleep", 0))
    outcome = {"calls": calls, "remaining_ms": context.get_remaining_time_in_millis()}
    if event.get("call_after_sleep"):
        for name, call in (
            ("aws", lambda: boto3.client(
                "sqs", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                aws_access_key_id="x", aws_secret_access_key="x",
            ).list_queues()),
            ("http", lambda: httpx.get("http://127.0.0.1:9/", timeout=1)),
        ):
            try:
                call()
                outcome[name] = "sent"
            except Exception as exc:
                outcome[name] = type(exc).__name__
        with open(event["report"], "w") as report:
            json.dump(outcome, report)
    if event.get("fail"):
        raise ValueError("the handler failed")
    return outcome
"""


@pytest.fixture
def spec(tmp_path: Path) -> FunctionSpec:
    (tmp_path / "app.py").write_text(HANDLER)
    faults.install()
    return FunctionSpec(
        logical_id="SleepyFunction",
        code_dir=tmp_path,
        handler="app.handler",
        timeout=60,
        environment={},
        sqs_trigger=None,
        http_routes=(),
        schedule=None,
    )


def quiet(source: str, line: str) -> None:
    return None


def test_an_invocation_past_its_timeout_is_given_up_on_and_its_later_calls_never_leave(
    spec: FunctionSpec, tmp_path: Path
) -> None:
    function = LocalFunction(spec, quiet, timeout_seconds=0.5)
    report = tmp_path / "late.json"
    started = time.monotonic()
    with pytest.raises(FunctionTimedOut):
        function.invoke({"sleep": 1.0, "call_after_sleep": True, "report": str(report)})
    assert 0.5 <= time.monotonic() - started < 0.9  # the invoker moved on at the timeout, not when the thread ended
    deadline = time.monotonic() + 5
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(report.read_text()) == {
        "calls": 1,
        "remaining_ms": 0,
        "aws": "InvocationAbandoned",
        "http": "InvocationAbandoned",
    }
    assert function.counts.timeouts == 1


def test_the_same_calls_from_a_live_invocation_do_leave(spec: FunctionSpec, tmp_path: Path) -> None:
    """The other half of the test above: the refusal is the timeout's doing, not the address's."""
    function = LocalFunction(spec, quiet, timeout_seconds=10)
    report = tmp_path / "live.json"
    function.invoke({"call_after_sleep": True, "report": str(report)})
    outcome = json.loads(report.read_text())
    assert outcome["aws"] != "InvocationAbandoned" and outcome["http"] == "ConnectError"


def test_invocations_run_at_once_up_to_the_limit_each_in_an_environment_of_its_own(spec: FunctionSpec) -> None:
    function = LocalFunction(spec, quiet, concurrency=3, timeout_seconds=10)
    answers: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        answer = function.invoke({"sleep": 0.4})
        with lock:
            answers.append(answer["calls"])

    threads = [threading.Thread(target=call) for _ in range(6)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed < 1.5  # six 0.4 s invocations, three at a time: two rounds
    assert function.counts.peak_concurrency == 3 and function.counts.environments == 3
    # Each environment's module globals are its own: each counted its own invocations, twice each.
    assert sorted(answers) == [1, 1, 1, 2, 2, 2]


def test_a_caller_that_will_not_wait_is_throttled_while_every_environment_is_busy(spec: FunctionSpec) -> None:
    function = LocalFunction(spec, quiet, concurrency=1, timeout_seconds=10)
    busy = threading.Thread(target=function.invoke, args=({"sleep": 0.5},))
    busy.start()
    time.sleep(0.1)
    with pytest.raises(FunctionThrottled):
        function.invoke({}, wait_for_slot=0)
    busy.join()
    assert function.invoke({}, wait_for_slot=0)["calls"] == 2
    assert function.counts.throttles == 1


def test_a_handler_error_is_raised_and_the_environment_is_used_again(spec: FunctionSpec) -> None:
    function = LocalFunction(spec, quiet, timeout_seconds=10)
    with pytest.raises(ValueError, match="the handler failed"):
        function.invoke({"fail": True})
    assert function.invoke({})["calls"] == 2
    assert (function.counts.errors, function.counts.environments) == (1, 1)


def test_a_crashed_invocation_is_a_function_error_and_its_environment_is_thrown_away(spec: FunctionSpec) -> None:
    function = LocalFunction(spec, quiet, timeout_seconds=10)
    original = function._checkout

    def crash_soon() -> Environment:
        environment = original()
        handler = environment.handler

        def crashing(event: dict[str, object], context: object) -> object:
            invocation = current_invocation.get()
            assert invocation is not None
            invocation.crash("after_job_write")
            return handler(event, context)

        environment.handler = crashing
        return environment

    function._checkout = crash_soon  # type: ignore[method-assign]
    with pytest.raises(FunctionCrashed, match="crashed at after_job_write"):
        function.invoke({})
    function._checkout = original  # type: ignore[method-assign]
    assert function.invoke({})["calls"] == 1  # a new environment: the crashed one is gone
    assert (function.counts.crashes, function.counts.environments) == (1, 2)


def test_logger_keys_and_metrics_are_each_invocations_own() -> None:
    formatter = InvocationScopedFormatter()
    metrics = Metrics(namespace="Test", service="test")
    undo = scope_metrics(metrics)
    try:
        first = Invocation(function="A", label="a", faults=None)
        second = Invocation(function="B", label="b", faults=None)
        token = current_invocation.set(first)
        formatter.clear_state()
        formatter.append_keys(function_request_id="first")
        metrics.add_metric(name="Seen", unit="Count", value=1)
        current_invocation.set(second)
        formatter.clear_state()
        formatter.append_keys(function_request_id="second")
        assert "Seen" not in metrics.provider.metric_set
        current_invocation.set(first)
        assert formatter.log_format["function_request_id"] == "first"
        assert "Seen" in metrics.provider.metric_set
        current_invocation.reset(token)
        assert "function_request_id" not in formatter.log_format  # outside any invocation: the shared keys
        assert "Seen" not in metrics.provider.metric_set
    finally:
        undo()
