"""Store a stack's two WaveSpeed secrets from one API key, so nobody pastes a secret by hand.

The key comes from a file, the environment or a hidden prompt, never from the command line (which
shells keep in their history and other users see in the process list). WaveSpeed itself hands out
the webhook secret for the key, so a key it refuses stores nothing. Neither secret is ever printed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
import httpx
from botocore.exceptions import BotoCoreError, ClientError

from infinitetalk_core.credentials import (
    LOOPBACK_HOSTS,
    CredentialNotSet,
    api_key_may_go_to,
    require_api_key,
    require_webhook_secret,
)
from infinitetalk_core.outbound import OutputDownloader, OutputPolicy
from infinitetalk_core.settings import DEFAULT_WAVESPEED_URL
from infinitetalk_core.wavespeed import WaveSpeedError
from infinitetalk_core.wavespeed_client import WaveSpeedClient

from .connection import (
    CLIENT_CONFIG,
    DEFAULT_REGION,
    ConnectionOptions,
    NotConfigured,
    StackDescription,
    describe_stack,
)

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

API_KEY_OUTPUT = "ApiKeySecretArn"
WEBHOOK_SECRET_OUTPUT = "WebhookSecretArn"  # noqa: S105 - the name of a stack output
BASE_URL_PARAMETER = "WaveSpeedBaseUrl"
API_KEY_VARIABLE = "WAVESPEED_API_KEY"
MAX_KEY_FILE_BYTES = 4096
NOTHING_STORED = "nothing was stored"

StackDescriber = Callable[[str, str, str | None], StackDescription]


class SetupRefused(Exception):
    """Setup stopped before storing anything (or says exactly what it stored); ``usage`` for a bad key given."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class SecretTargets:
    """Where the two secrets go, and which WaveSpeed to ask for the webhook secret."""

    api_key_secret_id: str
    webhook_secret_id: str
    wavespeed_url: str
    region: str
    endpoint_url: str | None
    source: str


@dataclass(frozen=True)
class ApiKey:
    value: str
    origin: str


@dataclass(frozen=True)
class StoredSecret:
    what: str
    secret_id: str
    version_id: str


def resolve_targets(
    options: ConnectionOptions,
    api_key_secret_id: str | None,
    webhook_secret_id: str | None,
    wavespeed_url: str | None,
    describe: StackDescriber = describe_stack,
) -> SecretTargets:
    """The stack's ``ApiKeySecretArn``/``WebhookSecretArn`` outputs, or the ids given directly."""
    region = options.region or DEFAULT_REGION
    if options.stack:
        stack = describe(options.stack, region, options.endpoint_url)
        api_key_secret_id = api_key_secret_id or stack.outputs.get(API_KEY_OUTPUT)
        webhook_secret_id = webhook_secret_id or stack.outputs.get(WEBHOOK_SECRET_OUTPUT)
        missing = [
            key
            for key, value in ((API_KEY_OUTPUT, api_key_secret_id), (WEBHOOK_SECRET_OUTPUT, webhook_secret_id))
            if not value
        ]
        if missing:
            raise NotConfigured(
                f"stack {options.stack!r} has no output {', '.join(missing)}; is it an InfiniteTalk stack? "
                "Pass --api-key-secret-id and --webhook-secret-id instead."
            )
        wavespeed_url = wavespeed_url or stack.parameters.get(BASE_URL_PARAMETER) or DEFAULT_WAVESPEED_URL
        source = f"stack {options.stack}"
    elif api_key_secret_id and webhook_secret_id:
        wavespeed_url = wavespeed_url or DEFAULT_WAVESPEED_URL
        source = "command-line options"
    else:
        raise NotConfigured(
            "setup needs a stack: pass --stack NAME (a deployed stack), or both --api-key-secret-id and "
            "--webhook-secret-id (with --endpoint-url for a local AWS endpoint)"
        )
    assert api_key_secret_id is not None
    assert webhook_secret_id is not None
    check_wavespeed_url(wavespeed_url)
    return SecretTargets(
        api_key_secret_id=api_key_secret_id,
        webhook_secret_id=webhook_secret_id,
        wavespeed_url=wavespeed_url.rstrip("/"),
        region=region,
        endpoint_url=options.endpoint_url,
        source=source,
    )


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in LOOPBACK_HOSTS


def check_wavespeed_url(url: str) -> None:
    """The key travels to this URL: over https, or plain http to this machine only."""
    if api_key_may_go_to(url):
        return
    raise NotConfigured(
        f"--wavespeed-url {url!r} must be an https URL (plain http only to 127.0.0.1 or localhost): "
        "the API key is sent to it"
    )


def read_api_key(
    api_key_file: str | None,
    environ: Mapping[str, str],
    prompt: Callable[[], str] | None,
    stdin: IO[str] | None = None,
) -> ApiKey:
    """The key from ``--api-key-file`` (``-`` for standard input), else ``WAVESPEED_API_KEY``, else a prompt."""
    if api_key_file is not None:
        if api_key_file == "-":
            text = (stdin or sys.stdin).read(MAX_KEY_FILE_BYTES + 1)
            origin = "standard input"
        else:
            try:
                with open(api_key_file, "rb") as handle:
                    raw = handle.read(MAX_KEY_FILE_BYTES + 1)
            except OSError as exc:
                raise SetupRefused(
                    f"--api-key-file {api_key_file}: {exc.strerror or exc}; {NOTHING_STORED}", usage=True
                ) from exc
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SetupRefused(
                    f"--api-key-file {api_key_file} is not text; it should hold only the key; {NOTHING_STORED}",
                    usage=True,
                ) from exc
            origin = api_key_file
        if len(text) > MAX_KEY_FILE_BYTES:
            raise SetupRefused(
                f"--api-key-file {api_key_file} is longer than {MAX_KEY_FILE_BYTES} bytes; "
                f"it should hold only the key; {NOTHING_STORED}",
                usage=True,
            )
        return ApiKey(value=text.strip(), origin=origin)
    if environ.get(API_KEY_VARIABLE):
        return ApiKey(value=environ[API_KEY_VARIABLE].strip(), origin=f"the {API_KEY_VARIABLE} variable")
    if prompt is None:
        raise SetupRefused(
            f"no API key given: pass --api-key-file PATH (or - for standard input), set {API_KEY_VARIABLE}, "
            f"or run setup in a terminal to type it at a hidden prompt; {NOTHING_STORED}",
            usage=True,
        )
    return ApiKey(value=prompt().strip(), origin="the prompt")


def check_api_key(key: ApiKey) -> str:
    try:
        return require_api_key(key.value)
    except CredentialNotSet as exc:
        raise SetupRefused(
            f"the API key from {key.origin} is a placeholder or cannot be a WaveSpeed key "
            f"(expected 16 to 512 letters, digits or ._~+/=-); {NOTHING_STORED}",
            usage=True,
        ) from exc


def fetch_webhook_secret(url: str, api_key: str, http: httpx.Client) -> str:
    """Ask WaveSpeed for the key's webhook secret: a refusal here means the key is wrong."""
    # Setup never downloads an output: an empty allow-list refuses every one.
    client = WaveSpeedClient(url, lambda: api_key, http, outputs=OutputDownloader(OutputPolicy(hosts=()), http))
    try:
        secret = client.webhook_secret()
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise SetupRefused(
                f"WaveSpeed at {url} refused the API key ({status}): check that it is the key of your "
                f"WaveSpeed account; {NOTHING_STORED}"
            ) from exc
        raise SetupRefused(
            f"WaveSpeed at {url} answered {status} when asked for the webhook secret; try again later; {NOTHING_STORED}"
        ) from exc
    except httpx.HTTPError as exc:
        raise SetupRefused(f"could not reach WaveSpeed at {url} ({type(exc).__name__}); {NOTHING_STORED}") from exc
    except (WaveSpeedError, KeyError, TypeError, ValueError) as exc:
        # The answer's text is not repeated: it may hold the secret in an unexpected shape.
        raise SetupRefused(
            f"WaveSpeed at {url} answered without a webhook secret; is --wavespeed-url the API's base URL "
            f"(like {DEFAULT_WAVESPEED_URL})? {NOTHING_STORED}"
        ) from exc
    try:
        return require_webhook_secret(secret)
    except CredentialNotSet as exc:
        raise SetupRefused(
            f"WaveSpeed at {url} answered a webhook secret that is not a whsec_... value; {NOTHING_STORED}"
        ) from exc


def store_secrets(
    secrets: SecretsManagerClient, targets: SecretTargets, api_key: str, webhook_secret: str
) -> list[StoredSecret]:
    """The webhook secret first: a key stored alone would start tasks whose webhooks nobody can verify."""
    stored: list[StoredSecret] = []
    for what, secret_id, value in (
        ("webhook secret", targets.webhook_secret_id, webhook_secret),
        ("API key", targets.api_key_secret_id, api_key),
    ):
        try:
            answer = secrets.put_secret_value(SecretId=secret_id, SecretString=value)
        except (ClientError, BotoCoreError) as exc:
            done = "; ".join(f"the {s.what} was stored in {s.secret_id}" for s in stored) or NOTHING_STORED
            raise SetupRefused(f"could not store the {what} in {secret_id}: {exc}; {done}") from exc
        stored.append(StoredSecret(what=what, secret_id=secret_id, version_id=str(answer.get("VersionId", "?"))))
    return stored


def wavespeed_http(url: str) -> httpx.Client:
    """No redirects (the key must not follow one); proxies from the environment only for remote hosts."""
    return httpx.Client(
        timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=False, trust_env=not is_loopback(url)
    )


def secrets_client(targets: SecretTargets) -> SecretsManagerClient:
    session = boto3.session.Session(region_name=targets.region)
    client: SecretsManagerClient = session.client(
        "secretsmanager", endpoint_url=targets.endpoint_url, config=CLIENT_CONFIG
    )
    return client


def set_up(
    targets: SecretTargets,
    key: ApiKey,
    secrets: SecretsManagerClient,
    http: httpx.Client,
) -> list[StoredSecret]:
    """Check the key, ask WaveSpeed for its webhook secret, check that, then store both."""
    api_key = check_api_key(key)
    webhook_secret = fetch_webhook_secret(targets.wavespeed_url, api_key, http)
    return store_secrets(secrets, targets, api_key, webhook_secret)
