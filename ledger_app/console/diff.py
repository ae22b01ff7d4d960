"""What an event changed, readably: the order's JSON view before and after it, flattened and compared.

Pure functions over the domain's JSON views (`ledger.domain.views.order_to_json`), so the diff
shows the same fields, names and money (major units) as the API's order responses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Fields that change with every event: shown in the timeline's own columns, not in the diff.
_NOISE = frozenset({"version", "updated_at"})


@dataclass(frozen=True, slots=True)
class Change:
    """One leaf that differs: its dotted path (`items[0].quantity`), old and new text."""

    path: str
    before: str | None
    after: str | None

    @property
    def kind(self) -> str:
        """added, removed or changed."""
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "changed"


def _keyed(items: Sequence[Any]) -> dict[str, Any] | None:
    """Lists of records with ids (lines, payments, shipments) compare by id, not by position."""
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, Mapping):
            return None
        key = next((item[k] for k in ("id", "line_id", "payment_id", "shipment_id") if item.get(k)), None)
        if key is None or str(key) in out:
            return None
        out[str(key)] = item
    return out


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) for every leaf of a JSON view; empty containers are leaves."""
    if isinstance(value, Mapping) and value:
        for key, child in value.items():
            yield from flatten(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list | tuple) and value:
        keyed = _keyed(value)
        if keyed is not None:
            for key, child in keyed.items():
                yield from flatten(child, f"{prefix}[{key}]")
        else:
            for i, child in enumerate(value):
                yield from flatten(child, f"{prefix}[{i}]")
    else:
        yield prefix, _text(value)


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | Mapping):
        return "[]" if isinstance(value, list | tuple) else "{}"
    return str(value)


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[Change]:
    """The leaves that differ between two order views (`before` None: the order was placed)."""
    old = dict(flatten(before)) if before is not None else {}
    new = dict(flatten(after))
    changes = []
    for path in list(old) + [p for p in new if p not in old]:
        if path.split(".", 1)[0].split("[", 1)[0] in _NOISE:
            continue
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        if a is None and b in ("null", "[]", "{}", ""):
            continue  # a new record's empty fields say nothing
        if a in _EMPTY and b is None and _filled(path, new):
            continue  # an empty list or object that now has entries: the entries are the change
        if b in _EMPTY and a is None and _filled(path, old):
            continue
        changes.append(Change(path, a, b))
    return changes


_EMPTY = frozenset({"[]", "{}"})


def _filled(path: str, leaves: Mapping[str, str]) -> bool:
    return any(p.startswith((path + "[", path + ".")) for p in leaves)
