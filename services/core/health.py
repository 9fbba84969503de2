"""Liveness and readiness of a service process, served beside its metrics.

``/healthz`` (live) answers 503 when the process is stuck: its loop has not come round for
``stall_s`` while it waits for no server, or it holds partitions with messages waiting and has
consumed none of them for ``stall_s``. An orchestrator restarts a process that is not live.
``/readyz`` (ready) answers 503 while the process waits for Redis, holds no partition, or a
service-specific check fails (serving: no model loaded yet). Both answer a JSON object that
says why. A Redis outage makes a service not ready but still live: restarting it would not
bring Redis back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

#: How long without progress makes a process not live (a batch that takes longer is a stall).
STALL_S = 120.0


@dataclass
class Health:
    """What the loop and the clients report; what the endpoints answer from."""

    stall_s: float = STALL_S
    clock: Callable[[], float] = time.monotonic
    #: when the loop last came round, and last consumed a message
    loop_beat: float = field(default_factory=time.monotonic)
    last_consumed: float = field(default_factory=time.monotonic)
    #: partitions held, and messages waiting on them (from the consumer's statistics)
    assigned: int = 0
    lag: int = 0
    #: servers the process is waiting for ("redis")
    waiting_for: set[str] = field(default_factory=set)
    #: name → check; each returns "" when fine, else why not ready
    checks: dict[str, Callable[[], str]] = field(default_factory=dict)
    #: a process that runs no consumer loop (the label page) is ready without partitions
    needs_partitions: bool = True

    def beat(self, consumed: int = 0) -> None:
        """The loop came round (having consumed ``consumed`` messages)."""
        now = self.clock()
        self.loop_beat = now
        if consumed:
            self.last_consumed = now

    def live(self) -> tuple[bool, dict[str, Any]]:
        """Whether the process makes progress, and the figures that say so."""
        now = self.clock()
        since_beat, since_consumed = now - self.loop_beat, now - self.last_consumed
        stuck = since_beat > self.stall_s and not self.waiting_for
        starved = (
            self.assigned > 0
            and self.lag > 0
            and since_consumed > self.stall_s
            and not self.waiting_for
        )
        reasons = []
        if stuck:
            reasons.append(f"the loop has not come round for {since_beat:.0f} s")
        if starved:
            reasons.append(
                f"{self.lag} messages wait and none was consumed for {since_consumed:.0f} s"
            )
        return not reasons, {
            "live": not reasons,
            "reasons": reasons,
            "seconds_since_loop": round(since_beat, 1),
            "seconds_since_consumed": round(since_consumed, 1),
            "lag": self.lag,
            "waiting_for": sorted(self.waiting_for),
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether the process can do its work now, and why not."""
        reasons = [f"waiting for {name}" for name in sorted(self.waiting_for)]
        if self.needs_partitions and self.assigned == 0:
            reasons.append("no partition assigned yet")
        reasons.extend(why for check in self.checks.values() if (why := check()))
        return not reasons, {"ready": not reasons, "reasons": reasons, "partitions": self.assigned}


#: The process's health (each service is a process of its own).
HEALTH = Health()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds are not worth a log line."""


def _app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, body = health.live() if path == "/healthz" else health.ready()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json")],
            )
            return [json.dumps(body).encode()]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


def serve(registry: CollectorRegistry, port: int, host: str, health: Health = HEALTH) -> int:
    """Serve /metrics, /healthz and /readyz on ``host``:``port`` (0: a free one); the port."""
    server = make_server(host, port, _app(registry, health), _Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return int(server.server_port)
