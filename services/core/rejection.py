"""Why an input cannot be accepted: the value every check returns instead of raising."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import RejectReason


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input cannot be accepted: a reason code and a sentence for people."""

    reason: RejectReason
    detail: str
    event_id: str | None = None
