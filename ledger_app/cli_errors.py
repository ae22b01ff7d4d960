"""Operator mistakes as one clear line and a distinct exit code, for every `ledger` command.

Why one place: a one-shot command (`ledger migrate`, `tokens create`, `projections status`,
`fanout parked`, `audit verify`, ...) that meets a database that is down, a broker that does
not answer or a malformed setting used to print a traceback of two hundred lines, and each
command would otherwise grow its own `try`. The CLI root calls `run_cli`, which lets the
command fail as it likes and turns what escapes into one line on stderr:

    ledger: PostgreSQL unreachable at postgresql://ledger:***@127.0.0.1:5433/ledger
      ([Errno 111] Connect call failed ('127.0.0.1', 5433)); check LEDGER_DATABASE_URL

(on one line), with the password redacted, and exits with the code of its kind (`ExitCode`).
The global `ledger --debug ...` re-raises instead, so the full traceback is printed.

Long-running processes (api, relay, projections run, fanout run) keep their own retry loops
and log one structured line per attempt; only what reaches the CLI root is mapped here.

Which service failed is read from the exception (asyncpg and aiokafka types) or, for a plain
`OSError`, from the library the traceback passes through; where it was going is read from the
failing call (asyncpg's `connect(dsn=...)`, the aiokafka client's bootstrap list), so a
`--database-url` option is reported as given, and otherwise from the settings.
"""

from __future__ import annotations

import re
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = ["ExitCode", "Failure", "classify", "redact_url", "run_cli", "set_debug"]


class ExitCode(IntEnum):
    """Exit codes per kind of failure (sysexits.h numbers where one fits)."""

    SETTINGS = 78
    """A setting is malformed or invalid (EX_CONFIG)."""
    DATABASE_UNREACHABLE = 69
    """PostgreSQL did not answer: down, wrong host or port, name not resolved (EX_UNAVAILABLE)."""
    DATABASE_REFUSED = 77
    """PostgreSQL answered but refused us: credentials or database name (EX_NOPERM)."""
    BROKER_UNREACHABLE = 75
    """Kafka did not answer at any bootstrap server (EX_TEMPFAIL: retry once it is up)."""
    OTHER = 70
    """Anything else: a bug or an unforeseen condition (EX_SOFTWARE); `--debug` shows it."""


@dataclass(frozen=True, slots=True)
class Failure:
    """What failed, where, and which setting to check: the one line an operator reads."""

    code: ExitCode
    what: str
    where: str | None = None
    setting: str | None = None
    detail: str = ""

    def line(self) -> str:
        text = f"ledger: {self.what}"
        if self.where:
            text += f" at {self.where}"
        if self.detail:
            text += f" ({self.detail})"
        if self.setting:
            text += f"; check {self.setting}"
        return _one_line(text)


class _DebugSwitch:
    """Set by the root `--debug` option before any command runs."""

    enabled = False


_debug = _DebugSwitch()


def set_debug(enabled: bool) -> None:
    """The CLI root's `--debug`: failures are re-raised with their traceback."""
    _debug.enabled = enabled


def run_cli(app: Callable[[], Any]) -> None:
    """Run the CLI; map an escaping exception to one line and its exit code (unless `--debug`)."""
    try:
        app()
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        if _debug.enabled:
            raise
        failure = classify(exc)
        print(failure.line(), file=sys.stderr)
        raise SystemExit(int(failure.code)) from None


# -- classification ----------------------------------------------------------------------------

_DATABASE_SETTING = "LEDGER_DATABASE_URL"
_BROKER_SETTING = "LEDGER_KAFKA_BOOTSTRAP_SERVERS"
_FLAT_ALIASES = {"database_url": _DATABASE_SETTING, "kafka_bootstrap_servers": _BROKER_SETTING}


def classify(exc: BaseException) -> Failure:
    """The kind of an exception escaping a command, with where it was going."""
    for candidate in _chain(exc):
        failure = _settings_failure(candidate) or _database_failure(candidate) or _broker_failure(candidate)
        if failure is not None:
            return failure
    return Failure(
        ExitCode.OTHER,
        "command failed",
        detail=f"{type(exc).__name__}: {_first_line(exc)}; run `ledger --debug ...` for the traceback",
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(linked for linked in (current.__cause__, current.__context__) if linked is not None)


def _settings_failure(exc: BaseException) -> Failure | None:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    if isinstance(exc, ValidationError) and exc.title == "Settings":
        first = exc.errors()[0]
        names = [_env_name(tuple(e["loc"])) for e in exc.errors()]
        return Failure(
            ExitCode.SETTINGS,
            "invalid setting",
            where=None,
            setting=", ".join(dict.fromkeys(names)),
            detail=f"{names[0]}: {first['msg']}, got {_short(first.get('input'))}",
        )
    if isinstance(exc, SettingsError):
        field = re.search(r'field "([^"]+)"', str(exc))
        setting = _env_name((field.group(1),)) if field else "the LEDGER_* environment and .env"
        return Failure(ExitCode.SETTINGS, "invalid setting", setting=setting, detail=_first_line(exc))
    return None


def _database_failure(exc: BaseException) -> Failure | None:
    import asyncpg

    in_asyncpg = _passes_through(exc, "asyncpg")
    if not (isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) or in_asyncpg):
        return None
    where = redact_url(_dsn_of(exc))
    refused = (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
        asyncpg.InvalidCatalogNameError,
    )
    if isinstance(exc, asyncpg.ClientConfigurationError) or (
        in_asyncpg and isinstance(exc, ValueError) and _raised_while_connecting(exc)
    ):
        return Failure(
            ExitCode.SETTINGS,
            "malformed PostgreSQL URL",
            where=where,
            setting=_DATABASE_SETTING,
            detail=_first_line(exc),
        )
    if isinstance(exc, refused):
        return Failure(
            ExitCode.DATABASE_REFUSED,
            "PostgreSQL refused the connection",
            where=where,
            setting=_DATABASE_SETTING,
            detail=_first_line(exc),
        )
    unreachable = (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)
    if isinstance(exc, unreachable) and _raised_while_connecting(exc):
        detail = _first_line(exc)
        if isinstance(exc, socket.gaierror):
            detail = f"host name not resolved: {detail}"
        return Failure(
            ExitCode.DATABASE_UNREACHABLE,
            "PostgreSQL unreachable",
            where=where,
            setting=_DATABASE_SETTING,
            detail=detail,
        )
    return None


def _broker_failure(exc: BaseException) -> Failure | None:
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError

    in_aiokafka = _passes_through(exc, "aiokafka")
    unreachable = isinstance(exc, KafkaConnectionError | KafkaTimeoutError | NodeNotReadyError) or (
        in_aiokafka and isinstance(exc, OSError)
    )
    if not unreachable:
        return None
    return Failure(
        ExitCode.BROKER_UNREACHABLE,
        "Kafka unreachable",
        where=_bootstrap_of(exc),
        setting=_BROKER_SETTING,
        detail=_first_line(exc),
    )


# -- where it was going ------------------------------------------------------------------------


def _frames(exc: BaseException) -> list[Any]:
    return [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]


def _passes_through(exc: BaseException, package: str) -> bool:
    return any(str(f.f_globals.get("__name__", "")).startswith(package) for f in _frames(exc))


def _raised_while_connecting(exc: BaseException) -> bool:
    """asyncpg's `connect` is on the traceback: the failure is reaching the server, not a query."""
    return any(
        f.f_globals.get("__name__") in ("asyncpg.connection", "asyncpg.connect_utils")
        and f.f_code.co_name.lstrip("_") in ("connect", "connect_addr", "create_ssl_connection")
        for f in _frames(exc)
    )


def _dsn_of(exc: BaseException) -> str:
    """The DSN the failing `asyncpg.connect` was given, else the configured one."""
    for frame in reversed(_frames(exc)):
        if frame.f_globals.get("__name__") == "asyncpg.connection" and frame.f_code.co_name == "connect":
            dsn = frame.f_locals.get("dsn")
            if isinstance(dsn, str):
                return dsn
    return _configured(lambda s: s.database_url)


def _bootstrap_of(exc: BaseException) -> str:
    """The bootstrap servers of the failing aiokafka client, else the configured ones."""
    for frame in reversed(_frames(exc)):
        owner = frame.f_locals.get("self")
        servers = getattr(owner, "_bootstrap_servers", None)
        if str(frame.f_globals.get("__name__", "")).startswith("aiokafka") and servers:
            return servers if isinstance(servers, str) else ",".join(map(str, servers))
    return _configured(lambda s: s.bootstrap_servers)


def _configured(pick: Callable[[Any], str]) -> str:
    from ledger_kernel.settings import Settings

    try:
        return pick(Settings())
    except Exception:  # the settings themselves are broken: nothing better to say
        return "?"


_USERINFO = re.compile(r"^(?P<user>[^:@/]*):(?P<password>[^@]*)@")


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (it is printed and may land in a log)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _USERINFO.sub(r"\g<user>:***@", url)
    authority, slash, path = rest.partition("/")
    authority = _USERINFO.sub(r"\g<user>:***@", authority)
    path = re.sub(r"(?i)(password=)[^&]*", r"\1***", path)
    return f"{scheme}://{authority}{slash}{path}"


# -- text --------------------------------------------------------------------------------------


def _env_name(loc: tuple[Any, ...]) -> str:
    """`('store', 'pool_max_size')` -> `LEDGER_STORE__POOL_MAX_SIZE` (flat aliases kept)."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if not parts:
        return "LEDGER_*"
    if parts[0].upper().startswith("LEDGER_"):
        return parts[0].upper()
    if len(parts) == 1 and parts[0] in _FLAT_ALIASES:
        return _FLAT_ALIASES[parts[0]]
    return "LEDGER_" + "__".join(p.upper() for p in parts)


def _short(value: Any) -> str:
    text = repr(redact_url(value) if isinstance(value, str) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _one_line(text: str) -> str:
    return " ".join(text.split())
