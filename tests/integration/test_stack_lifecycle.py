import socket
from pathlib import Path

import pytest

from fraud_detection.stack import Ports, StackError, StackInfo, down, fetch, status, up
from fraud_detection.stack.cli import main
from fraud_detection.stack.probes import port_open

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in found if _alive(pid)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_down_leaves_no_process_of_ours(stack: StackInfo, stack_was_running: bool) -> None:
    # The session's stack (tests/stack_env.py), never the default one a user runs.
    state = stack.state_dir
    pids = {s.name: s.pid for s in status(state) if s.running}
    assert set(pids) == {"kafka", "cassandra-1", "redis"}

    assert sorted(down(state)) == sorted(pids)

    assert [name for name, pid in pids.items() if pid is not None and _alive(pid)] == []
    assert _pids_mentioning(f"{state}/") == []  # the JVMs name their config files
    assert not any(s.running for s in status(state))
    assert not any(port_open("127.0.0.1", port) for port in (
        stack.ports.kafka, stack.ports.cassandra_native, stack.ports.redis))
    assert down(state) == []
    if stack_was_running:  # leave the test stack as we found it
        up(ports=stack.ports, state_dir=state)


def test_a_busy_port_fails_the_start_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(StackError, match=f"127.0.0.1:{port} is already in use"):
            up(("redis",), ports=Ports(redis=port), state_dir=tmp_path)
        code = main(["up", "--services", "redis", "--state-dir", str(tmp_path)],
                    ports=Ports(redis=port))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("stack: redis: ")


def test_a_service_that_exits_raises_with_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "redis_server", lambda: "/bin/false")
    with pytest.raises(StackError, match=r"redis exited with code 1 during startup.*redis\.log"):
        up(("redis",), ports=Ports(redis=_free_port()), state_dir=tmp_path)
    assert not any(s.running for s in status(tmp_path))
