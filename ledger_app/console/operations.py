"""The operations page's data: lags, charts, parked orders, projections, rebuilds, reconciliation.

Every figure comes from the function the CLI or the workers already use: the relay's checkpoint
(`ledger.relay.relay.checkpoint_name`, `ledger.store.reads.events_after`), `projections.status`,
the fan-out's park queue (`consumers.fanout.delivery_store`), the store's `fence_status`. The
charts are samples of those figures taken by the API process every `console.chart_interval_s`
(`LagSampler`, kept in memory for the last hour) and drawn as inline SVG on the server.

Rebuilds started from the console run in the API process (`RebuildTracker`): `projections.rebuild`
with a progress sink the page polls. Rebuilds started elsewhere (`ledger projections rebuild`)
show as their registry status and runner state (`rebuilding`) without a bar. The last
reconciliation is `ledger_app.reconcile.latest_report`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, TypeVar

import asyncpg

from consumers.fanout.delivery_store import list_parked, unhandled_events
from consumers.fanout.operations import DESTINATIONS
from ledger.relay.relay import checkpoint_name as relay_checkpoint_name
from ledger.store import START, EventStoreProtocol, reads
from ledger.store.store import load_checkpoint
from ledger_app.reconcile import ReconcileReport
from ledger_kernel.observability import get_logger
from projections.definition import Projection
from projections.rebuild import RebuildReport, rebuild
from projections.status import VersionStatus, projection_status

log = get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sample:
    """The lags at one moment (events behind, except the fence lag in seconds)."""

    at: float  # time.time()
    head: int  # the log's highest position (append rate = its growth)
    relay: int | None
    projections: Mapping[str, int | None]
    workers: Mapping[str, int | None]
    fence_s: float


async def take_sample(
    pool: asyncpg.Pool, store: EventStoreProtocol, topic: str, projections: Sequence[Projection]
) -> Sample:
    """One reading of every lag the operations page charts."""
    head = int(await pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))
    published = await load_checkpoint(pool, relay_checkpoint_name(topic))
    relay = None if published is None else await reads.events_after(pool, published)
    lags: dict[str, int | None] = {}
    for projection in projections:
        live = [s for s in await projection_status(pool, projection) if s.status == "live"]
        if not live:
            lags[projection.name] = None
        elif live[0].checkpoint is None:  # installed, never run: its runner starts at the beginning
            lags[projection.name] = await reads.events_after(pool, START)
        else:
            lags[projection.name] = live[0].lag_events
    workers: dict[str, int | None] = {}
    for destination in DESTINATIONS:
        workers[destination] = (
            None
            if published is None
            else await unhandled_events(pool, destination, published.tx, published.position)
        )
    fence = await store.fence_status()
    return Sample(time.time(), head, relay, lags, workers, fence.oldest_writer_age_s or 0.0)


class LagSampler:
    """Samples for the last hour, taken by a task of the API process."""

    def __init__(self, interval_s: float, keep_s: float = 3600.0) -> None:
        self.interval_s = interval_s
        self.samples: deque[Sample] = deque(maxlen=int(keep_s / interval_s) + 2)

    async def sample_once(
        self, pool: asyncpg.Pool, store: EventStoreProtocol, topic: str, projections: Sequence[Projection]
    ) -> Sample:
        sample = await take_sample(pool, store, topic, projections)
        self.samples.append(sample)
        return sample

    async def run(
        self, pool: asyncpg.Pool, store: EventStoreProtocol, topic: str, projections: Sequence[Projection]
    ) -> None:
        """Sample until cancelled; a failed reading (database away) is skipped, not fatal."""
        while True:
            try:
                await self.sample_once(pool, store, topic, projections)
            except Exception as exc:
                log.warning("console lag sample failed", error=repr(exc))
            await asyncio.sleep(self.interval_s)

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Chart name -> [(time, value)], over the samples kept."""
        out: dict[str, list[tuple[float, float]]] = {"relay lag (events)": []}
        samples = list(self.samples)
        for s in samples:
            if s.relay is not None:
                out["relay lag (events)"].append((s.at, float(s.relay)))
            for name, lag in s.projections.items():
                out.setdefault(f"projection {name} lag (events)", [])
                if lag is not None:
                    out[f"projection {name} lag (events)"].append((s.at, float(lag)))
            for name, lag in s.workers.items():
                out.setdefault(f"worker {name} backlog (events)", [])
                if lag is not None:
                    out[f"worker {name} backlog (events)"].append((s.at, float(lag)))
            out.setdefault("fence lag (s)", []).append((s.at, s.fence_s))
        rate = out.setdefault("append rate (events/s)", [])
        for a, b in pairwise(samples):
            if b.at > a.at:
                rate.append((b.at, max(b.head - a.head, 0) / (b.at - a.at)))
        return out


def sparkline(points: Sequence[tuple[float, float]], width: int = 240, height: int = 48) -> str:
    """An inline SVG polyline of `points` over the last hour (empty frame without data)."""
    now = time.time()
    start = now - 3600
    frame = (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        ' role="img" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="none" stroke="#ccc"/>'
    )
    if not points:
        return frame + "</svg>"
    top = max(v for _, v in points) or 1.0
    coords = " ".join(
        f"{(max(t, start) - start) / 3600 * (width - 2) + 1:.1f},{height - 2 - v / top * (height - 6):.1f}"
        for t, v in points
    )
    return frame + f'<polyline fill="none" stroke="#2b6cb0" stroke-width="1.5" points="{coords}"/></svg>'


@dataclass
class RebuildProgress:
    """A console-started rebuild as the page shows it (a `projections.rebuild.ProgressSink`)."""

    projection: str
    version: int
    actor: str
    phase: str = "starting"
    done: int = 0
    total: int | None = None
    finished: bool = False
    error: str | None = None
    report: dict[str, Any] | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def phase_(self, name: str, total: int | None = None) -> None:
        self.phase, self.done, self.total = name, 0, total

    def advance(self, events: int, total: int | None = None) -> None:
        self.done += events
        if total is not None:
            self.total = total

    @property
    def percent(self) -> int | None:
        if not self.total:
            return None
        return min(100, round(100 * self.done / self.total))


class _Sink:
    """Adapts `RebuildProgress` to the `ProgressSink` protocol (`phase` is a field name there)."""

    def __init__(self, progress: RebuildProgress) -> None:
        self._p = progress

    def phase(self, name: str, total: int | None = None) -> None:
        self._p.phase_(name, total)

    def advance(self, events: int, total: int | None = None) -> None:
        self._p.advance(events, total)


Rebuilder = Callable[..., Awaitable[RebuildReport]]


class Background:
    """Operator actions that may outlast a request (a redrive waiting out a destination's
    back-off): they run as tasks of the API process, kept referenced, cancelled at shutdown.
    The request waits for one up to a bound and otherwise says it goes on."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Awaitable[T]) -> asyncio.Task[T]:
        async def run() -> T:
            return await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("console background action failed", error=repr(task.exception()))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class RebuildTracker:
    """Rebuilds started from the console, one at a time per projection, with their progress."""

    def __init__(self, rebuilder: Rebuilder = rebuild) -> None:
        self._rebuild = rebuilder
        self.runs: dict[str, RebuildProgress] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def running(self, name: str) -> bool:
        run = self.runs.get(name)
        return run is not None and not run.finished

    def start(self, pool: asyncpg.Pool, projection: Projection, actor: str, *, page_size: int) -> RebuildProgress:
        """Start rebuilding `projection` (this deploy's version) in the background."""
        progress = RebuildProgress(projection.name, projection.version, actor)
        self.runs[projection.name] = progress

        async def work() -> None:
            try:
                report = await self._rebuild(pool, projection, page_size=page_size, progress=_Sink(progress))
                progress.report = report.as_json()
                progress.phase = "done"
                log.info("console rebuild finished", projection=projection.name, version=projection.version)
            except Exception as exc:
                progress.error = str(exc)
                log.warning("console rebuild failed", projection=projection.name, error=str(exc))
            finally:
                progress.finished = True

        task = asyncio.get_running_loop().create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return progress

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


#: Where the console reads the last reconciliation: `ledger_app.reconcile.latest_report` (the
#: function behind `ledger audit reconcile` and `GET /api/v3/reconciliations/latest`).
LatestReconciliation = Callable[[asyncpg.Pool], Awaitable[ReconcileReport | None]]


async def projections_view(pool: asyncpg.Pool, projections: Sequence[Projection]) -> list[VersionStatus]:
    """Every version of every projection (`ledger projections status`)."""
    return [line for p in projections for line in await projection_status(pool, p)]


async def parked_view(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Parked orders per destination with the head event's reason (`ledger fanout parked`)."""
    return await list_parked(pool)
