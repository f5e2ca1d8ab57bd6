"""Outbound requests that cannot be turned against the stack: task ids, output URLs, addresses, sizes, keys.

Requests go to an httpx ``MockTransport`` that records them, or to a server on 127.0.0.1 that
counts what reaches it, so each test can show what was (and was not) sent.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpcore
import httpx
import pytest
from samtranslator.yaml_helper import yaml_parse

from infinitetalk_core import clients
from infinitetalk_core.delivery import store_outputs
from infinitetalk_core.models import ModelName
from infinitetalk_core.outbound import (
    MAX_REDIRECTS,
    CheckedNetworkBackend,
    OutputDownloader,
    OutputPolicy,
    OutputRefused,
    OutputTooLarge,
    address_kind,
    tls_context,
)
from infinitetalk_core.output_hosts import DEFAULT_OUTPUT_HOSTS
from infinitetalk_core.pipeline import Pipeline, build_pipeline
from infinitetalk_core.settings import Settings
from infinitetalk_core.wavespeed import (
    NotATaskId,
    Prediction,
    SubmitOutcomeUnknown,
    TaskUnavailable,
    TemporarilyUnavailable,
)
from infinitetalk_core.wavespeed_client import WaveSpeedClient
from tests.unit.test_settings import REQUIRED

BASE = "https://api.wavespeed.test/api/v3"
KEY = "ws-key-4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99"
TASK = "0123456789abcdef0123456789abcdef"
CDN = "https://cdn.wavespeed.ai/outputs/video.mp4"
DEFAULT = OutputPolicy.parse(DEFAULT_OUTPUT_HOSTS)
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A mock network: answers each request with ``handler`` and keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    @property
    def urls(self) -> list[str]:
        return [str(request.url) for request in self.requests]


def envelope(data: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"code": 200, "message": "success", "data": data})


def prediction(task_id: str = TASK, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "model": ModelName.SINGLE.value, "status": "completed", "outputs": [CDN], **fields}


def wavespeed(api: Recorder, cdn: Recorder, policy: OutputPolicy = DEFAULT) -> WaveSpeedClient:
    return WaveSpeedClient(BASE, lambda: KEY, api.client(), outputs=OutputDownloader(policy, cdn.client()))


def video(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"\0\0\0\x18ftypmp42" + bytes(1000), headers={"content-type": "video/mp4"})


# ---- task ids never reach a URL unless they are WaveSpeed's shape -----------------------------------

HOSTILE_TASK_IDS = [
    "../../webhook/secret#",
    "../../webhook/secret?",
    "..%2f..%2fwebhook%2fsecret",
    "0123456789abcdef0123456789abcde/",
    "0123456789ABCDEF0123456789ABCDEF",
    "0123456789abcdef0123456789abcde",
    "0123456789abcdef0123456789abcdef0",
    "0123456789abcdef0123456789abcdef\n",
    " 0123456789abcdef0123456789abcdef",
    "",
    "task-1",
]


@pytest.mark.parametrize("task_id", HOSTILE_TASK_IDS)
def test_a_task_id_of_another_shape_is_never_put_into_a_url(task_id: str) -> None:
    api, cdn = Recorder(lambda r: envelope(prediction())), Recorder(video)
    with pytest.raises(NotATaskId, match="not a WaveSpeed task id"):
        wavespeed(api, cdn).result(task_id)
    assert api.requests == [] and cdn.requests == []


def test_a_task_id_of_wavespeeds_shape_asks_exactly_its_own_result_with_the_key() -> None:
    api = Recorder(lambda r: envelope(prediction()))
    assert wavespeed(api, Recorder(video)).result(TASK).id == TASK
    (request,) = api.requests
    assert str(request.url) == f"{BASE}/predictions/{TASK}/result"
    assert request.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("task_id", HOSTILE_TASK_IDS)
def test_a_submit_answer_whose_id_has_another_shape_is_unreadable(task_id: str) -> None:
    api = Recorder(lambda r: envelope(prediction(task_id, status="created", outputs=[])))
    with pytest.raises(SubmitOutcomeUnknown, match="unreadable submit answer"):
        wavespeed(api, Recorder(video)).submit(ModelName.SINGLE, {"image": "x", "audio": "y"}, None)
    assert [request.method for request in api.requests] == ["POST"]


@pytest.mark.parametrize("task_id", HOSTILE_TASK_IDS)
def test_a_webhook_or_result_body_with_an_id_of_another_shape_is_not_a_prediction(task_id: str) -> None:
    with pytest.raises(ValueError, match="task id"):
        Prediction.model_validate_json(json.dumps(prediction(task_id)))


def test_a_result_answer_about_another_task_is_not_taken_for_this_one() -> None:
    api = Recorder(lambda r: envelope(prediction("f" * 32)))
    with pytest.raises(TemporarilyUnavailable, match="another task"):
        wavespeed(api, Recorder(video)).result(TASK)


# ---- the allow-list of output URLs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        CDN,
        "https://CDN.WaveSpeed.AI/outputs/video.mp4",
        "https://cdn.wavespeed.ai:443/outputs/video.mp4",
        "https://cdn.wavespeed.ai./outputs/video.mp4",
        "https://d1q70pf5vjeyhc.cloudfront.net/predictions/v.mp4?Expires=1&Signature=abc",
        "https://a.b.cloudfront.net/v.mp4",
    ],
)
def test_the_default_allow_list_admits_wavespeeds_output_hosts_over_https(url: str) -> None:
    assert DEFAULT.check_url(url).scheme == "https"


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.wavespeed.ai/outputs/video.mp4",
        "ftp://cdn.wavespeed.ai/video.mp4",
        "file:///etc/passwd",
        "gopher://cdn.wavespeed.ai:70/_GET",
        "data:video/mp4;base64,AAAA",
        "javascript:alert(1)",
        "//cdn.wavespeed.ai/video.mp4",
        "cdn.wavespeed.ai/video.mp4",
        "",
        "https://",
        "https://cdn.wavespeed.ai:8443/video.mp4",
        "https://evil.example/video.mp4",
        "https://cdn.wavespeed.ai.evil.example/video.mp4",
        "https://evilcdn.wavespeed.ai/video.mp4",
        "https://wavespeed.ai/video.mp4",
        "https://cloudfront.net/video.mp4",
        "https://xcloudfront.net/video.mp4",
        "https://cloudfront.net.evil.example/video.mp4",
        "https://cdn.wavespeed.ai@evil.example/video.mp4",
        "https://user:password@cdn.wavespeed.ai/video.mp4",
        "https://evil.example#@cdn.wavespeed.ai/video.mp4",
        "https://evil.example?@cdn.wavespeed.ai/video.mp4",
        "https://127.0.0.1/video.mp4",
        "https://[::1]/video.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://2130706433/video.mp4",
        "https://0x7f000001/video.mp4",
        "https://localhost/video.mp4",
        "https://xn--cdn-wavespeed-ai.example/video.mp4",
    ],
)
def test_the_default_allow_list_refuses_every_other_url(url: str) -> None:
    with pytest.raises(OutputRefused) as refused:
        DEFAULT.check_url(url)
    assert (
        "was not downloaded" in str(refused.value)
        or "not a valid URL" in str(refused.value)
        or ("user name or password" in str(refused.value))
    )


def test_a_refusal_names_the_allow_list_and_where_to_change_it_but_not_the_query() -> None:
    with pytest.raises(OutputRefused) as refused:
        DEFAULT.check_url("https://evil.example/v.mp4?X-Amz-Signature=secret-bits")
    text = str(refused.value)
    assert "https://evil.example/v.mp4" in text and "secret-bits" not in text
    assert "cdn.wavespeed.ai, *.cloudfront.net" in text and "OutputHosts" in text


def test_an_origin_entry_admits_exactly_its_scheme_host_and_port() -> None:
    policy = OutputPolicy.parse("http://127.0.0.1:8787")
    assert policy.check_url("http://127.0.0.1:8787/outputs/x/video.mp4").port == 8787
    for other in (
        "http://127.0.0.1:8788/x",
        "https://127.0.0.1:8787/x",
        "http://127.0.0.2:8787/x",
        "http://localhost:8787/x",
    ):
        with pytest.raises(OutputRefused):
            policy.check_url(other)


@pytest.mark.parametrize(
    "entries",
    [
        "",
        " , ",
        "*",
        "*.com",
        "cdn..wavespeed.ai",
        "cdn.wavespeed.ai:443",
        "[::1]",
        "ftp://cdn.wavespeed.ai",
        "https://cdn.wavespeed.ai/outputs",
        "https://cdn.wavespeed.ai?x=1",
        "https://user@cdn.wavespeed.ai",
        "https://*.cloudfront.net",
        "cdn.wavespeed.ai,evil example",
    ],
)
def test_allow_list_entries_that_mean_nothing_clear_are_refused(entries: str) -> None:
    with pytest.raises(ValueError, match="output host"):
        OutputPolicy.parse(entries)


def test_settings_default_to_wavespeeds_output_hosts_and_a_two_gib_cap() -> None:
    settings = Settings.model_validate(REQUIRED)
    assert settings.output_policy.describe() == "cdn.wavespeed.ai, *.cloudfront.net"
    assert settings.output_policy.max_bytes == 2 * 1024**3
    tuned = Settings.model_validate({**REQUIRED, "OUTPUT_HOSTS": "media.example.com", "OUTPUT_MAX_BYTES": "10"})
    assert tuned.output_policy.describe() == "media.example.com" and tuned.output_policy.max_bytes == 10


@pytest.mark.parametrize(
    ("variable", "value"), [("OUTPUT_HOSTS", "*"), ("OUTPUT_HOSTS", ""), ("OUTPUT_MAX_BYTES", "0")]
)
def test_bad_download_settings_are_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        Settings.model_validate({**REQUIRED, variable: value})


def test_the_template_parameter_deploys_the_same_default_and_allows_only_public_host_names() -> None:
    template = yaml_parse(TEMPLATE.read_text())
    parameter = template["Parameters"]["OutputHosts"]
    assert parameter["Default"] == DEFAULT_OUTPUT_HOSTS
    assert template["Globals"]["Function"]["Environment"]["Variables"]["OUTPUT_HOSTS"] == {"Ref": "OutputHosts"}
    pattern = re.compile(parameter["AllowedPattern"])
    for accepted in (DEFAULT_OUTPUT_HOSTS, "cdn.wavespeed.ai", "*.cloudfront.net,media.example.co.uk"):
        assert pattern.fullmatch(accepted), accepted
        OutputPolicy.parse(accepted)
    for refused in ("http://127.0.0.1:8787", "127.0.0.1", "10.0.0.5", "localhost", "cdn.wavespeed.ai:8443", "*", ""):
        assert not pattern.fullmatch(refused), refused


# ---- addresses: only public ones, checked before connecting ------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "non-public"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:7f00:1::1", "loopback"),
        ("8.8.8.8", None),
        ("13.32.99.1", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


class FakeInnerBackend(httpcore.NetworkBackend):
    """Records where a connection would have gone; never opens one."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        self.connected.append((host, port))
        raise httpcore.ConnectError("fake: no network in unit tests")


@pytest.mark.parametrize(
    "answers",
    [
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["10.1.2.3"],
        ["::1"],
        ["::ffff:10.0.0.1"],
        ["13.32.99.1", "127.0.0.1"],  # one bad answer among good ones: the name is not trusted
        ["fe80::1%eth0"],
    ],
)
def test_a_host_name_resolving_to_a_non_public_address_is_never_contacted(answers: list[str]) -> None:
    inner = FakeInnerBackend()
    backend = CheckedNetworkBackend(DEFAULT, resolve=lambda host, port: answers, inner=inner)
    with pytest.raises(OutputRefused, match="not contacted"):
        backend.connect_tcp("cdn.wavespeed.ai", 443)
    assert inner.connected == []


def test_a_public_address_is_connected_to_as_resolved_not_resolved_again() -> None:
    inner = FakeInnerBackend()
    answers = iter([["13.32.99.1", "13.32.99.2"], ["127.0.0.1"]])  # a rebinding resolver
    backend = CheckedNetworkBackend(DEFAULT, resolve=lambda host, port: next(answers), inner=inner)
    with pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("cdn.wavespeed.ai", 443)
    assert inner.connected == [("13.32.99.1", 443), ("13.32.99.2", 443)]


def test_a_listed_ip_literal_admits_that_address_only_when_the_url_names_it() -> None:
    policy = OutputPolicy.parse("http://127.0.0.1:8787,media.example.com")
    inner = FakeInnerBackend()
    backend = CheckedNetworkBackend(policy, resolve=lambda host, port: ["127.0.0.1"], inner=inner)
    with pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("127.0.0.1", 8787)
    assert inner.connected == [("127.0.0.1", 8787)]
    with pytest.raises(OutputRefused, match="loopback"):
        backend.connect_tcp("media.example.com", 443)
    assert inner.connected == [("127.0.0.1", 8787)]


class CountingServer:
    """A server on 127.0.0.1 that answers every GET with a small body and remembers what reached it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handle(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                body = b"video bytes"
                self.send_response(200)
                self.send_header("content-type", "video/mp4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local_server() -> Iterator[CountingServer]:
    server = CountingServer()
    try:
        yield server
    finally:
        server.close()


def test_the_real_transport_checks_addresses_a_name_on_the_list_pointing_at_loopback_is_not_reached(
    local_server: CountingServer,
) -> None:
    by_name = OutputPolicy.parse(f"http://localhost:{local_server.port}")
    downloader = OutputDownloader.build(by_name, httpx.Timeout(5))
    with pytest.raises(OutputRefused, match="loopback"), downloader.open(f"http://localhost:{local_server.port}/v"):
        pass
    assert local_server.requests == []

    by_literal = OutputPolicy.parse(f"http://127.0.0.1:{local_server.port}")
    with OutputDownloader.build(by_literal, httpx.Timeout(5)).open(f"http://127.0.0.1:{local_server.port}/v") as out:
        assert b"".join(out.iter_bytes()) == b"video bytes"
    assert [path for path, _ in local_server.requests] == ["/v"]


def test_proxy_variables_are_not_honoured(monkeypatch: pytest.MonkeyPatch, local_server: CountingServer) -> None:
    proxy = CountingServer()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        policy = OutputPolicy.parse(f"http://127.0.0.1:{local_server.port}")
        with OutputDownloader.build(policy, httpx.Timeout(5)).open(f"http://127.0.0.1:{local_server.port}/v") as out:
            assert b"".join(out.iter_bytes()) == b"video bytes"
    finally:
        proxy.close()
    assert proxy.requests == []
    assert [path for path, _ in local_server.requests] == ["/v"]


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """The pipeline as a cold start builds it from the template's settings."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    clients.reset_clients()
    try:
        yield build_pipeline(Settings.model_validate(REQUIRED))
    finally:
        clients.reset_clients()


def test_the_pipelines_api_client_follows_no_redirect_and_no_proxy(built: Pipeline) -> None:
    api_http: httpx.Client = built.wavespeed._http
    assert api_http.follow_redirects is False and api_http.trust_env is False
    assert built.wavespeed._outputs.policy == OutputPolicy.parse(DEFAULT_OUTPUT_HOSTS)


def test_the_output_client_is_made_at_the_first_download_and_shares_the_api_clients_tls_context(
    built: Pipeline,
) -> None:
    downloader = built.wavespeed._outputs
    assert "_http" not in vars(downloader)  # submit and reconcile, which never download, never build it
    api_pool = built.wavespeed._http._transport._pool  # type: ignore[attr-defined]
    output_pool = downloader._http._transport._pool  # type: ignore[attr-defined]
    assert api_pool._ssl_context is output_pool._ssl_context is tls_context()
    assert output_pool._ssl_context.verify_mode is ssl.CERT_REQUIRED and output_pool._ssl_context.check_hostname


# ---- redirects are followed by hand, each one checked again -------------------------------------


def redirecting(chain: dict[str, str]) -> Handler:
    """Answers a 302 to ``chain[url]`` for each URL in the chain, and the video for any other."""

    def handle(request: httpx.Request) -> httpx.Response:
        target = chain.get(str(request.url))
        if target is None:
            return video(request)
        return httpx.Response(302, headers={"location": target} if target else {})

    return handle


def test_a_redirect_within_the_allow_list_is_followed() -> None:
    edge = "https://d111111abcdef8.cloudfront.net/v.mp4"
    cdn = Recorder(redirecting({CDN: edge}))
    with wavespeed(Recorder(video), cdn).stream_output(CDN) as out:
        assert b"".join(out.iter_bytes())[4:8] == b"ftyp"
    assert cdn.urls == [CDN, edge]


def test_a_relative_redirect_stays_on_its_host() -> None:
    cdn = Recorder(redirecting({CDN: "/elsewhere/v.mp4"}))
    with wavespeed(Recorder(video), cdn).stream_output(CDN) as out:
        b"".join(out.iter_bytes())
    assert cdn.urls == [CDN, "https://cdn.wavespeed.ai/elsewhere/v.mp4"]


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
        "http://cdn.wavespeed.ai/outputs/video.mp4",
        "https://evil.example/v.mp4",
        "//evil.example/v.mp4",
        "file:///etc/passwd",
        "",
    ],
)
def test_a_redirect_off_the_allow_list_is_not_followed(target: str) -> None:
    cdn = Recorder(redirecting({CDN: target}))
    with pytest.raises(OutputRefused, match="redirected"), wavespeed(Recorder(video), cdn).stream_output(CDN):
        pass
    assert cdn.urls == [CDN]


def test_redirects_are_followed_a_few_times_only() -> None:
    hops = [f"https://cdn.wavespeed.ai/hop/{n}" for n in range(MAX_REDIRECTS + 2)]
    cdn = Recorder(redirecting(dict(zip([CDN, *hops], hops, strict=False))))
    with (
        pytest.raises(OutputRefused, match=f"more than {MAX_REDIRECTS}"),
        wavespeed(Recorder(video), cdn).stream_output(CDN),
    ):
        pass
    assert len(cdn.requests) == MAX_REDIRECTS + 1


# ---- the key goes to the API only --------------------------------------------------------------


def test_the_api_key_is_never_sent_to_an_output_host_even_after_a_redirect() -> None:
    edge = "https://d111111abcdef8.cloudfront.net/v.mp4"
    api, cdn = Recorder(lambda r: envelope(prediction())), Recorder(redirecting({CDN: edge}))
    client = wavespeed(api, cdn)
    done = client.result(TASK)
    with client.stream_output(done.outputs[0]) as out:
        b"".join(out.iter_bytes())
    assert [r.headers.get("authorization") for r in api.requests] == [f"Bearer {KEY}"]
    assert len(cdn.requests) == 2
    for request in cdn.requests:
        assert "authorization" not in request.headers
        assert KEY not in str(request.url) and all(KEY not in value for value in request.headers.values())


# ---- the byte cap ---------------------------------------------------------------------------------


class TrackedBody(httpx.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk


def test_an_output_declaring_more_than_the_cap_is_refused_before_a_byte_is_read() -> None:
    body = TrackedBody([b"x" * 100])
    cdn = Recorder(lambda r: httpx.Response(200, headers={"content-length": "101"}, stream=body))
    policy = OutputPolicy.parse(DEFAULT_OUTPUT_HOSTS, max_bytes=100)
    client = wavespeed(Recorder(video), cdn, policy)
    with (
        pytest.raises(OutputTooLarge, match=r"declares 101 bytes.*100 bytes.*OUTPUT_MAX_BYTES"),
        client.stream_output(CDN),
    ):
        pass
    assert body.read == 0


@pytest.mark.parametrize(("size", "allowed"), [(100, True), (101, False), (10_000, False)])
def test_an_output_of_unknown_length_is_cut_off_past_the_cap(size: int, allowed: bool) -> None:
    chunks = [b"x" * 10] * (size // 10) + [b"x" * (size % 10)]
    cdn = Recorder(lambda r: httpx.Response(200, stream=TrackedBody(chunks)))
    policy = OutputPolicy.parse(DEFAULT_OUTPUT_HOSTS, max_bytes=100)
    with wavespeed(Recorder(video), cdn, policy).stream_output(CDN) as out:
        if allowed:
            assert len(b"".join(out.iter_bytes())) == size
        else:
            with pytest.raises(OutputTooLarge, match="sent more bytes"):
                b"".join(out.iter_bytes())


@pytest.mark.parametrize("encoding", ["gzip", " GZIP ", "x-unheard-of"])
def test_a_compressed_body_is_refused_before_a_byte_is_decoded(encoding: str) -> None:
    bomb = gzip.compress(bytes(1_000_000))
    cdn = Recorder(lambda r: httpx.Response(200, content=bomb, headers={"content-encoding": encoding}))
    policy = OutputPolicy.parse(DEFAULT_OUTPUT_HOSTS, max_bytes=len(bomb) * 2)
    with (
        pytest.raises(OutputRefused, match="Content-Encoding"),
        wavespeed(Recorder(video), cdn, policy).stream_output(CDN),
    ):
        pass
    assert [r.headers["accept-encoding"] for r in cdn.requests] == ["identity"]


# ---- storing outputs -----------------------------------------------------------------------------


class FakeBucket:
    """Keeps what was uploaded and deleted, reading every stream to its end as S3 would."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.deleted: list[str] = []

    def upload_stream(self, key: str, stream: Any, content_type: str) -> None:
        self.objects[key] = (stream.read(), content_type)

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.objects.pop(key, None)


def store_with(handler: Handler, outputs: list[str]) -> tuple[FakeBucket, Exception | None]:
    bucket = FakeBucket()
    pipeline = cast(Pipeline, SimpleNamespace(bucket=bucket, wavespeed=wavespeed(Recorder(video), Recorder(handler))))
    try:
        store_outputs("outputs/n/", Prediction.model_validate(prediction(outputs=outputs)), pipeline)
    except Exception as exc:  # noqa: BLE001 - returned for the test to examine
        return bucket, exc
    return bucket, None


def test_an_output_refused_for_good_takes_the_outputs_stored_before_it_away() -> None:
    bucket, error = store_with(video, [CDN, "https://evil.example/second.mp4"])
    assert isinstance(error, OutputRefused)
    assert bucket.deleted == ["outputs/n/video.mp4"] and bucket.objects == {}


def test_a_stored_output_gets_a_video_type_whatever_the_host_declares() -> None:
    def html(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<script>", headers={"content-type": "text/html; charset=utf-8"})

    bucket, error = store_with(html, [CDN])
    assert error is None and bucket.objects["outputs/n/video.mp4"] == (b"<script>", "video/mp4")
    bucket, error = store_with(video, [CDN])
    assert error is None and bucket.objects["outputs/n/video.mp4"][1] == "video/mp4"

    def webm(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x", headers={"content-type": "video/webm"})

    assert store_with(webm, [CDN])[0].objects["outputs/n/video.mp4"][1] == "video/webm"


@pytest.mark.parametrize("status", [401, 403, 408, 429, 500, 503])
def test_a_refused_key_or_a_busy_api_never_settles_a_task(status: int) -> None:
    api = Recorder(lambda _: httpx.Response(status, json={"message": "no"}))
    with pytest.raises(TemporarilyUnavailable):
        wavespeed(api, Recorder(video)).result(TASK)


@pytest.mark.parametrize("status", [400, 404, 410])
def test_a_task_wavespeed_no_longer_has_is_final(status: int) -> None:
    api = Recorder(lambda _: httpx.Response(status, json={"message": "gone"}))
    with pytest.raises(TaskUnavailable):
        wavespeed(api, Recorder(video)).result(TASK)
