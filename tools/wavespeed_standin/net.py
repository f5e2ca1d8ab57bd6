"""Outbound HTTP, held to loopback hosts so a test can never make the stand-in reach the internet."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024


class NotLoopback(Exception):
    """The URL points away from this machine; refused before any connection is opened."""


class DownloadFailed(Exception):
    """An input could not be fetched; the message becomes the task's error."""


def readable_url(url: str | httpx.URL) -> str:
    """The URL without its query: presigned signatures make error messages unreadable."""
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def require_loopback(url: str | httpx.URL) -> None:
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https"):
        raise NotLoopback(f"{readable_url(url)} is not an http(s) URL")
    if (parts.hostname or "").lower() not in LOOPBACK_HOSTS:
        raise NotLoopback(
            f"{parts.hostname or url} is not a loopback host: the stand-in only connects to "
            f"{', '.join(sorted(LOOPBACK_HOSTS))}"
        )


def _check_request(request: httpx.Request) -> None:
    # Runs before every request httpx sends, redirects included.
    require_loopback(request.url)


def loopback_client() -> httpx.Client:
    """One shared client; ``trust_env=False`` so no proxy setting can route loopback traffic away."""
    return httpx.Client(
        timeout=httpx.Timeout(30.0, connect=5.0),
        follow_redirects=True,
        max_redirects=5,
        trust_env=False,
        event_hooks={"request": [_check_request]},
    )


def download(client: httpx.Client, name: str, url: str) -> bytes:
    """Fetch one input whole, as WaveSpeed does before inference."""
    try:
        require_loopback(url)
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise DownloadFailed(
                    f"{name} could not be downloaded from {readable_url(url)}: HTTP {response.status_code}"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise DownloadFailed(f"{name} is larger than {MAX_DOWNLOAD_BYTES} bytes")
                chunks.append(chunk)
    except NotLoopback as exc:
        raise DownloadFailed(f"{name} URL refused: {exc}") from exc
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"{name} could not be downloaded from {readable_url(url)}: {exc}") from exc
    if size == 0:
        raise DownloadFailed(f"{name} at {readable_url(url)} is empty")
    return b"".join(chunks)
