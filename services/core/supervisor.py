"""Starts service processes (``python -m services.<name>``) for ``eddy up``, the demo and tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, SecretStr

from services.core.embedded import spawn_child, stop_child
from services.core.settings import Settings

#: Nested settings groups, passed to child processes whole.
SETTINGS_GROUPS = (
    "kafka", "ingest", "serving", "labeling", "training", "monitoring", "object_store",
)  # fmt: skip

#: Every service with an entry point, in the order they start (and stop in reverse).
SERVICES = ("ingest", "serving", "labeling", "training", "monitoring")


@dataclass
class ServiceProcess:
    """One running service process, its environment and its log file."""

    name: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ServiceProcess:
        """Start the process (it dies with its parent)."""
        self.process = spawn_child(
            [sys.executable, "-m", f"services.{self.name}"],
            self.log_path,
            {**os.environ, **self.env},
        )
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to commit or flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM and wait: finishes its batch and commits."""
        if self.process is not None:
            stop_child(self.process)

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident memory (VmHWM) in MiB, while it runs (Linux)."""
        if not self.running or self.process is None:
            return None
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def log_tail(self, lines: int = 20) -> str:
        """The end of its log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def service_env(settings: Settings) -> dict[str, str]:
    """Every setting as environment variables, so a child process sees what this one sees."""
    env = {
        "EDDY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "EDDY_REDIS_URL": settings.redis_url or "",
        "EDDY_TOPIC_PREFIX": settings.topic_prefix,
        "EDDY_SIGNING_KEY": settings.signing_key.get_secret_value(),
        "EDDY_SIGNING_PRIVATE_KEY": settings.signing_private_key.get_secret_value(),
        "EDDY_PII_KEY": settings.pii_key.get_secret_value(),
        "EDDY_REDIS_USERNAME": settings.redis_username,
        "EDDY_REDIS_PASSWORD": settings.redis_password.get_secret_value(),
        "EDDY_TRUSTED_KEYS": json.dumps(settings.trusted_keys),
        "EDDY_REVOKED_KEYS": json.dumps(settings.revoked_keys),
        "EDDY_REGISTRY_DIR": str(settings.registry_dir),
        "EDDY_REGISTRY_URI": settings.registry_uri,
        "EDDY_MODEL_NAME": settings.model_name,
        "EDDY_METRICS_HOST": settings.metrics_host,
        "EDDY_LOG_LEVEL": settings.log_level,
    }
    if settings.redis_tls_ca is not None:
        env["EDDY_REDIS_TLS_CA"] = str(settings.redis_tls_ca)
    for group in SETTINGS_GROUPS:  # nested groups travel as JSON; EDDY_GROUP__FIELD still wins
        env[f"EDDY_{group.upper()}"] = _group_json(getattr(settings, group))
    return env


def _group_json(group: BaseModel) -> str:
    """A settings group as JSON with its secrets in clear (JSON dumps show them as ****)."""
    values = group.model_dump(mode="json")
    for name, value in group:
        if isinstance(value, SecretStr):
            values[name] = value.get_secret_value()
    return json.dumps(values)
