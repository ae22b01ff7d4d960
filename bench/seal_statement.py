"""Server time of one personal-event append, sealed beside plain (docs/privacy.md#costs).

    .venv/bin/python bench/seal_statement.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--orders 900]

Wall-clock append rates on a shared machine swing too much to see a 20 us change; this runs
the store's single-event statement (`APPEND_ONE_SQL`) under `EXPLAIN ANALYZE` for the bench's
`OrderPlaced` (customer, two addresses, note) and `OrderDetailsChanged`, in one scratch
database per variant, interleaved order by order, and prints percentiles of the server's
execution time (the client, the network and the commit are not in it). Variants: plain;
sealed (the codec, as deployed); sealed without migration 0012's two indexes; sealed without
them and with `toast_tuple_target = 8160` (rows kept uncompressed), to show what each costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # run as a script from a checkout: make the repository importable
    sys.path.insert(0, _ROOT)

from bench.append import order_life  # noqa: E402
from ledger.privacy import Keyring, MemoryKeyStore, PersonalDataCodec  # noqa: E402
from ledger.store import migrate  # noqa: E402
from ledger.store.statements import APPEND_ONE_SQL  # noqa: E402

_NO_INDEX = "DROP INDEX events_pd_subject; DROP INDEX events_pd_email;"
VARIANTS: dict[str, tuple[bool, str]] = {  # name: (sealed, SQL run on its database first)
    "plain": (False, ""),
    "sealed": (True, ""),
    "sealed, no index": (True, _NO_INDEX),
    "sealed, no index, no TOAST": (True, _NO_INDEX + "ALTER TABLE events SET (toast_tuple_target = 8160);"),
}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dsn", default=os.environ.get("LEDGER_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--orders", type=int, default=900, help="orders per variant (the first 100 warm up)")
    args = parser.parse_args()
    codec = PersonalDataCodec(MemoryKeyStore(), Keyring.from_base64(Keyring.generate_base64()))
    admin = await asyncpg.connect(args.dsn)
    conns: dict[str, asyncpg.Connection] = {}
    names: list[str] = []
    try:
        for i, (variant, (_, setup)) in enumerate(VARIANTS.items()):
            name = f"ledger_bench_seal_{os.getpid()}_{i}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            names.append(name)
            dsn = urlunsplit(urlsplit(args.dsn)._replace(path=f"/{name}"))
            await migrate(dsn)
            conns[variant] = await asyncpg.connect(dsn)
            if setup:
                await conns[variant].execute(setup)
        times: dict[tuple[str, str], list[float]] = {
            (v, t): [] for v in VARIANTS for t in ("placed", "changed")
        }
        for i in range(args.orders + 100):
            life = order_life(i, placed_only=False)
            for variant, (sealed, _) in VARIANTS.items():
                stream = f"order-{uuid.uuid4()}"
                for version, kind, given in ((0, "placed", life[0]), (1, "changed", life[3])):
                    [event] = await codec.encode(stream, [given]) if sealed else [given]
                    plan = await conns[variant].fetchval(
                        "EXPLAIN (ANALYZE, FORMAT JSON) " + APPEND_ONE_SQL,
                        stream, version, uuid.uuid4(), event.type, 1,
                        orjson.dumps(event.data).decode(), orjson.dumps(dict(event.metadata)).decode(),
                    )  # fmt: skip
                    if i >= 100:
                        times[(variant, kind)].append(json.loads(plan)[0]["Execution Time"] * 1000)
        print(f"server execution time of one append, us ({args.orders} orders per variant, interleaved)")
        print(f"{'variant':<28}{'event':<10}{'p10':>6}{'p25':>6}{'median':>8}  vs plain (p25)")
        for (variant, kind), xs in times.items():
            xs.sort()
            plain = sorted(times[("plain", kind)])[len(xs) // 4]
            p25 = xs[len(xs) // 4]
            print(
                f"{variant:<28}{kind:<10}{xs[len(xs) // 10]:>6.0f}{p25:>6.0f}"
                f"{statistics.median(xs):>8.0f}  {p25 / plain:.2f}x"
            )
        for variant, conn in conns.items():
            size = await conn.fetchval(
                "SELECT avg(octet_length(data::text))::int FROM events WHERE type = 'OrderPlaced'"
            )
            print(f"{variant:<28}OrderPlaced data: {size:,} bytes of JSON text")
    finally:
        for conn in conns.values():
            await conn.close()
        for name in names:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
