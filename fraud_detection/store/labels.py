"""Analysts' verdicts on alerts: a label row per transaction (a later verdict replaces
an earlier one)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fraud_detection.records import ScoredTransaction
from fraud_detection.store.keyspace import Store

CONFIRMED, DISMISSED = "confirmed", "dismissed"
CONFIRMED_LABEL, DISMISSED_LABEL = "analyst_confirmed", "legit"

_INSERT = ("INSERT INTO labels (transaction_id, verdict, label, analyst, labelled_at, "
           "counterparty_id, transaction_time) VALUES (?, ?, ?, ?, ?, ?, ?)")
_SELECT = ("SELECT transaction_id, verdict, label, analyst, labelled_at, counterparty_id, "
           "transaction_time FROM labels WHERE transaction_id = ?")


@dataclass(frozen=True)
class Verdict:
    transaction_id: str
    verdict: str
    label: str
    analyst: str
    labelled_at: dt.datetime
    counterparty_id: str
    transaction_time: dt.datetime

    def label_event(self) -> dict:
        """The message detection reads from the labels topic."""
        return {"transaction_id": self.transaction_id, "counterparty_id": self.counterparty_id,
                "transaction_time": self.transaction_time, "label": self.label,
                "labelled_at": self.labelled_at}


def record_verdict(store: Store, scored: ScoredTransaction, verdict: str, analyst: str,
                   now: dt.datetime | None = None) -> Verdict:
    if verdict not in (CONFIRMED, DISMISSED):
        raise ValueError(f"verdict must be {CONFIRMED} or {DISMISSED}: {verdict!r}")
    tx = scored.transaction
    result = Verdict(tx.transaction_id, verdict,
                     CONFIRMED_LABEL if verdict == CONFIRMED else DISMISSED_LABEL, analyst,
                     now or dt.datetime.now(dt.UTC), tx.counterparty_id, tx.event_time)
    store.execute(_INSERT, (result.transaction_id, result.verdict, result.label,
                            result.analyst, result.labelled_at, result.counterparty_id,
                            result.transaction_time))
    return result


def verdict_of(store: Store, transaction_id: str) -> Verdict | None:
    row = store.execute(_SELECT, (transaction_id,)).one()
    if row is None:
        return None
    utc = dt.UTC
    return Verdict(row.transaction_id, row.verdict, row.label, row.analyst,
                   row.labelled_at.replace(tzinfo=utc), row.counterparty_id,
                   row.transaction_time.replace(tzinfo=utc))
