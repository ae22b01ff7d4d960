"""Every process reads one `Settings` object, built once in its composition root.

Environment variables use the `LEDGER_` prefix and `__` for nesting, so
`LEDGER_KAFKA__BOOTSTRAP_SERVERS` sets `settings.kafka.bootstrap_servers`. The two
most common ones also have flat aliases (`LEDGER_DATABASE_URL`,
`LEDGER_KAFKA_BOOTSTRAP_SERVERS`) because docs/architecture.md#processes and the dev stack's `.ledger/dev.env` use them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseModel):
    """Event store limits and pool sizing."""

    pool_min_size: int = 2
    pool_max_size: int = 20
    append_connections: int = Field(
        default=8,
        ge=1,
        description="Pool connections appends keep leased while appends keep coming (at most).",
    )
    max_event_bytes: int = Field(default=1024 * 1024, description="Largest accepted event (data+metadata).")
    max_events_per_append: int = 1000
    statement_timeout_ms: int = 15_000
    idle_in_transaction_timeout_ms: int = 10_000
    poll_interval_s: float = Field(
        default=0.5, description="Subscription polling fallback when NOTIFY is silent."
    )
    idempotency_ttl_hours: int = Field(default=72, description="How long command idempotency keys are kept.")
    idempotency_prune_interval_s: float = Field(
        default=600.0, description="How often the API prunes old keys."
    )


class KafkaSettings(BaseModel):
    """Topics, groups and producer/consumer tuning."""

    bootstrap_servers: str = "127.0.0.1:9092"
    events_topic: str = "orders.events"
    intake_topic: str = "orders.intake"
    rejected_topic: str = "orders.intake.rejected"
    partitions: int = 6
    intake_group: str = "ledger-intake"
    acks: str = "all"
    enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer; real Kafka supports it, the Tansu test broker does not.",
    )
    transactional_id: str | None = Field(
        default=None,
        description=(
            "Transactional producer id of an exactly-once relay (default: `ledger-relay:<topic>`,"
            " stable per topic so a zombie relay is fenced); needs a broker with transactions."
        ),
    )
    checkpoints_topic: str | None = Field(
        default=None,
        description=(
            "Compacted topic an exactly-once relay commits its checkpoint to, in the transaction"
            " of the records (default: `<events topic>.checkpoints`, e.g. orders.events.checkpoints)."
        ),
    )
    fetch_max_wait_ms: int = Field(default=10, description="Tansu does not answer waiting fetches early.")
    max_batch_size: int = 1024 * 1024
    request_timeout_ms: int = 10_000


class ApiSettings(BaseModel):
    """HTTP API limits."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = Field(
        default=None,
        ge=1,
        description="HTTP worker processes (`ledger api --workers` overrides); default: one per core."
        " The API keeps no state between requests, so any worker answers any request.",
    )
    max_body_bytes: int = 1024 * 1024
    max_lines: int = 500
    page_size_max: int = Field(
        default=500,
        ge=1,
        le=500,
        description="Largest `limit` of a list page (a larger one is a 422 on every list route).",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request head (request line and headers) answered; larger ones get 431.",
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request not answered by then gets 503 + Retry-After (e.g. while PostgreSQL stalls).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, `GET /metrics` needs `Authorization: Bearer <this token>` (else 401).",
    )
    metrics_port: int | None = Field(
        default=None,
        description="When set, metrics are served on this port (same host) and not on the API's port.",
    )


class RelaySettings(BaseModel):
    """Relay batching and back-off."""

    batch_size: int = Field(
        default=2000, description="Most events per publish batch (a backlog drains in batches this big)."
    )
    publish_interval_ms: float = Field(
        default=20.0,
        ge=0,
        description=(
            "Least time between the starts of two publishes while caught up (a read returned less"
            " than a batch); events arriving meanwhile join the next one. Fewer, larger record"
            " batches for the broker (like Kafka's linger.ms); an idle relay still publishes at"
            " once; 0: publish as soon as read (bench/relay.py at 1,000 ev/s on Tansu: 20 ms cut"
            " the broker's CPU in the run's last third from ~60% to ~46% of a core and kept p99"
            " at ~55 ms, for ~10 ms more p50)."
        ),
    )
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    metrics_port: int | None = None
    exactly_once: bool = Field(
        default=False,
        description=(
            "Publish each batch and the relay's checkpoint in one Kafka transaction, resuming from"
            " the checkpoint committed in Kafka (`ledger relay --exactly-once`). Needs a broker with"
            " transactions (Apache Kafka); refused at start-up on one without (Tansu), never downgraded."
        ),
    )


class ProjectionSettings(BaseModel):
    """Runner batching."""

    batch_size: int = 1000
    rebuild_page_size: int = 20_000
    metrics_port: int | None = None


class DestinationSettings(BaseModel):
    """One fan-out destination (Omneo or Omnisend)."""

    base_url: str | None = None
    token: SecretStr | None = None
    rate_per_minute: float = 400.0
    timeout_s: float = 10.0
    max_attempts: int = 8
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    group_id: str = ""
    mode: str = Field(default="orders", description="Omnisend: 'orders' (v3 orders API) or 'events'.")
    default_location_id: str | None = Field(
        default=None,
        description=(
            "Omneo: location_id sent on Transactions whose shipment names none (online orders);"
            " Omneo's SDK types location_id as a required string on a Transaction."
        ),
    )
    country_code_format: Literal["alpha3", "alpha2"] = Field(
        default="alpha3",
        description=(
            "Omnisend v3 address countryCode: 'alpha3' ('USA', the seed's reading, default) or"
            " 'alpha2' ('US', as Omnisend's published v3 spec and its WooCommerce plugin send;"
            " docs/connectors.md). The local sandbox validates whichever is set."
        ),
    )
    batch_size: int = Field(
        default=500,
        description=(
            "Omnisend orders mode: orders per v3 batch (POST /v3/batches, at most 1000) for a backlog"
            " and `ledger fanout replay`; 1 turns batching off. 500 is what Omnisend's WooCommerce"
            " plugin sends per batch."
        ),
    )
    batch_min_orders: int = Field(
        default=20,
        description=(
            "Omnisend orders mode: the worker uses batches only when one fetch from Kafka holds at"
            " least this many orders (a backlog); live traffic keeps single calls (lower latency)."
        ),
    )
    batch_poll_s: float = Field(default=2.0, description="Seconds between polls of a batch's status.")
    batch_wait_s: float = Field(
        default=120.0,
        description=(
            "How long a batch may run before its unanswered orders are sent one by one (kept well"
            " under Kafka's 300 s max poll interval: the worker waits for it inside one fetch)."
        ),
    )
    order_number_type: Literal["string", "integer"] = Field(
        default="string",
        description=(
            "Omnisend v3 orderNumber: 'string' (the producer's order number as given, the seed's"
            " reading, default) or 'integer' (its digits, as Omnisend's published v3 spec types it;"
            " docs/connectors.md). The local sandbox validates whichever is set."
        ),
    )


class ConsoleSettings(BaseModel):
    """The web console under `/console` (ledger_app/console): its session cookie."""

    session_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs console session cookies; unset: a random key per process"
        " (sessions end when the API restarts; set it when running several API workers).",
    )
    session_max_age_s: int = Field(default=8 * 3600, ge=60, description="A console sign-in lasts this long.")
    cookie_secure: bool = Field(
        default=False, description="Mark the session cookie Secure (set it when served over HTTPS)."
    )
    chart_interval_s: float = Field(
        default=15.0, gt=0, description="How often the API samples lag and append rate for the console's charts."
    )


class PrivacySettings(BaseModel):
    """Personal data: the key-encryption key that wraps every data subject's key (docs/privacy.md).

    Without a key (`kek` and `kek_file` both unset) personal fields are stored as given: set one
    in production. `ledger dev` generates one into `.ledger/kek`.
    """

    kek: SecretStr | None = Field(
        default=None,
        description="Key-encryption key: 32 random bytes, base64 (e.g. `openssl rand -base64 32`).",
    )
    kek_file: str | None = Field(
        default=None, description="A file holding the key-encryption key (base64), read at start."
    )
    key_cache_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "How long a process keeps a subject's unwrapped key: an erasure made by another"
            " process is seen by this one within this time (the erasing process sees it at once)."
        ),
    )
    kafka_retention_hours: float | None = Field(
        default=None,
        description=(
            "`orders.intake` retention as configured on the broker, reported as the erasure horizon"
            " of producer commands (`orders.events` never carries personal data in plain text)."
        ),
    )


def _omneo() -> DestinationSettings:
    return DestinationSettings(group_id="ledger-fanout-omneo", rate_per_minute=600.0)


def _omnisend() -> DestinationSettings:
    return DestinationSettings(group_id="ledger-fanout-omnisend", rate_per_minute=400.0)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    """The whole configuration; see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="LEDGER_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/ledger",
        validation_alias=AliasChoices("LEDGER_DATABASE_URL", "database_url"),
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LEDGER_KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="Flat alias that overrides kafka.bootstrap_servers.",
    )
    store: StoreSettings = StoreSettings()
    kafka: KafkaSettings = KafkaSettings()
    api: ApiSettings = ApiSettings()
    relay: RelaySettings = RelaySettings()
    projections: ProjectionSettings = ProjectionSettings()
    console: ConsoleSettings = ConsoleSettings()
    omneo: DestinationSettings = Field(default_factory=_omneo)
    omnisend: DestinationSettings = Field(default_factory=_omnisend)
    privacy: PrivacySettings = PrivacySettings()
    log_level: str = "INFO"
    log_json: bool | None = Field(default=None, description="JSON logs; default: when stdout is not a TTY.")

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        """A typo would otherwise surface as a crash inside logging setup, far from its cause."""
        level = value.upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return level

    @property
    def bootstrap_servers(self) -> str:
        """The broker list, honouring the flat alias first."""
        return self.kafka_bootstrap_servers or self.kafka.bootstrap_servers

    @property
    def bootstrap_server_list(self) -> list[str]:
        """The broker list one host an item: FastStream's KafkaBroker takes a string as a single
        host, so "kafka-1:9092,kafka-2:9092" would not resolve (found on the three-node tier)."""
        return [host.strip() for host in self.bootstrap_servers.split(",") if host.strip()]
