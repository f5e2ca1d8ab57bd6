"""The cost benchmark's DynamoDB write pricing: by the larger item image, doubled in a transaction,
plus each index that holds the item."""

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_goals.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_goals", BENCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def ref(pk: str) -> tuple[str, str]:
    return "jobs", json.dumps({"pk": {"S": pk}})


def test_a_write_is_billed_by_the_larger_image_and_each_index_holding_the_item(bench: Any) -> None:
    keys = {"jobs": ["pk"]}
    status = bench.Index("StatusIndex", frozenset({"status", "status_since"}), "KEYS_ONLY", frozenset())
    indexes = {"jobs": [status]}
    sizes = iter([(900, frozenset({"pk", "status", "status_since"})), (1500, frozenset({"pk", "status"}))])
    recorder = bench.WriteSizes(lambda _item: next(sizes))
    put = {"TableName": "jobs", "Item": {"pk": {"S": "JOB#a"}, "status": {"S": "received"}}}
    billed = recorder.observe(bench.written_items(put, "PutItem", keys))
    assert bench.write_units(put, "PutItem", keys, billed, indexes) == 1 + 1  # 900 bytes, into the index

    move = {
        "TransactItems": [
            {
                "Update": {
                    "TableName": "jobs",
                    "Key": {"pk": {"S": "JOB#a"}},
                    "UpdateExpression": "SET #s = :s",
                    "ExpressionAttributeNames": {"#s": "status"},
                }
            },
            {"ConditionCheck": {"TableName": "jobs", "Key": {"pk": {"S": "MONTH#x"}}}},
        ]
    }
    billed = recorder.observe(bench.written_items(move, "TransactWriteItems", keys)[:1])
    assert billed[ref("JOB#a")].size == 1500
    # 2 KB transactional (4) + a moved index key (2) + a condition check (2)
    assert bench.write_units(move, "TransactWriteItems", keys, billed, indexes) == 4 + 2 + 2


def test_an_item_without_the_index_keys_costs_the_index_nothing(bench: Any) -> None:
    keys = {"jobs": ["pk"]}
    status = bench.Index("StatusIndex", frozenset({"status", "status_since"}), "ALL", frozenset())
    recorder = bench.WriteSizes(lambda _item: (200, frozenset({"pk", "next_slot"})))
    update = {"TableName": "jobs", "Key": {"pk": {"S": "RATE#submit"}}, "UpdateExpression": "SET next_slot = :n"}
    billed = recorder.observe(bench.written_items(update, "UpdateItem", keys))
    assert bench.write_units(update, "UpdateItem", keys, billed, {"jobs": [status]}) == 1


def test_a_refused_write_is_billed_for_its_item_but_reaches_no_index(bench: Any) -> None:
    keys = {"jobs": ["pk"]}
    status = bench.Index("StatusIndex", frozenset({"status", "status_since"}), "KEYS_ONLY", frozenset())
    recorder = bench.WriteSizes(lambda _item: (1500, frozenset({"pk", "status", "status_since"})))
    update = {
        "TableName": "jobs",
        "Key": {"pk": {"S": "JOB#a"}},
        "UpdateExpression": "SET #s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
    }
    refused = recorder.observe(bench.written_items(update, "UpdateItem", keys), written=False)
    assert bench.write_units(update, "UpdateItem", keys, refused, {"jobs": [status]}) == 2
    accepted = recorder.observe(bench.written_items(update, "UpdateItem", keys))
    assert bench.write_units(update, "UpdateItem", keys, accepted, {"jobs": [status]}) == 2 + 2
