"""The processes of candidates declared ``process = "own"``: started, watched, restarted.

Training starts one per such candidate (``python -m services.training`` with
``EDDY_TRAINING__WORKER`` set), restarts one that died (it resumes from its checkpoint, so
nothing is lost), reads their rows for the leaderboard, and stops them when it stops. Their
logs go beside the registry, in ``logs/training-<candidate>.log``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from services.core.settings import Settings
from services.core.supervisor import ServiceProcess, service_env
from services.training.worker import rows_key

log = logging.getLogger(__name__)


class CandidateProcesses:
    """One process per candidate with a process of its own."""

    def __init__(self, settings: Settings, client: redis.Redis, names: list[str]) -> None:
        self.client = client
        self.key = rows_key(settings.topic_prefix, settings.model_name)
        logs = settings.registry_dir.parent / "logs"
        env = {**service_env(settings), "EDDY_METRICS_PORT": "0"}
        self.processes = {
            name: ServiceProcess(
                "training", {**env, "EDDY_TRAINING__WORKER": name}, logs / f"training-{name}.log"
            )
            for name in names
        }
        self.logs = logs

    def start(self) -> None:
        """Start every candidate's process."""
        if self.processes:
            self.logs.mkdir(parents=True, exist_ok=True)
        for name, process in self.processes.items():
            process.start()
            log.info(
                "candidate process started", extra={"candidate": name, "log": str(process.log_path)}
            )

    def supervise(self) -> None:
        """Restart a candidate's process that died (it resumes from its checkpoint)."""
        for name, process in self.processes.items():
            if process.process is not None and not process.running:
                log.warning(
                    "candidate process exited; restarting it",
                    extra={"candidate": name, "code": process.process.returncode},
                )
                process.start()

    def rows(self) -> dict[str, dict[str, Any]]:
        """Each candidate process's last reported row (scores, examples, rate)."""
        if not self.processes:
            return {}
        raw: dict[bytes, bytes] = self.client.hgetall(self.key)  # type: ignore[assignment]
        return {name.decode(): json.loads(value) for name, value in raw.items()}

    def pid(self, name: str) -> int | None:
        """The process id of a candidate's process (for tests and operators)."""
        process = self.processes[name].process
        return None if process is None else process.pid

    def stop(self) -> None:
        """Stop every candidate's process (SIGTERM: each finishes its batch and checkpoint)."""
        for process in self.processes.values():
            process.stop()
