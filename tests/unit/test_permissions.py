"""The least-privilege check itself: the call-to-permission table, the matcher and the verdict.

The end-to-end check trusts these pieces, so each one is shown here to catch what it must catch.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.stub import Stubber
from s3transfer.futures import BoundedExecutor

from infinitetalk_core import clients, pipeline
from local_stack.calls import (
    CallRecorder,
    RecordedCall,
    call_target,
    invocation_of,
    learn_resource_names,
    running_function,
)
from local_stack.permissions import (
    DEPLOYED_ACCOUNT,
    DEPLOYED_REGION,
    DeployedNames,
    Permission,
    Statement,
    UncheckablePolicy,
    UnmappedCall,
    granted_statements,
    judge,
    needed_permissions,
    platform_permissions,
    translate,
)
from local_stack.runtime import LocalFunction
from local_stack.template import Physical, Template

BUCKET = "privilege-check-media-111122223333-eu-west-3"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translate()


@pytest.fixture(scope="module")
def names(translated: dict[str, Any]) -> DeployedNames:
    return DeployedNames(translated)


def call(operation: str, service: str = "s3", status: int | None = 200, **target: Any) -> RecordedCall:
    return RecordedCall(
        function="FetchFunction",
        thread="fetch",
        on_main_thread=False,
        service=service,
        operation=operation,
        target=target,
        status=status,
    )


def actions_on(permissions: list[Permission]) -> list[tuple[str, str]]:
    return [(p.action, p.resource) for p in permissions]


# ---- the table ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("operation", "action"),
    [
        ("GetObject", "s3:GetObject"),
        ("HeadObject", "s3:GetObject"),
        ("PutObject", "s3:PutObject"),
        ("CreateMultipartUpload", "s3:PutObject"),
        ("UploadPart", "s3:PutObject"),
        ("CompleteMultipartUpload", "s3:PutObject"),
        ("AbortMultipartUpload", "s3:AbortMultipartUpload"),
        ("DeleteObject", "s3:DeleteObject"),
    ],
)
def test_an_object_operation_needs_its_action_on_that_object(names: DeployedNames, operation: str, action: str) -> None:
    needed = needed_permissions(call(operation, Bucket="@MediaBucket", Key="outputs/anchor/video.mp4"), names)
    assert actions_on(needed) == [(action, f"{BUCKET_ARN}/outputs/anchor/video.mp4")]


def test_a_missing_object_answered_404_also_needs_listing_the_bucket(names: DeployedNames) -> None:
    found = needed_permissions(call("HeadObject", Bucket="@MediaBucket", Key="library/a.png"), names)
    missing = needed_permissions(call("HeadObject", status=404, Bucket="@MediaBucket", Key="library/a.png"), names)
    assert [p.action for p in found] == ["s3:GetObject"]
    assert actions_on(missing) == [("s3:GetObject", f"{BUCKET_ARN}/library/a.png"), ("s3:ListBucket", BUCKET_ARN)]


def test_listing_needs_bucket_level_actions(names: DeployedNames) -> None:
    listing = needed_permissions(call("ListObjectsV2", Bucket="@MediaBucket", Prefix="inbox/a/"), names)
    uploads = needed_permissions(call("ListMultipartUploads", Bucket="@MediaBucket", Prefix="inbox/a/"), names)
    assert actions_on(listing) == [("s3:ListBucket", BUCKET_ARN)]
    assert actions_on(uploads) == [("s3:ListBucketMultipartUploads", BUCKET_ARN)]


def test_a_query_on_an_index_needs_the_index_arn_and_on_the_table_the_table_arn(names: DeployedNames) -> None:
    table = names.arn("JobsTable")
    on_index = needed_permissions(
        call("Query", service="dynamodb", TableName="@JobsTable", IndexName="NameIndex"), names
    )
    on_table = needed_permissions(call("Query", service="dynamodb", TableName="@LedgerTable"), names)
    assert actions_on(on_index) == [("dynamodb:Query", f"{table}/index/NameIndex")]
    assert actions_on(on_table) == [("dynamodb:Query", names.arn("LedgerTable"))]


def test_a_transaction_needs_each_items_action_on_each_items_table(names: DeployedNames) -> None:
    items = [
        {"Update": {"TableName": "@JobsTable"}},
        {"Put": {"TableName": "@LedgerTable"}},
        {"ConditionCheck": {"TableName": "@LedgerTable"}},
        {"Delete": {"TableName": "@JobsTable"}},
    ]
    needed = needed_permissions(call("TransactWriteItems", service="dynamodb", TransactItems=items), names)
    assert actions_on(needed) == [
        ("dynamodb:UpdateItem", names.arn("JobsTable")),
        ("dynamodb:PutItem", names.arn("LedgerTable")),
        ("dynamodb:ConditionCheckItem", names.arn("LedgerTable")),
        ("dynamodb:DeleteItem", names.arn("JobsTable")),
    ]


def test_queues_secrets_and_the_bus_are_named_by_their_deployed_arns(names: DeployedNames) -> None:
    queue = needed_permissions(call("SendMessage", service="sqs", QueueUrl="@FetchQueue"), names)
    secret = needed_permissions(
        call("GetSecretValue", service="secretsmanager", SecretId="@WaveSpeedWebhookSecret"), names
    )
    events = needed_permissions(
        call("PutEvents", service="events", Entries=[{"EventBusName": "@JobEventBus"}] * 2), names
    )
    assert actions_on(queue) == [("sqs:SendMessage", names.template.get_att("FetchQueue", "Arn"))]
    assert queue[0].resource.startswith(f"arn:aws:sqs:{DEPLOYED_REGION}:{DEPLOYED_ACCOUNT}:")
    assert secret[0].action == "secretsmanager:GetSecretValue" and "WaveSpeedWebhookSecret" in secret[0].resource
    assert actions_on(events) == [("events:PutEvents", names.arn("JobEventBus"))] * 2


def test_an_operation_not_in_the_table_or_a_resource_the_stack_did_not_make_is_an_error(names: DeployedNames) -> None:
    with pytest.raises(UnmappedCall, match="CopyObject"):
        needed_permissions(call("CopyObject", Bucket="@MediaBucket", Key="outputs/a"), names)
    with pytest.raises(UnmappedCall, match="someone-elses-bucket"):
        needed_permissions(call("GetObject", Bucket="someone-elses-bucket", Key="x"), names)


# ---- the recorder -----------------------------------------------------------------------------
def test_a_request_is_recorded_by_logical_id_and_without_its_body() -> None:
    learn_resource_names({"MediaBucket": Physical(ref="local-bucket", attributes={"Arn": "arn:aws:s3:::local-bucket"})})
    target = call_target({"Bucket": "local-bucket", "Key": "outputs/a/video.mp4", "Body": b"x" * 10})
    assert target == {"Bucket": "@MediaBucket", "Key": "outputs/a/video.mp4"}
    assert call_target({"Bucket": "unknown-bucket"}) == {"Bucket": "unknown-bucket"}


@pytest.fixture
def shared_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The functions' own cached S3 client, answering from a stub instead of the network."""
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clients.reset_clients()
    yield clients.s3_client()
    clients.reset_clients()


def test_calls_are_attributed_to_the_running_function_even_on_transfer_threads(shared_s3: Any) -> None:
    """boto3's multipart uploads run on worker threads; the recorder must still know whose calls they are."""
    stubber = Stubber(shared_s3)
    stubber.add_response("put_object", {}, {"Bucket": "b", "Key": "outputs/a.json", "Body": b"{}"})
    seen_on_worker: list[str | None] = []
    with CallRecorder() as recorder, stubber, invocation_of("FetchFunction"):
        shared_s3.put_object(Bucket="b", Key="outputs/a.json", Body=b"{}")
        executor = BoundedExecutor(max_size=2, max_num_threads=2)
        executor.submit(_Task(lambda: seen_on_worker.append(running_function.get()))).result()  # type: ignore[arg-type]
        executor.shutdown()
    assert [(c.function, c.operation, c.target, c.status) for c in recorder.calls] == [
        ("FetchFunction", "PutObject", {"Bucket": "b", "Key": "outputs/a.json"}, 200)
    ]
    assert seen_on_worker == ["FetchFunction"]


def test_a_presigned_url_counts_as_a_read_by_the_function_that_signed_it(shared_s3: Any) -> None:
    with CallRecorder() as recorder, invocation_of("SubmitFunction"):
        shared_s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "inbox/a/image.png"})
    assert [(c.function, c.operation, c.presigned) for c in recorder.calls] == [("SubmitFunction", "GetObject", True)]


def test_each_local_function_builds_its_own_pipeline_as_its_own_lambda_process_would() -> None:
    """Shared caches (a secret one function read) would hide another function's calls from the recorder."""
    template = Template()
    template.set_parameters({})
    specs = {spec.logical_id: spec for spec in template.functions()}
    loaded = [LocalFunction(specs[name], log=lambda source, line: None) for name in ("SubmitFunction", "FetchFunction")]
    own = [inspect.unwrap(function._handler).__globals__["get_pipeline"] for function in loaded]
    assert own[0] is not own[1]
    assert pipeline.get_pipeline not in own


class _Task:
    """The smallest thing s3transfer's executor accepts as a task."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work
        self.transfer_id = 1

    def __call__(self, *botocore_context: object) -> None:
        self.work()


# ---- the verdict ------------------------------------------------------------------------------
def statement(sid: str, actions: list[str], resources: list[str]) -> Statement:
    return Statement(sid=sid, actions=tuple(actions), resources=tuple(resources), sources=tuple(resources))


def test_the_verdict_names_each_missing_unused_and_too_wide_grant(names: DeployedNames) -> None:
    calls = {
        "FetchFunction": [
            call("UploadPart", Bucket="@MediaBucket", Key="outputs/a/video.mp4"),
            call("AbortMultipartUpload", Bucket="@MediaBucket", Key="outputs/b/video.mp4"),
            call("GetObject", Bucket="@MediaBucket", Key="outputs/a/video.mp4"),
        ]
    }
    granted = {
        "FetchFunction": [
            statement("Store", ["s3:PutObject", "s3:DeleteObject"], [f"{BUCKET_ARN}/outputs/*"]),
            statement("Read", ["s3:GetObject"], [f"{BUCKET_ARN}/*"]),
        ]
    }
    verdict = judge(calls, granted, {}, names)
    assert {p.action for p in verdict.missing["FetchFunction"]} == {"s3:AbortMultipartUpload"}
    assert verdict.unused == {"FetchFunction": [f"s3:DeleteObject on {BUCKET_ARN}/outputs/*   [statement Store]"]}
    assert "every call was under outputs/" in verdict.wider["FetchFunction"][0]
    assert "s3:AbortMultipartUpload on" in verdict.missing_text()


def test_exact_grants_give_an_empty_verdict(names: DeployedNames) -> None:
    calls = {"FetchFunction": [call("PutObject", Bucket="@MediaBucket", Key="outputs/a/result.json")]}
    granted = {"FetchFunction": [statement("Store", ["s3:PutObject"], [f"{BUCKET_ARN}/outputs/*"])]}
    verdict = judge(calls, granted, {}, names)
    assert (verdict.missing, verdict.unused, verdict.wider) == ({}, {}, {})
    assert verdict.missing_text() == "" and verdict.excess_text() == ""


def test_a_wildcard_resource_matches_only_what_it_spells() -> None:
    grant = statement("S", ["s3:GetObject"], [f"{BUCKET_ARN}/outputs/*"])
    assert grant.grants(Permission("s3:GetObject", f"{BUCKET_ARN}/outputs/a/video.mp4"))
    assert grant.grants(Permission("S3:getobject", f"{BUCKET_ARN}/outputs/"))
    assert not grant.grants(Permission("s3:GetObject", f"{BUCKET_ARN}/inbox/a/image.png"))
    assert not grant.grants(Permission("s3:GetObject", f"{BUCKET_ARN}/outputsX/a"))
    assert not grant.grants(Permission("s3:PutObject", f"{BUCKET_ARN}/outputs/a"))
    assert not grant.grants(Permission("s3:GetObject", f"{BUCKET_ARN}x/outputs/a"))


def with_function_role(translated: dict[str, Any], change: dict[str, Any]) -> DeployedNames:
    document = copy.deepcopy(translated)
    document["Resources"]["FetchFunctionRole"]["Properties"].update(change)
    return DeployedNames(document)


def test_grants_the_check_cannot_judge_exactly_are_refused(translated: dict[str, Any]) -> None:
    managed = with_function_role(translated, {"ManagedPolicyArns": ["arn:aws:iam::aws:policy/AmazonS3FullAccess"]})
    with pytest.raises(UncheckablePolicy, match="managed policies"):
        granted_statements(managed)
    for extra in (
        {"Action": "s3:*"},
        {"Condition": {"StringLike": {"s3:prefix": "outputs/*"}}},
        {"Effect": "Deny"},
    ):
        document = copy.deepcopy(translated)
        policy = document["Resources"]["FetchFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        policy["Statement"][0].update(extra)
        with pytest.raises(UncheckablePolicy):
            granted_statements(DeployedNames(document))


# ---- the template's roles, whatever the recordings say ---------------------------------------
@pytest.fixture(scope="module")
def roles(names: DeployedNames) -> dict[str, list[Statement]]:
    return granted_statements(names)


def test_every_function_has_its_own_role_of_plain_statements(translated: dict[str, Any]) -> None:
    functions = {k: v for k, v in translated["Resources"].items() if v["Type"] == "AWS::Lambda::Function"}
    roles = [v["Properties"]["Role"]["Fn::GetAtt"][0] for v in functions.values()]
    assert len(set(roles)) == len(functions) == 4
    for role in roles:
        assert "ManagedPolicyArns" not in translated["Resources"][role]["Properties"]


def test_no_function_may_change_or_delete_anything_outside_outputs(roles: dict[str, list[Statement]]) -> None:
    writes = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:PutObjectAcl", "s3:RestoreObject"}
    for function, statements in roles.items():
        for grant in statements:
            if writes & set(grant.actions):
                assert all(r == f"{BUCKET_ARN}/outputs/*" for r in grant.resources), (function, grant)
            assert all(r != "*" for r in grant.resources), (function, grant)


def test_each_secret_is_readable_only_by_the_functions_that_use_it(roles: dict[str, list[Statement]]) -> None:
    readers: dict[str, set[str]] = {}
    for function, statements in roles.items():
        for grant in statements:
            if "secretsmanager:GetSecretValue" in grant.actions:
                for resource in grant.resources:
                    readers.setdefault(resource.split(":secret:")[1].split("-")[2], set()).add(function)
    assert readers == {
        "WaveSpeedWebhookSecret": {"CallbackFunction"},
        "WaveSpeedApiKeySecret": {"SubmitFunction", "FetchFunction", "ReconcileFunction"},
    }


def test_lambda_itself_may_write_each_functions_own_log_and_poll_only_its_own_queue(
    names: DeployedNames, roles: dict[str, list[Statement]]
) -> None:
    platform = platform_permissions(names)
    for function, needs in platform.items():
        for need in needs:
            assert any(s.grants(need) for s in roles[function]), (function, need)
        others = [n for f, ns in platform.items() if f != function for n in ns]
        for need in others:
            assert not any(s.grants(need) for s in roles[function]), (function, need)


@pytest.fixture(autouse=True)
def no_recorder_left_behind() -> Iterator[None]:
    yield
    assert clients._call_observers == []
    assert BoundedExecutor.EXECUTOR_CLS.__name__ == "ThreadPoolExecutor"
