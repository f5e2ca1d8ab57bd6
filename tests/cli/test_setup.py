"""`infinitetalk setup`: one API key in, both secrets stored, neither ever printed; a wrong key stores nothing."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from typer.testing import CliRunner, Result

from infinitetalk_cli.main import app
from infinitetalk_cli.stack_setup import SetupRefused, read_api_key
from infinitetalk_core.credentials import PLACEHOLDER_SECRET
from infinitetalk_core.models import JobStatus
from infinitetalk_core.submit_states import API_KEY_WAIT
from tests.cli.conftest import Stack
from tests.cli.factories import make_job
from wavespeed_standin import WaveSpeedStandin

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

runner = CliRunner()
API_KEY = "cli-setup-test-api-key-0123456789"
WEBHOOK_SECRET = "whsec_cli-setup-test-webhook-secret"
WRONG_KEY = "someone-elses-api-key-9876543210"


class CountingStandin:
    """The stand-in, and every API request it was asked (whether its key was right)."""

    def __init__(self, standin: WaveSpeedStandin) -> None:
        self.standin = standin
        self.requests: list[bool] = []
        original = standin.authorized

        def authorized(header: str | None) -> bool:
            verdict = original(header)
            self.requests.append(verdict)
            return verdict

        standin.authorized = authorized  # type: ignore[method-assign]

    @property
    def base_url(self) -> str:
        return self.standin.base_url


@pytest.fixture(scope="module")
def running_standin() -> Iterator[WaveSpeedStandin]:
    with WaveSpeedStandin(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET) as standin:
        yield standin


@pytest.fixture
def wavespeed(running_standin: WaveSpeedStandin) -> Iterator[CountingStandin]:
    original = running_standin.authorized
    yield CountingStandin(running_standin)
    running_standin.authorized = original  # type: ignore[method-assign]


@pytest.fixture
def secrets(stack: Stack) -> SecretsManagerClient:
    """The stack's two secrets as a deploy leaves them: holding the template's placeholder."""
    client: SecretsManagerClient = boto3.client("secretsmanager", region_name="us-east-1")
    for name in ("talk-api-key", "talk-webhook-secret"):
        client.create_secret(Name=name, SecretString=PLACEHOLDER_SECRET)
    return client


def arn(secrets: SecretsManagerClient, name: str) -> str:
    return secrets.describe_secret(SecretId=name)["ARN"]


def secret_state(secrets: SecretsManagerClient) -> dict[str, Any]:
    """Each secret's value and version ids: proof that nothing was stored."""
    state: dict[str, Any] = {}
    for name in ("talk-api-key", "talk-webhook-secret"):
        versions = secrets.list_secret_version_ids(SecretId=name)["Versions"]
        state[name] = (
            secrets.get_secret_value(SecretId=name)["SecretString"],
            sorted(v["VersionId"] for v in versions),
        )
    return state


def key_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wavespeed.key"
    path.write_text(text)
    return path


def run_setup(secrets: SecretsManagerClient, wavespeed: CountingStandin, *extra: str, **env: str | None) -> Result:
    arguments = [
        "setup",
        "--api-key-secret-id",
        arn(secrets, "talk-api-key"),
        "--webhook-secret-id",
        arn(secrets, "talk-webhook-secret"),
        "--wavespeed-url",
        wavespeed.base_url,
        *extra,
    ]
    return runner.invoke(app, arguments, env={"WAVESPEED_API_KEY": None, **env})


def printed(result: Result) -> str:
    return result.stdout + result.stderr


def test_setup_stores_the_key_and_the_webhook_secret_wavespeed_gives_for_it_and_prints_neither(
    secrets: SecretsManagerClient, wavespeed: CountingStandin, tmp_path: Path
) -> None:
    result = run_setup(secrets, wavespeed, "--api-key-file", str(key_file(tmp_path, API_KEY + "\n")))

    assert result.exit_code == 0, printed(result)
    assert secrets.get_secret_value(SecretId="talk-api-key")["SecretString"] == API_KEY
    assert secrets.get_secret_value(SecretId="talk-webhook-secret")["SecretString"] == WEBHOOK_SECRET
    assert wavespeed.requests == [True], "one authorised GET /webhook/secret"
    assert API_KEY not in printed(result)
    assert WEBHOOK_SECRET.removeprefix("whsec_") not in printed(result)
    for text in ("stored the webhook secret in", "stored the API key in", arn(secrets, "talk-api-key")):
        assert text in result.stdout


def test_setup_takes_the_key_from_the_environment_when_no_file_is_given(
    secrets: SecretsManagerClient, wavespeed: CountingStandin
) -> None:
    result = run_setup(secrets, wavespeed, WAVESPEED_API_KEY=API_KEY)

    assert result.exit_code == 0, printed(result)
    assert "from the WAVESPEED_API_KEY variable" in result.stdout
    assert secrets.get_secret_value(SecretId="talk-api-key")["SecretString"] == API_KEY
    assert API_KEY not in printed(result)


def test_setup_by_stack_name_finds_the_secrets_and_the_wavespeed_url_in_the_stack(
    secrets: SecretsManagerClient, wavespeed: CountingStandin
) -> None:
    template = {
        "Parameters": {"WaveSpeedBaseUrl": {"Type": "String"}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "ApiKeySecretArn": {"Value": arn(secrets, "talk-api-key")},
            "WebhookSecretArn": {"Value": arn(secrets, "talk-webhook-secret")},
        },
    }
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="talk",
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": "WaveSpeedBaseUrl", "ParameterValue": wavespeed.base_url}],
    )

    for arguments in (["setup", "--stack", "talk"], ["--stack", "talk", "setup"]):
        result = runner.invoke(app, arguments, env={"WAVESPEED_API_KEY": API_KEY})

        assert result.exit_code == 0, printed(result)
        assert f"WaveSpeed at {wavespeed.base_url} accepted the API key" in result.stdout
    assert secrets.get_secret_value(SecretId="talk-webhook-secret")["SecretString"] == WEBHOOK_SECRET


def test_a_stack_without_the_secret_outputs_is_refused_by_name(stack: Stack) -> None:
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="other", TemplateBody=json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
    )

    result = runner.invoke(app, ["setup", "--stack", "other"], env={"WAVESPEED_API_KEY": API_KEY})

    assert result.exit_code == 2
    assert "has no output ApiKeySecretArn, WebhookSecretArn" in result.stderr


def test_a_key_wavespeed_refuses_stores_nothing_and_says_so(
    secrets: SecretsManagerClient, wavespeed: CountingStandin, tmp_path: Path
) -> None:
    before = secret_state(secrets)

    result = run_setup(secrets, wavespeed, "--api-key-file", str(key_file(tmp_path, WRONG_KEY)))

    assert result.exit_code == 1
    assert "refused the API key (401)" in result.stderr
    assert "nothing was stored" in result.stderr
    assert wavespeed.requests == [False]
    assert secret_state(secrets) == before
    assert WRONG_KEY not in printed(result)


@pytest.mark.parametrize("text", [PLACEHOLDER_SECRET, "replace-me", "", "   \n", "short", "has spaces in it, 1234567"])
def test_a_placeholder_or_malformed_key_is_refused_before_asking_wavespeed(
    secrets: SecretsManagerClient, wavespeed: CountingStandin, tmp_path: Path, text: str
) -> None:
    before = secret_state(secrets)

    result = run_setup(secrets, wavespeed, "--api-key-file", str(key_file(tmp_path, text)))

    assert result.exit_code == 2
    assert "is a placeholder or cannot be a WaveSpeed key" in result.stderr
    assert wavespeed.requests == []
    assert secret_state(secrets) == before


def test_with_no_key_anywhere_and_no_terminal_setup_names_the_three_ways_and_stores_nothing(
    secrets: SecretsManagerClient, wavespeed: CountingStandin
) -> None:
    before = secret_state(secrets)

    result = run_setup(secrets, wavespeed)

    assert result.exit_code == 2
    for way in ("--api-key-file PATH", "WAVESPEED_API_KEY", "hidden prompt"):
        assert way in result.stderr
    assert wavespeed.requests == []
    assert secret_state(secrets) == before


def test_a_key_on_the_command_line_is_not_an_option_and_is_not_echoed(
    secrets: SecretsManagerClient, wavespeed: CountingStandin
) -> None:
    before = secret_state(secrets)

    result = run_setup(secrets, wavespeed, "--api-key", API_KEY)

    assert result.exit_code == 2
    assert "--api-key" in result.stderr
    assert API_KEY not in printed(result)
    assert wavespeed.requests == []
    assert secret_state(secrets) == before


@pytest.mark.parametrize(
    ("make_file", "message"),
    [
        (lambda folder: folder / "absent.key", "No such file"),
        (lambda folder: folder, "Is a directory"),
        (lambda folder: key_file(folder, API_KEY + "x" * 5000), "longer than 4096 bytes"),
    ],
    ids=["missing", "a-directory", "too-long"],
)
def test_an_unusable_key_file_is_refused_and_nothing_is_stored(
    secrets: SecretsManagerClient, wavespeed: CountingStandin, tmp_path: Path, make_file: Any, message: str
) -> None:
    before = secret_state(secrets)

    result = run_setup(secrets, wavespeed, "--api-key-file", str(make_file(tmp_path)))

    assert result.exit_code == 2
    assert message in result.stderr
    assert wavespeed.requests == []
    assert secret_state(secrets) == before


def test_a_webhook_secret_that_is_not_whsec_is_refused_and_nothing_is_stored(
    secrets: SecretsManagerClient, tmp_path: Path
) -> None:
    before = secret_state(secrets)
    with WaveSpeedStandin(api_key=API_KEY, webhook_secret="plain-secret-without-prefix") as odd:
        result = run_setup(secrets, CountingStandin(odd), "--api-key-file", str(key_file(tmp_path, API_KEY)))

    assert result.exit_code == 1
    assert "not a whsec_... value" in result.stderr
    assert "plain-secret-without-prefix" not in printed(result)
    assert secret_state(secrets) == before


def test_an_unreachable_wavespeed_stores_nothing(secrets: SecretsManagerClient, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    before = secret_state(secrets)

    result = runner.invoke(
        app,
        [
            "setup",
            "--api-key-secret-id",
            "talk-api-key",
            "--webhook-secret-id",
            "talk-webhook-secret",
            "--wavespeed-url",
            f"http://127.0.0.1:{closed_port}/api/v3",
            "--api-key-file",
            str(key_file(tmp_path, API_KEY)),
        ],
    )

    assert result.exit_code == 1
    assert "could not reach WaveSpeed" in result.stderr
    assert secret_state(secrets) == before


def test_the_key_is_never_sent_over_plain_http_to_another_host(secrets: SecretsManagerClient, tmp_path: Path) -> None:
    before = secret_state(secrets)

    result = runner.invoke(
        app,
        [
            "setup",
            "--api-key-secret-id",
            "talk-api-key",
            "--webhook-secret-id",
            "talk-webhook-secret",
            "--wavespeed-url",
            "http://api.wavespeed.ai/api/v3",
            "--api-key-file",
            str(key_file(tmp_path, API_KEY)),
        ],
    )

    assert result.exit_code == 2
    assert "must be an https URL" in result.stderr
    assert secret_state(secrets) == before


def test_a_failed_store_says_exactly_what_was_stored(
    secrets: SecretsManagerClient, wavespeed: CountingStandin, tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        [
            "setup",
            "--api-key-secret-id",
            "no-such-secret",
            "--webhook-secret-id",
            "talk-webhook-secret",
            "--wavespeed-url",
            wavespeed.base_url,
            "--api-key-file",
            str(key_file(tmp_path, API_KEY)),
        ],
    )

    assert result.exit_code == 1
    assert "could not store the API key in no-such-secret" in result.stderr
    assert "the webhook secret was stored in talk-webhook-secret" in result.stderr
    assert secrets.get_secret_value(SecretId="talk-api-key")["SecretString"] == PLACEHOLDER_SECRET
    assert API_KEY not in printed(result)


def test_setup_without_a_stack_or_secret_ids_names_what_to_pass(stack: Stack) -> None:
    result = runner.invoke(app, ["setup"], env={"WAVESPEED_API_KEY": API_KEY})

    assert result.exit_code == 2
    assert "pass --stack NAME" in result.stderr
    assert "--api-key-secret-id" in result.stderr


def test_the_key_comes_from_the_file_then_the_environment_then_the_prompt(tmp_path: Path) -> None:
    path = key_file(tmp_path, " file-key-0123456789abcdef \n")
    asked: list[bool] = []

    def prompt() -> str:
        asked.append(True)
        return "prompt-key-0123456789abcdef"

    environment = {"WAVESPEED_API_KEY": "env-key-0123456789abcdef"}
    assert read_api_key(str(path), environment, prompt).value == "file-key-0123456789abcdef"
    assert read_api_key("-", environment, prompt, stdin=io.StringIO("stdin-key-0123456789abcdef\n")).value == (
        "stdin-key-0123456789abcdef"
    )
    assert read_api_key(None, environment, prompt).value == "env-key-0123456789abcdef"
    assert asked == []
    assert read_api_key(None, {}, prompt).value == "prompt-key-0123456789abcdef"
    assert asked == [True]
    with pytest.raises(SetupRefused, match="no API key given"):
        read_api_key(None, {}, None)


def test_status_shows_a_job_waiting_for_the_key_with_the_command_to_run(stack: Stack) -> None:
    stack.jobs.put_new(make_job("anchor", JobStatus.RECEIVED, error=API_KEY_WAIT))
    stack.jobs.put_new(make_job("other", JobStatus.RECEIVED, digest="fedcba987654", error="rate limited (429)"))

    result = runner.invoke(app, ["status"])

    assert result.exit_code == 0, printed(result)
    assert API_KEY_WAIT in result.stdout
    assert "1 job waits for the WaveSpeed API key" in result.stderr
    assert "run `infinitetalk setup --stack NAME`" in result.stderr
