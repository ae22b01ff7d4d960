"""Kafka command intake (docs/architecture.md#kafka): `orders.intake` commands run through `OrderService`."""

from ledger.intake.app import Intake, asyncapi_document
from ledger.intake.schemas import EventEnvelope, IntakeEnvelope, RejectedCommand

__all__ = ["EventEnvelope", "Intake", "IntakeEnvelope", "RejectedCommand", "asyncapi_document"]
