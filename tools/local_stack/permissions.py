"""Least privilege, checked: the permission each recorded call needs against what template.yaml grants.

The template is expanded by the SAM translator, as a deploy would, and its intrinsic functions are
resolved with the names one deployment would give (a made-up account, region and stack), so the
role statements and the recorded calls meet as real ARNs. Calls map to IAM actions through one
explicit table; an operation missing from it is an error, never a guess.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

from .calls import RecordedCall
from .template import TEMPLATE_PATH, Physical, Template, Unresolved

DEPLOYED_ACCOUNT = "111122223333"
DEPLOYED_REGION = "eu-west-3"
DEPLOYED_STACK = "privilege-check"
# Actions Lambda itself uses with a function's role: its SQS event source mapping's poller.
EVENT_SOURCE_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")


class UncheckablePolicy(Exception):
    """A grant the check cannot judge exactly (a managed policy, a condition, NotAction ...)."""


class UnmappedCall(Exception):
    """A recorded call whose IAM action is not in the table: add the operation to ``OPERATIONS``."""


@dataclass(frozen=True, order=True)
class Permission:
    """One IAM action on one resource ARN; ``hint`` says it in template syntax (not compared)."""

    action: str
    resource: str
    hint: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.action} on {self.hint or self.resource}"


@dataclass(frozen=True)
class Statement:
    """One Allow statement, resolved; ``sources`` are its resources as the template writes them."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    sources: tuple[str, ...]

    def grants(self, permission: Permission) -> bool:
        return any(_action_matches(a, permission.action) for a in self.actions) and any(
            _resource_matches(r, permission.resource) for r in self.resources
        )


def _action_matches(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def _resource_matches(pattern: str, resource: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, resource, flags=re.DOTALL) is not None


def template_syntax(value: Any) -> str:
    """A resolved-from expression written back the way template.yaml writes it."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return f"!Ref {arg}"
        if key == "Fn::GetAtt":
            return "!GetAtt " + (".".join(arg) if isinstance(arg, list) else str(arg))
        if key == "Fn::Sub":
            return f'!Sub "{arg if isinstance(arg, str) else arg[0]}"'
    return str(value)


# ---- the template as one deployment would name it -------------------------------------------
def translate(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The CloudFormation the SAM translator makes of template.yaml (code paths as after `sam package`)."""
    document = yaml_parse(path.read_text())
    for logical_id, resource in document["Resources"].items():
        for prop in ("CodeUri", "ContentUri"):
            if prop in resource.get("Properties", {}):
                resource["Properties"][prop] = f"s3://artifacts/{logical_id}.zip"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=DEPLOYED_REGION))
    translated: dict[str, Any] = translator.translate(
        copy.deepcopy(document), parameter_values={}, get_managed_policy_map=dict
    )
    return translated


class DeployedNames:
    """Every resource's Ref and GetAtt values in one made-up deployment of the translated template."""

    def __init__(self, translated: Mapping[str, Any], path: Path = TEMPLATE_PATH) -> None:
        self.template = Template(
            path,
            stack_name=DEPLOYED_STACK,
            region=DEPLOYED_REGION,
            account_id=DEPLOYED_ACCOUNT,
            document=dict(translated),
        )
        self.template.set_parameters({})
        for logical_id, resource in self.template.resources.items():
            self.template.physical[logical_id] = self._physical(logical_id, resource)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template.resources

    def resolve(self, value: Any) -> Any:
        return self.template.resolve(value)

    def arn(self, logical_id: str) -> str:
        return self.template.get_att(logical_id, "Arn")

    def _named(self, resource: Mapping[str, Any], prop: str, default: str) -> str:
        value = resource.get("Properties", {}).get(prop)
        if value is None:
            return default
        try:
            return str(self.template.resolve(value))
        except Unresolved:
            return default

    def _physical(self, logical_id: str, resource: Mapping[str, Any]) -> Physical:
        region, account, kind = DEPLOYED_REGION, DEPLOYED_ACCOUNT, resource["Type"]
        generated = f"{DEPLOYED_STACK}-{logical_id}-0A1B2C3D"
        if kind == "AWS::S3::Bucket":
            name = self._named(resource, "BucketName", generated.lower())
            return Physical(ref=name, attributes={"Arn": f"arn:aws:s3:::{name}"})
        if kind == "AWS::DynamoDB::Table":
            name = self._named(resource, "TableName", generated)
            return Physical(ref=name, attributes={"Arn": f"arn:aws:dynamodb:{region}:{account}:table/{name}"})
        if kind == "AWS::SQS::Queue":
            name = self._named(resource, "QueueName", generated)
            url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
            arn = f"arn:aws:sqs:{region}:{account}:{name}"
            return Physical(ref=url, attributes={"Arn": arn, "QueueName": name, "QueueUrl": url})
        if kind == "AWS::SecretsManager::Secret":
            arn = f"arn:aws:secretsmanager:{region}:{account}:secret:{generated}-AbCdEf"
            return Physical(ref=arn, attributes={"Id": arn})
        if kind == "AWS::Events::EventBus":
            name = self._named(resource, "Name", generated)
            return Physical(
                ref=name, attributes={"Arn": f"arn:aws:events:{region}:{account}:event-bus/{name}", "Name": name}
            )
        if kind == "AWS::Logs::LogGroup":
            name = self._named(resource, "LogGroupName", generated)
            return Physical(ref=name, attributes={"Arn": f"arn:aws:logs:{region}:{account}:log-group:{name}:*"})
        if kind == "AWS::SNS::Topic":
            arn = f"arn:aws:sns:{region}:{account}:{generated}"
            return Physical(ref=arn, attributes={"TopicArn": arn, "TopicName": generated})
        if kind == "AWS::IAM::Role":
            return Physical(ref=generated, attributes={"Arn": f"arn:aws:iam::{account}:role/{generated}"})
        if kind == "AWS::Lambda::Function":
            arn = f"arn:aws:lambda:{region}:{account}:function:{generated}"
            return Physical(ref=generated, attributes={"Arn": arn})
        return Physical(
            ref=generated, attributes={"Arn": f"arn:aws:cloudformation:{region}:{account}:fake/{generated}"}
        )


# ---- what the template grants ---------------------------------------------------------------
def role_of(function: Mapping[str, Any]) -> str:
    role = function["Properties"].get("Role")
    if not (isinstance(role, dict) and "Fn::GetAtt" in role):
        raise UncheckablePolicy(f"role {role!r} is not a role of this template")
    target = role["Fn::GetAtt"]
    return str(target[0] if isinstance(target, list) else target.split(".")[0])


def granted_statements(names: DeployedNames) -> dict[str, list[Statement]]:
    """Each function's Allow statements, from its role's inline policies and any policy attached to it."""
    resources = names.resources
    granted: dict[str, list[Statement]] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        role_id = role_of(resource)
        role = resources[role_id]["Properties"]
        if role.get("ManagedPolicyArns"):
            raise UncheckablePolicy(f"{role_id} has managed policies {role['ManagedPolicyArns']}: write statements")
        documents = [p["PolicyDocument"] for p in role.get("Policies", [])]
        for other in resources.values():
            attached = other.get("Properties", {}).get("Roles", [])
            if other["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"} and {"Ref": role_id} in attached:
                documents.append(other["Properties"]["PolicyDocument"])
        granted[logical_id] = [s for document in documents for s in _statements(role_id, document, names)]
    return granted


def _statements(role_id: str, document: Mapping[str, Any], names: DeployedNames) -> Iterable[Statement]:
    raw = document["Statement"]
    for index, statement in enumerate(raw if isinstance(raw, list) else [raw]):
        sid = str(statement.get("Sid", f"#{index}"))
        unsupported = {"NotAction", "NotResource", "Condition", "NotPrincipal", "Principal"} & set(statement)
        if statement.get("Effect") != "Allow" or unsupported:
            raise UncheckablePolicy(f"{role_id} statement {sid}: only plain Allow statements can be checked")
        actions = _as_list(statement["Action"])
        if any("*" in a or "?" in a for a in actions):
            raise UncheckablePolicy(f"{role_id} statement {sid}: name each action instead of {actions}")
        resources: list[str] = []
        sources: list[str] = []
        for written in _as_list(statement["Resource"]):
            for resolved in _as_list(names.resolve(written)):  # an !If may stand for several
                resources.append(str(resolved))
                sources.append(template_syntax(written))
        yield Statement(
            sid=sid, actions=tuple(str(a) for a in actions), resources=tuple(resources), sources=tuple(sources)
        )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def platform_permissions(names: DeployedNames) -> dict[str, list[Permission]]:
    """What Lambda does with each function's role, not its code: write its logs, poll its queue."""
    needed: dict[str, list[Permission]] = {}
    for logical_id, resource in names.resources.items():
        if resource["Type"] == "AWS::Lambda::Function":
            config = resource["Properties"].get("LoggingConfig", {})
            group = str(names.resolve(config["LogGroup"])) if "LogGroup" in config else f"/aws/lambda/{logical_id}"
            stream = f"arn:aws:logs:{DEPLOYED_REGION}:{DEPLOYED_ACCOUNT}:log-group:{group}:log-stream:2026/01/01/x"
            needed.setdefault(logical_id, []).extend(
                Permission(a, stream, f"its log group {group}") for a in LOG_ACTIONS
            )
        elif resource["Type"] == "AWS::Lambda::EventSourceMapping":
            function = resource["Properties"]["FunctionName"]
            function_id = function["Ref"] if isinstance(function, dict) else str(function)
            source = str(names.resolve(resource["Properties"]["EventSourceArn"]))
            if source.startswith("arn:aws:sqs:"):
                needed.setdefault(function_id, []).extend(
                    Permission(a, source, "its trigger queue") for a in EVENT_SOURCE_ACTIONS
                )
    return needed


# ---- what each call needs ---------------------------------------------------------------------
def _logical(name: Any) -> str:
    text = str(name)
    if not text.startswith("@"):
        raise UnmappedCall(f"names {text!r}, which no provisioned stack created")
    return text[1:]


def _bucket(call: RecordedCall, names: DeployedNames) -> tuple[str, str]:
    logical = _logical(call.target.get("Bucket"))
    return names.arn(logical), logical


def _s3_object(action: str) -> Callable[[RecordedCall, DeployedNames], list[Permission]]:
    def needs(call: RecordedCall, names: DeployedNames) -> list[Permission]:
        bucket_arn, logical = _bucket(call, names)
        key = str(call.target.get("Key", ""))
        top = key.split("/", 1)[0] + "/*" if "/" in key else "*"
        permissions = [Permission(action, f"{bucket_arn}/{key}", f'!Sub "${{{logical}.Arn}}/{top}"')]
        if call.status == 404:
            # S3 answers 404 for a missing key only to a caller who may list the bucket; otherwise 403.
            permissions.append(Permission("s3:ListBucket", bucket_arn, f"!GetAtt {logical}.Arn (a 404 needs it)"))
        return permissions

    return needs


def _s3_bucket(action: str) -> Callable[[RecordedCall, DeployedNames], list[Permission]]:
    def needs(call: RecordedCall, names: DeployedNames) -> list[Permission]:
        bucket_arn, logical = _bucket(call, names)
        return [Permission(action, bucket_arn, f"!GetAtt {logical}.Arn")]

    return needs


def _table_arn(table: Any, index: Any, names: DeployedNames) -> tuple[str, str]:
    logical = _logical(table)
    if index:
        return f"{names.arn(logical)}/index/{index}", f'!Sub "${{{logical}.Arn}}/index/{index}"'
    return names.arn(logical), f"!GetAtt {logical}.Arn"


def _dynamodb(action: str) -> Callable[[RecordedCall, DeployedNames], list[Permission]]:
    def needs(call: RecordedCall, names: DeployedNames) -> list[Permission]:
        arn, hint = _table_arn(call.target.get("TableName"), call.target.get("IndexName"), names)
        return [Permission(action, arn, hint)]

    return needs


TRANSACTION_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}


def _transaction(call: RecordedCall, names: DeployedNames) -> list[Permission]:
    """A transaction needs, per item, the action of that item's kind on that item's table."""
    permissions = []
    for item in call.target.get("TransactItems", []):
        for kind, body in item.items():
            if kind not in TRANSACTION_ITEM_ACTIONS:
                raise UnmappedCall(f"transaction item kind {kind}")
            arn, hint = _table_arn(body.get("TableName"), None, names)
            permissions.append(Permission(TRANSACTION_ITEM_ACTIONS[kind], arn, hint))
    return permissions


def _batch(action: str) -> Callable[[RecordedCall, DeployedNames], list[Permission]]:
    def needs(call: RecordedCall, names: DeployedNames) -> list[Permission]:
        return [Permission(action, *_table_arn(t, None, names)) for t in call.target.get("RequestItems", [])]

    return needs


def _by_arn(
    field_name: str, action: str, attribute: str | None
) -> Callable[[RecordedCall, DeployedNames], list[Permission]]:
    """SQS queues (named by URL), secrets (by ARN), topics (by ARN): one resource per call."""

    def needs(call: RecordedCall, names: DeployedNames) -> list[Permission]:
        logical = _logical(call.target.get(field_name))
        if attribute is None:
            return [Permission(action, str(names.template.ref(logical)), f"!Ref {logical}")]
        return [Permission(action, names.template.get_att(logical, attribute), f"!GetAtt {logical}.{attribute}")]

    return needs


def _put_events(call: RecordedCall, names: DeployedNames) -> list[Permission]:
    permissions = []
    for entry in call.target.get("Entries", []):
        logical = _logical(entry.get("EventBusName"))
        permissions.append(Permission("events:PutEvents", names.arn(logical), f"!GetAtt {logical}.Arn"))
    return permissions


Needs = Callable[[RecordedCall, DeployedNames], list[Permission]]
# (service, operation) -> the permissions one call needs. The operations the functions use, and their kin.
OPERATIONS: dict[tuple[str, str], Needs] = {
    ("s3", "GetObject"): _s3_object("s3:GetObject"),
    ("s3", "HeadObject"): _s3_object("s3:GetObject"),
    ("s3", "PutObject"): _s3_object("s3:PutObject"),
    ("s3", "CreateMultipartUpload"): _s3_object("s3:PutObject"),
    ("s3", "UploadPart"): _s3_object("s3:PutObject"),
    ("s3", "CompleteMultipartUpload"): _s3_object("s3:PutObject"),
    ("s3", "AbortMultipartUpload"): _s3_object("s3:AbortMultipartUpload"),
    ("s3", "ListParts"): _s3_object("s3:ListMultipartUploadParts"),
    ("s3", "DeleteObject"): _s3_object("s3:DeleteObject"),
    ("s3", "ListObjectsV2"): _s3_bucket("s3:ListBucket"),
    ("s3", "ListObjects"): _s3_bucket("s3:ListBucket"),
    ("s3", "ListMultipartUploads"): _s3_bucket("s3:ListBucketMultipartUploads"),
    ("dynamodb", "GetItem"): _dynamodb("dynamodb:GetItem"),
    ("dynamodb", "PutItem"): _dynamodb("dynamodb:PutItem"),
    ("dynamodb", "UpdateItem"): _dynamodb("dynamodb:UpdateItem"),
    ("dynamodb", "DeleteItem"): _dynamodb("dynamodb:DeleteItem"),
    ("dynamodb", "Query"): _dynamodb("dynamodb:Query"),
    ("dynamodb", "Scan"): _dynamodb("dynamodb:Scan"),
    ("dynamodb", "TransactWriteItems"): _transaction,
    ("dynamodb", "TransactGetItems"): _transaction,
    ("dynamodb", "BatchGetItem"): _batch("dynamodb:BatchGetItem"),
    ("dynamodb", "BatchWriteItem"): _batch("dynamodb:BatchWriteItem"),
    ("sqs", "SendMessage"): _by_arn("QueueUrl", "sqs:SendMessage", "Arn"),
    ("sqs", "SendMessageBatch"): _by_arn("QueueUrl", "sqs:SendMessage", "Arn"),
    ("secretsmanager", "GetSecretValue"): _by_arn("SecretId", "secretsmanager:GetSecretValue", None),
    ("secretsmanager", "DescribeSecret"): _by_arn("SecretId", "secretsmanager:DescribeSecret", None),
    ("events", "PutEvents"): _put_events,
    ("sns", "Publish"): _by_arn("TopicArn", "sns:Publish", None),
}


def needed_permissions(call: RecordedCall, names: DeployedNames) -> list[Permission]:
    needs = OPERATIONS.get((call.service, call.operation))
    if needs is None:
        raise UnmappedCall(f"{call.service} {call.operation}: add its IAM action to OPERATIONS")
    return needs(call, names)


# ---- the verdict -----------------------------------------------------------------------------
@dataclass
class Verdict:
    """What is missing, unused or wider than used, per function; empty lists when the roles are exact."""

    missing: dict[str, dict[Permission, list[str]]] = field(default_factory=dict)
    unused: dict[str, list[str]] = field(default_factory=dict)
    wider: dict[str, list[str]] = field(default_factory=dict)
    uncheckable: list[str] = field(default_factory=list)
    used: dict[str, set[Permission]] = field(default_factory=dict)

    def used_text(self) -> str:
        """Each function's needs as recorded, grouped as a role would write them."""
        lines = []
        for function, needed in sorted(self.used.items()):
            lines.append(f"{function}:")
            lines.extend(f"  {p.action} on {p.hint}" for p in sorted(needed, key=lambda p: (p.action, p.hint)))
        return "\n".join(lines)

    def missing_text(self) -> str:
        lines = []
        for function, gaps in sorted(self.missing.items()):
            lines.append(f"{function} made calls its role does not allow; add:")
            for permission, examples in sorted(gaps.items()):
                shown = ", ".join(sorted(set(examples))[:3])
                lines.append(f"  {permission.action} on {permission.hint}   (e.g. {shown})")
        return "\n".join(self.uncheckable + lines)

    def excess_text(self) -> str:
        lines = []
        for function, grants in sorted(self.unused.items()):
            lines.append(f"{function}'s role allows what no recorded call used; remove:")
            lines.extend(f"  {g}" for g in grants)
        for function, grants in sorted(self.wider.items()):
            lines.append(f"{function}'s role allows more of the bucket than its calls touched; narrow:")
            lines.extend(f"  {g}" for g in grants)
        return "\n".join(lines)


def _example(call: RecordedCall) -> str:
    key = call.target.get("Key")
    return f"{call.operation} {key}" if key else call.operation


def judge(
    calls: Mapping[str, list[RecordedCall]],
    granted: Mapping[str, list[Statement]],
    platform: Mapping[str, list[Permission]],
    names: DeployedNames,
) -> Verdict:
    """Compare each function's recorded needs (and Lambda's own) with its statements."""
    verdict = Verdict()
    used: dict[str, set[Permission]] = {f: set(platform.get(f, [])) for f in granted}
    for function, function_calls in calls.items():
        if function not in granted:
            verdict.uncheckable.append(f"calls were recorded for {function}, which the template does not declare")
            continue
        for call in function_calls:
            try:
                needed = needed_permissions(call, names)
            except UnmappedCall as exc:
                verdict.uncheckable.append(f"{function}: {exc}")
                continue
            for permission in needed:
                used[function].add(permission)
                verdict.used.setdefault(function, set()).add(permission_key(permission))
                if not any(s.grants(permission) for s in granted[function]):
                    verdict.missing.setdefault(function, {}).setdefault(permission_key(permission), []).append(
                        _example(call)
                    )
    for function, permission_list in platform.items():
        for permission in permission_list:
            if function in granted and not any(s.grants(permission) for s in granted[function]):
                verdict.missing.setdefault(function, {}).setdefault(permission, []).append("Lambda itself")
    for function, statements in granted.items():
        for statement in statements:
            for action in statement.actions:
                for resource, source in zip(statement.resources, statement.sources, strict=True):
                    matched = [
                        p.resource
                        for p in used[function]
                        if _action_matches(action, p.action) and _resource_matches(resource, p.resource)
                    ]
                    where = f"{action} on {source}   [statement {statement.sid}]"
                    if not matched:
                        verdict.unused.setdefault(function, []).append(where)
                    elif (narrower := _narrower_prefix(resource, matched)) is not None:
                        verdict.wider.setdefault(function, []).append(f"{where}: every call was under {narrower}")
    return verdict


def permission_key(permission: Permission) -> Permission:
    """Missing permissions grouped by what to write: S3 objects by top-level prefix, the rest exactly."""
    match = re.fullmatch(r"(arn:aws:s3:::[^/]+)/(.*)", permission.resource)
    if match and "/" in match.group(2):
        top = match.group(2).split("/", 1)[0]
        return Permission(permission.action, f"{match.group(1)}/{top}/*", permission.hint)
    return permission


def _narrower_prefix(pattern: str, matched: list[str]) -> str | None:
    """A whole-bucket object grant whose calls all stayed in one top-level prefix: that prefix."""
    bucket = re.fullmatch(r"(arn:aws:s3:::[^/*]+)/\*", pattern)
    if bucket is None:
        return None
    tops = {r[len(bucket.group(1)) + 1 :].split("/", 1)[0] for r in matched}
    keys_in_folders = all("/" in r[len(bucket.group(1)) + 1 :] for r in matched)
    if len(tops) == 1 and keys_in_folders:
        return f"{tops.pop()}/"
    return None


def least_privilege_verdict(calls: Mapping[str, list[RecordedCall]], path: Path = TEMPLATE_PATH) -> Verdict:
    """The whole check: translate, name as deployed, compare with the recorded calls."""
    names = DeployedNames(translate(path), path)
    try:
        granted = granted_statements(names)
    except UncheckablePolicy as exc:
        return Verdict(uncheckable=[str(exc)])
    return judge(calls, granted, platform_permissions(names), names)
