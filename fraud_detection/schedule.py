"""The nightly backfill as a crontab entry: cron runs it, not a daemon of ours."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from fraud_detection.errors import UsageError

TAG = "# fraud-detection nightly backfill"


def time_of_day(text: str) -> tuple[int, int]:
    """HH:MM -> (hour, minute); cron_line checks the range."""
    try:
        hour, minute = (int(part) for part in text.split(":"))
    except ValueError:
        raise UsageError(f"--at: expected HH:MM, got {text!r}") from None
    return hour, minute


def cron_line(hour: int, minute: int, dataset: Path, log: Path,
              workdir: Path | None = None) -> str:
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise UsageError(f"--at: no such time of day: {hour:02d}:{minute:02d}")
    workdir = workdir or Path.cwd()
    command = (f"cd {shlex.quote(str(workdir))} && {shlex.quote(sys.executable)} -m "
               f"fraud_detection backfill --input {shlex.quote(str(dataset.resolve()))} "
               f"--date yesterday >> {shlex.quote(str(log))} 2>&1")
    return f"{minute} {hour} * * * {command} {TAG}"


def _crontab() -> str:
    found = shutil.which("crontab")
    if found is None:
        from fraud_detection.stack.fetch import _apt_install

        try:
            _apt_install("cron")
        except Exception as exc:
            raise UsageError(f"no crontab command and cron could not be installed: {exc}") \
                from None
        found = shutil.which("crontab")
    if found is None:
        raise UsageError("no crontab command; install cron")
    return found


def current_entries() -> list[str]:
    listed = subprocess.run([_crontab(), "-l"], capture_output=True, text=True)
    # "no crontab for user" is an empty crontab, not an error.
    return listed.stdout.splitlines() if listed.returncode == 0 else []


def _write(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n" if lines else ""
    result = subprocess.run([_crontab(), "-"], input=text, capture_output=True, text=True)
    if result.returncode != 0:
        raise UsageError(f"crontab refused the entry: {result.stderr.strip()[:200]}")


def install(line: str, log: Path | None = None) -> None:
    """Adds the entry, replacing an earlier one of ours; other entries are kept. log: the
    folder cron's runs write to is made now."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    _write([entry for entry in current_entries() if TAG not in entry] + [line])


def remove() -> bool:
    entries = current_entries()
    kept = [entry for entry in entries if TAG not in entry]
    if len(kept) != len(entries):
        _write(kept)
    return len(kept) != len(entries)
