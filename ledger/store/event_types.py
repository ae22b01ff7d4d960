"""Event typing for a generic store: pydantic models by `type`, plus upcasters for old versions.

The store knows nothing of orders. The composition root registers the domain's event models
(`type: Literal[...]` field and `schema_version: ClassVar[int]`) and its upcasters
`(type, from_version) -> fn(data) -> data`. Events are validated when encoded for an append;
stored events of older schema versions are upcast step by step on read, so every stored event
stays readable forever.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from ledger.store.errors import InvalidEventData, UnknownEventType
from ledger.store.records import JSONObject, NewEvent, uuid7

Upcaster = Callable[[JSONObject], JSONObject]


def _literal_type(model: type[BaseModel]) -> str:
    field = model.model_fields.get("type")
    if field is None:
        raise TypeError(f"{model.__name__} has no `type` field")
    args = typing.get_args(field.annotation)
    if (
        typing.get_origin(field.annotation) is not typing.Literal
        or len(args) != 1
        or not isinstance(args[0], str)
    ):
        raise TypeError(f"{model.__name__}.type must be annotated as Literal['<name>']")
    return args[0]


class EventRegistry:
    """Maps event type names to pydantic models and upcasters."""

    def __init__(
        self,
        models: Iterable[type[BaseModel]] = (),
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        self._models: dict[str, type[BaseModel]] = {}
        self._versions: dict[str, int] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        for model in models:
            self.register(model)
        for (type_, from_version), fn in (upcasters or {}).items():
            self.register_upcaster(type_, from_version, fn)

    def register(self, model: type[BaseModel], type_name: str | None = None) -> None:
        """Register a model under its `type` Literal (or `type_name`) at its `schema_version`."""
        name = type_name or _literal_type(model)
        version = getattr(model, "schema_version", 1)
        if not isinstance(version, int) or version < 1:
            raise TypeError(f"{model.__name__}.schema_version must be a positive int")
        existing = self._models.get(name)
        if existing is not None and existing is not model:
            raise ValueError(f"event type {name!r} is already registered to {existing.__name__}")
        self._models[name] = model
        self._versions[name] = version

    def register_upcaster(self, type_name: str, from_version: int, fn: Upcaster) -> None:
        """Register `fn` turning `type_name` data of `from_version` into `from_version + 1`."""
        self._upcasters[(type_name, from_version)] = fn

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._models

    @property
    def types(self) -> frozenset[str]:
        """Registered type names."""
        return frozenset(self._models)

    def model(self, type_name: str) -> type[BaseModel]:
        """The model class of a type; `UnknownEventType` if not registered."""
        try:
            return self._models[type_name]
        except KeyError:
            raise UnknownEventType(f"event type {type_name!r} is not registered") from None

    def current_version(self, type_name: str) -> int:
        """The schema version new events of this type are written with."""
        self.model(type_name)
        return self._versions[type_name]

    def encode(self, event: BaseModel) -> tuple[str, int, JSONObject]:
        """`(type, schema_version, data)` of a model, validated; `data` has no `type` key."""
        name = _literal_type(type(event))
        if self._models.get(name) is not type(event):
            raise UnknownEventType(f"event type {name!r} ({type(event).__name__}) is not registered")
        validated = type(event).model_validate(event.model_dump())
        data = validated.model_dump(mode="json", exclude={"type"})
        return name, self._versions[name], data

    def new_event(
        self,
        event: BaseModel,
        metadata: Mapping[str, Any] | None = None,
        event_id: UUID | None = None,
    ) -> NewEvent:
        """A `NewEvent` ready to append, from a validated model."""
        name, version, data = self.encode(event)
        return NewEvent(
            type=name,
            data=data,
            metadata=dict(metadata or {}),
            event_id=event_id or uuid7(),
            schema_version=version,
        )

    def upcast(self, type_name: str, schema_version: int, data: JSONObject) -> JSONObject:
        """Bring stored `data` from `schema_version` up to the current version, one step at a time."""
        current = self.current_version(type_name)
        if schema_version > current:
            raise InvalidEventData(
                f"{type_name} has schema version {schema_version}, newer than this code's {current}"
            )
        while schema_version < current:
            fn = self._upcasters.get((type_name, schema_version))
            if fn is None:
                raise InvalidEventData(f"no upcaster for {type_name} from schema version {schema_version}")
            data = fn(dict(data))
            schema_version += 1
        return data

    def decode(self, type_name: str, schema_version: int, data: Mapping[str, Any]) -> BaseModel:
        """The model of a stored event, upcasting old schema versions first."""
        model = self.model(type_name)
        upcast = self.upcast(type_name, schema_version, dict(data))
        upcast["type"] = type_name
        return model.model_validate(upcast)
