"""`run_reconciliation`: the log against the topic, each read model and each destination, chunk by chunk.

The run's range is fixed when it begins (default: the whole log up to the fenced head). The topic
is read once per invocation into per-order figures; then the log is walked in chunks of positions,
and each order is checked in the chunk that holds its last event of the range, against every
place at once. Each chunk's mismatches and counts are saved with the position it checked through,
so `resume=True` continues an interrupted run there (or, after a finished one, checks the events
appended since).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import asyncpg
import structlog

from consumers.fanout.operations import DESTINATIONS
from ledger.relay import checkpoint_name
from ledger.store.store import load_checkpoint
from ledger_app.reconcile import log as log_side
from ledger_app.reconcile import runs
from ledger_app.reconcile.deliveries import check_destination
from ledger_app.reconcile.kafka import TopicScan, scan_topic
from ledger_app.reconcile.log import OrderSpan
from ledger_app.reconcile.readmodels import check_projections
from ledger_app.reconcile.report import (
    EXTRA,
    MISSING,
    OUT_OF_ORDER,
    Mismatch,
    ReconcileReport,
    destination_place,
    kafka_place,
    projection_place,
)
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import Settings
from projections.catalog import PROJECTIONS

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReconcileOptions:
    """What to compare the log with, and over which positions (None: the whole log)."""

    bootstrap_servers: str
    topic: str = "orders.events"
    #: The relay checkpoint bounding what must be on the topic (and delivered); default the
    #: topic's relay (`ledger.relay.checkpoint_name`). When there is none, every event must be.
    relay_checkpoint: str | None = None
    projections: tuple[str, ...] = tuple(PROJECTIONS)
    destinations: tuple[str, ...] = DESTINATIONS
    from_position: int | None = None
    to_position: int | None = None
    chunk_events: int = 20_000
    #: Mismatches stored per run (all are printed and counted).
    max_stored: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> ReconcileOptions:
        base = cls(bootstrap_servers=settings.bootstrap_servers, topic=settings.kafka.events_topic)
        return replace(base, **overrides)  # type: ignore[arg-type]


@dataclass
class _Counts:
    figures: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, place: str, **values: int) -> None:
        figures = self.figures.setdefault(place, {})
        for name, value in values.items():
            figures[name] = figures.get(name, 0) + value


async def begin_run(
    pool: asyncpg.Pool, options: ReconcileOptions, *, resume: bool = False
) -> ReconcileReport:
    """The run to work on: a new one over the options' range, or with `resume` the last run
    continued (unfinished), or followed by one over what was appended since (finished)."""
    if resume:
        last = await runs.last_run(pool)
        if last is not None and last.status != "finished":
            await runs.reopen(pool, last.id)
            return replace(last, status="running", finished_at=None, error=None)
        if last is not None:
            head = options.to_position or await log_side.head(pool)
            return await runs.begin(pool, last.to_position + 1, max(head, last.to_position))
    start = options.from_position or await log_side.first_position(pool)
    end = options.to_position or await log_side.head(pool)
    return await runs.begin(pool, start, end)


async def run_reconciliation(
    pool: asyncpg.Pool,
    options: ReconcileOptions,
    *,
    resume: bool = False,
    run: ReconcileReport | None = None,
    on_mismatch: Callable[[Mismatch], None] | None = None,
    metrics: Metrics | None = None,
) -> ReconcileReport:
    """Reconcile and return the finished run's report (its stored mismatches included).

    `run` continues one `begin_run` made (the API starts it first to answer with its id);
    `on_mismatch` sees every mismatch as it is found (the CLI prints them).
    """
    if run is None:
        run = await begin_run(pool, options, resume=resume)
    try:
        await _run(pool, options, run, on_mismatch)
    except BaseException as exc:
        await runs.finish(pool, run.id, error=f"{type(exc).__name__}: {exc}")
        raise
    await runs.finish(pool, run.id)
    report = await runs.report(pool, run.id, limit=options.max_stored)
    assert report is not None
    if metrics is not None:
        observe(metrics, report)
    return report


def observe(metrics: Metrics, report: ReconcileReport) -> None:
    """The reconciliation gauges: mismatches per place of the last finished run, and its time."""
    for place, figures in report.counts.items():
        if place != "log":
            metrics.reconcile_mismatches.labels(place).set(figures.get("mismatches", 0))
    if report.finished_at is not None:
        metrics.reconcile_last_run.set(report.finished_at.timestamp())


async def _run(
    pool: asyncpg.Pool,
    options: ReconcileOptions,
    run: ReconcileReport,
    on_mismatch: Callable[[Mismatch], None] | None,
) -> None:
    counts = _Counts({place: dict(figures) for place, figures in run.counts.items()})
    lo, hi = run.checked_through + 1, run.to_position
    if lo > hi:
        return
    relay_name = options.relay_checkpoint or checkpoint_name(options.topic)
    published = await load_checkpoint(pool, relay_name)
    started = time.monotonic()
    # The whole run's range, also when resuming: an order checked in a later chunk may have
    # versions before the position the run stopped at.
    scan = await scan_topic(
        options.bootstrap_servers, options.topic, from_position=run.from_position, to_position=hi
    )
    counts.add(kafka_place(options.topic), messages=scan.messages, unreadable=scan.unreadable)
    log.info(
        "reconcile: topic read",
        topic=options.topic,
        messages=scan.messages,
        seconds=time.monotonic() - started,
    )
    position = lo
    while position <= hi:
        end = min(position + options.chunk_events - 1, hi)
        spans, events = await log_side.chunk(
            pool, position, end, range_start=run.from_position, range_end=hi, published=published
        )
        found = _check_topic(scan, spans, counts)
        for name, check in (await check_projections(pool, options.projections, spans)).items():
            counts.add(
                projection_place(name),
                orders=check.orders,
                quarantined=check.quarantined,
                behind_checkpoint=check.behind,
                skipped=check.skipped,
            )
            found += check.mismatches
        for destination in options.destinations:
            delivery = await check_destination(pool, destination, spans)
            counts.add(
                destination_place(destination),
                orders=delivery.orders,
                delivered=delivery.delivered,
                parked=delivery.parked,
                not_applicable=delivery.not_applicable,
            )
            found += delivery.mismatches
        counts.add("log", events=events, orders=len(spans))
        for mismatch in found:
            counts.add(mismatch.place, mismatches=1)
        if on_mismatch is not None:
            for mismatch in found:
                on_mismatch(mismatch)
        await runs.save_chunk(pool, run.id, end, counts.figures, found, max_stored=options.max_stored)
        position = end + 1


def _check_topic(scan: TopicScan, spans: Sequence[OrderSpan], counts: _Counts) -> list[Mismatch]:
    place = kafka_place(scan.topic)
    out: list[Mismatch] = []
    checked = pending = duplicates = 0
    for span in spans:
        on_topic = scan.order(span.order_id)
        if on_topic is not None:
            duplicates += on_topic.duplicates
            if on_topic.highest > span.last:
                detail = f"versions {span.last + 1}..{on_topic.highest} are on the topic, not in the log"
                out.append(Mismatch(EXTRA, place, span.order_id, detail))
        if span.published < span.first:
            pending += span.last - span.first + 1
            continue
        checked += span.published - span.first + 1
        pending += span.last - span.published
        runs = (
            [(span.first, span.published)]
            if on_topic is None
            else on_topic.missing(span.first, span.published)
        )
        for first, last in runs:
            out.append(Mismatch(MISSING, place, span.order_id, _versions(first, last)))
        if on_topic is not None and on_topic.late and on_topic.late <= span.published:
            detail = f"version {on_topic.late} came after a later version"
            out.append(Mismatch(OUT_OF_ORDER, place, span.order_id, detail))
    counts.add(place, events=checked, pending=pending, duplicates=duplicates)
    return out


def _versions(first: int, last: int) -> str:
    if first == last:
        return f"version {first} not on the topic"
    return f"versions {first}..{last} not on the topic"
