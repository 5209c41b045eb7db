"""A synthetic bank world: entities, legitimate behaviour and labelled fraud scenarios.

Everything is vectorised with numpy and generated one day at a time, so memory is
bounded by a day's rows and 10M rows are practical. The same seed gives the same
world: separate random streams for entities, legitimate traffic and fraud mean a
change to one scenario does not reshuffle the rest.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from fraud_detection.io import parquet
from fraud_detection.records import LEGIT

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000

# Transaction types and counterparty kinds as small integer codes while vectorised.
TX_TYPES = np.array(["PAYMENT", "TRANSFER", "CASH_OUT", "CASH_IN", "DEBIT"])
PAYMENT, TRANSFER, CASH_OUT, CASH_IN, DEBIT = range(5)
LEGIT_TYPE_SHARE = np.array([0.70, 0.12, 0.08, 0.07, 0.03])
CP_TYPES = np.array(["merchant", "account", "cash"])
CP_MERCHANT, CP_ACCOUNT, CP_CASH = range(3)

LABELS = np.array(
    [LEGIT, "account_takeover", "card_testing", "compromised_merchant", "spending_spike",
     "structuring"]
)
L_LEGIT, L_TAKEOVER, L_CARD_TESTING, L_MERCHANT, L_SPIKE, L_STRUCTURING = range(6)

# (category, median ticket in major units): spread over orders of magnitude so the
# mixture of amounts follows Benford's law.
MERCHANT_CATEGORIES = (
    ("grocery", 35), ("restaurant", 45), ("fuel", 60), ("pharmacy", 20),
    ("clothing", 90), ("online", 55), ("utilities", 120), ("electronics", 400),
    ("travel", 650), ("furniture", 900), ("coffee", 5), ("transport", 12),
)
BANKS = (
    ("Northwind Bank", "GB", "GBP"), ("Banco Aurora", "ES", "EUR"),
    ("First Prairie Bank", "US", "USD"), ("Helvetia Privat", "CH", "CHF"),
    ("Nordkyst Sparebank", "NO", "NOK"), ("Banque du Lac", "FR", "EUR"),
)
FIRST_NAMES = np.array(
    "Ada Alan Amara Ana Ben Chen Chloe Dara Elif Emma Finn Grace Hugo Ines Ivan Jana "
    "Jon Kai Lea Leo Lina Luca Maja Mateo Mia Nia Noah Olga Omar Pia Raj Rosa Sami "
    "Sara Tom Uma Yara Yusuf Zoe".split()
)
LAST_NAMES = np.array(
    "Adams Berg Costa Dubois Evans Fischer Garcia Hansen Ito Jensen Kowalski Larsen "
    "Martin Novak Okafor Petrov Quinn Rossi Silva Tanaka Ueda Varga Weber Xu Yilmaz "
    "Zhang".split()
)
ACCOUNT_TYPES = np.array(["checking", "savings", "credit_card", "business"])
ACCOUNT_TYPE_SHARE = np.array([0.6, 0.15, 0.2, 0.05])
# Activity by hour of day, UTC: quiet at night, peaks at lunch and early evening.
HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4, 5, 5.5, 6, 7, 6.5, 5.5, 5.5, 6, 7, 7.5, 7,
     6, 4.5, 3, 1.8]
)
HOUR_WEIGHTS = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
REPORTING_THRESHOLD_CENTS = 1_000_000  # 10,000.00: cash reports start here


@dataclass(frozen=True)
class WorldConfig:
    days: int = 30
    seed: int = 7
    rows: int = 50_000
    banks: int = 3
    start: dt.date = dt.date(2024, 1, 1)
    fraud_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.days < 3:
            raise ValueError("days must be at least 3 (scenarios span several days)")
        if self.rows < 1_000:
            raise ValueError("rows must be at least 1000")
        if not 1 <= self.banks <= len(BANKS):
            raise ValueError(f"banks must be between 1 and {len(BANKS)}")
        if self.fraud_scale < 0:
            raise ValueError("fraud_scale must not be negative")


@dataclass
class GenerateReport:
    rows: int
    days: int
    labels: dict[str, int]
    files: int
    entities: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        frauds = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()) if k != LEGIT)
        return (f"{self.rows} transactions over {self.days} days in {self.files} files "
                f"({frauds}); entities: "
                + ", ".join(f"{k}={v}" for k, v in self.entities.items()))


@dataclass
class _Entities:
    bank_ids: np.ndarray
    bank_currency: np.ndarray
    account_ids: np.ndarray
    account_user: np.ndarray  # user id per account
    account_bank: np.ndarray  # bank index per account
    activity: np.ndarray  # share of legit traffic per account (0 for mules)
    typical_cents: np.ndarray  # median payment of the account
    spread: np.ndarray  # the account's own spread: sigma of its log amounts
    favourites: np.ndarray  # (accounts, k) merchant indices
    merchant_ids: np.ndarray
    merchant_median: np.ndarray
    atm_ids: np.ndarray
    opening_balance: np.ndarray
    tables: dict[str, pa.Table]


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)], dtype=object)


def _timestamps(values_us: np.ndarray) -> pa.Array:
    return pa.array(values_us.astype("int64"), type=pa.timestamp("us", tz="UTC"))


def _build_entities(cfg: WorldConfig, n_mules: int, rng: np.random.Generator) -> _Entities:
    start_us = _date_us(cfg.start)
    n_accounts = max(60, int(cfg.rows / cfg.days / 0.9))
    n_users = max(40, int(n_accounts / 1.5))
    n_merchants = max(60, n_accounts // 12)

    bank_rows = BANKS[: cfg.banks]
    bank_ids = _ids("bank-", cfg.banks, 2)
    bank_currency = np.array([b[2] for b in bank_rows], dtype=object)
    bank_country = np.array([b[1] for b in bank_rows], dtype=object)
    banks = pa.table({
        "bank_id": bank_ids, "name": [b[0] for b in bank_rows],
        "country": bank_country, "currency": bank_currency,
    })

    user_ids = _ids("u-", n_users + n_mules, 7)
    user_bank = rng.integers(0, cfg.banks, n_users + n_mules)
    first = rng.choice(FIRST_NAMES, n_users + n_mules)
    last = rng.choice(LAST_NAMES, n_users + n_mules)
    names = np.char.add(np.char.add(first, " "), last)
    emails = [f"{f.lower()}.{s.lower()}{i}@example.com"
              for i, (f, s) in enumerate(zip(first, last, strict=True), start=1)]
    created = start_us - rng.integers(30, 3_000, n_users + n_mules) * DAY_US
    created[n_users:] = start_us - rng.integers(1, 10, n_mules) * DAY_US  # fresh mules
    users = pa.table({
        "user_id": user_ids, "bank_id": bank_ids[user_bank], "name": names,
        "email": emails, "country": bank_country[user_bank], "created_at": _timestamps(created),
    })

    # Every user has an account; some have more. Mules are fresh users with one account.
    owner = np.concatenate([np.arange(n_users), rng.integers(0, n_users, n_accounts - n_users)])
    owner = np.sort(owner)
    mule_owner = np.arange(n_users, n_users + n_mules)
    owner = np.concatenate([owner, mule_owner])
    total = n_accounts + n_mules
    account_ids = _ids("a-", total, 7)
    account_type = rng.choice(len(ACCOUNT_TYPES), total, p=ACCOUNT_TYPE_SHARE)
    account_type[n_accounts:] = 0
    opened = np.maximum(created[owner], start_us - rng.integers(1, 2_000, total) * DAY_US)
    account_bank = user_bank[owner]
    accounts = pa.table({
        "account_id": account_ids, "user_id": user_ids[owner],
        "bank_id": bank_ids[account_bank], "account_type": ACCOUNT_TYPES[account_type],
        "currency": bank_currency[account_bank], "opened_at": _timestamps(opened),
    })

    activity = rng.lognormal(0.0, 0.8, total)
    activity[n_accounts:] = 0.0
    activity /= activity.sum()
    # Each account its own spending profile: level, spread, and (above) activity rate.
    typical_cents = np.rint(rng.lognormal(np.log(40.0), 0.9, total) * 100).astype(np.int64)
    spread = rng.uniform(0.3, 0.7, total)
    opening_balance = np.rint(rng.lognormal(np.log(3_000.0), 1.0, total) * 100).astype(np.int64)
    opening_balance[n_accounts:] = 0

    merchant_ids = _ids("m-", n_merchants, 6)
    category = rng.integers(0, len(MERCHANT_CATEGORIES), n_merchants)
    merchant_median = np.array([MERCHANT_CATEGORIES[c][1] for c in category], dtype=float)
    merchant_country = bank_country[rng.integers(0, cfg.banks, n_merchants)]
    merchants = pa.table({
        "merchant_id": merchant_ids,
        "name": [f"{MERCHANT_CATEGORIES[c][0].title()} {i}" for i, c in
                 enumerate(category, start=1)],
        "category": [MERCHANT_CATEGORIES[c][0] for c in category],
        "country": merchant_country,
    })
    favourites = rng.integers(0, n_merchants, (total, 8))
    atm_ids = _ids("atm-", 50, 3)
    return _Entities(
        bank_ids=bank_ids, bank_currency=bank_currency, account_ids=account_ids,
        account_user=user_ids[owner], account_bank=account_bank, activity=activity,
        typical_cents=typical_cents, spread=spread, favourites=favourites,
        merchant_ids=merchant_ids, merchant_median=merchant_median, atm_ids=atm_ids,
        opening_balance=opening_balance,
        tables={"banks": banks, "users": users, "accounts": accounts, "merchants": merchants},
    )


def _date_us(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
               * 1_000_000)


class _Rows:
    """Column lists for transactions while they are still integer-coded."""

    COLUMNS = ("account", "time", "tx_type", "cp_type", "cp", "amount", "label", "drain")

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in self.COLUMNS}

    def add(self, account, time, tx_type, cp_type, cp, amount, label, drain=0.0) -> None:
        n = np.size(time)
        for name, value in zip(self.COLUMNS,
                               (account, time, tx_type, cp_type, cp, amount, label, drain),
                               strict=True):
            self.parts[name].append(np.broadcast_to(np.asarray(value), (n,)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {c: np.concatenate(v) if v else np.empty(0) for c, v in self.parts.items()}


@dataclass
class _Plan:
    """Fraud rows generated up front (they may span days)."""

    rows: dict[str, np.ndarray]


def _plan_fraud(cfg: WorldConfig, ent: _Entities, n_regular: int, n_mules: int,
                rng: np.random.Generator) -> _Plan:
    start_us = _date_us(cfg.start)
    span_days = cfg.days
    scale = cfg.fraud_scale * cfg.rows / 10_000
    rows = _Rows()
    n_merchants = len(ent.merchant_ids)

    def incident_time(latest_hour: int = 21) -> int:
        # Inside the world, from day 1 on, early enough that a same-day scenario
        # does not cross midnight.
        day = int(rng.integers(1, span_days - 1))
        hour = int(rng.integers(0, latest_hour))
        return start_us + day * DAY_US + hour * HOUR_US + int(rng.integers(0, HOUR_US))

    # Account takeover: drain the victim to a new mule, which cashes out at once.
    for k in range(n_mules):
        victim = int(rng.integers(0, n_regular))
        mule = n_regular + k
        t = incident_time()
        n_transfers = int(rng.integers(1, 5))
        times = t + np.sort(rng.integers(0, 20 * MINUTE_US, n_transfers))
        shares = rng.dirichlet(np.ones(n_transfers)) * rng.uniform(0.85, 0.99)
        rows.add(victim, times, TRANSFER, CP_ACCOUNT, mule, -1, L_TAKEOVER, shares)
        # amount -2: the sum of the drain above, resolved with the balances.
        rows.add(mule, times[-1] + int(rng.integers(MINUTE_US, 30 * MINUTE_US)), CASH_OUT,
                 CP_CASH, int(rng.integers(0, len(ent.atm_ids))), -2, L_TAKEOVER)

    # Card testing: many tiny payments to many merchants, then a large one.
    for _ in range(max(3, round(scale))):
        victim = int(rng.integers(0, n_regular))
        t = incident_time()
        n_small = int(rng.integers(10, 31))
        times = t + np.sort(rng.integers(0, 30 * MINUTE_US, n_small))
        merchants = rng.choice(n_merchants, n_small, replace=n_small > n_merchants)
        rows.add(victim, times, PAYMENT, CP_MERCHANT, merchants,
                 rng.integers(50, 500, n_small), L_CARD_TESTING)
        big = int(ent.typical_cents[victim] * rng.uniform(20, 50))
        rows.add(victim, times[-1] + int(rng.integers(5 * MINUTE_US, 60 * MINUTE_US)), PAYMENT,
                 CP_MERCHANT, int(rng.integers(0, n_merchants)), big, L_CARD_TESTING)

    # Compromised merchant: a merchant whose terminal cashes out stolen cards. For the
    # next weeks, cards of accounts that never shopped there pay at it, a few times a
    # day, tickets of its own kind; its own customers shop on as before.
    end_us = start_us + span_days * DAY_US - 1
    for _ in range(max(2, round(scale / 2))):
        merchant = int(rng.integers(0, n_merchants))
        t = incident_time()
        days = int(rng.integers(14, 29))
        n = int(rng.poisson(rng.uniform(4, 9) * days))
        times = t + np.sort(rng.integers(0, days * DAY_US, n))
        strangers = np.flatnonzero(~(ent.favourites[:n_regular] == merchant).any(axis=1))
        cards = rng.choice(strangers, n)
        tickets = ent.merchant_median[merchant] * 100 * rng.lognormal(0.0, 0.6, n)
        inside = times <= end_us  # a compromise may outlast the world: its rest is not
        rows.add(cards[inside], times[inside], PAYMENT, CP_MERCHANT, merchant,
                 np.maximum(np.rint(tickets[inside]), 1).astype(np.int64), L_MERCHANT)

    # Spending spike: a compromised account spends several times its usual amounts.
    for _ in range(max(3, round(scale * 1.2))):
        victim = int(rng.integers(0, n_regular))
        t = incident_time()
        n = int(rng.integers(3, 9))
        times = np.minimum(t + np.sort(rng.integers(0, 2 * DAY_US, n)),
                           start_us + span_days * DAY_US - 1)
        amounts = np.rint(ent.typical_cents[victim] * rng.uniform(5, 10, n)).astype(np.int64)
        rows.add(victim, times, PAYMENT, CP_MERCHANT, rng.integers(0, n_merchants, n),
                 amounts, L_SPIKE)

    # Structuring: made-up round deposits just under the reporting threshold.
    for _ in range(max(2, round(scale / 2))):
        account = int(rng.integers(0, n_regular))
        t = incident_time()
        n = int(rng.integers(6, 16))
        times = np.minimum(t + np.sort(rng.integers(0, 7 * DAY_US, n)),
                           start_us + span_days * DAY_US - 1)
        step = rng.choice([5_000, 10_000], n)  # round to 50.00 or 100.00
        raw = rng.uniform(0.80, 0.999, n) * REPORTING_THRESHOLD_CENTS
        amounts = (raw // step * step).astype(np.int64)
        rows.add(account, times, CASH_IN, CP_CASH, rng.integers(0, len(ent.atm_ids), n),
                 amounts, L_STRUCTURING)
    return _Plan(rows.arrays())


def _legit_day(ent: _Entities, day_us: int, n: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    n_accounts = len(ent.account_ids)
    account = rng.choice(n_accounts, n, p=ent.activity)
    hours = rng.choice(24, n, p=HOUR_WEIGHTS)
    time = day_us + hours * HOUR_US + rng.integers(0, HOUR_US, n)
    tx_type = rng.choice(len(TX_TYPES), n, p=LEGIT_TYPE_SHARE)

    cp_type = np.full(n, CP_MERCHANT)
    cp_type[tx_type == TRANSFER] = CP_ACCOUNT
    cp_type[(tx_type == CASH_OUT) | (tx_type == CASH_IN)] = CP_CASH
    favourite = ent.favourites[account, rng.integers(0, ent.favourites.shape[1], n)]
    anywhere = rng.integers(0, len(ent.merchant_ids), n)
    cp = np.where(rng.random(n) < 0.8, favourite, anywhere)
    is_transfer = cp_type == CP_ACCOUNT
    # Transfers go to other regular accounts (mules have zero activity weight).
    peers = rng.choice(n_accounts, int(is_transfer.sum()), p=ent.activity)
    cp[is_transfer] = peers
    is_cash = cp_type == CP_CASH
    cp[is_cash] = rng.integers(0, len(ent.atm_ids), int(is_cash.sum()))

    # The account's own level, moved a little by what the merchant sells, with the
    # account's own spread: one customer's amounts cluster, while across a bank's many
    # customers they span orders of magnitude (and follow Benford's law).
    level = ent.typical_cents[account].astype(float)
    category = ent.merchant_median[np.where(cp_type == CP_MERCHANT, cp, 0)] / 45.0
    median = level * category ** 0.25
    scale = np.sqrt(level / 4_000.0)
    median[is_transfer] = 25_000.0 * scale[is_transfer]
    median[tx_type == CASH_OUT] = 12_000.0 * scale[tx_type == CASH_OUT]
    median[tx_type == CASH_IN] = 150_000.0 * scale[tx_type == CASH_IN]
    amount = np.rint(median * rng.lognormal(0.0, ent.spread[account])).astype(np.int64)
    amount = np.maximum(amount, 1)
    return {"account": account, "time": time, "tx_type": tx_type, "cp_type": cp_type,
            "cp": cp, "amount": amount, "label": np.full(n, L_LEGIT),
            "drain": np.zeros(n)}


def _apply_balances(day: dict[str, np.ndarray], balance: np.ndarray) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Balances before/after each row, in event-time order per account.

    Incoming transfers credit the receiving account, so every row's
    before - amount == after (or + for deposits). Updates `balance` in place.
    """
    n = len(day["time"])
    own_delta = np.where(day["tx_type"] == CASH_IN, day["amount"], -day["amount"])
    incoming = np.flatnonzero(day["cp_type"] == CP_ACCOUNT)
    acct = np.concatenate([day["account"], day["cp"][incoming]])
    time = np.concatenate([day["time"], day["time"][incoming]])
    delta = np.concatenate([own_delta, day["amount"][incoming]])
    row = np.concatenate([np.arange(n), np.full(len(incoming), -1)])
    order = np.lexsort((np.arange(len(acct)), time, acct))
    acct, delta, row = acct[order], delta[order], row[order]
    running = np.cumsum(delta)
    group_start = np.flatnonzero(np.r_[True, acct[1:] != acct[:-1]])
    offset = np.r_[0, running[group_start[1:] - 1]]
    group_of = np.cumsum(np.r_[True, acct[1:] != acct[:-1]]) - 1
    after = balance[acct] + running - offset[group_of]
    before = after - delta
    group_end = np.r_[group_start[1:] - 1, len(acct) - 1]
    balance[acct[group_end]] = after[group_end]
    own = row >= 0
    before_out = np.empty(n, dtype=np.int64)
    after_out = np.empty(n, dtype=np.int64)
    before_out[row[own]] = before[own]
    after_out[row[own]] = after[own]
    return before_out, after_out


def generate(cfg: WorldConfig, out: Path, progress: bool = False) -> GenerateReport:
    """Write the world to OUT in the shared Parquet layout and return what it holds."""
    entity_seq, legit_seq, fraud_seq = np.random.SeedSequence(cfg.seed).spawn(3)
    fraud_rng = np.random.default_rng(fraud_seq)
    n_mules = max(2, round(cfg.fraud_scale * cfg.rows / 10_000))
    ent = _build_entities(cfg, n_mules, np.random.default_rng(entity_seq))
    n_regular = len(ent.account_ids) - n_mules
    plan = _plan_fraud(cfg, ent, n_regular, n_mules, fraud_rng)
    legit_rng = np.random.default_rng(legit_seq)

    out.mkdir(parents=True, exist_ok=True)
    for kind, table in ent.tables.items():
        parquet.write_entities(kind, table, out)

    start_us = _date_us(cfg.start)
    weekday = np.array([(cfg.start + dt.timedelta(days=d)).weekday() for d in range(cfg.days)])
    day_weight = np.where(weekday >= 5, 0.8, 1.0)
    per_day = np.floor(cfg.rows * day_weight / day_weight.sum()).astype(int)
    per_day[: cfg.rows - per_day.sum()] += 1

    balance = ent.opening_balance.copy()
    drained: dict[int, int] = {}
    labels: Counter[str] = Counter()
    files = 0
    days = range(cfg.days)
    if progress:
        from tqdm import tqdm

        days = tqdm(days, desc="generate", unit="day")
    for d in days:
        day_us = start_us + d * DAY_US
        day = _legit_day(ent, day_us, int(per_day[d]), legit_rng)
        in_day = (plan.rows["time"] >= day_us) & (plan.rows["time"] < day_us + DAY_US)
        day = {c: np.concatenate([day[c], plan.rows[c][in_day].astype(day[c].dtype)])
               for c in day}
        _resolve_drains(day, balance, ent, drained)
        before, after = _apply_balances(day, balance)
        files += _write_day(cfg, ent, day, before, after, day_us, out)
        codes, counts = np.unique(day["label"], return_counts=True)
        labels.update({str(LABELS[c]): int(k) for c, k in zip(codes, counts, strict=True)})

    report = GenerateReport(
        rows=sum(labels.values()), days=cfg.days, labels=dict(sorted(labels.items())),
        files=files, entities={k: t.num_rows for k, t in ent.tables.items()},
    )
    manifest = {"generator": "fraud_detection.datagen", "config": asdict(cfg), **asdict(report)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return report


def _resolve_drains(day: dict[str, np.ndarray], balance: np.ndarray, ent: _Entities,
                    drained: dict[int, int]) -> None:
    # A takeover drains what the victim holds when the day starts; the mule then
    # cashes out exactly what it received.
    for i in np.flatnonzero(day["amount"] == -1):
        victim = int(day["account"][i])
        floor = int(ent.typical_cents[victim]) * 20
        amount = int(max(balance[victim], floor) * day["drain"][i])
        day["amount"][i] = max(amount, 100)
        mule = int(day["cp"][i])
        drained[mule] = drained.get(mule, 0) + int(day["amount"][i])
    for i in np.flatnonzero(day["amount"] == -2):
        day["amount"][i] = drained.pop(int(day["account"][i]), 0)


def _write_day(cfg: WorldConfig, ent: _Entities, day: dict[str, np.ndarray],
               before: np.ndarray, after: np.ndarray, day_us: int, out: Path) -> int:
    order = np.lexsort((day["account"], day["time"]))
    day = {c: v[order] for c, v in day.items()}
    before, after = before[order], after[order]
    n = len(order)
    date = dt.datetime.fromtimestamp(day_us / 1e6, tz=dt.UTC).strftime("%Y%m%d")
    cp_type = day["cp_type"]
    cp = day["cp"].astype(np.int64)
    cp_ids = np.empty(n, dtype=object)
    for code, ids in ((CP_MERCHANT, ent.merchant_ids), (CP_ACCOUNT, ent.account_ids),
                      (CP_CASH, ent.atm_ids)):
        mask = cp_type == code
        cp_ids[mask] = ids[cp[mask]]
    account = day["account"].astype(np.int64)
    table = parquet.transactions_table({
        "transaction_id": [f"s{cfg.seed}-{date}-{i:07d}" for i in range(n)],
        "event_time": _timestamps(day["time"]),
        "bank_id": ent.bank_ids[ent.account_bank[account]],
        "user_id": ent.account_user[account],
        "account_id": ent.account_ids[account],
        "counterparty_id": cp_ids,
        "counterparty_type": CP_TYPES[cp_type],
        "tx_type": TX_TYPES[day["tx_type"]],
        "amount_cents": day["amount"].astype(np.int64),
        "currency": ent.bank_currency[ent.account_bank[account]],
        "balance_before_cents": before,
        "balance_after_cents": after,
        "label": LABELS[day["label"]],
        "source": np.full(n, "datagen", dtype=object),
        "source_flagged": np.zeros(n, dtype=bool),
    })
    return len(parquet.write_partitioned_transactions(table, out))
