"""``python -m bench``: a scenario that fails is reported, and the others' figures are kept."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench.harness import Context, Figure


def _scenario(name: str, fails: bool) -> types.ModuleType:
    module = types.ModuleType(f"bench.scenarios.{name}")

    def run(ctx: Context) -> list[Figure]:
        if fails:
            raise RuntimeError("the broker went away")
        return [Figure(name, "events/s", 1234.0, "ev/s")]

    module.run = run  # type: ignore[attr-defined]
    return module


def test_a_failing_scenario_keeps_the_others_figures_and_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # configured endpoints: no embedded stack is started, and the fake scenarios use none
    monkeypatch.setenv("EDDY_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("EDDY_REDIS_URL", "redis://127.0.0.1:2/0")
    for name, fails in (("fake_broken", True), ("fake_fine", False)):
        monkeypatch.setitem(sys.modules, f"bench.scenarios.{name}", _scenario(name, fails))
    monkeypatch.setattr(bench_main, "SCENARIOS", ("fake_broken", "fake_fine"))
    out = tmp_path / "results.json"

    status = bench_main.main(["--out", str(out)])

    assert status == 1
    results = json.loads(out.read_text())
    assert [f["scenario"] for f in results["figures"]] == ["fake_fine"]
    assert results["failed"] == {"fake_broken": "RuntimeError: the broker went away"}
    # each scenario, failed or not, records how long it ran and how busy the machine was
    assert set(results["load"]) == {"fake_broken", "fake_fine"}
    expected = {"seconds", "busy", "stolen"} if os.path.exists("/proc/stat") else {"seconds"}
    assert all(set(load) == expected for load in results["load"].values())
    assert "FAILED scenarios: fake_broken" in capsys.readouterr().err


@pytest.mark.parametrize("repeats", ["0", "-3", "101", "three", ""])
def test_a_number_of_repeats_that_gives_no_median_is_refused_before_anything_runs(
    repeats: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"

    with pytest.raises(SystemExit) as stopped:
        bench_main.main(["--repeats", repeats, "--out", str(out)])

    assert stopped.value.code == 2
    assert "--repeats" in capsys.readouterr().err
    assert not out.exists()


def test_an_unknown_scenario_is_refused_with_the_names_to_choose_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"

    with pytest.raises(SystemExit) as stopped:
        bench_main.main(["--only", "latency,nope", "--out", str(out)])

    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "unknown scenarios ['nope']" in error
    assert "loop_capacity" in error
    assert not out.exists()


@pytest.mark.parametrize(
    ("where", "why"), [("missing/results.json", "no directory"), (".", "it is a directory")]
)
def test_a_results_file_that_cannot_be_written_is_refused_before_anything_runs(
    where: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        bench_main.main(["--out", str(tmp_path / where)])

    assert stopped.value.code == 2
    assert why in capsys.readouterr().err
