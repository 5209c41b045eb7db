"""Background processes tracked by pid files that hold "<pid> <start time>".

The start time (from /proc) guards against pid reuse: a pid file only ever
leads us to signal the very process we started.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from fraud_detection.stack.errors import StackError

# Children started by this interpreter, kept so they can be reaped (no zombies,
# no ResourceWarning) and their exit codes reported.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited; a zombie is not running
        return None
    return fields[19]


def running_pid(pidfile: Path) -> int | None:
    """The pid recorded in pidfile if that process is still the one we started."""
    try:
        pid_text, started = pidfile.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return None
    return pid if _start_time(pid) == started else None


def exit_code(pid: int) -> int | None:
    child = _children.get(pid)
    return None if child is None else child.poll()


def spawn(argv: list[str], log: Path, cwd: Path, pidfile: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%F %T')} start: {shlex.join(argv)}\n".encode())
        out.flush()
        child = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    _children[child.pid] = child
    pidfile.write_text(f"{child.pid} {_start_time(child.pid)}\n")
    return child.pid


def _signal(pidfiles: list[Path], sig: signal.Signals) -> None:
    for pf in pidfiles:
        if (pid := running_pid(pf)) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _wait_gone(pidfiles: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(running_pid(pf) for pf in pidfiles) and time.monotonic() < deadline:
        time.sleep(0.2)


def stop(pidfiles: list[Path], timeout: float = 60.0) -> list[Path]:
    """SIGTERM the live processes of pidfiles, SIGKILL those that outlive timeout, remove
    the pid files; returns the pid files whose process was running."""
    live = [pf for pf in pidfiles if running_pid(pf) is not None]
    _signal(live, signal.SIGTERM)
    _wait_gone(live, timeout)
    _signal(live, signal.SIGKILL)
    _wait_gone(live, 10.0)
    if survivors := [pf.stem for pf in live if running_pid(pf) is not None]:
        raise StackError(f"still running after SIGKILL: {', '.join(survivors)}")
    for pf in pidfiles:
        pf.unlink(missing_ok=True)
    return live
