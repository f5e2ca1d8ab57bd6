"""A web console for one stack: the jobs live, their videos playing, the month's money, drops from the browser."""

from .app import budget_micros_for, console_for, start_console
from .server import Console, ConsoleServer

__all__ = ["Console", "ConsoleServer", "budget_micros_for", "console_for", "start_console"]
