"""Downloads of WaveSpeed's outputs, held to the schemes, hosts, addresses and sizes the stack allows.

An output URL comes from WaveSpeed's answer, so it is treated as hostile: it is downloaded only
over https from a host on the allow-list (``OUTPUT_HOSTS``), never from a private, loopback or
link-local address, never through a proxy from the environment, with each redirect checked again,
and never past a byte cap. Nothing here sends the API key: output hosts are not WaveSpeed's API.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import httpcore
import httpx

from .output_hosts import (
    DEFAULT_OUTPUT_MAX_BYTES,
    AllowedHost,
    IPAddress,
    parse_output_hosts,
)

MAX_REDIRECTS = 3
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# NAT64 gateways translate this prefix to the IPv4 address in its last 32 bits.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")

Resolver = Callable[[str, int], list[str]]


class OutputRefused(Exception):
    """The download policy refused an output URL: a permanent answer, retrying cannot change it."""


class OutputTooLarge(OutputRefused):
    """An output is larger than the byte cap; nothing of it is kept."""


def readable_url(url: str | httpx.URL) -> str:
    """The URL without userinfo, query or fragment (signatures make messages unreadable), shortened."""
    try:
        parsed = httpx.URL(str(url))
        # The host as sent (IDNA-encoded): decoding a hostile name may itself fail.
        host = parsed.raw_host.decode("ascii", "replace")
        port = f":{parsed.port}" if parsed.port is not None else ""
        text = f"{parsed.scheme}://{f'[{host}]' if ':' in host else host}{port}{parsed.path}"
    except (httpx.InvalidURL, TypeError, ValueError):
        return repr(str(url)[:120])
    return text if len(text) <= 200 else text[:197] + "..."


def _unwrapped(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), which is where it really goes."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in NAT64_PREFIX:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_kind(address: IPAddress) -> str | None:
    """Why an address is not a public one (``None`` when it is)."""
    target = _unwrapped(address)
    for kind, flag in (
        ("loopback", target.is_loopback),
        ("link-local", target.is_link_local),
        ("unspecified", target.is_unspecified),
        ("multicast", target.is_multicast),
        ("reserved", target.is_reserved),
        ("private", target.is_private),
    ):
        if flag:
            return kind
    return None if target.is_global else "non-public"


@dataclass(frozen=True)
class OutputPolicy:
    """What may be downloaded: the allow-list, and the most bytes one output may have."""

    hosts: tuple[AllowedHost, ...]
    max_bytes: int = DEFAULT_OUTPUT_MAX_BYTES

    @classmethod
    def parse(cls, text: str, max_bytes: int = DEFAULT_OUTPUT_MAX_BYTES) -> OutputPolicy:
        """``text`` is comma-separated entries, as the ``OutputHosts`` parameter holds them."""
        hosts = parse_output_hosts(text)
        if max_bytes < 1:
            raise ValueError("the output byte cap must be at least 1 byte")
        return cls(hosts=hosts, max_bytes=max_bytes)

    def describe(self) -> str:
        return ", ".join(str(host) for host in self.hosts)

    def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """The parsed URL, if the allow-list admits it; ``OutputRefused`` says why not."""
        try:
            parsed = httpx.URL(str(url))
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise OutputRefused(f"the output URL {readable_url(url)} is not a valid URL ({exc})") from exc
        shown = readable_url(parsed)
        if parsed.userinfo:
            raise OutputRefused(f"the output URL {shown} carries a user name or password; such URLs are not fetched")
        host = parsed.raw_host.decode("ascii", "replace").lower().rstrip(".")
        if not host or not any(entry.matches(parsed.scheme, host, parsed.port) for entry in self.hosts):
            raise OutputRefused(
                f"the output URL {shown} is not on the allowed output hosts ({self.describe()}; "
                "https only, set by the OutputHosts parameter, OUTPUT_HOSTS), so it was not downloaded"
            )
        return parsed

    def check_address(self, host: str, address: str) -> None:
        """Where a connection for ``host`` is about to go: a public address, or the very literal listed."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError as exc:
            raise OutputRefused(f"output host {host} resolved to {address!r}, which is not an IP address") from exc
        if self._names_literally(host, ip):
            return
        kind = address_kind(ip)
        if kind is not None:
            raise OutputRefused(
                f"output host {host} resolves to {ip}, a {kind} address; outputs are only downloaded "
                "from public addresses, so it was not contacted"
            )

    def _names_literally(self, host: str, ip: IPAddress) -> bool:
        """An entry that is an IP literal allows exactly that address, and only when the URL names it."""
        try:
            named = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return named == ip and any(entry.literal_address == ip for entry in self.hosts)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the host name resolves to, in the system's order, without duplicates."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from exc
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


class CheckedNetworkBackend(httpcore.NetworkBackend):
    """Resolves each host once, checks every address, then connects to a checked address.

    Checking before connecting (and connecting to the checked address, not resolving again)
    means no byte reaches a private address, and a DNS answer that changes between the check
    and the connection (rebinding) cannot slip through. TLS still verifies the host name: httpcore
    takes the server name from the request, not from the address connected to.
    """

    def __init__(
        self,
        policy: OutputPolicy,
        resolve: Resolver = system_resolver,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolve
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._resolve(host, port)
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            self._policy.check_address(host, address)
        failure: Exception | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise OutputRefused("outputs are never read from a local socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per cold start, shared by every HTTP client: loading the CA bundle
    takes tens of milliseconds each time, and a context is safe to share."""
    return httpx.create_ssl_context(trust_env=False)


class CheckedTransport(httpx.HTTPTransport):
    """httpx's own transport with the connection pool built on ``CheckedNetworkBackend``; no proxy."""

    def __init__(self, policy: OutputPolicy, resolve: Resolver = system_resolver) -> None:
        super().__init__(verify=tls_context(), trust_env=False)
        # httpx takes no network backend argument; its pool does. Pinned httpx; a test proves it is used.
        self._pool = httpcore.ConnectionPool(
            ssl_context=tls_context(),
            max_connections=10,
            max_keepalive_connections=2,
            keepalive_expiry=5.0,
            network_backend=CheckedNetworkBackend(policy, resolve),
        )


def output_client(policy: OutputPolicy, timeout: httpx.Timeout, resolve: Resolver = system_resolver) -> httpx.Client:
    """The client for output downloads: checked connections, no redirects of its own, no proxies."""
    return httpx.Client(
        transport=CheckedTransport(policy, resolve),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


class OutputStream:
    """An opened output: its status and headers, and its bytes, cut off at the policy's cap."""

    def __init__(self, response: httpx.Response, max_bytes: int) -> None:
        self.response = response
        self.max_bytes = max_bytes

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    @property
    def url(self) -> str:
        return readable_url(self.response.url)

    def refuse_declared_oversize(self) -> None:
        """Refuse before reading a byte when the declared length is already over the cap."""
        declared = self.response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise OutputTooLarge(self._too_large(f"declares {int(declared)} bytes"))

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """The decoded bytes; ``OutputTooLarge`` as soon as more than the cap has arrived."""
        received = 0
        for chunk in self.response.iter_bytes(chunk_size):
            received += len(chunk)
            if received > self.max_bytes:
                raise OutputTooLarge(self._too_large("sent more bytes than that"))
            yield chunk

    def _too_large(self, what: str) -> str:
        return (
            f"the output {self.url} {what}; the limit is {self.max_bytes} bytes per output "
            "(OUTPUT_MAX_BYTES), so nothing of it was kept"
        )


class OutputDownloader:
    """Opens output URLs under the policy, following at most a few redirects, each checked again."""

    def __init__(self, policy: OutputPolicy, http: httpx.Client | Callable[[], httpx.Client]) -> None:
        self.policy = policy
        self._http_or_maker = http

    @classmethod
    def build(
        cls, policy: OutputPolicy, timeout: httpx.Timeout, resolve: Resolver = system_resolver
    ) -> OutputDownloader:
        return cls(policy, lambda: output_client(policy, timeout, resolve))

    @cached_property
    def _http(self) -> httpx.Client:
        """Made at the first download, so functions that never download (submit, reconcile) never build it."""
        given = self._http_or_maker
        return given if isinstance(given, httpx.Client) else given()

    @contextmanager
    def open(self, url: str) -> Iterator[OutputStream]:
        response = self._follow(url)
        try:
            yield OutputStream(response, self.policy.max_bytes)
        finally:
            response.close()

    def _follow(self, url: str) -> httpx.Response:
        target = self.policy.check_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            # Videos are compressed already; an encoded body would be decompressed a whole chunk at a time.
            request = self._http.build_request("GET", target, headers={"Accept-Encoding": "identity"})
            response = self._http.send(request, stream=True)
            if response.status_code not in REDIRECT_CODES:
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    response.close()
                    raise OutputRefused(
                        f"the output {readable_url(target)} was sent with Content-Encoding {encoding!r} although "
                        "only the plain bytes were asked for"
                    )
                return response
            location = response.headers.get("location", "")
            response.close()
            if not location:
                raise OutputRefused(f"the output {readable_url(target)} redirected without saying where to")
            try:
                following = target.join(location)
            except (httpx.InvalidURL, ValueError) as exc:
                raise OutputRefused(f"the output {readable_url(target)} redirected to an invalid URL") from exc
            try:
                target = self.policy.check_url(following)
            except OutputRefused as exc:
                raise OutputRefused(f"the output {readable_url(target)} redirected away: {exc}") from exc
        raise OutputRefused(f"the output {readable_url(url)} redirected more than {MAX_REDIRECTS} times")
