"""The queries the dashboard runs, each checked against who is asking: a customer sees
only their own user's data, a bank only its own; analysts and admins see everything.
A refused request raises AccessDenied before any row is read. Asking for something by
id that exists but is not the viewer's answers exactly as asking for an unknown id, so
a refusal never reveals that a record exists, nor who owns it."""

from __future__ import annotations

import datetime as dt

from fraud_detection.errors import UsageError
from fraud_detection.records import Account, Bank, ScoredTransaction, User
from fraud_detection.store import queries
from fraud_detection.store.keyspace import Store
from fraud_detection.store.logins import Viewer

STAFF = ("analyst", "admin")


class AccessDenied(UsageError):
    pass


def _require(viewer: Viewer, *roles: str) -> None:
    if viewer.role not in roles:
        raise AccessDenied(f"{viewer.username} ({viewer.role}) may not do this")


def check_user(store: Store, viewer: Viewer, user_id: str) -> None:
    if viewer.role in STAFF:
        return
    if viewer.role == "customer" and viewer.user_id == user_id:
        return
    if viewer.role == "bank":
        owner = queries.user(store, user_id)
        if owner is not None and owner.bank_id == viewer.bank_id:
            return
    raise AccessDenied(f"{viewer.username} may not see user {user_id!r}")


def check_account(store: Store, viewer: Viewer, account_id: str) -> Account:
    found = queries.account(store, account_id)
    if found is None and viewer.role in STAFF:
        raise AccessDenied(f"no account {account_id!r}")
    # Unknown and someone else's are one answer, which never names the owner.
    refused = AccessDenied(f"{viewer.username} may not see account {account_id!r}")
    if found is None:
        raise refused
    if viewer.role == "bank" and found.bank_id == viewer.bank_id:
        return found
    try:
        check_user(store, viewer, found.user_id)
    except AccessDenied:
        raise refused from None
    return found


def check_bank(viewer: Viewer, bank_id: str) -> None:
    if viewer.role in STAFF or (viewer.role == "bank" and viewer.bank_id == bank_id):
        return
    raise AccessDenied(f"{viewer.username} may not see bank {bank_id!r}")


def user(store: Store, viewer: Viewer, user_id: str) -> User | None:
    check_user(store, viewer, user_id)
    return queries.user(store, user_id)


def accounts_of_user(store: Store, viewer: Viewer, user_id: str) -> list[Account]:
    check_user(store, viewer, user_id)
    return queries.accounts_of_user(store, user_id)


def transactions_of_user(store: Store, viewer: Viewer, user_id: str, page_size: int = 50,
                         token: str | None = None) -> queries.Page[ScoredTransaction]:
    check_user(store, viewer, user_id)
    return queries.transactions_of_user(store, user_id, page_size, token)


def transactions_of_account(store: Store, viewer: Viewer, account_id: str,
                            page_size: int = 50, token: str | None = None
                            ) -> queries.Page[ScoredTransaction]:
    check_account(store, viewer, account_id)
    return queries.transactions_of_account(store, account_id, page_size, token)


def anomalies_of_user(store: Store, viewer: Viewer, user_id: str, page_size: int = 50,
                      token: str | None = None) -> queries.Page[ScoredTransaction]:
    check_user(store, viewer, user_id)
    return queries.anomalies_of_user(store, user_id, page_size, token)


def transaction(store: Store, viewer: Viewer, transaction_id: str) -> ScoredTransaction | None:
    """The transaction, or None both when there is none and when the viewer may not see
    it: the two answers are the same, so a lookup reveals neither existence nor owner."""
    found = queries.transaction(store, transaction_id)
    if found is None:
        return None
    tx = found.transaction
    try:
        if viewer.role == "bank":
            check_bank(viewer, tx.bank_id)
        else:
            check_user(store, viewer, tx.user_id)
    except AccessDenied:
        return None
    return found


def bank(store: Store, viewer: Viewer, bank_id: str) -> Bank | None:
    check_bank(viewer, bank_id)
    return queries.bank(store, bank_id)


def banks(store: Store, viewer: Viewer) -> list[Bank]:
    if viewer.role == "bank":
        found = queries.bank(store, viewer.bank_id)
        return [found] if found else []
    _require(viewer, *STAFF)
    return queries.banks(store)


def accounts_of_bank(store: Store, viewer: Viewer, bank_id: str, page_size: int = 50,
                     token: str | None = None) -> queries.Page[Account]:
    check_bank(viewer, bank_id)
    return queries.accounts_of_bank(store, bank_id, page_size, token)


def users_of_bank(store: Store, viewer: Viewer, bank_id: str, page_size: int = 50,
                  token: str | None = None) -> queries.Page[User]:
    check_bank(viewer, bank_id)
    return queries.users_of_bank(store, bank_id, page_size, token)


def bank_transactions_on(store: Store, viewer: Viewer, bank_id: str, day: dt.date,
                         page_size: int = 50, token: str | None = None
                         ) -> queries.Page[ScoredTransaction]:
    check_bank(viewer, bank_id)
    return queries.bank_transactions_on(store, bank_id, day, page_size, token)


def bank_frauds_on(store: Store, viewer: Viewer, bank_id: str, day: dt.date,
                   page_size: int = 200, token: str | None = None
                   ) -> queries.Page[ScoredTransaction]:
    check_bank(viewer, bank_id)
    return queries.bank_frauds_on(store, bank_id, day, page_size, token)


def benford_reports(store: Store, viewer: Viewer, scope: str, key: str):
    if scope == "bank":
        check_bank(viewer, key)
    else:
        check_account(store, viewer, key)
    return queries.benford_reports(store, scope, key)


def alert_queue(store: Store, viewer: Viewer, day: dt.date, by: str = "newest"
                ) -> list[ScoredTransaction]:
    """Every bank's flagged transactions of a day, newest or highest score first."""
    _require(viewer, *STAFF)
    alerts = [s for b in queries.banks(store)
              for s in queries.collect(queries.bank_frauds_on, store, b.bank_id, day)]
    if by == "score":
        alerts.sort(key=lambda s: (-s.score, s.transaction.transaction_id))
    else:
        alerts.sort(key=lambda s: (s.transaction.event_time, s.transaction.transaction_id),
                    reverse=True)
    return alerts


def search_users(store: Store, viewer: Viewer, text: str, limit: int = 20) -> list[User]:
    """Users matching text (queries.search_users): for staff, who may see every user."""
    _require(viewer, *STAFF)
    return queries.search_users(store, text, limit)


def bank_flagged_with_verdicts_on(store: Store, viewer: Viewer, bank_id: str, day: dt.date):
    check_bank(viewer, bank_id)
    return queries.bank_flagged_with_verdicts_on(store, bank_id, day)
