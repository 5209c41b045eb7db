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
echo "== load the rules into Cassandra, where the streaming pipeline re-reads them while it runs"
fd rules load fraud_detection/transforms/default_rules.yaml
echo "== build Prism, Beam's local streaming runner (first run: ~2 min)"
fd stack runners --only prism
mkdir -p out/logs out/run
for name in stream streamers dashboard; do
  if [ -f "out/run/$name.pid" ]; then kill -- "-$(cat "out/run/$name.pid")" 2>/dev/null || true; fi
done
echo "== start the streaming pipeline on Prism (log: out/logs/stream.log)"
setsid .venv/bin/python -m fraud_detection stream > out/logs/stream.log 2>&1 < /dev/null &
echo $! > out/run/stream.pid
cat > out/demo-streamers.yaml <<'YAML'
streamers:
  - name: demo
    source: parquet
    path: out/demo
    topic: transactions
    rate: 200
YAML
echo "== start a streamer replaying the demo world into Kafka at 200 tx/s (state in Redis)"
setsid .venv/bin/python -m fraud_detection streamers start --file out/demo-streamers.yaml \
  > out/logs/streamers.log 2>&1 < /dev/null &
echo $! > out/run/streamers.pid
echo "== dashboard logins (passwords are generated here, kept in out/demo-logins.txt)"
umask 077
password=${FRAUD_LOGIN_PASSWORD:-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')}
first_user=$(.venv/bin/python -c 'from fraud_detection.io.parquet import entity_records; print(entity_records(__import__("pathlib").Path("out/demo"), "users")[0].user_id)')
first_bank=$(.venv/bin/python -c 'from fraud_detection.io.parquet import entity_records; print(entity_records(__import__("pathlib").Path("out/demo"), "banks")[0].bank_id)')
export FRAUD_LOGIN_PASSWORD="$password"
fd logins add admin --role admin
fd logins add analyst --role analyst
fd logins add bank --role bank --bank-id "$first_bank"
fd logins add customer --role customer --user-id "$first_user"
printf 'admin, analyst, bank (%s), customer (%s): password %s\n' "$first_bank" "$first_user" "$password" > out/demo-logins.txt
umask 022
echo "== start the dashboard on http://127.0.0.1:8501 (log: out/logs/dashboard.log)"
if [ -f out/run/dashboard.pid ]; then kill -- "-$(cat out/run/dashboard.pid)" 2>/dev/null || true; fi
setsid .venv/bin/python -m fraud_detection dashboard > out/logs/dashboard.log 2>&1 < /dev/null &
echo $! > out/run/dashboard.pid
sleep 60
fd streamers status
echo "Dashboard: http://127.0.0.1:8501 (logins and password in out/demo-logins.txt)"
echo "Streaming: the pipeline rescoring the replayed transactions live into the same rows."
echo "Pause/resume/stop the streamer: fd streamers disable|enable|interrupt demo"
echo "Stop them: kill -- -\$(cat out/run/stream.pid) -\$(cat out/run/streamers.pid) -\$(cat out/run/dashboard.pid)"
