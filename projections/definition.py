"""What a projection is: versioned tables, a pure row function of the folded order, a code hash.

A projection never holds logic of its own beyond mapping an `Order` (folded by the domain) to
rows; the fold, statuses and Transaction derivation come from `ledger.domain`. The code hash
covers the projection's own module and every domain module it relies on, so a deploy that
changes what the rows would contain under an unchanged `version` is detected and refused
(`registry.CodeChanged`): the operator bumps the version and rebuilds instead of silently
mixing rows of two logics in one table.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ledger.domain.state import Order

Row = tuple[Any, ...]
RowFunction = Callable[[Order], Mapping[str, Sequence[Row]]]

#: Domain modules every projection relies on (fold and decoding); projections add their own.
DOMAIN_MODULES: tuple[str, ...] = (
    "ledger.domain.events",
    "ledger.domain.state",
    "ledger.domain.values",
    "ledger.domain.money",
)

#: The JSON views and derivations the read models' rows are built from (both projections use them).
VIEW_MODULES: tuple[str, ...] = (
    "projections.encoding",
    "ledger.domain.views",
    "ledger.domain.statuses",
    "ledger.domain.transactions",
)


@dataclass(frozen=True, slots=True)
class Column:
    """One column: name and SQL type (with constraints such as NOT NULL).

    `document` marks a stored document nobody filters on: it gets no planner statistics, so
    ANALYZE does not decompress and histogram a few kB of text per sampled row (most of the
    ANALYZE time of a fresh `order_state`).
    """

    name: str
    sql_type: str
    document: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    """A read-model table: physical `<base>_v<version>` behind the view `<base>`.

    `key` names the column holding the order id: an order's rows are replaced as a whole when
    one of its events is applied, and verification checksums rows per order through it.
    `indexes` are created after a bulk load (cheaper than maintaining them during COPY).
    """

    base: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    key: str
    indexes: tuple[tuple[str, str], ...] = ()

    def physical(self, version: int) -> str:
        """The physical table name of a version."""
        return f"{self.base}_v{version}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def create_sql(self, version: int) -> str:
        """The table without primary key or indexes (added by `index_sql`)."""
        cols = ",\n    ".join(f"{c.name} {c.sql_type}" for c in self.columns)
        return f"CREATE TABLE {self.physical(version)} (\n    {cols}\n)"

    def index_sql(self, version: int) -> list[str]:
        """Primary key and secondary indexes of a version, in order (`index_builds`, then the key)."""
        return [*self.index_builds(version), self.primary_key_sql(version)]

    def index_builds(self, version: int) -> list[str]:
        """The index builds: the primary key's unique index and the secondary indexes.

        Independent of each other (CREATE INDEX locks allow one another), so they may run on
        several connections at once; `primary_key_sql` then attaches the key to its index.
        """
        name = self.physical(version)
        return [
            f"CREATE UNIQUE INDEX {name}_pkey ON {name} ({', '.join(self.primary_key)})",
            *(f"CREATE INDEX {name}_{suffix} ON {name} {spec}" for suffix, spec in self.indexes),
        ]

    def primary_key_sql(self, version: int) -> str:
        """Make the built unique index the primary key (same names as `ADD PRIMARY KEY` gives)."""
        name = self.physical(version)
        return f"ALTER TABLE {name} ADD CONSTRAINT {name}_pkey PRIMARY KEY USING INDEX {name}_pkey"


def _source_digest(module_names: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(set(module_names)):
        module = importlib.import_module(name)
        path = getattr(module, "__file__", None)
        digest.update(name.encode() + b"\0")
        if path is not None:
            digest.update(Path(path).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class Projection:
    """A projection definition.

    `rows(order)` maps a folded order to rows per table base name, each row a tuple in the
    table's column order. `modules` are hashed (with `DOMAIN_MODULES`) into `code_hash`.
    """

    name: str
    version: int
    tables: tuple[Table, ...]
    rows: RowFunction
    modules: tuple[str, ...] = field(default=())

    @cached_property
    def code_hash(self) -> str:
        """sha256 over the sources of the projection's modules and the domain modules it uses."""
        return _source_digest((*DOMAIN_MODULES, *self.modules))

    def checkpoint_name(self, version: int | None = None) -> str:
        """The name of a version's row in the store's `checkpoints` table."""
        return f"projection:{self.name}:v{self.version if version is None else version}"

    def lock_key(self, version: int | None = None) -> int:
        """The session advisory lock of one version: one active writer per version."""
        label = f"ledger-projection:{self.name}:v{self.version if version is None else version}"
        return int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big", signed=True)

    def table(self, base: str) -> Table:
        for table in self.tables:
            if table.base == base:
                return table
        raise KeyError(base)
