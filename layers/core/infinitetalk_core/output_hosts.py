"""The ``OutputHosts`` allow-list as data: its entries parsed and matched, with no HTTP library.

Settings check the list at every cold start; the download itself (``outbound``) is the fetch's alone.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_OUTPUT_HOSTS = "cdn.wavespeed.ai,*.cloudfront.net"
DEFAULT_OUTPUT_MAX_BYTES = 2 * 1024**3
DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class AllowedHost:
    """One allow-list entry: a host name (``*.`` for any subdomain) on https, or one exact origin."""

    scheme: str
    host: str
    wildcard: bool = False
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> AllowedHost:
        text = entry.strip().lower()
        if "://" in text:
            return cls._parse_origin(entry, text)
        wildcard = text.startswith("*.")
        name = text.removeprefix("*.")
        if not HOST_NAME.fullmatch(name):
            raise ValueError(
                f"output host {entry!r} is not a host name; write cdn.example.com, *.example.com "
                "or an origin such as https://host:port"
            )
        if wildcard and "." not in name:
            raise ValueError(f"output host {entry!r} is too broad: a wildcard needs at least a domain and its suffix")
        return cls(scheme="https", host=name, wildcard=wildcard)

    @classmethod
    def _parse_origin(cls, entry: str, text: str) -> AllowedHost:
        try:
            url = urlsplit(text)
            port = url.port
        except ValueError as exc:
            raise ValueError(f"output host {entry!r} is not a URL: {exc}") from exc
        if url.scheme not in DEFAULT_PORTS or not url.hostname or "@" in url.netloc:
            raise ValueError(f"output host {entry!r} must be http(s)://host[:port] with no user name")
        if url.path not in ("", "/") or url.query or url.fragment:
            raise ValueError(f"output host {entry!r} must be an origin only, without a path or query")
        if "*" in url.hostname:
            raise ValueError(f"output host {entry!r}: wildcards are written without a scheme (*.example.com)")
        return cls(scheme=url.scheme, host=url.hostname.rstrip("."), port=port)

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        if scheme != self.scheme or port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    @property
    def literal_address(self) -> IPAddress | None:
        """The address this entry names, when it is an IP literal rather than a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        if self.scheme == "https" and self.port is None:
            return host
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}" + (f":{self.port}" if self.port is not None else "")


def parse_output_hosts(text: str) -> tuple[AllowedHost, ...]:
    """``text`` is comma-separated entries, as the ``OutputHosts`` parameter holds them."""
    hosts = tuple(AllowedHost.parse(entry) for entry in text.split(",") if entry.strip())
    if not hosts:
        raise ValueError("no output host is allowed, so no video could ever be downloaded")
    return hosts
