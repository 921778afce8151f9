"""``PromotionApprovalOperator``: Airflow's human-in-the-loop request (standard provider) between registration and
promotion. A person approves or rejects (with a reason) in the UI's required actions or through the REST API; no
answer within the form's ``approval_timeout_minutes`` counts as a rejection (the request's default).

When the dataset's spec names approvers (``approval.approvers``: users, roles), the request is assigned to them:
Airflow's API refuses anyone else's answer (403), and the resumed task checks who answered once more, failing
rather than recording an answer from someone else (an auth manager may let every user answer, e.g. the simple auth
manager's ``all_admins`` mode)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

APPROVE, REJECT = "Approve", "Reject"
SIMPLE_AUTH_MANAGER = "SimpleAuthManager"


def approver_ids(users: Sequence[str], roles: Sequence[str]) -> list[str]:
    """The Airflow user ids that may answer: ``users`` and every user of ``roles``. Roles are resolved from the simple
    auth manager's users (``[core] simple_auth_manager_users``, name:role); another auth manager has no list of a
    role's users to read, so there name the users."""
    from airflow.providers.common.compat.sdk import conf

    ids = list(dict.fromkeys(users))
    if roles:
        manager = conf.get("core", "auth_manager", fallback="")
        if not manager.endswith(SIMPLE_AUTH_MANAGER):
            raise ValueError(f"approval.approvers.roles needs Airflow's simple auth manager (this Airflow uses "
                             f"{manager or 'another'}); name the approvers under approval.approvers.users")
        wanted = {r.lower() for r in roles}
        for entry in conf.getlist("core", "simple_auth_manager_users", fallback=[]):
            name, _, role = entry.strip().partition(":")
            if role.partition(":")[0].lower() in wanted and name not in ids:
                ids.append(name)
    if not ids:
        raise ValueError(f"approval.approvers names no Airflow user (users {list(users)}, roles {list(roles)})")
    return ids


class PromotionApprovalOperator(HITLOperator):
    """Ask whether the run's registered version may become champion.

    :param timeout_minutes: minutes to wait for an answer (templated: a form field; the provider's own
        ``response_timeout`` is fixed when the DAG is parsed).
    :param approvers: Airflow user ids that alone may answer (the spec's ``approval.approvers``, resolved by
        ``approver_ids``); empty: whoever Airflow lets answer.
    """

    template_fields: Sequence[str] = (*HITLOperator.template_fields, "timeout_minutes")

    def __init__(self, *, timeout_minutes: str | int, approvers: Sequence[str] = (), **kwargs: Any) -> None:
        kwargs.pop("params", None)  # the DAG's form: its fields are not this request's
        super().__init__(options=[APPROVE, REJECT], defaults=[REJECT], multiple=False,
                         params={"reason": Param(None, type=["null", "string"], description="Why (kept in the registry)")},
                         assigned_users=[{"id": user, "name": user} for user in approvers] or None, **kwargs)
        self.timeout_minutes = timeout_minutes

    def execute(self, context: Any) -> Any:
        self.response_timeout = timedelta(minutes=float(self.timeout_minutes))
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        result = super().execute_complete(context, event)
        person = event.get("responded_by_user")  # None: nobody answered, the timeout's default applies
        allowed = {user["id"] for user in self.assigned_users or []}
        if person is not None and allowed and str(person.get("id")) not in allowed:
            raise AirflowFailException(f"answer refused: {person.get('name') or person.get('id')!r} is not one of the "
                                       f"approvers ({', '.join(sorted(allowed))}); the version stays unpromoted")
        return result
