"""The deployable template and the published event schema, checked the way a deploy would."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_all
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from infinitetalk_core.events import SCHEMA_VERSION, event_schema

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


def test_template_passes_cfn_lint() -> None:
    matches = lint_all(TEMPLATE.read_text())
    errors = [m for m in matches if m.rule.id.startswith("E")]
    assert errors == [], "\n".join(str(m) for m in errors)


def packaged(template: dict[str, Any]) -> dict[str, Any]:
    """What `sam package` hands CloudFormation: local code paths replaced by S3 URIs."""
    result = copy.deepcopy(template)
    for logical_id, resource in result["Resources"].items():
        for prop in ("CodeUri", "ContentUri"):
            if prop in resource.get("Properties", {}):
                resource["Properties"][prop] = f"s3://artifacts/{logical_id}.zip"
    return result


def test_template_transforms_with_the_sam_translator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    output = transform(packaged(yaml_parse(TEMPLATE.read_text())), {}, NoManagedPolicies())
    types = {r["Type"] for r in output["Resources"].values()}
    assert {"AWS::Lambda::Function", "AWS::Lambda::LayerVersion", "AWS::ApiGatewayV2::Api"} <= types
    mappings = [r for r in output["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(mappings) == 2
    assert all(m["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)


def test_every_function_runs_on_arm64_python_3_12_or_newer_and_its_code_exists() -> None:
    template = yaml_parse(TEMPLATE.read_text())
    globals_ = template["Globals"]["Function"]
    assert globals_["Architectures"] == ["arm64"]
    assert tuple(int(p) for p in globals_["Runtime"].removeprefix("python").split(".")) >= (3, 12)
    functions = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {"SubmitFunction", "CallbackFunction", "FetchFunction", "ReconcileFunction"}
    for resource in functions.values():
        module, _, attribute = resource["Properties"]["Handler"].partition(".")
        source = ROOT / resource["Properties"]["CodeUri"] / f"{module}.py"
        assert f"def {attribute}(" in source.read_text()


def test_queues_hide_messages_for_six_function_timeouts() -> None:
    template = yaml_parse(TEMPLATE.read_text())
    resources = template["Resources"]
    for function, queue in (("SubmitFunction", "SubmitQueue"), ("FetchFunction", "FetchQueue")):
        timeout = resources[function]["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"])
        assert resources[queue]["Properties"]["VisibilityTimeout"] >= 6 * timeout
        assert "RedrivePolicy" in resources[queue]["Properties"]


def test_committed_event_schema_matches_the_code() -> None:
    committed = json.loads((ROOT / "schemas" / f"job-event-{SCHEMA_VERSION}.json").read_text())
    assert committed == json.loads(json.dumps(event_schema())), "run `make schema` and commit the result"
