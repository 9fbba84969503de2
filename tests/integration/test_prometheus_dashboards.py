"""Every query of every Grafana panel returns data from a real Prometheus scraping the loop.

A Prometheus binary (Debian's ``prometheus`` package; `.ci/run` installs it) is started like the
broker, scrapes the five services every second while the whole loop runs a drifting stream,
and every panel query (and annotation query) is evaluated through its HTTP API. A panel whose
query returns nothing fails the test. Without the binary the test skips, except under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eddy.demo import LoopRun, Scenario, loop_settings
from services.core.embedded import free_port, stop_child
from services.core.settings import Settings
from tests.integration.support import poll_until

DASHBOARDS = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "dashboards"


class Prometheus:
    """A Prometheus server scraping the targets written to its file_sd file."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.targets = workdir / "targets.json"
        self.targets.write_text("[]")
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: eddy\n    file_sd_configs:\n"
            f"      - files: ['{self.targets}']\n        refresh_interval: 1s\n"
        )
        with open(workdir / "prometheus.log", "wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while not self._ready():
            assert self.process.poll() is None, (workdir / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                return True
        except OSError:
            return False

    def scrape(self, ports: dict[str, int]) -> None:
        """Scrape these services, each as job eddy-<name>."""
        groups = [
            {"targets": [f"127.0.0.1:{port}"], "labels": {"job": f"eddy-{name}"}}
            for name, port in ports.items()
        ]
        self.targets.write_text(json.dumps(groups))

    def query(self, expr: str, path: str = "query", **params: str) -> list[Any]:
        """The result of a PromQL query through the HTTP API."""
        query = urllib.parse.urlencode({"query": expr, **params})
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def stop(self) -> None:
        """Stop the server."""
        stop_child(self.process)  # type: ignore[arg-type]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no prometheus binary under CI=true: .ci/run installs Debian's prometheus")
        pytest.skip("no prometheus binary (apt-get install prometheus; CI installs it)")
    server = Prometheus(binary, tmp_path)
    yield server
    server.stop()


def panel_queries() -> list[tuple[str, str]]:
    """(dashboard/panel, expr) of every panel target."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.stem}/{panel['title']}", target["expr"]))
    return found


def annotation_queries() -> list[tuple[str, str]]:
    """(dashboard/annotation, expr) of every Prometheus annotation."""
    return [
        (f"{path.stem}/{annotation['name']}", annotation["expr"])
        for path in sorted(DASHBOARDS.glob("*.json"))
        for annotation in json.loads(path.read_text())["annotations"]["list"]
        if "expr" in annotation
    ]


class ScrapedLoop(LoopRun):
    """The whole loop, with Prometheus scraping it and the queries run before it stops."""

    def __init__(self, prometheus: Prometheus, *args: Any) -> None:
        super().__init__(*args)
        self.prometheus = prometheus
        self.started = 0.0
        self.empty: list[str] = []
        self.annotations_empty: list[str] = []

    def _wait_until_serving(self, timeout_s: float = 90.0) -> None:
        super()._wait_until_serving(timeout_s)
        self.prometheus.scrape({s.name: _metrics_port(s.log_path) for s in self.services})
        self.started = time.time()

    def _stream(self) -> None:
        super()._stream()
        time.sleep(5)  # two more scrapes after the last outputs, so every rate has two samples
        now = str(time.time())
        self.empty = [
            name for name, expr in panel_queries() if not self.prometheus.query(expr, time=now)
        ]
        self.annotations_empty = [
            name
            for name, expr in annotation_queries()
            if not self.prometheus.query(
                expr, "query_range", start=str(self.started), end=now, step="1"
            )
        ]


def _metrics_port(log: Path) -> int:
    def logged() -> int | None:
        for line in log.read_text(errors="replace").splitlines():
            if '"metrics_port"' in line:
                return int(json.loads(line)["metrics_port"])
        return None

    port = poll_until(logged, timeout_s=30, every_s=0.2)
    assert port is not None, f"no metrics port logged in {log}"
    return port


def test_every_dashboard_query_returns_data_while_the_loop_runs(
    settings: Settings, tmp_path: Path, prometheus: Prometheus
) -> None:
    configured = loop_settings(settings)
    configured = configured.model_copy(
        update={
            "monitoring": configured.monitoring.model_copy(
                update={"coverage_horizon_s": 2.0, "coverage_window_s": 30.0}
            )
        }
    )
    scenario = Scenario(events=6000, drift_at=3000, rate=400, bad_every=250)
    run = ScrapedLoop(prometheus, configured, scenario, tmp_path, print)
    run.run()

    assert panel_queries(), "no dashboard queries found"
    assert run.empty == [], f"panels whose query returned nothing: {run.empty}"
    assert run.annotations_empty == [], f"annotations that never fired: {run.annotations_empty}"
