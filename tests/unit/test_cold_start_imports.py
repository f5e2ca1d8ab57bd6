"""Each function's cold start loads only the heavy packages it uses: a fresh interpreter imports the
handler and builds what it builds at its cold start, then lists what was loaded."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT = {
    "PATH": "/usr/bin:/bin",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "MEDIA_BUCKET": "media",
    "JOBS_TABLE": "jobs",
    "LEDGER_TABLE": "ledger",
    "SUBMIT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/submit",
    "FETCH_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/fetch",
    "EVENT_BUS_NAME": "jobs",
    "API_KEY_SECRET_ID": "api-key",
    "WEBHOOK_SECRET_ID": "webhook-secret",
}
LOADED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
pipeline = module.get_pipeline()
for part in {parts!r}:
    getattr(pipeline, part)
print(json.dumps(sorted({{name.partition(".")[0] for name in sys.modules}})))
print(json.dumps("_http" in vars(pipeline.wavespeed._outputs) if "wavespeed" in {parts!r} else None))
"""
HEAVY = {"av", "PIL", "httpx", "httpcore"}


def loaded(function: str, parts: list[str]) -> tuple[set[str], bool | None]:
    path = str(ROOT / "functions" / function / "app.py")
    answer = subprocess.run(
        [sys.executable, "-c", LOADED.format(path=path, parts=parts)],
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    modules, output_client = answer.stdout.splitlines()
    return set(json.loads(modules)), json.loads(output_client)


@pytest.mark.parametrize(
    ("function", "parts", "heavy", "output_client"),
    [
        ("callback", ["jobs", "queues"], set(), None),
        # Pillow waits for the first picture a submission checks.
        ("submit", ["jobs", "events", "bucket", "queues", "wavespeed"], {"av", "httpx", "httpcore"}, False),
        ("fetch", ["jobs", "events", "bucket", "queues", "wavespeed"], {"av", "httpx", "httpcore"}, False),
        ("reconcile", ["jobs", "events", "bucket", "queues", "wavespeed"], {"httpx", "httpcore"}, False),
    ],
)
def test_a_cold_start_loads_only_what_its_function_uses(
    function: str, parts: list[str], heavy: set[str], output_client: bool | None
) -> None:
    modules, made = loaded(function, parts)
    assert modules & HEAVY == heavy
    assert made is output_client  # the output client waits for the first download
