"""Personal data routes (docs/privacy.md), scope `privacy:admin`:

- `POST /api/v3/subjects/{subject}/erase`: erase a data subject (crypto-shredding plus a
  `PersonalDataErased` event on each of their orders); idempotent;
- `GET /api/v3/subjects/{subject}/export`: every personal datum held about them, as JSON;
- `GET /api/v3/subjects/{subject}/erasure`: the erasure report, per place.

`{subject}` is `profile:<profile id>`, `email:<address>` or `order:<order id>`. An unknown
subject is a 404 `subject-not-found`; a malformed one a 422 `invalid-subject`; without a
key-encryption key configured, 503 `privacy-not-configured`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ledger.api.auth import Principal
from ledger.api.deps import body_doc, read_body, require, state_of
from ledger.api.problems import Problem
from ledger.api.schemas import problem_responses
from ledger.privacy.erasure import InvalidSubject, PrivacyService, SubjectNotFound
from ledger_kernel.observability import get_logger
from ledger_kernel.wire.codec import dumps

router = APIRouter(prefix="/api/v3")
Admin = Annotated[Principal, Depends(require("privacy:admin"))]
log = get_logger(__name__)
_RESPONSES = problem_responses(401, 403, 404, 422, 503)
#: The erase route reads an optional JSON body: malformed (400), too large (413), not JSON (415).
_ERASE_RESPONSES = problem_responses(400, 401, 403, 404, 413, 415, 422, 503)


class EraseRequest(BaseModel):
    """Why the subject is erased (recorded in the event and the report; no personal data)."""

    model_config = ConfigDict(extra="forbid")
    basis: str = Field(default="data subject request", min_length=1, max_length=200)


def _service(request: Request) -> PrivacyService:
    service = state_of(request).privacy
    if service is None:
        raise Problem(
            503,
            "privacy-not-configured",
            "no key-encryption key is configured (LEDGER_PRIVACY__KEK or LEDGER_PRIVACY__KEK_FILE)",
        )
    return service


def _json(body: object) -> Response:
    return Response(dumps({"data": body}), media_type="application/json")


def _problem(exc: Exception) -> Problem:
    if isinstance(exc, SubjectNotFound):
        return Problem(404, "subject-not-found", "no order or key is held for this subject", subject=str(exc))
    return Problem(422, "invalid-subject", str(exc))


@router.post(
    "/subjects/{subject}/erase",
    summary="Erase a data subject's personal data (idempotent)",
    responses=_ERASE_RESPONSES,
    openapi_extra=body_doc(EraseRequest, required=False),
)
async def erase_subject(subject: str, request: Request, principal: Admin) -> Response:
    service = _service(request)
    body = await read_body(request, EraseRequest, empty_ok=True)
    try:
        erasure = await service.erase(subject, requested_by=principal.name, basis=body.basis)
    except (SubjectNotFound, InvalidSubject) as exc:
        raise _problem(exc) from None
    log.info(
        "subject erased",
        erasure_id=str(erasure.erasure_id),
        orders=len(erasure.orders),
        keys_destroyed=erasure.keys_destroyed,
        already_erased=erasure.already_erased,
    )
    return _json(erasure.to_json())


@router.get(
    "/subjects/{subject}/export", summary="Export a data subject's personal data", responses=_RESPONSES
)
async def export_subject(subject: str, request: Request, principal: Admin) -> Response:
    try:
        return _json(await _service(request).export(subject))
    except (SubjectNotFound, InvalidSubject) as exc:
        raise _problem(exc) from None


@router.get(
    "/subjects/{subject}/erasure", summary="The erasure report of a data subject", responses=_RESPONSES
)
async def erasure_report(subject: str, request: Request, principal: Admin) -> Response:
    try:
        return _json(await _service(request).report(subject))
    except (SubjectNotFound, InvalidSubject) as exc:
        raise _problem(exc) from None
