#!/usr/bin/env bash
# Sets everything up and runs the demo end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
fd() { .venv/bin/python -m fraud_detection "$@"; }

echo "== start the local stack: Kafka, Cassandra, Redis (first run fetches jars: ~1 min)"
fd stack up
fd stack status
echo "== create the Cassandra keyspace and tables (idempotent)"
fd schema apply
echo "== generate a 30-day bank world (seed 7) into out/demo"
fd generate --days 30 --seed 7 --rows 50000 --out out/demo
echo "== validate it with the Beam pipeline (bad rows would go to out/dead-letters/)"
fd validate --input out/demo --dead-letters out/dead-letters/demo
echo "== score it and write everything to Cassandra (transactions by every reader, balances, Benford reports)"
fd batch --input out/demo -- --runner=FnApiRunner
echo "== evaluate the model, the rules and the seed rule on it (time split)"
fd evaluate --input out/demo --train-days 15 --delay-days 3 --test-days 12 --k 10
