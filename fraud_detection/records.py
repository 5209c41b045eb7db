"""Canonical records shared by every source, transform, sink and the dashboard."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

UTC = dt.UTC

# Active ISO 4217 codes. Minor units matter: amounts are stored in them.
_ZERO_DECIMAL = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMAL = "BHD IQD JOD KWD LYD OMR TND"
_TWO_DECIMAL = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
    "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR "
    "KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
    "MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
    "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD "
    "TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWG"
)
CURRENCY_MINOR_UNITS: dict[str, int] = {
    **{c: 0 for c in _ZERO_DECIMAL.split()},
    **{c: 2 for c in _TWO_DECIMAL.split()},
    **{c: 3 for c in _THREE_DECIMAL.split()},
}

TX_TYPES = ("PAYMENT", "TRANSFER", "CASH_OUT", "CASH_IN", "DEBIT")
# CASH_IN adds to the account; every other type takes money out of it.
CREDIT_TX_TYPES = frozenset({"CASH_IN"})
COUNTERPARTY_TYPES = ("account", "merchant", "cash")
ACCOUNT_TYPES = ("checking", "savings", "credit_card", "business")

LEGIT = "legit"
# A label is "legit" or a fraud scenario's name, free text: data from other sources keeps
# its own scenarios, and reports group by whatever the data has. These are ours.
FRAUD_LABELS = (
    "account_takeover",
    "card_testing",
    "compromised_merchant",
    "spending_spike",
    "structuring",
    "paysim_fraud",
    "analyst_confirmed",  # an alert an analyst confirmed (the labels topic)
)

LABEL_MAX_CHARS = 64
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. ")


def label_error(label: Any) -> str | None:
    """Why a label is not one ("legit", or a scenario's name), or None."""
    if not isinstance(label, str):
        kind = "nothing" if label is None else type(label).__name__
        return f"label: expected a scenario name or {LEGIT!r}, got {kind}"
    if not label.strip() or len(label) > LABEL_MAX_CHARS or not set(label) <= _LABEL_CHARS:
        return (f"label: {label[:80]!r} is not a scenario name (1 to {LABEL_MAX_CHARS} "
                "letters, digits, spaces, '_', '-' or '.')")
    return None


# 10 billion in major units: larger is a data error, not a payment.
MAX_AMOUNT_MINOR = 10**12
EARLIEST_EVENT_TIME = dt.datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = dt.datetime(2100, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Bank:
    bank_id: str
    name: str
    country: str
    currency: str


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    bank_id: str
    name: str
    email: str
    country: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    user_id: str
    bank_id: str
    account_type: str
    currency: str
    opened_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    name: str
    category: str
    country: str


@dataclass(frozen=True, slots=True)
class Transaction:
    transaction_id: str
    event_time: dt.datetime
    bank_id: str
    user_id: str
    account_id: str
    counterparty_id: str
    counterparty_type: str
    tx_type: str
    amount_cents: int
    currency: str
    balance_before_cents: int | None = None
    balance_after_cents: int | None = None
    label: str | None = None
    source: str = ""
    source_flagged: bool = False
    # Where the pipeline read it (a Kafka topic/partition/offset): carried to the sink so
    # progress counts what was stored. Not part of the record itself: never stored.
    position: str = dataclasses.field(default="", compare=False, repr=False)

    @property
    def is_fraud(self) -> bool | None:
        return None if self.label is None else self.label != LEGIT

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        del values["position"]
        return values


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """An analyst's verdict on a transaction, arriving after it (the labels topic)."""

    transaction_id: str
    counterparty_id: str
    transaction_time: dt.datetime
    label: str
    labelled_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ScoredTransaction:
    transaction: Transaction
    score: float
    flagged: bool
    reasons: tuple[str, ...] = ()
    late: bool = False
    model_version: str = ""


# The field lists every layout derives from (Arrow, Cassandra rows, queries, messages).
TRANSACTION_FIELDS = tuple(f.name for f in dataclasses.fields(Transaction)
                           if f.name != "position")
SCORE_FIELDS = tuple(f.name for f in dataclasses.fields(ScoredTransaction)
                     if f.name != "transaction")
_REQUIRED = (
    "transaction_id",
    "event_time",
    "bank_id",
    "user_id",
    "account_id",
    "counterparty_id",
    "counterparty_type",
    "tx_type",
    "amount_cents",
    "currency",
)
# "date" is the Hive partition column a Parquet reader may add.
_KNOWN_KEYS = frozenset((*TRANSACTION_FIELDS, "date"))
_ID_FIELDS = ("transaction_id", "bank_id", "user_id", "account_id", "counterparty_id")
_MAX_ID_LENGTH = 128


def _as_int(value: Any, name: str, errors: list[str]) -> int | None:
    # bool is an int subclass; a True amount is a bug upstream, not 1 cent.
    if isinstance(value, bool):
        errors.append(f"{name}: expected an integer, got bool")
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    errors.append(f"{name}: expected an integer, got {_describe(value)}")
    return None


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def parse_event_time(value: Any) -> dt.datetime:
    """A UTC datetime from a datetime, ISO-8601 text with an offset, or epoch ms."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp has no timezone")
        result = value.astimezone(UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {value[:40]!r}") from None
        return parse_event_time(parsed)
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            result = dt.datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch milliseconds out of range: {value}") from None
    else:
        raise ValueError(f"expected a timestamp, got {_describe(value)}")
    if not EARLIEST_EVENT_TIME <= result < LATEST_EVENT_TIME:
        raise ValueError(f"timestamp out of range: {result.isoformat()}")
    return result


def validate_transaction(
    raw: Any,
    known_accounts: Container[str] | None = None,
) -> tuple[Transaction | None, list[str]]:
    """Every problem with a raw record, and the Transaction when there are none.

    Never raises: whatever arrives, the caller gets errors it can dead-letter.
    """
    if not isinstance(raw, Mapping):
        return None, [f"record: expected an object, got {_describe(raw)}"]
    errors: list[str] = []
    for name in _REQUIRED:
        if raw.get(name) is None:
            errors.append(f"{name}: missing")
    unknown = [k for k in raw if k not in _KNOWN_KEYS]
    if unknown:
        errors.append(f"unknown fields: {', '.join(sorted(map(str, unknown)))[:120]}")

    values: dict[str, Any] = {}
    for name in _ID_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.append(f"{name}: expected text, got {_describe(value)}")
        elif not value.strip():
            errors.append(f"{name}: empty")
        elif len(value) > _MAX_ID_LENGTH:
            errors.append(f"{name}: longer than {_MAX_ID_LENGTH} characters")
        else:
            values[name] = value

    if raw.get("event_time") is not None:
        try:
            values["event_time"] = parse_event_time(raw["event_time"])
        except ValueError as exc:
            errors.append(f"event_time: {exc}")

    for name, allowed in (("tx_type", TX_TYPES), ("counterparty_type", COUNTERPARTY_TYPES)):
        value = raw.get(name)
        if value is None:
            continue
        if value in allowed:
            values[name] = value
        else:
            errors.append(f"{name}: {_describe(value)} is not one of {', '.join(allowed)}")

    currency = raw.get("currency")
    if currency is not None:
        if isinstance(currency, str) and currency in CURRENCY_MINOR_UNITS:
            values["currency"] = currency
        else:
            errors.append(f"currency: unknown currency {_describe(currency)}")

    if raw.get("amount_cents") is not None:
        amount = _as_int(raw["amount_cents"], "amount_cents", errors)
        if amount is not None:
            if amount < 0:
                errors.append(f"amount_cents: negative ({amount})")
            elif amount > MAX_AMOUNT_MINOR:
                errors.append(f"amount_cents: absurdly large ({amount})")
            else:
                values["amount_cents"] = amount

    for name in ("balance_before_cents", "balance_after_cents"):
        if raw.get(name) is not None:
            balance = _as_int(raw[name], name, errors)
            if balance is not None and abs(balance) > MAX_AMOUNT_MINOR * 100:
                errors.append(f"{name}: absurdly large ({balance})")
            else:
                values[name] = balance

    label = raw.get("label")
    if label is not None:
        if (error := label_error(label)) is None:
            values["label"] = label
        else:
            errors.append(error)

    source = raw.get("source")
    if source is not None:
        if isinstance(source, str):
            values["source"] = source
        else:
            errors.append(f"source: expected text, got {_describe(source)}")
    flagged = raw.get("source_flagged")
    if flagged is not None:
        if isinstance(flagged, bool):
            values["source_flagged"] = flagged
        else:
            errors.append(f"source_flagged: expected true/false, got {_describe(flagged)}")

    account_id = values.get("account_id")
    if known_accounts is not None and account_id is not None and account_id not in known_accounts:
        errors.append(f"account_id: unknown account {account_id!r}")

    if errors:
        return None, errors
    return Transaction(**values), []


# Each entity kind's record; its Parquet folder and primary table are the plural.
ENTITY_KINDS: dict[str, type] = {"bank": Bank, "user": User, "account": Account,
                                 "merchant": Merchant}
ENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in dataclasses.fields(cls)) for kind, cls in ENTITY_KINDS.items()}
# Fields a source may leave empty: PaySim, for one, knows no e-mail addresses.
OPTIONAL_ENTITY_FIELDS = frozenset({"email"})
Entity = Bank | User | Account | Merchant


def validate_entity(kind: str, raw: Any) -> tuple[Entity | None, list[str]]:
    """Every problem with a raw bank, user, account or merchant, and the record when
    there are none. References to other entities are the store's to check."""
    if kind not in ENTITY_KINDS:
        return None, [f"kind: {kind!r} is not one of {', '.join(ENTITY_KINDS)}"]
    if not isinstance(raw, Mapping):
        return None, [f"{kind}: expected an object, got {_describe(raw)}"]
    fields = ENTITY_FIELDS[kind]
    errors: list[str] = []
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        errors.append(f"unknown fields: {', '.join(unknown)[:120]}")
    values: dict[str, Any] = {}
    for name in fields:
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if name in OPTIONAL_ENTITY_FIELDS:
                values[name] = ""
            else:
                errors.append(f"{name}: missing")
        elif name.endswith("_at"):
            try:
                values[name] = parse_event_time(value)
            except ValueError as exc:
                errors.append(f"{name}: {exc}")
        elif not isinstance(value, str):
            errors.append(f"{name}: expected text, got {_describe(value)}")
        elif name.endswith("_id") and len(value) > _MAX_ID_LENGTH:
            errors.append(f"{name}: longer than {_MAX_ID_LENGTH} characters")
        else:
            values[name] = value.strip()
    currency = values.get("currency")
    if currency is not None and currency not in CURRENCY_MINOR_UNITS:
        errors.append(f"currency: unknown currency {currency!r}")
    country = values.get("country")
    if country is not None and not (len(country) == 2 and country.isalpha()
                                    and country.isupper()):
        errors.append(f"country: expected an ISO 3166 two-letter code, got {country!r}")
    account_type = values.get("account_type")
    if account_type is not None and account_type not in ACCOUNT_TYPES:
        errors.append(f"account_type: {account_type!r} is not one of {', '.join(ACCOUNT_TYPES)}")
    email = values.get("email")
    if email and (email.count("@") != 1 or " " in email):
        errors.append(f"email: not an address: {email[:60]!r}")
    if errors:
        return None, errors
    return ENTITY_KINDS[kind](**values), []


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be used, with every reason, kept so nothing is lost."""

    source: str
    errors: tuple[str, ...]
    raw: str  # the record as received: JSON where it can be, repr otherwise
    position: str = ""  # where in the source (a Kafka topic/partition/offset), if known
    received_at: dt.datetime | None = None  # the message's own time, when it has one

    @property
    def reason(self) -> str:
        return "; ".join(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "errors": list(self.errors),
                "raw": self.raw}


def raw_text(raw: Any) -> str:
    """The raw record as text for a dead letter; never raises."""
    if isinstance(raw, bytes | bytearray):
        return bytes(raw).decode("utf-8", errors="backslashreplace")
    try:
        return json.dumps(raw, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return repr(raw)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(moment: dt.datetime) -> int:
    """Exact microseconds since the epoch (Beam timestamps, Cassandra write times)."""
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def from_epoch_micros(micros: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=micros)
