"""Opening sealed personal fields before mapping (docs/privacy.md#fan-out).

`orders.events` carries personal fields sealed under their subject's key (the relay publishes
the stored form). A worker opens them with the key store just before mapping, so a destination
gets plain values while the key lives, and `None` (nothing to send) once the subject is erased.
The raw envelope a worker parks stays sealed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from consumers.fanout.mapping_types import Envelope
from ledger.domain.views import order_from_json, order_to_json
from ledger.privacy import PersonalDataCodec
from ledger.privacy.erasure import ReportPlace
from ledger.privacy.setup import pg_codec
from ledger.store import Executor
from ledger_kernel.settings import Settings

__all__ = [
    "DESTINATION_LIMITS",
    "EnvelopeOpener",
    "destination_report",
    "envelope_opener",
    "opener_from_settings",
]

EnvelopeOpener = Callable[[Envelope], Awaitable[Envelope]]


def envelope_opener(codec: PersonalDataCodec) -> EnvelopeOpener:
    """An opener over `codec`: the envelope with its order state and event data opened."""

    async def open_envelope(env: Envelope) -> Envelope:
        view = order_to_json(env.order)
        opened = await codec.reveal(view)
        if opened is view:  # nothing sealed in it
            return env
        return dataclasses.replace(env, order=order_from_json(opened), data=await codec.reveal(env.data))

    return open_envelope


def opener_from_settings(db: Executor, settings: Settings) -> EnvelopeOpener | None:
    """The opener over the PostgreSQL key store; None when no key-encryption key is set."""
    codec = pg_codec(db, settings.privacy)
    return None if codec is None else envelope_opener(codec)


#: What each destination's API can and cannot erase (docs/connectors.md#erasure).
DESTINATION_LIMITS = {
    "omneo": (
        "the order is deleted (DELETE /api/v3/orders/{id}); its Transactions stay (loyalty, amounts)"
        " and keep the profile link they were sent with; the Omneo profile itself is erased in Omneo"
    ),
    "omnisend": (
        "the v3 order is deleted (DELETE /v3/orders/{orderID}); the contact Omnisend made from the"
        " order's email and events already sent (events mode) are erased in Omnisend (no API found)"
    ),
}

_DESTINATIONS_SQL = """
SELECT d.name AS destination, e.event_id::text AS event_id, i.processed_at, f.sent,
       EXISTS (SELECT 1 FROM fanout_parked p WHERE p.destination = d.name AND p.event_id = e.event_id::text)
           AS parked
  FROM events e CROSS JOIN unnest($2::text[]) AS d(name)
  LEFT JOIN fanout_inbox i ON i.destination = d.name AND i.event_id = e.event_id::text
  LEFT JOIN fanout_delivery f ON f.destination = d.name AND f.order_id = i.order_id
 WHERE e.stream_id = ANY($1::text[]) AND e.type = 'PersonalDataErased'
"""


def destination_report(db: Executor, destinations: Sequence[str] = ("omneo", "omnisend")) -> ReportPlace:
    """A place of the erasure report (`ledger.privacy.erasure.PrivacyService.places`): per
    destination, which erasure events its worker carried out, which wait, which are parked."""

    async def report(streams: Sequence[str], erased_at: datetime | None) -> list[dict[str, Any]]:
        rows = await db.fetch(_DESTINATIONS_SQL, list(streams), list(destinations)) if streams else []
        places = []
        for name in destinations:
            mine = [r for r in rows if r["destination"] == name]
            done = [r for r in mine if r["processed_at"] is not None]
            parked = [r for r in mine if r["parked"]]
            deleted = [r for r in done if r["sent"] is not None and ("erased" in str(r["sent"]))]
            status = "not_erased" if not mine else "erased" if len(done) == len(mine) else "pending"
            places.append(
                {
                    "place": f"destination:{name}",
                    "status": "parked" if parked else status,
                    "erased_at": max(r["processed_at"] for r in done).isoformat()
                    if done and status == "erased"
                    else None,
                    "detail": f"{len(done)} of {len(mine)} erasure event(s) carried out ({len(deleted)} order(s)"
                    f" deleted there, the rest never held); {len(parked)} parked. Limits: {DESTINATION_LIMITS.get(name, '')}",
                }
            )
        return places

    return report
