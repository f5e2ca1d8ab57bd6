import pytest
from pydantic import ValidationError

from infinitetalk_core.models import JobOptions, JobSpec, ModelName, Resolution, Role, SpeakerOrder, usd_text

URLS = {role: f"https://media/{role.value}" for role in Role}


def test_single_speaker_request_carries_every_option() -> None:
    spec = JobSpec(
        name="a",
        model=ModelName.SINGLE,
        inputs={Role.IMAGE: "k1", Role.AUDIO: "k2", Role.MASK_IMAGE: "k3"},
        prompt="a calm anchor",
        resolution=Resolution.P720,
        seed=42,
    )
    assert spec.request_body(URLS) == {
        "audio": "https://media/audio",
        "image": "https://media/image",
        "mask_image": "https://media/mask_image",
        "prompt": "a calm anchor",
        "resolution": "720p",
        "seed": 42,
    }


def test_two_speaker_request_defaults_order_to_meanwhile() -> None:
    inputs = {Role.IMAGE: "k", Role.LEFT_AUDIO: "l", Role.RIGHT_AUDIO: "r"}
    body = JobSpec(name="b", model=ModelName.MULTI, inputs=inputs).request_body(URLS)
    assert body == {
        "image": "https://media/image",
        "left_audio": "https://media/left_audio",
        "right_audio": "https://media/right_audio",
        "order": "meanwhile",
        "resolution": "480p",
        "seed": -1,
    }
    ordered = JobSpec(name="b", model=ModelName.MULTI, inputs=inputs, order=SpeakerOrder.RIGHT_LEFT)
    assert ordered.request_body(URLS)["order"] == "right_left"


def test_video_to_video_request() -> None:
    spec = JobSpec(name="c", model=ModelName.VIDEO, inputs={Role.VIDEO: "v", Role.AUDIO: "a"}, seed=2_147_483_647)
    assert spec.request_body(URLS) == {
        "audio": "https://media/audio",
        "video": "https://media/video",
        "resolution": "480p",
        "seed": 2_147_483_647,
    }


@pytest.mark.parametrize("seed", [-2, 2_147_483_648])
def test_seed_range_is_enforced(seed: int) -> None:
    with pytest.raises(ValidationError):
        JobOptions(seed=seed)


@pytest.mark.parametrize(
    ("micros", "text"), [(150_000, "$0.15"), (180_000, "$0.18"), (1_234_567, "$1.234567"), (0, "$0.00")]
)
def test_money_is_shown_exactly(micros: int, text: str) -> None:
    assert usd_text(micros) == text
