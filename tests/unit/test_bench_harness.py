"""The bench harness: its machine meter, and the results file it writes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from bench.harness import (
    Figure,
    MachineLoad,
    MachineTimes,
    describe_load,
    merge_results,
    write_results,
)


def test_a_kernel_without_a_steal_column_counts_nothing_stolen() -> None:
    times = MachineTimes.parse("cpu  700 0 200 1000 10 0 100", 100)

    assert times == MachineTimes(busy=10.0, stolen=0.0)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc/stat")
def test_the_machine_meter_sees_this_process_spin() -> None:
    meter = MachineLoad()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        pass

    cores = meter.cores()

    # one spinning thread keeps a core busy unless the host takes it away
    assert cores["busy"] + cores["stolen"] > 0.5
    assert cores["busy"] + cores["stolen"] <= (os.cpu_count() or 1) * 1.1


def test_a_load_reads_as_busy_and_stolen_cores_of_the_machine() -> None:
    text = describe_load({"busy": 1.834, "stolen": 0.091})

    assert text == f"machine busy 1.83 of {os.cpu_count()} cores, 0.09 stolen by the host"
    assert describe_load({}) == ""


def test_rerunning_one_scenario_keeps_the_others_figures_with_their_dates(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    first = [Figure("a", "fa", 1.0, "x"), Figure("b", "fb", 2.0, "x")]
    write_results(first, results, load={"a": {"seconds": 1.0}, "b": {"seconds": 2.0}})
    written = json.loads(results.read_text())
    write_results([Figure("b", "fb", 3.0, "x")], results, load={"b": {"seconds": 3.0}})
    again = json.loads(results.read_text())

    assert [(f["scenario"], f["value"]) for f in again["figures"]] == [("a", 1.0), ("b", 3.0)]
    assert again["dates"]["a"] == written["dates"]["a"]
    assert again["load"] == {"a": {"seconds": 1.0}, "b": {"seconds": 3.0}}


def test_a_run_that_measured_some_services_footprints_keeps_the_others(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    write_results(
        [
            Figure("footprint", "peak RSS ingest", 60.0, "MB"),
            Figure("footprint", "peak RSS training", 160.0, "MB"),
        ],
        results,
    )
    write_results([Figure("footprint", "peak RSS training", 170.0, "MB")], results)
    figures = json.loads(results.read_text())["figures"]

    assert [(f["name"], f["value"]) for f in figures] == [
        ("peak RSS ingest", 60.0),
        ("peak RSS training", 170.0),
    ]


def test_a_lighter_partial_run_keeps_the_higher_footprint_on_file(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    write_results([Figure("footprint", "peak RSS serving", 238.0, "MB")], results)
    partial = [Figure("footprint", "peak RSS serving", 200.0, "MB"), Figure("a", "fa", 1.0, "x")]
    write_results(partial, results, every_scenario=False)
    kept = {f["name"]: f["value"] for f in json.loads(results.read_text())["figures"]}
    write_results([Figure("footprint", "peak RSS serving", 200.0, "MB")], results)
    every = {f["name"]: f["value"] for f in json.loads(results.read_text())["figures"]}

    assert kept == {"peak RSS serving": 238.0, "fa": 1.0}
    assert every["peak RSS serving"] == 200.0


def test_a_merge_takes_only_what_the_other_checkout_measured_later(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    old = [Figure("a", "fa", 1.0, "x"), Figure("footprint", "peak RSS training", 180.0, "MB")]
    write_results([*old, Figure("b", "fb", 1.0, "x")], theirs)  # the other checkout, long ago
    time.sleep(1.1)  # dates are to the second
    write_results([Figure("a", "fa", 2.0, "x"), Figure("b", "fb", 2.0, "x")], ours)
    write_results([Figure("footprint", "peak RSS training", 160.0, "MB")], ours)
    time.sleep(1.1)
    write_results(
        [Figure("b", "fb", 3.0, "x"), Figure("footprint", "peak RSS training", 150.0, "MB")],
        theirs,
        load={"b": {"seconds": 9.0}},
    )

    taken = merge_results(theirs, ours)
    merged = json.loads(ours.read_text())

    assert taken == ["b", "footprint"]
    values = {f["name"]: f["value"] for f in merged["figures"]}
    assert values == {"fa": 2.0, "fb": 3.0, "peak RSS training": 160.0}
    assert merged["dates"]["b"] == json.loads(theirs.read_text())["dates"]["b"]
    assert merged["load"]["b"] == {"seconds": 9.0}
    assert merge_results(theirs, ours) == [], "nothing is newer twice"


def test_a_scraped_metric_sums_its_samples_with_the_label_and_nothing_else() -> None:
    from bench.harness import scraped
    from services.core import metrics
    from services.core.embedded import free_port

    port = metrics.serve_metrics(0)
    before = scraped(port, "eddy_rejected_total", 'service="scrape-test"')
    metrics.REJECTED.labels("scrape-test", "invalid_json").inc(2)
    metrics.REJECTED.labels("scrape-test", "oversized").inc(3)
    metrics.REJECTED.labels("other-service", "oversized").inc(7)

    assert scraped(port, "eddy_rejected_total", 'service="scrape-test"') == before + 5
    assert scraped(port, "eddy_rejected", 'service="scrape-test"') == 0, "whole names only"
    assert scraped(free_port(), "eddy_rejected_total") == 0.0, "no page, nothing counted"
