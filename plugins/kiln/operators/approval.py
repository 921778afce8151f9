"""``PromotionApprovalOperator``: Airflow's human-in-the-loop request (standard provider) between registration and
promotion. A person approves or rejects (with a reason) in the UI's required actions or through the REST API; no
answer within the form's ``approval_timeout_minutes`` counts as a rejection (the request's default)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

APPROVE, REJECT = "Approve", "Reject"


class PromotionApprovalOperator(HITLOperator):
    """Ask whether the run's registered version may become champion.

    :param timeout_minutes: minutes to wait for an answer (templated: a form field; the provider's own
        ``response_timeout`` is fixed when the DAG is parsed).
    """

    template_fields: Sequence[str] = (*HITLOperator.template_fields, "timeout_minutes")

    def __init__(self, *, timeout_minutes: str | int, **kwargs: Any) -> None:
        kwargs.pop("params", None)  # the DAG's form: its fields are not this request's
        super().__init__(options=[APPROVE, REJECT], defaults=[REJECT], multiple=False,
                         params={"reason": Param(None, type=["null", "string"], description="Why (kept in the registry)")},
                         **kwargs)
        self.timeout_minutes = timeout_minutes

    def execute(self, context: Any) -> Any:
        self.response_timeout = timedelta(minutes=float(self.timeout_minutes))
        return super().execute(context)
