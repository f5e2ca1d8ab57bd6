from datetime import date
from decimal import Decimal

import pytest

from infinitetalk_core.billing import LATEST, output_seconds_for, rule_book
from infinitetalk_core.models import ModelName, Resolution, SpeakerOrder

SEEDS = rule_book().get("seeds-output-5s")
DOCS = rule_book().get("docs-input-3s")


@pytest.mark.parametrize(
    ("seconds", "resolution", "billed", "micros"),
    [
        ("0.5", Resolution.P480, 5, 150_000),
        ("4.2", Resolution.P480, 5, 150_000),
        ("5", Resolution.P480, 5, 150_000),
        ("5.01", Resolution.P480, 6, 180_000),
        ("5.000001", Resolution.P720, 6, 360_000),
        ("4.2", Resolution.P720, 5, 300_000),
        ("10", Resolution.P720, 10, 600_000),
        ("600", Resolution.P480, 600, 18_000_000),
        ("600", Resolution.P720, 600, 36_000_000),
        ("600.01", Resolution.P480, 601, 18_030_000),
        ("600.01", Resolution.P720, 601, 36_060_000),
    ],
)
def test_seed_rules_round_up_with_a_five_second_minimum(
    seconds: str, resolution: Resolution, billed: int, micros: int
) -> None:
    charge = SEEDS.charge(resolution, Decimal(seconds))
    assert charge.billed_seconds == billed
    assert charge.micros == micros
    assert charge.rule_set == "seeds-output-5s"


@pytest.mark.parametrize(
    ("seconds", "billed", "micros_480"),
    [("1", 3, 90_000), ("2.99", 3, 90_000), ("3.01", 4, 120_000), ("4.2", 5, 150_000)],
)
def test_documented_rules_bill_input_with_a_three_second_minimum(seconds: str, billed: int, micros_480: int) -> None:
    charge = DOCS.charge(Resolution.P480, Decimal(seconds))
    assert (charge.billed_seconds, charge.micros) == (billed, micros_480)


def test_rates_come_from_the_price_table() -> None:
    assert SEEDS.rate_micros_per_second(Resolution.P480) == 30_000
    assert SEEDS.rate_micros_per_second(Resolution.P720) == 60_000


def test_which_length_is_billed_follows_the_rule_set() -> None:
    assert SEEDS.billable_seconds(input_seconds=Decimal(7), output_seconds=Decimal("7.4")) == Decimal("7.4")
    assert SEEDS.billable_seconds(input_seconds=Decimal(7), output_seconds=None) == Decimal(7)
    assert DOCS.billable_seconds(input_seconds=Decimal(7), output_seconds=Decimal("7.4")) == Decimal(7)


def test_rule_sets_are_selected_by_name_or_by_effective_date() -> None:
    book = rule_book()
    assert book.select("docs-input-3s", date(2026, 6, 1)).id == "docs-input-3s"
    assert book.select(LATEST, date(2025, 9, 1)).id == "seeds-output-5s"
    assert book.select(LATEST, date(2026, 2, 1)).id == "docs-input-3s"
    with pytest.raises(LookupError, match="unknown billing rule set"):
        book.select("nope", date(2026, 1, 1))
    with pytest.raises(LookupError, match="no billing rule set"):
        book.select(LATEST, date(2020, 1, 1))


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (None, Decimal("4.5")),
        (SpeakerOrder.MEANWHILE, Decimal("4.5")),
        (SpeakerOrder.LEFT_RIGHT, Decimal("7.5")),
        (SpeakerOrder.RIGHT_LEFT, Decimal("7.5")),
    ],
)
def test_two_speaker_length_follows_the_order_rule(order: SpeakerOrder | None, expected: Decimal) -> None:
    lengths = {"left_audio": Decimal(3), "right_audio": Decimal("4.5")}
    assert output_seconds_for(ModelName.MULTI, lengths, order) == expected


def test_single_and_video_models_last_as_long_as_the_audio() -> None:
    assert output_seconds_for(ModelName.SINGLE, {"audio": Decimal("3.3")}, None) == Decimal("3.3")
    assert output_seconds_for(ModelName.VIDEO, {"audio": Decimal("9")}, None) == Decimal(9)


def test_multi_at_the_limit_prices_both_orders_differently() -> None:
    meanwhile = output_seconds_for(ModelName.MULTI, {"left_audio": Decimal(300), "right_audio": Decimal(300)}, None)
    sequential = output_seconds_for(
        ModelName.MULTI, {"left_audio": Decimal(300), "right_audio": Decimal(300)}, SpeakerOrder.LEFT_RIGHT
    )
    assert SEEDS.charge(Resolution.P720, meanwhile).micros == 18_000_000
    assert SEEDS.charge(Resolution.P720, sequential).micros == 36_000_000
