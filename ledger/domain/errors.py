"""Domain errors: a machine-readable ``code``, a human ``reason``, and field errors.

The API maps them to RFC 9457 problem+json (``type`` from ``code``) and picks the HTTP status
from ``kind``: ``invalid`` -> 422, ``not_found`` -> 404, ``conflict`` -> 409, ``gone`` -> 410.
The domain itself knows nothing of HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DomainError", "ErrorKind", "FieldError"]

ErrorKind = Literal["invalid", "not_found", "conflict", "gone"]

_KIND_BY_CODE: dict[str, ErrorKind] = {
    "order_not_found": "not_found",
    "order_exists": "conflict",
    "order_deleted": "gone",
    "shipment_not_found": "not_found",
    "shipment_exists": "conflict",
}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One offending input field: ``loc`` is its path in the request body, e.g. ("items", 0, "quantity")."""

    loc: tuple[str | int, ...]
    code: str
    msg: str


class DomainError(Exception):
    """A command broke a rule of the order domain; nothing was decided."""

    def __init__(
        self, code: str, reason: str, field_errors: tuple[FieldError, ...] | list[FieldError] = ()
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.field_errors = tuple(field_errors)

    @property
    def kind(self) -> ErrorKind:
        return _KIND_BY_CODE.get(self.code, "invalid")

    def __repr__(self) -> str:
        return f"DomainError({self.code!r}, {self.reason!r}, {self.field_errors!r})"
