"""Build a console for a stack the way the ``infinitetalk`` command finds one, and start it."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path

from infinitetalk_cli.connection import (
    DEFAULT_LOCAL_STACK_FILE,
    DEFAULT_REGION,
    DIRECT_OPTIONS,
    Clients,
    Connection,
    ConnectionOptions,
    NotConfigured,
    describe_stack,
)
from infinitetalk_core.budget_alerts import BudgetAlertStore

from .server import Console, ConsoleServer
from .views import StackReader

BUDGET_PARAMETER = "MonthlyBudgetUsd"


def usd_to_micros(text: object, where: str) -> int:
    try:
        value = Decimal(str(text))
    except InvalidOperation as exc:
        raise NotConfigured(f"{where}: {text!r} is not an amount of dollars") from exc
    if value < 0 or not value.is_finite():
        raise NotConfigured(f"{where}: {text!r} is not an amount of dollars")
    return int(value * 1_000_000)


def budget_micros_for(options: ConnectionOptions, explicit_usd: str | None = None) -> int | None:
    """The monthly budget the Money page draws: given, else the deployed stack's parameter, else the
    local stack's file; ``None`` when none of them says (named resources only)."""
    if explicit_usd is not None:
        return usd_to_micros(explicit_usd, "--budget-usd")
    if options.stack:
        region = options.region or DEFAULT_REGION
        parameters = describe_stack(options.stack, region, options.endpoint_url).parameters
        value = parameters.get(BUDGET_PARAMETER)
        return usd_to_micros(value, f"stack {options.stack} parameter {BUDGET_PARAMETER}") if value else None
    if any(getattr(options, field) for field in DIRECT_OPTIONS):
        return None
    path = options.local_stack_file or DEFAULT_LOCAL_STACK_FILE
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = document.get("monthly_budget_usd") if isinstance(document, dict) else None
    return usd_to_micros(value, str(path)) if value is not None else None


def console_for(
    connection: Connection, budget_micros: int | None, log: Callable[[str], None] = lambda line: None
) -> Console:
    clients = Clients(connection)
    reader = StackReader(
        bucket=clients.bucket,
        jobs=clients.jobs,
        alerts=BudgetAlertStore(clients.dynamodb, connection.ledger_table),
        budget_micros=budget_micros,
        source=connection.source,
    )
    return Console(reader, clients.s3, log=log)


def start_console(
    connection: Connection, budget_micros: int | None, port: int = 0, log: Callable[[str], None] = lambda line: None
) -> ConsoleServer:
    """A console on 127.0.0.1 in a background thread; ``stop()`` it when done."""
    server = ConsoleServer(console_for(connection, budget_micros, log), port)
    server.start()
    return server
