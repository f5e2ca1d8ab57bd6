"""``template.yaml`` read as the deployable truth: resources, parameters and function settings.

The local stack keeps no second list of resources. It resolves the template's intrinsic
functions (Ref, Sub, GetAtt, If, Not, Equals, And, Or) against local physical names and creates
what the template declares, so a table, queue or notification added there exists here too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from samtranslator.yaml_helper import yaml_parse

from .calls import learn_resource_names

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
ACCOUNT_ID = "123456789012"
NO_VALUE = object()
_SUB_PATTERN = re.compile(r"\$\{([^}]+)\}")


class Unresolved(Exception):
    """A reference to a resource not created yet; try that resource again later."""


@dataclass
class Physical:
    """What ``Ref`` and ``GetAtt`` answer for one created resource."""

    ref: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SqsTrigger:
    queue_logical_id: str
    batch_size: int
    response_types: tuple[str, ...]
    # ScalingConfig.MaximumConcurrency: most invocations the event source runs at once (None: no limit).
    maximum_concurrency: int | None = None


@dataclass(frozen=True)
class FunctionSpec:
    """One ``AWS::Serverless::Function``: where its code is and what starts it."""

    logical_id: str
    code_dir: Path
    handler: str
    timeout: int
    environment: dict[str, Any]
    sqs_trigger: SqsTrigger | None
    http_routes: tuple[tuple[str, str], ...]
    schedule: str | None
    reserved_concurrency: int | None = None  # ReservedConcurrentExecutions

    @property
    def short_name(self) -> str:
        return self.logical_id.removesuffix("Function").lower()


class Template:
    def __init__(
        self,
        path: Path = TEMPLATE_PATH,
        stack_name: str = "infinitetalk-local",
        region: str = "us-east-1",
        account_id: str = ACCOUNT_ID,
        document: dict[str, Any] | None = None,
    ):
        """``document`` stands in for the file's content, e.g. the SAM translator's output of it."""
        self.document: dict[str, Any] = document if document is not None else yaml_parse(path.read_text())
        self.root = path.parent
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self.parameters: dict[str, str] = {}
        self.physical: dict[str, Physical] = {}

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.document["Resources"]
        return resources

    def set_parameters(self, overrides: Mapping[str, str]) -> None:
        declared = self.document.get("Parameters", {})
        unknown = set(overrides) - set(declared)
        if unknown:
            raise KeyError(f"template.yaml declares no parameter {', '.join(sorted(unknown))}")
        self.parameters = {name: str(spec.get("Default", "")) for name, spec in declared.items()}
        self.parameters.update({k: str(v) for k, v in overrides.items()})

    # ---- intrinsic functions -----------------------------------------------------------
    def pseudo(self, name: str) -> str:
        values = {
            "AWS::StackName": self.stack_name,
            "AWS::AccountId": self.account_id,
            "AWS::Region": self.region,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        return values[name]

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical:
            return self.physical[name].ref
        raise Unresolved(name)

    def get_att(self, logical_id: str, attribute: str) -> str:
        if logical_id not in self.physical:
            raise Unresolved(logical_id)
        return self.physical[logical_id].attributes[attribute]

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.document["Conditions"][name]))

    def included(self, resource: Mapping[str, Any]) -> bool:
        """Whether a resource exists with these parameters (its ``Condition``, if any, holds)."""
        return "Condition" not in resource or self.condition(resource["Condition"])

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::If":
                name, when_true, when_false = arg
                return self.resolve(when_true if self.condition(name) else when_false)
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if key == "Fn::And":
                return all(self.resolve(a) for a in arg)
            if key == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
        return {k: r for k, r in ((k, self.resolve(v)) for k, v in value.items()) if r is not NO_VALUE}

    def sub(self, arg: str | list[Any]) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return str(self.ref(name))

        return _SUB_PATTERN.sub(replace, text)

    # ---- functions ---------------------------------------------------------------------
    def functions(self) -> list[FunctionSpec]:
        globals_ = self.document.get("Globals", {}).get("Function", {})
        specs = []
        for logical_id, resource in self.resources.items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            props = resource["Properties"]
            environment = dict(globals_.get("Environment", {}).get("Variables", {}))
            environment.update(props.get("Environment", {}).get("Variables", {}))
            trigger = None
            routes: list[tuple[str, str]] = []
            schedule = None
            for event in props.get("Events", {}).values():
                event_props = event["Properties"]
                if event["Type"] == "SQS":
                    queue_id = event_props["Queue"]["Fn::GetAtt"]
                    queue_id = queue_id[0] if isinstance(queue_id, list) else queue_id.split(".")[0]
                    maximum = event_props.get("ScalingConfig", {}).get("MaximumConcurrency")
                    trigger = SqsTrigger(
                        queue_logical_id=queue_id,
                        batch_size=int(event_props.get("BatchSize", 10)),
                        response_types=tuple(event_props.get("FunctionResponseTypes", [])),
                        maximum_concurrency=None if maximum is None else int(self.resolve(maximum)),
                    )
                elif event["Type"] in {"HttpApi", "Api"}:
                    routes.append((event_props["Method"].upper(), event_props["Path"]))
                elif event["Type"] == "Schedule":
                    schedule = str(self.resolve(event_props["Schedule"]))
            specs.append(
                FunctionSpec(
                    logical_id=logical_id,
                    code_dir=self.root / props["CodeUri"],
                    handler=props.get("Handler", globals_.get("Handler", "app.handler")),
                    timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
                    environment=environment,
                    sqs_trigger=trigger,
                    http_routes=tuple(routes),
                    schedule=schedule,
                    reserved_concurrency=(
                        None
                        if props.get("ReservedConcurrentExecutions") is None
                        else int(self.resolve(props["ReservedConcurrentExecutions"]))
                    ),
                )
            )
        return specs

    def function_environment(self, spec: FunctionSpec) -> dict[str, str]:
        """A function's variables as Lambda would see them, the template's expressions resolved."""
        resolved = self.resolve(spec.environment)
        return {k: str(v) for k, v in resolved.items()}


def schedule_seconds(expression: str) -> float:
    """``rate(5 minutes)`` as seconds; cron expressions are not run locally."""
    match = re.fullmatch(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        raise ValueError(f"only rate() schedules run locally, not {expression!r}")
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit


@dataclass
class AwsClients:
    s3: S3Client
    sqs: SQSClient
    dynamodb: DynamoDBClient
    events: EventBridgeClient
    secrets: SecretsManagerClient
    sns: SNSClient | None = None  # made on the other clients' endpoint when not given


class Provisioner:
    """Creates the template's storage, queues, tables, secrets and bus on an AWS endpoint."""

    SUPPORTED = frozenset(
        {
            "AWS::S3::Bucket",
            "AWS::DynamoDB::Table",
            "AWS::SQS::Queue",
            "AWS::SecretsManager::Secret",
            "AWS::Events::EventBus",
            "AWS::SNS::Topic",
        }
    )
    # Resources with no local counterpart: code is run by the local stack itself, and the rest
    # (roles, policies, log groups, alarms, email subscriptions, the API) only matter in a real account.
    # The roles are held to the calls the functions make by tests/e2e/test_zz_least_privilege.py.
    # The bucket policy refuses plain HTTP, which is all the local endpoint speaks (moto enforces it).
    NOT_RUN_LOCALLY = frozenset(
        {
            "AWS::S3::BucketPolicy",
            "AWS::Serverless::Function",
            "AWS::Serverless::LayerVersion",
            "AWS::Serverless::HttpApi",
            "AWS::IAM::Role",
            "AWS::SQS::QueuePolicy",
            "AWS::Logs::LogGroup",
            "AWS::CloudWatch::Alarm",
            "AWS::SNS::Subscription",
        }
    )

    def __init__(self, template: Template, aws: AwsClients) -> None:
        self.template = template
        self.aws = aws

    def create_all(self) -> None:
        pending = {
            k: v
            for k, v in self.template.resources.items()
            if v["Type"] in self.SUPPORTED and self.template.included(v)
        }
        unknown = {
            v["Type"]
            for v in self.template.resources.values()
            if v["Type"] not in self.SUPPORTED | self.NOT_RUN_LOCALLY
        }
        if unknown:
            raise NotImplementedError(f"the local stack cannot create {', '.join(sorted(unknown))}")
        for logical_id, resource in self.template.resources.items():
            if resource["Type"] == "AWS::Serverless::HttpApi":
                # Served by the local stack itself; its id only appears inside URLs the stack replaces.
                self.template.physical[logical_id] = Physical(ref=f"{logical_id.lower()}-local")
        while pending:
            progressed = False
            for logical_id in list(pending):
                try:
                    self._create(logical_id, pending[logical_id])
                except Unresolved:
                    continue
                del pending[logical_id]
                progressed = True
            if not progressed:
                raise RuntimeError(f"template references cannot be resolved for {', '.join(sorted(pending))}")
        learn_resource_names(self.template.physical)

    def _create(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self.template.resolve(resource.get("Properties", {}))
        kind = resource["Type"]
        name = f"{self.template.stack_name}-{logical_id}"
        if kind == "AWS::SQS::Queue":
            self.template.physical[logical_id] = self._queue(name, props)
        elif kind == "AWS::DynamoDB::Table":
            self.template.physical[logical_id] = self._table(name, props)
        elif kind == "AWS::SecretsManager::Secret":
            arn = self.aws.secrets.create_secret(Name=name, SecretString=props.get("SecretString", ""))["ARN"]
            self.template.physical[logical_id] = Physical(ref=arn, attributes={"Arn": arn})
        elif kind == "AWS::Events::EventBus":
            bus_name = props.get("Name", name)
            arn = self.aws.events.create_event_bus(Name=bus_name)["EventBusArn"]
            self.template.physical[logical_id] = Physical(ref=bus_name, attributes={"Arn": arn, "Name": bus_name})
        elif kind == "AWS::S3::Bucket":
            self.template.physical[logical_id] = self._bucket(props.get("BucketName", name.lower()), props)
        elif kind == "AWS::SNS::Topic":
            topic_name = props.get("TopicName", name)
            arn = self._sns().create_topic(Name=topic_name)["TopicArn"]
            self.template.physical[logical_id] = Physical(
                ref=arn, attributes={"TopicArn": arn, "TopicName": topic_name}
            )

    def _sns(self) -> SNSClient:
        if self.aws.sns is None:
            meta = self.aws.s3.meta
            self.aws.sns = boto3.client("sns", endpoint_url=meta.endpoint_url, region_name=meta.region_name)
        return self.aws.sns

    def _queue(self, name: str, props: dict[str, Any]) -> Physical:
        attributes: dict[Any, str] = {
            key: json.dumps(value) if isinstance(value, dict) else str(value)
            for key, value in props.items()
            if key in {"VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "RedrivePolicy"}
        }
        url = self.aws.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self.aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return Physical(ref=url, attributes={"Arn": arn, "QueueName": name, "QueueUrl": url})

    def _table(self, name: str, props: dict[str, Any]) -> Physical:
        kwargs: dict[str, Any] = {
            "TableName": props.get("TableName", name),
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in props:
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        table = self.aws.dynamodb.create_table(**kwargs)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            self.aws.dynamodb.update_time_to_live(TableName=kwargs["TableName"], TimeToLiveSpecification=ttl)
        return Physical(ref=kwargs["TableName"], attributes={"Arn": table["TableArn"]})

    def _bucket(self, bucket: str, props: dict[str, Any]) -> Physical:
        self.aws.s3.create_bucket(Bucket=bucket)
        notifications = props.get("NotificationConfiguration", {})
        queue_configs: list[Any] = [
            {
                "QueueArn": config["Queue"],
                "Events": [config["Event"]],
                **(
                    {"Filter": {"Key": {"FilterRules": config["Filter"]["S3Key"]["Rules"]}}}
                    if "Filter" in config
                    else {}
                ),
            }
            for config in notifications.get("QueueConfigurations", [])
        ]
        if queue_configs:
            self.aws.s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queue_configs}
            )
        return Physical(ref=bucket, attributes={"Arn": f"arn:aws:s3:::{bucket}"})
