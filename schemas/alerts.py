"""The monitoring service's KPI alerts: one message on ``alerts`` when a threshold is crossed."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import Identifier, Payload, utc_now

AlertState = Literal["firing", "resolved"]


class Alert(Payload):
    """A KPI left its bounds (``firing``) or came back within them (``resolved``)."""

    alert_id: Identifier
    state: AlertState
    model_name: str
    model_version: int | None = None
    kpi: str = Field(description="The KPI, as named in the KPI rules (accuracy, label_coverage).")
    value: float
    bound: str = Field(description="The rule, e.g. '>= 0.8'.")
    window: int = Field(ge=0, description="Observations the KPI value is over.")
    raised_at: datetime = Field(default_factory=utc_now)
