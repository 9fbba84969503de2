"""Shared fixtures: one real embedded broker and Redis per test session, fresh topics per test."""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from services.core.embedded import EmbeddedStack, tuned_for_embedded
from services.core.kafka import create_topics
from services.core.settings import KafkaSettings, Settings
from services.core.supervisor import ServiceProcess, service_env
from services.core.topics import TopicRole
from tests.integration.support import TopicReader


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    """The real embedded servers, shared by every integration test."""
    with EmbeddedStack() as embedded:
        yield embedded


@pytest.fixture
def settings(stack: EmbeddedStack, tmp_path: Path) -> Settings:
    """Settings pointing at the stack, with this test's own topics and registry."""
    configured = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        signing_key=SecretStr(secrets.token_hex(16)),
        registry_dir=tmp_path / "registry",
        kafka=tuned_for_embedded(KafkaSettings()),
    )
    create_topics(configured)
    return configured


@pytest.fixture
def start_service(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start service processes for this test; they are stopped (SIGTERM) afterwards."""
    started: list[ServiceProcess] = []

    def start(name: str, **env: str) -> ServiceProcess:
        log_path = tmp_path / f"{name}-{len(started)}.log"
        process = ServiceProcess(name, {**service_env(settings), **env}, log_path).start()
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture
def reader(settings: Settings) -> Iterator[Callable[[TopicRole, type[BaseModel]], TopicReader]]:
    """Open topic readers for this test; closed afterwards."""
    opened: list[TopicReader] = []

    def open_reader(role: TopicRole, model: type[BaseModel]) -> TopicReader:
        opened.append(TopicReader(settings, role, model))
        return opened[-1]

    yield open_reader
    for item in opened:
        item.close()


#: Flags for a closed network: without the background ones Chromium keeps calling Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_binary() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no chromium under CI=true: .ci/run installs Debian's chromium")
        pytest.skip("no chromium binary (apt-get install chromium; CI installs it)")
    return binary


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (skipped without it, but under CI)."""
    binary = chromium_binary()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=binary, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def artifacts() -> Path:
    """Where a test leaves what a person may want to look at (screenshots): test-artifacts/."""
    folder = Path(os.environ.get("EDDY_TEST_ARTIFACTS", "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
