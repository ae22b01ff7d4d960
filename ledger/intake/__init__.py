"""Kafka command intake (docs/architecture.md#kafka): `orders.intake` commands run through `OrderService`."""

from ledger.intake.app import Intake, asyncapi_document
from ledger.intake.schemas import IntakeEnvelope, RejectedCommand
from ledger_kernel.wire.envelope import EventEnvelope

__all__ = ["EventEnvelope", "Intake", "IntakeEnvelope", "RejectedCommand", "asyncapi_document"]
