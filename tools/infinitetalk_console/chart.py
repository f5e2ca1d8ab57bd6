"""The month's money as drawn shapes, computed here and written out as SVG by a template.

Geometry is plain arithmetic on integer micro-dollars, so what the chart shows is exactly what the
ledger holds: every bar segment carries the micro-dollars it stands for.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from infinitetalk_core.models import LedgerEntry, ModelName, Resolution, usd_text

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 36
# One colour per model and resolution (Okabe-Ito, readable with colour-blindness); lighter for 480p.
SERIES_COLOURS: dict[tuple[ModelName, Resolution], str] = {
    (ModelName.SINGLE, Resolution.P480): "#56B4E9",
    (ModelName.SINGLE, Resolution.P720): "#0072B2",
    (ModelName.MULTI, Resolution.P480): "#E69F00",
    (ModelName.MULTI, Resolution.P720): "#D55E00",
    (ModelName.VIDEO, Resolution.P480): "#009E73",
    (ModelName.VIDEO, Resolution.P720): "#CC79A7",
}
SERIES_ORDER = list(SERIES_COLOURS)


def series_label(model: ModelName, resolution: Resolution) -> str:
    return f"{model.short} {resolution.value}"


def nice_step(maximum: int, ticks: int = 4) -> int:
    """A round step (1, 2 or 5 times a power of ten micro-dollars) that covers ``maximum`` in about ``ticks``."""
    if maximum <= 0:
        return 10_000  # one cent
    rough = maximum / ticks
    magnitude = 1
    while magnitude * 10 <= rough:
        magnitude *= 10
    for factor in (1, 2, 5, 10):
        if magnitude * factor >= rough:
            return magnitude * factor
    return magnitude * 10


@dataclass(frozen=True)
class Segment:
    """One model and resolution's part of one day's bar."""

    x: float
    y: float
    width: float
    height: float
    colour: str
    micros: int
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class LegendEntry:
    label: str
    colour: str
    micros: int

    @property
    def total(self) -> str:
        return usd_text(self.micros)


@dataclass(frozen=True)
class DayLabel:
    x: float
    label: str


@dataclass(frozen=True)
class DailyChart:
    """Spend per day, stacked by model and resolution."""

    width: int
    height: int
    segments: list[Segment]
    ticks: list[Tick]
    days: list[DayLabel]
    legend: list[LegendEntry]
    total_micros: int
    plot_bottom: float
    plot_left: float
    plot_right: float
    later_days: int = 0

    @property
    def total(self) -> str:
        return usd_text(self.total_micros)


@dataclass(frozen=True)
class Line:
    y: float
    label: str
    micros: int


@dataclass(frozen=True)
class BudgetChart:
    """Month to date against the budget: the charged line, the held amount apart, the budget and its alerts."""

    width: int
    height: int
    points: str
    ticks: list[Tick]
    days: list[DayLabel]
    charged_micros: int
    held_micros: int
    held_box: tuple[float, float, float, float] | None
    budget: Line | None
    thresholds: list[Line] = field(default_factory=list)
    end: tuple[float, float] | None = None
    plot_bottom: float = 0.0
    plot_left: float = 0.0
    plot_right: float = 0.0

    @property
    def charged(self) -> str:
        return usd_text(self.charged_micros)

    @property
    def held(self) -> str:
        return usd_text(self.held_micros)

    @property
    def committed(self) -> str:
        return usd_text(self.charged_micros + self.held_micros)


def month_days(month: str) -> list[date]:
    year, number = (int(part) for part in month.split("-"))
    return [date(year, number, day) for day in range(1, calendar.monthrange(year, number)[1] + 1)]


def _day_of(entry: LedgerEntry, days: Sequence[date]) -> tuple[date, bool]:
    """The UTC day an entry was charged, kept inside the month; ``True`` when it fell on a later day."""
    day = entry.recorded_at.date()
    if day > days[-1]:
        return days[-1], True
    return max(day, days[0]), False


def _x_labels(days: Sequence[date], x_of: dict[date, float]) -> list[DayLabel]:
    shown = [d for d in days if d.day == 1 or d.day % 5 == 0]
    return [DayLabel(x=x_of[d], label=str(d.day)) for d in shown]


def _ticks(top: int, step: int, y_of: float, scale: float) -> list[Tick]:
    return [Tick(y=y_of - value * scale, label=usd_text(value)) for value in range(0, top + 1, step)]


def daily_chart(month: str, entries: Sequence[LedgerEntry]) -> DailyChart:
    days = month_days(month)
    per_day: dict[date, dict[tuple[ModelName, Resolution], int]] = {d: {} for d in days}
    later = 0
    for entry in entries:
        day, is_later = _day_of(entry, days)
        later += is_later
        key = (entry.model, entry.resolution)
        per_day[day][key] = per_day[day].get(key, 0) + entry.charged_micros
    tallest = max((sum(parts.values()) for parts in per_day.values()), default=0)
    step = nice_step(tallest)
    top = max(step, -(-tallest // step) * step)
    plot_height = HEIGHT - TOP - BOTTOM
    scale = plot_height / top
    slot = (WIDTH - LEFT - RIGHT) / len(days)
    bar = max(2.0, slot * 0.7)
    x_of = {d: LEFT + i * slot + (slot - bar) / 2 for i, d in enumerate(days)}
    bottom = HEIGHT - BOTTOM
    segments: list[Segment] = []
    for day in days:
        y = float(bottom)
        for key in SERIES_ORDER:
            micros = per_day[day].get(key, 0)
            if not micros:
                continue
            height = micros * scale
            y -= height
            segments.append(
                Segment(
                    x=x_of[day],
                    y=y,
                    width=bar,
                    height=height,
                    colour=SERIES_COLOURS[key],
                    micros=micros,
                    title=f"{day.isoformat()} {series_label(*key)}: {usd_text(micros)}",
                )
            )
    totals: dict[tuple[ModelName, Resolution], int] = {}
    for entry in entries:
        key = (entry.model, entry.resolution)
        totals[key] = totals.get(key, 0) + entry.charged_micros
    legend = [
        LegendEntry(series_label(*key), SERIES_COLOURS[key], totals[key]) for key in SERIES_ORDER if key in totals
    ]
    return DailyChart(
        width=WIDTH,
        height=HEIGHT,
        segments=segments,
        ticks=_ticks(top, step, bottom, scale),
        days=_x_labels(days, {d: x + bar / 2 for d, x in x_of.items()}),
        legend=legend,
        total_micros=sum(e.charged_micros for e in entries),
        plot_bottom=bottom,
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        later_days=later,
    )


def budget_chart(
    month: str, entries: Sequence[LedgerEntry], held_micros: int, budget_micros: int, today: date
) -> BudgetChart:
    """Charged money to date as a line, the held amount as a box on its end, the budget as a line."""
    days = month_days(month)
    charged_by_day: dict[date, int] = {d: 0 for d in days}
    for entry in entries:
        charged_by_day[_day_of(entry, days)[0]] += entry.charged_micros
    last = min(max(today, days[0]), days[-1])
    running, cumulative = 0, []
    for day in days:
        if day > last:
            break
        running += charged_by_day[day]
        cumulative.append((day, running))
    charged = running + sum(v for d, v in charged_by_day.items() if d > last)
    highest = max(charged + held_micros, budget_micros)
    step = nice_step(highest)
    top = max(step, -(-highest // step) * step)
    plot_height = HEIGHT - TOP - BOTTOM
    scale = plot_height / top
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(days) - 1)
    x_of = {d: LEFT + i * slot for i, d in enumerate(days)}
    bottom = HEIGHT - BOTTOM
    points = " ".join(f"{x_of[d]:.1f},{bottom - v * scale:.1f}" for d, v in cumulative)
    end = (x_of[cumulative[-1][0]], bottom - cumulative[-1][1] * scale) if cumulative else None
    held_box = None
    if held_micros > 0:
        x = x_of[last]
        held_box = (x - 6, bottom - (charged + held_micros) * scale, 12.0, held_micros * scale)
    budget = None
    thresholds: list[Line] = []
    if budget_micros > 0:
        budget = Line(y=bottom - budget_micros * scale, label=f"budget {usd_text(budget_micros)}", micros=budget_micros)
        for percent in (50, 80):
            value = budget_micros * percent // 100
            thresholds.append(Line(y=bottom - value * scale, label=f"{percent}%", micros=value))
    return BudgetChart(
        width=WIDTH,
        height=HEIGHT,
        points=points,
        ticks=_ticks(top, step, bottom, scale),
        days=_x_labels(days, x_of),
        charged_micros=charged,
        held_micros=held_micros,
        held_box=held_box,
        budget=budget,
        thresholds=thresholds,
        end=end,
        plot_bottom=bottom,
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
    )
