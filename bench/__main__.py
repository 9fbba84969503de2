"""``python -m bench``: run the benchmark scenarios, print the table, write bench/results.json."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from bench.harness import (
    RESULTS,
    Context,
    Figure,
    MachineLoad,
    describe_load,
    markdown_table,
    merge_results,
    render,
    scratch_dir,
    write_results,
)
from services.core.embedded import tuned_for_embedded
from services.core.settings import Settings

#: Scenario modules under bench/scenarios, in the order they run.
SCENARIOS = (
    "serving_throughput",
    "latency",
    "training_overhead",
    "served_score",
    "drift_reaction",
    "loop_capacity",
    "hostile_soak",
    "faults",
    "canary_decisions",
    "compiled_models",
    "derived_features",
)


def _repeats(text: str) -> int:
    """``--repeats``: a median needs at least one run (and a bench an end)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 100")
    return value


def _unwritable(out: Path) -> str:
    """Why the results could not be written to ``out`` ("" if they can)."""
    if out.is_dir():
        return "it is a directory"
    if not out.parent.is_dir():
        return f"no directory {out.parent}"
    if not os.access(out if out.exists() else out.parent, os.W_OK):
        return "permission denied"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios on the configured endpoints or an embedded stack."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        default="",
        metavar="NAME[,NAME...]",
        help=f"Scenarios to run, of {', '.join(SCENARIOS)} (default: all).",
    )
    parser.add_argument(
        "--repeats", type=_repeats, default=3, help="Runs per figure, 1-100 (median; default 3)."
    )
    parser.add_argument("--quick", action="store_true", help="Smaller workloads, for a smoke run.")
    parser.add_argument(
        "--out", type=Path, default=None, help="Results file (default: bench/results.json)."
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="Print the figures of bench/results.json (or --out) as Markdown; run nothing.",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        metavar="FILE",
        help="Take into bench/results.json (or --out) the scenarios FILE measured after it "
        "did, from a run in another checkout; run nothing.",
    )
    args = parser.parse_args(argv)
    if args.merge is not None:
        taken = merge_results(args.merge, args.out or RESULTS)
        print(f"taken from {args.merge}: {', '.join(taken) or 'nothing newer'}")
        return 0
    if args.table:
        source = args.out or RESULTS
        print(markdown_table(json.loads(source.read_text(encoding="utf-8"))))
        return 0
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    out = args.out or (Path(__file__).resolve().parent / "results.json")
    problem = _unwritable(out)
    if problem:  # said now, not after half an hour of measuring
        parser.error(f"argument --out: cannot write {out}: {problem}")

    settings = Settings()
    figures: list[Figure] = []
    failed: dict[str, str] = {}  # scenario -> error: one failure must not lose the others' figures
    # the machine is shared: how busy it was, and how much its host took, beside each scenario
    load: dict[str, dict[str, float]] = {}
    with scratch_dir() as scratch:
        kafka = tuned_for_embedded(settings.kafka) if settings.is_embedded else settings.kafka
        # where an endpoint is not configured, each trial starts its own (Context.own_servers)
        ctx = Context(
            settings.kafka_bootstrap or "",
            settings.redis_url or "",
            Path(scratch),
            repeats=args.repeats,
            quick=args.quick,
            kafka=kafka,
        )
        for name in chosen:
            started, meter = time.monotonic(), MachineLoad()
            print(f"== {name}", flush=True)
            module = importlib.import_module(f"bench.scenarios.{name}")
            try:
                figures.extend(module.run(ctx))
            except Exception as exc:  # reported; the exit status says so
                traceback.print_exc()
                failed[name] = f"{type(exc).__name__}: {exc}"
                print(f"   {name} FAILED: {failed[name]}", flush=True)
            elapsed, cores = time.monotonic() - started, meter.cores()
            load[name] = {
                "seconds": round(elapsed, 1),
                **{k: round(v, 3) for k, v in cores.items()},
            }
            machine = f"; {describe_load(cores)}" if cores else ""
            print(f"   ({elapsed:.0f} s{machine})", flush=True)
        figures.extend(
            Figure("footprint", f"peak RSS {service}", mb, "MB", target="<= 250 MB", met=mb <= 250)
            for service, mb in sorted(ctx.peak_rss_mb.items())
        )
    print()
    print(render(figures))
    write_results(figures, out, failed, load, every_scenario=set(chosen) == set(SCENARIOS))
    print(f"\nwritten to {out}")
    if failed:
        print(f"FAILED scenarios: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
