"""The three InfiniteTalk request bodies, checked the way the real API checks them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

SEED_MIN = -1
SEED_MAX = 2_147_483_647
RESOLUTIONS = ("480p", "720p")
ORDERS = ("meanwhile", "left_right", "right_left")

Visual = Literal["image", "video"]


@dataclass(frozen=True)
class ModelSpec:
    """What one model path accepts: the media it downloads and whether speakers have an order."""

    path: str
    visual: Visual
    audio_fields: tuple[str, ...]
    mask: bool
    ordered: bool

    @property
    def required(self) -> tuple[str, ...]:
        return (self.visual, *self.audio_fields)


MODELS: dict[str, ModelSpec] = {
    spec.path: spec
    for spec in (
        ModelSpec("wavespeed-ai/infinitetalk", "image", ("audio",), mask=True, ordered=False),
        ModelSpec("wavespeed-ai/infinitetalk/multi", "image", ("left_audio", "right_audio"), mask=False, ordered=True),
        ModelSpec("wavespeed-ai/infinitetalk/video-to-video", "video", ("audio",), mask=True, ordered=False),
    )
}


class InvalidRequest(Exception):
    """The body breaks a rule; the message names the field, as WaveSpeed's 400 answers do."""


def _url(body: Mapping[str, object], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a URL string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest(f"{name} must be an http(s) URL")
    return value


def media_urls(spec: ModelSpec, body: Mapping[str, object]) -> dict[str, str]:
    """Check ``body`` against ``spec``; returns the URLs to download, by field name.

    Unknown fields are ignored, as the real API does.
    """
    urls: dict[str, str] = {}
    for name in spec.required:
        url = _url(body, name, required=True)
        assert url is not None
        urls[name] = url
    if spec.mask and (mask := _url(body, "mask_image", required=False)):
        urls["mask_image"] = mask
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string")
    resolution = body.get("resolution", RESOLUTIONS[0])
    if resolution not in RESOLUTIONS:
        raise InvalidRequest(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    seed = body.get("seed", -1)
    if not isinstance(seed, int) or isinstance(seed, bool) or not SEED_MIN <= seed <= SEED_MAX:
        raise InvalidRequest(f"seed must be an integer from {SEED_MIN} to {SEED_MAX}, got {seed!r}")
    if spec.ordered:
        order = body.get("order", ORDERS[0])
        if order not in ORDERS:
            raise InvalidRequest(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    return urls


def speaker_order(spec: ModelSpec, body: Mapping[str, object]) -> str:
    return str(body.get("order", ORDERS[0])) if spec.ordered else ORDERS[0]
