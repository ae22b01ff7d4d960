"""Opening sealed personal fields before mapping (docs/privacy.md#fan-out).

`orders.events` carries personal fields sealed under their subject's key (the relay publishes
the stored form). A worker opens them with the key store just before mapping, so a destination
gets plain values while the key lives, and `None` (nothing to send) once the subject is erased.
The raw envelope a worker parks stays sealed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from consumers.fanout.envelope import Envelope
from ledger.domain.views import order_from_json, order_to_json
from ledger.privacy import PersonalDataCodec
from ledger.privacy.setup import pg_codec
from ledger.store import Executor
from ledger_kernel.settings import Settings

__all__ = ["EnvelopeOpener", "envelope_opener", "opener_from_settings"]

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
