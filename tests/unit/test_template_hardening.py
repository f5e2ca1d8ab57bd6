"""The template's hardening, read from template.yaml: transport, logs, alarms, what outlives the stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from infinitetalk_core.observability import metrics
from local_stack.template import Provisioner

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE: dict[str, Any] = yaml_parse((ROOT / "template.yaml").read_text())
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
FUNCTIONS = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::Function"}
ALARMS = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
# CloudWatch Logs accepts only these retention periods.
RETENTION_DAYS = {
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
}


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in RESOURCES.items() if v["Type"] == kind}


def refers_to(value: Any, logical_id: str, attribute: str | None = None) -> bool:
    if attribute is None:
        return bool(value == {"Ref": logical_id})
    return value in ({"Fn::GetAtt": [logical_id, attribute]}, {"Fn::GetAtt": f"{logical_id}.{attribute}"})


def test_the_bucket_refuses_every_request_not_made_over_tls() -> None:
    (policy,) = of_type("AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "MediaBucket"}
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    denials = [s for s in statements if s["Effect"] == "Deny" and s.get("Condition")]
    assert len(denials) == 1
    (deny,) = denials
    assert deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    resources = deny["Resource"]
    assert any(refers_to(r, "MediaBucket", "Arn") for r in resources), "the bucket itself (listing)"
    assert {"Fn::Sub": "${MediaBucket.Arn}/*"} in resources, "every object"


def test_each_function_logs_to_its_own_group_kept_for_the_retention_parameter() -> None:
    parameter = TEMPLATE["Parameters"]["LogRetentionDays"]
    assert set(parameter["AllowedValues"]) <= RETENTION_DAYS and parameter["Default"] in parameter["AllowedValues"]
    groups = of_type("AWS::Logs::LogGroup")
    used = []
    for name, function in FUNCTIONS.items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]
        assert group["Ref"] in groups, name
        used.append(group["Ref"])
    assert len(set(used)) == len(FUNCTIONS), "one log group per function"
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


def test_the_webhook_api_writes_an_access_log_without_the_query_string() -> None:
    settings = RESOURCES["CallbackApi"]["Properties"]["AccessLogSettings"]
    destination = settings["DestinationArn"]["Fn::GetAtt"]
    group_id = destination[0] if isinstance(destination, list) else destination.split(".")[0]
    group = RESOURCES[group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert not any(refers_to(f["Properties"]["LoggingConfig"]["LogGroup"], group_id) for f in FUNCTIONS.values())
    line = json.loads(re.sub(r"\$context\.[A-Za-z.]+", "x", settings["Format"]))
    assert {"requestId", "ip", "status", "route"} <= set(line)
    # The query names the job and carries its webhook token: it must never reach a log.
    assert not re.search(r"querystring|rawQuery|requestOverride|\$request\.", settings["Format"], re.IGNORECASE)


def alarm_watching(metric: str, namespace: str) -> list[dict[str, Any]]:
    return [
        a["Properties"]
        for a in ALARMS.values()
        if a["Properties"]["MetricName"] == metric and a["Properties"]["Namespace"] == namespace
    ]


def test_every_function_has_an_errors_alarm() -> None:
    watched = {
        p["Dimensions"][0]["Value"]["Ref"]
        for p in alarm_watching("Errors", "AWS/Lambda")
        if p["Dimensions"][0]["Name"] == "FunctionName"
    }
    assert watched == set(FUNCTIONS)


def test_both_dead_letter_queues_are_watched() -> None:
    dead_letter_queues = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in of_type("AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    }
    watched = {
        p["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for p in alarm_watching("ApproximateNumberOfMessagesVisible", "AWS/SQS")
    }
    assert dead_letter_queues == watched == {"SubmitDeadLetterQueue", "FetchDeadLetterQueue"}


@pytest.mark.parametrize("metric", ["WebhooksRejected", "WebhookSecretNotSet", "SubmitWaitingForApiKey"])
def test_a_pipeline_metric_that_means_trouble_has_an_alarm_on_what_the_code_emits(metric: str) -> None:
    environment = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    (alarm,) = alarm_watching(metric, environment["POWERTOOLS_METRICS_NAMESPACE"])
    assert alarm["Dimensions"] == [{"Name": "service", "Value": environment["POWERTOOLS_SERVICE_NAME"]}]
    assert (metrics.namespace, metrics.service) == ("InfiniteTalk", "infinitetalk")
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    sources = [*ROOT.glob("layers/core/infinitetalk_core/*.py"), *ROOT.glob("functions/*/app.py")]
    assert any(f'name="{metric}"' in path.read_text() for path in sources), f"nothing emits {metric}"


def test_every_alarm_notifies_the_stacks_topic_and_the_optional_one() -> None:
    expected = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}], [{"Ref": "AlarmTopic"}]]}
    for name, alarm in ALARMS.items():
        assert alarm["Properties"]["AlarmActions"] == expected, name
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", name
    (subscription,) = of_type("AWS::SNS::Subscription").values()
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["TopicArn"] == {"Ref": "AlarmTopic"}
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_the_alarm_email_parameter_takes_an_address_or_nothing() -> None:
    pattern = re.compile(TEMPLATE["Parameters"]["AlarmEmail"]["AllowedPattern"])
    for good in ("", "ops@example.com", "first.last+alerts@mail.example.org"):
        assert pattern.fullmatch(good), good
    for bad in ("ops", "ops@", "@example.com", "a b@example.com", "ops@example"):
        assert not pattern.fullmatch(bad), bad


@pytest.mark.parametrize("logical_id", ["JobsTable", "LedgerTable", "WaveSpeedApiKeySecret", "WaveSpeedWebhookSecret"])
def test_what_was_charged_and_the_keys_outlive_the_stack(logical_id: str) -> None:
    resource = RESOURCES[logical_id]
    assert (resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy")) == ("Retain", "Retain")
    assert "TableName" not in resource["Properties"] and "Name" not in resource["Properties"], (
        "a retained resource with a fixed name would block deploying the stack again"
    )


def schedule_period_seconds(expression: str) -> int:
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", expression)
    assert match, expression
    return int(match.group(1)) * (60 if match.group(2).startswith("minute") else 3600)


def test_reconcile_never_overlaps_itself_and_a_delayed_tick_is_dropped_not_queued() -> None:
    reconcile = FUNCTIONS["ReconcileFunction"]["Properties"]
    # A sweep may run to its timeout (as long as the default period), and the schedule is a
    # parameter: only the reservation keeps a second sweep from starting beside the first.
    assert reconcile["ReservedConcurrentExecutions"] == 1
    period = schedule_period_seconds(TEMPLATE["Parameters"]["ReconcileSchedule"]["Default"])
    invoke = reconcile["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] == 0
    assert 60 <= invoke["MaximumEventAgeInSeconds"] < period, "a throttled tick is dropped before the next one"


def test_the_local_stack_knows_every_resource_type_the_template_declares() -> None:
    known = Provisioner.SUPPORTED | Provisioner.NOT_RUN_LOCALLY
    assert {r["Type"] for r in RESOURCES.values()} <= known
    assert not Provisioner.SUPPORTED & Provisioner.NOT_RUN_LOCALLY
