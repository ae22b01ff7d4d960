"""A small JSON Schema validator for the subset the vendor's OpenAPI file uses.

Why not a library: `jsonschema` is not a dependency, and the Omnisend v3 spec only uses
$ref, allOf, type, properties, required, items, enum, min/maxLength, minimum/maximum and
format (email, uri, date-time, date). Every error is returned (not just the first) so a
parked order's reason names all bad fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE)
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True, slots=True)
class SchemaError:
    """One violation: where (dotted path), which keyword, and a readable message."""

    path: str
    keyword: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(body)'}: {self.message}"


def is_date_time(value: str) -> bool:
    """RFC 3339 date-time with an offset, as the spec's `format: date-time` requires."""
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def is_uri(value: str) -> bool:
    """An absolute http(s) URL (the only kind a shop would send)."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def check_format(fmt: str, value: str) -> str | None:
    """Message for a bad `format`, or None; unknown formats are not asserted (as in JSON Schema)."""
    if fmt == "email" and not _EMAIL.match(value):
        return "must be a valid email address"
    if fmt == "uri" and not is_uri(value):
        return "must be an absolute URL"
    if fmt == "date-time" and not is_date_time(value):
        return "must be an ISO 8601 date-time with offset, e.g. 2017-05-30T14:11:12Z"
    if fmt == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            return "must be a date YYYY-MM-DD"
    return None


class Validator:
    """Validates instances against schemas inside one OpenAPI document (for `$ref`)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._doc = document

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref supported: {ref}")
        node: Any = self._doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        if not isinstance(node, Mapping):
            raise ValueError(f"$ref {ref} is not a schema")
        return node

    def validate(self, instance: Any, schema: Mapping[str, Any], path: str = "") -> list[SchemaError]:
        errors: list[SchemaError] = []
        self._check(instance, schema, path, errors)
        return errors

    def _check(self, value: Any, schema: Mapping[str, Any], path: str, errors: list[SchemaError]) -> None:
        if "$ref" in schema:
            self._check(value, self.resolve(schema["$ref"]), path, errors)
            return
        for sub in schema.get("allOf", ()):
            self._check(value, sub, path, errors)
        expected = schema.get("type")
        if expected is not None and not _is_type(value, expected):
            errors.append(SchemaError(path, "type", f"must be of type {expected}"))
            return
        if "enum" in schema and value not in schema["enum"]:
            errors.append(SchemaError(path, "enum", f"must be one of {list(schema['enum'])}"))
        if isinstance(value, str):
            self._check_string(value, schema, path, errors)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                errors.append(SchemaError(path, "minimum", f"must be >= {schema['minimum']}"))
            if "maximum" in schema and value > schema["maximum"]:
                errors.append(SchemaError(path, "maximum", f"must be <= {schema['maximum']}"))
        elif isinstance(value, dict):
            errors.extend(
                SchemaError(_join(path, name), "required", "is required")
                for name in schema.get("required", ())
                if name not in value
            )
            for name, sub in schema.get("properties", {}).items():
                if name in value:
                    self._check(value[name], sub, _join(path, name), errors)
        elif isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                self._check(item, schema["items"], f"{path}[{i}]", errors)

    @staticmethod
    def _check_string(value: str, schema: Mapping[str, Any], path: str, errors: list[SchemaError]) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                SchemaError(path, "minLength", f"must be at least {schema['minLength']} characters")
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(SchemaError(path, "maxLength", f"must be at most {schema['maxLength']} characters"))
        if "format" in schema:
            problem = check_format(str(schema["format"]), value)
            if problem:
                errors.append(SchemaError(path, "format", problem))


def _is_type(value: Any, expected: str) -> bool:
    if expected == "null":
        return value is None
    if isinstance(value, bool) and expected != "boolean":
        return False
    return isinstance(value, _TYPES.get(expected, (object,)))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
