"""Dashboard logins: usernames with Argon2 password hashes and a role bound to what the
login may see (a customer to a user id, a bank to a bank id)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fraud_detection.errors import UsageError
from fraud_detection.store.keyspace import Store

ROLES = ("customer", "bank", "analyst", "admin")

_INSERT = ("INSERT INTO app_users (username, password_hash, role, user_id, bank_id, "
           "created_at) VALUES (?, ?, ?, ?, ?, ?)")
_SELECT = "SELECT username, password_hash, role, user_id, bank_id FROM app_users WHERE username = ?"


@dataclass(frozen=True)
class Viewer:
    """Who is looking: what every guarded query checks."""

    username: str
    role: str
    user_id: str | None = None
    bank_id: str | None = None


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def add_login(store: Store, username: str, password: str, role: str,
              user_id: str | None = None, bank_id: str | None = None) -> Viewer:
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not username or len(password) < 8:
        raise UsageError("a username and a password of at least 8 characters are required")
    if role == "customer" and not user_id:
        raise UsageError("a customer login needs --user-id")
    if role == "bank" and not bank_id:
        raise UsageError("a bank login needs --bank-id")
    viewer = Viewer(username, role, user_id if role == "customer" else None,
                    bank_id if role == "bank" else None)
    store.execute(_INSERT, (username, _hasher().hash(password), role, viewer.user_id,
                            viewer.bank_id, dt.datetime.now(dt.UTC)))
    return viewer


def log_in(store: Store, username: str, password: str) -> Viewer | None:
    """The viewer for a right username and password, None otherwise."""
    from argon2.exceptions import InvalidHashError, VerificationError

    row = store.execute(_SELECT, (username,)).one()
    if row is None:
        _hasher().hash(password)  # same work either way: no user enumeration by timing
        return None
    try:
        _hasher().verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return Viewer(row.username, row.role, row.user_id, row.bank_id)
