"""Rows/s of the synthetic world generator against the cost of just writing the rows.

Reference: random columns of the same schema written with pyarrow, the floor any
generator that writes this layout pays. Target: 1M transactions in under a minute.

    python bench/generate.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io import parquet


def reference_write(rows: int, out: Path) -> None:
    rng = np.random.default_rng(0)
    start = 1_704_067_200_000_000
    ids = np.array([f"a-{i:07d}" for i in rng.integers(0, 40_000, rows)], dtype=object)
    table = parquet.transactions_table({
        "transaction_id": [f"r-{i:09d}" for i in range(rows)],
        "event_time": pa.array(start + rng.integers(0, 30 * 86_400_000_000, rows),
                               type=pa.timestamp("us", tz="UTC")),
        "bank_id": np.full(rows, "bank-01", dtype=object),
        "user_id": ids, "account_id": ids, "counterparty_id": ids,
        "counterparty_type": np.full(rows, "merchant", dtype=object),
        "tx_type": np.full(rows, "PAYMENT", dtype=object),
        "amount_cents": rng.integers(1, 10**6, rows),
        "currency": np.full(rows, "EUR", dtype=object),
        "balance_before_cents": rng.integers(0, 10**7, rows),
        "balance_after_cents": rng.integers(0, 10**7, rows),
        "label": np.full(rows, "legit", dtype=object),
        "source": np.full(rows, "bench", dtype=object),
        "source_flagged": np.zeros(rows, dtype=bool),
    })
    parquet.write_partitioned_transactions(table, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        reference_write(args.rows, Path(tmp) / "reference")
        results.append(("pyarrow write of random rows (reference)", args.rows,
                        time.perf_counter() - started))
        started = time.perf_counter()
        report = generate(WorldConfig(days=30, seed=7, rows=args.rows), Path(tmp) / "world")
        results.append(("generate (entities, 5 scenarios, balances)", report.rows,
                        time.perf_counter() - started))
    print(f"{'what':<46} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'x ref':>6}")
    ref_rate = results[0][1] / results[0][2]
    for name, rows, seconds in results:
        rate = rows / seconds
        print(f"{name:<46} {rows:>10} {seconds:>8.2f} {rate:>10.0f} {ref_rate / rate:>6.2f}")
    generated = results[1]
    verdict = "met" if generated[2] < 60 and generated[1] >= args.rows else "MISSED"
    print(f"target {args.rows} rows in under 60 s: {verdict}")


if __name__ == "__main__":
    main()
