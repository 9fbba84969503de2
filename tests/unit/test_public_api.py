"""``import eddy``: the client, the payloads and the settings, under names that stay."""

from __future__ import annotations

import subprocess
import sys

import pytest

import eddy
from eddy.client import EddyClient
from schemas import PAYLOADS
from services.core.settings import Settings


def test_every_public_name_resolves() -> None:
    for name in eddy.__all__:
        assert getattr(eddy, name) is not None


def test_the_client_and_settings_are_the_ones_the_services_use() -> None:
    assert eddy.Client is EddyClient
    assert eddy.Settings is Settings


def test_every_topic_payload_is_public() -> None:
    assert set(PAYLOADS) <= set(eddy.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Clientt'"):
        eddy.Clientt  # noqa: B018


def test_importing_eddy_loads_no_kafka_client_until_one_is_used() -> None:
    code = "import sys, eddy; print('confluent_kafka' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"
