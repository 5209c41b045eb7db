"""The nightly backfill goes into the real crontab once, beside other entries, and comes
out again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fraud_detection import schedule

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fraud_detection", "schedule", *args],
                          capture_output=True, text=True, timeout=300)


def test_schedule_installs_one_entry_and_removes_it() -> None:
    before = schedule.current_entries()
    try:
        assert cli("install", "--at", "03:30", "--input", "data/sample").returncode == 0
        assert cli("install", "--at", "04:15", "--input", "data/sample").returncode == 0
        ours = [e for e in schedule.current_entries() if schedule.TAG in e]
        assert len(ours) == 1 and ours[0].startswith("15 4 * * * ")
        assert "backfill --input" in ours[0] and "--date yesterday" in ours[0]
        assert [e for e in schedule.current_entries() if schedule.TAG not in e] == \
            [e for e in before if schedule.TAG not in e]
        assert cli("remove").stdout.startswith("removed")
        assert not any(schedule.TAG in e for e in schedule.current_entries())
    finally:
        schedule.remove()
        if any(schedule.TAG in e for e in before):
            schedule.install(next(e for e in before if schedule.TAG in e))
