"""Retention: lifecycle rules from KeepInputsDays and KeepOutputsDays, nothing deleted at 0, ledger never."""

from __future__ import annotations

from typing import Any

import pytest

from infinitetalk_core.models import Job, LedgerEntry
from local_stack.template import Template


def lifecycle(parameters: dict[str, str]) -> list[dict[str, Any]]:
    template = Template()
    template.set_parameters(parameters)
    rules = template.resolve(template.resources["MediaBucket"]["Properties"]["LifecycleConfiguration"])["Rules"]
    return list(rules)


def expiring(rules: list[dict[str, Any]]) -> dict[str, int]:
    return {rule["Prefix"]: int(rule["ExpirationInDays"]) for rule in rules if "ExpirationInDays" in rule}


def test_by_default_nothing_is_deleted_but_abandoned_multipart_uploads() -> None:
    rules = lifecycle({})
    assert expiring(rules) == {}
    assert [rule["Id"] for rule in rules] == ["AbortIncompleteUploads"]


@pytest.mark.parametrize(
    ("inputs", "outputs", "expected"),
    [
        ("7", "0", {"inbox/": 7}),
        ("0", "30", {"outputs/": 30}),
        ("3", "90", {"inbox/": 3, "outputs/": 90}),
    ],
)
def test_each_prefix_expires_after_its_own_days(inputs: str, outputs: str, expected: dict[str, int]) -> None:
    rules = lifecycle({"KeepInputsDays": inputs, "KeepOutputsDays": outputs})
    assert expiring(rules) == expected
    assert all(rule["Status"] == "Enabled" for rule in rules)


def test_no_rule_reaches_the_library_or_anything_outside_inbox_and_outputs() -> None:
    rules = lifecycle({"KeepInputsDays": "1", "KeepOutputsDays": "1"})
    assert {rule.get("Prefix") for rule in rules if "ExpirationInDays" in rule} == {"inbox/", "outputs/"}


def test_the_ledger_and_job_tables_keep_their_history() -> None:
    template = Template()
    resources = template.resources
    assert resources["LedgerTable"]["DeletionPolicy"] == "Retain"
    assert "TimeToLiveSpecification" not in resources["LedgerTable"]["Properties"]
    # The jobs table's time to live removes only seen-webhook markers, which alone carry expires_at.
    assert resources["JobsTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    assert "expires_at" not in Job.model_fields and "expires_at" not in LedgerEntry.model_fields


def test_negative_days_are_refused_by_the_template() -> None:
    declared = Template().document["Parameters"]
    assert declared["KeepInputsDays"]["MinValue"] == 0 and declared["KeepOutputsDays"]["MinValue"] == 0
