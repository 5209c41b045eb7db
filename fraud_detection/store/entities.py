"""Adding banks, users, accounts and merchants: references checked, duplicates refused."""

from __future__ import annotations

from fraud_detection.config import Settings
from fraud_detection.errors import UsageError
from fraud_detection.records import Account, Bank, Entity, Merchant, User
from fraud_detection.store import queries
from fraud_detection.store.keyspace import Store
from fraud_detection.store.tables import STATEMENTS, entity_rows

_PRIMARY = {Bank: ("banks", "bank_id"), User: ("users", "user_id"),
            Account: ("accounts", "account_id"), Merchant: ("merchants", "merchant_id")}


class EntityRejected(UsageError):
    pass


class UnknownReference(EntityRejected):
    """The bank or user the entity names is not there (yet)."""


def check_references(store: Store, entity: Entity) -> None:
    if isinstance(entity, User | Account) and queries.bank(store, entity.bank_id) is None:
        raise UnknownReference(f"bank_id: unknown bank {entity.bank_id!r}")
    if isinstance(entity, Account):
        owner = queries.user(store, entity.user_id)
        if owner is None:
            raise UnknownReference(f"user_id: unknown user {entity.user_id!r}")
        if owner.bank_id != entity.bank_id:
            raise EntityRejected(f"bank_id: user {entity.user_id!r} belongs to bank "
                                 f"{owner.bank_id!r}, not {entity.bank_id!r}")


def add_entity(store: Store, entity: Entity) -> None:
    """Writes a new entity to every table that serves it; raises EntityRejected with the
    reason for a duplicate id or an unknown bank or user."""
    check_references(store, entity)
    table, id_column = _PRIMARY[type(entity)]
    rows = entity_rows(entity)
    primary_values = next(values for name, values in rows if name == table)
    # A lightweight transaction: two concurrent adds of one id cannot both win.
    insert = STATEMENTS[table] + " IF NOT EXISTS"
    if not store.execute(insert, primary_values).was_applied and \
            _stored(store, entity) != entity:
        # The same entity again (a replayed message) is not an error; another one is.
        raise EntityRejected(f"{id_column}: {type(entity).__name__.lower()} "
                             f"{getattr(entity, id_column)!r} already exists")
    for name, values in rows:
        if name != table:
            store.execute(STATEMENTS[name], values)


def _stored(store: Store, entity: Entity) -> Entity | None:
    find = {Bank: queries.bank, User: queries.user, Account: queries.account,
            Merchant: queries.merchant}[type(entity)]
    return find(store, getattr(entity, _PRIMARY[type(entity)][1]))


def add_new_entity(settings: Settings, kind: str, fields: dict) -> str:
    """`add KIND`: the fields checked (a missing time is now), the entity added; its id."""
    import datetime as dt

    from fraud_detection.records import validate_entity
    from fraud_detection.store.keyspace import connect

    fields = {name: (dt.datetime.now(dt.UTC).isoformat()
                     if name.endswith("_at") and value is None else value)
              for name, value in fields.items()}
    entity, errors = validate_entity(kind, fields)
    if entity is None:
        raise EntityRejected(f"{kind}: {'; '.join(errors)}")
    store = connect(settings)
    try:
        add_entity(store, entity)
    finally:
        store.close()
    return fields[f"{kind}_id"]
