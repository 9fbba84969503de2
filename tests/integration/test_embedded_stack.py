"""The embedded broker and Redis are real servers, and nothing they start outlives Eddy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from confluent_kafka.admin import AdminClient

from services.core.embedded import EmbeddedStack
from tests.integration.support import pid_alive


def _wait_dead(pids: list[int], timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def test_stack_serves_kafka_and_redis_and_stops_every_process() -> None:
    stack = EmbeddedStack().start()
    pids = stack.pids
    try:
        metadata = AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=10)
        assert metadata.brokers, "the broker answered a metadata request with no broker"
        client = redis.Redis.from_url(stack.redis_url)
        client.set("probe", b"1")
        assert client.get("probe") == b"1"
        client.close()
    finally:
        stack.stop()
    assert len(pids) == 2
    assert _wait_dead(pids) == [], "servers left running after stop()"


_CHILD = """
import sys, time
from services.core.embedded import EmbeddedStack
stack = EmbeddedStack().start()
print(*stack.pids, flush=True)
time.sleep(600)
"""


def test_servers_die_with_a_parent_killed_by_sigkill() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_dead(pids) == [], "embedded servers outlived their killed parent"


def _ignoring_sigint() -> None:
    """As a background job of a script starts: SIGINT ignored, which its children inherit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("stop_with", "started_ignoring_sigint"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "ctrl-c, started ignoring it", "sigterm"],
)
def test_stack_up_stops_everything_on_ctrl_c_or_sigterm(
    stop_with: signal.Signals, started_ignoring_sigint: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDDY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "eddy.cli", "stack", "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_ignoring_sigint if started_ignoring_sigint else None,
    )
    assert process.stdout is not None
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        exported = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in lines
            if "export " in line
        )
        assert set(exported) == {
            "EDDY_KAFKA_BOOTSTRAP",
            "EDDY_REDIS_URL",
            "EDDY_KAFKA__FETCH_WAIT_MAX_MS",
            "EDDY_KAFKA__SESSION_TIMEOUT_MS",
            "EDDY_KAFKA__TOPIC_PARTITIONS",
        }, lines
        assert redis.Redis.from_url(exported["EDDY_REDIS_URL"]).ping()
        admin = AdminClient({"bootstrap.servers": exported["EDDY_KAFKA_BOOTSTRAP"]})
        features = admin.list_topics(timeout=10).topics["features"]
        # the topics it made follow the tuning it exports
        assert len(features.partitions) == int(exported["EDDY_KAFKA__TOPIC_PARTITIONS"])
        children = _children_of(process.pid)
        assert children, "stack up started no server process"
        process.send_signal(stop_with)
        assert process.wait(30) == 0
        assert _wait_dead(children) == []
    finally:
        # a failed assertion above must not leave the CLI and its servers running
        if process.poll() is None:
            process.kill()  # its servers get SIGTERM from the kernel as their parent dies
            process.wait()


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def test_stack_up_says_when_a_server_dies_and_starts_it_again_redis_with_its_data() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDDY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "eddy.cli", "stack", "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        exported = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in lines
            if "export " in line
        )
        client = redis.Redis.from_url(exported["EDDY_REDIS_URL"])
        client.set("kept", b"across a crash")
        time.sleep(1.5)  # the append-only file is synced every second
        children = _children_of(process.pid)
        (valkey,) = [p for p in children if "valkey" in _exe_of(p)]
        (broker,) = [p for p in children if p != valkey]
        os.kill(valkey, signal.SIGKILL)
        os.kill(broker, signal.SIGKILL)
        told = []
        for line in process.stdout:
            told.append(line)
            if sum("is running again" in t for t in told) == 2:
                break
        text = "".join(told)
        assert "the embedded Redis exited" in text and "the embedded broker exited" in text
        assert "is gone" in text  # the broker's loss is said, not hidden
        assert client.get("kept") == b"across a crash"
        admin = AdminClient({"bootstrap.servers": exported["EDDY_KAFKA_BOOTSTRAP"]})
        assert "features" in admin.list_topics(timeout=10).topics
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
