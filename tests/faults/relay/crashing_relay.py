"""`python -m tests.faults.relay.crashing_relay POINT N`: the relay process (`ledger.relay`), SIGKILLed
by itself the `N`th time it passes the named crash point `POINT` (docs/reliability.md#f1).

The points are the moments between the relay's steps where a crash leaves different state behind:

- `after_read`: a batch was read and encoded; nothing of it was handed to the producer.
- `after_produce`: a record batch was handed to the producer (maybe on the wire, maybe not);
  its acknowledgement was not waited for.
- `mid_batch`: one partition's records of a publish were acknowledged; others may not be.
- `after_ack`: a whole publish was acknowledged; its checkpoint was not saved (a restart must
  publish it again, byte for byte).
- `after_checkpoint`: the checkpoint of a publish was saved; the next batch was not started.

Exactly-once relays (`LEDGER_RELAY__EXACTLY_ONCE=true`, ledger/relay/eos.py) add the moments of
their transaction (`after_produce` is inside it there):

- `mid_transaction`: every record of a publish was acknowledged inside its open transaction;
  the checkpoint record was not added and nothing was committed (the next relay aborts it).
- `after_commit`: the transaction (records and Kafka checkpoint) was committed; the
  `publish` call has not returned.
- `before_pg_checkpoint`: `publish` returned; PostgreSQL's checkpoint is about to be saved (it
  stays one publish behind Kafka's).

One more point stops the process instead of killing it:

- `term_in_publish`: SIGTERM is sent to the process after a (non-empty) publish was handed
  its records and before it returns, so a batch is in flight when the signal arrives. The
  process writes `term_in_publish n=N before=B records=R` first (B: records of the earlier
  publishes, R: of this one).

The hooks wrap the relay's own methods in this process only: production code carries no test
switch. Before dying the process writes `crash_point=POINT n=N` to stderr, so a test can tell
that the crash happened where it meant it to.

`python -m tests.faults.relay.crashing_relay zombie 0` runs a relay that never takes nor checks
the relay's advisory lock: a relay whose lock session is gone but which has not noticed (a long
pause, a partition). Only Kafka's fencing stops it: it exits 3 (`zombie_fenced`) when its
producer was fenced by a newer relay of the topic.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from ledger.relay.cli import main
from ledger.relay.publisher import KafkaPublisher
from ledger.relay.relay import LeadershipLost, Relay
from ledger.store import create_pool
from ledger_kernel.observability import configure_logging
from ledger_kernel.settings import Settings

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

POINTS = (
    "after_read",
    "after_produce",
    "mid_batch",
    "after_ack",
    "after_checkpoint",
    "term_in_publish",
    "mid_transaction",
    "after_commit",
    "before_pg_checkpoint",
)
EXIT_FENCED = 3


def crash_after(
    point: str, nth: int, original: F, *, counts: Callable[[tuple[Any, ...]], bool] = lambda _: True
) -> F:
    """`original`, which SIGKILLs this process right after its `nth` counted call returned."""
    calls = 0

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        result = await original(*args, **kwargs)
        if counts(args):
            calls += 1
            if calls == nth:
                print(f"crash_point={point} n={nth}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    return wrapper  # type: ignore[return-value]


def crash_before(point: str, nth: int, original: F) -> F:
    """`original`, which SIGKILLs this process when it is called the `nth` time, before it runs."""
    calls = 0

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            print(f"crash_point={point} n={nth}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def terminate_within(nth: int, original: F) -> F:
    """`original` (a publish), which SIGTERMs this process during its `nth` non-empty call: the
    signal is raised once the call started, so the relay's handler runs while it is in flight."""
    calls = 0
    before = 0  # records handed to the earlier publishes

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls, before
        if _non_empty(args):
            calls += 1
            if calls == nth:
                mark = f"term_in_publish n={nth} before={before} records={len(args[1])}"
                print(mark, file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
            before += len(args[1])
        return await original(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _non_empty(args: tuple[Any, ...]) -> bool:
    return bool(args[1])  # (self, messages): the start-up connection check publishes nothing


def install(point: str, nth: int) -> None:
    """Wrap the method that ends where `point` is."""
    if point == "after_read":
        Relay._encode = crash_after(point, nth, Relay._encode)  # type: ignore[method-assign]
    elif point == "after_produce":
        AIOKafkaProducer.send_batch = crash_after(point, nth, AIOKafkaProducer.send_batch)
    elif point == "mid_batch":
        KafkaPublisher._send_partition = crash_after(point, nth, KafkaPublisher._send_partition)  # type: ignore[method-assign]
    elif point == "after_ack":
        KafkaPublisher.publish = crash_after(point, nth, KafkaPublisher.publish, counts=_non_empty)  # type: ignore[method-assign]
    elif point == "term_in_publish":
        KafkaPublisher.publish = terminate_within(nth, KafkaPublisher.publish)  # type: ignore[method-assign]
    elif point == "after_checkpoint":
        Relay._save_checkpoint = crash_after(point, nth, Relay._save_checkpoint)  # type: ignore[method-assign]
    elif point == "mid_transaction":
        KafkaPublisher._send_all = crash_after(point, nth, KafkaPublisher._send_all)  # type: ignore[method-assign]
    elif point == "after_commit":
        KafkaPublisher._commit = crash_after(point, nth, KafkaPublisher._commit)  # type: ignore[method-assign]
    elif point == "before_pg_checkpoint":
        Relay._save_checkpoint = crash_before(point, nth, Relay._save_checkpoint)  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {point!r}; one of {', '.join(POINTS)}")


async def _zombie(settings: Settings) -> int:
    """A relay without the advisory lock until stopped (0) or fenced (`EXIT_FENCED`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(
        settings.database_url, settings.store, application_name="ledger-relay-zombie", min_size=1, max_size=4
    )
    try:
        await Relay(settings, pool, stop=stop).run()  # no `still_leader`: it believes it leads
    except LeadershipLost as exc:
        print(f"zombie_fenced {exc}", file=sys.stderr, flush=True)
        return EXIT_FENCED
    finally:
        await pool.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "zombie":
        zombie_settings = Settings()
        configure_logging(zombie_settings.log_level, zombie_settings.log_json)
        sys.exit(asyncio.run(_zombie(zombie_settings)))
    install(sys.argv[1], int(sys.argv[2]))
    sys.argv = [sys.argv[0]]
    main()
