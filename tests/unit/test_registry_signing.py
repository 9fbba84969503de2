"""The registry's artifacts: checksums, HMAC signatures, the file store, and verified loading."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from schemas import ModelVersion
from schemas.models import Flavour
from services.core.datasets import default_classifier
from services.core.exceptions import ArtifactError
from services.core.registry import (
    ArtifactStore,
    load_verified,
    serialize_river,
    sha256_hex,
    sign,
    verify,
)

KEY = b"registry-test-key"


class MakesMarkerWhenUnpickled:
    """A hostile artifact: unpickling it creates a directory, proving code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def version_for(
    data: bytes, uri: str, key: bytes = KEY, flavour: Flavour = "river", **changes: Any
) -> ModelVersion:
    fields: dict[str, Any] = {
        "model_name": "phishing",
        "version": 3,
        "flavour": flavour,
        "artifact_uri": uri,
        "sha256": sha256_hex(data),
        "signature": sign(data, key),
        "trigger": "manual",
    }
    fields.update(changes)
    return ModelVersion.model_validate(fields)


# Checksums and signatures


def test_sha256_hex_is_the_hex_sha256_of_the_bytes() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_signature_depends_on_key_and_bytes() -> None:
    signature = sign(b"artifact", KEY)

    assert len(signature) == 64
    assert signature == sign(b"artifact", KEY)
    assert signature != sign(b"artifact", b"other-key")
    assert signature != sign(b"artifact!", KEY)


def test_verify_accepts_the_signed_bytes_with_the_right_key() -> None:
    data = b"model bytes"

    verify(version_for(data, "file:///unused"), data, KEY)


def test_verify_refuses_a_wrong_key() -> None:
    data = b"model bytes"

    with pytest.raises(ArtifactError, match="signature does not verify"):
        verify(version_for(data, "file:///unused", key=b"attacker-key"), data, KEY)


def test_verify_refuses_tampered_bytes() -> None:
    version = version_for(b"model bytes", "file:///unused")

    with pytest.raises(ArtifactError, match="checksum mismatch"):
        verify(version, b"model bytez", KEY)


def test_verify_refuses_a_tampered_checksum() -> None:
    data = b"model bytes"
    version = version_for(data, "file:///unused", sha256=sha256_hex(b"other"))

    with pytest.raises(ArtifactError, match="phishing v3: checksum mismatch"):
        verify(version, data, KEY)


def test_verify_refuses_bytes_and_checksum_swapped_together() -> None:
    version = version_for(b"model bytes", "file:///unused")
    forged = version.model_copy(update={"sha256": sha256_hex(b"evil bytes")})

    with pytest.raises(ArtifactError, match="signature does not verify"):
        verify(forged, b"evil bytes", KEY)


# The artifact store


def test_saved_artifact_loads_back_identical(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100

    uri = ArtifactStore(tmp_path).save("phishing", 1, data)

    assert uri.startswith("file://")
    assert ArtifactStore.load(uri) == data


def test_store_handles_a_root_with_spaces_and_unicode(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "my models é")

    uri = store.save("phishing", 1, b"data")

    assert "%20" in uri
    assert ArtifactStore.load(uri) == b"data"


def test_saving_the_same_version_twice_keeps_both_and_no_temp_files(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)

    first = store.save("phishing", 1, b"one")
    second = store.save("phishing", 1, b"two")

    assert first != second
    assert (ArtifactStore.load(first), ArtifactStore.load(second)) == (b"one", b"two")
    assert list((tmp_path / "phishing").glob("*.tmp")) == []


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("s3://bucket/phishing/v1.bin", id="s3"),
        pytest.param("http://example.com/v1.bin", id="http"),
        pytest.param("https://example.com/v1.bin", id="https"),
        pytest.param("/var/lib/eddy/v1.bin", id="bare-path"),
        pytest.param("", id="empty"),
    ],
)
def test_unsupported_uri_scheme_raises_artifact_error(uri: str) -> None:
    with pytest.raises(ArtifactError, match="unsupported artifact URI scheme"):
        ArtifactStore.load(uri)


def test_missing_artifact_raises_artifact_error(tmp_path: Path) -> None:
    uri = (tmp_path / "gone.bin").as_uri()

    with pytest.raises(ArtifactError, match="cannot read artifact"):
        ArtifactStore.load(uri)


def test_artifact_uri_that_is_a_directory_raises_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        ArtifactStore.load(tmp_path.as_uri())


# Verified loading


def test_signed_river_model_loads_and_predicts_like_the_original(tmp_path: Path) -> None:
    model = default_classifier()
    model.learn_one({"x": 1.0}, True)
    model.learn_one({"x": -1.0}, False)
    data = serialize_river(model)
    uri = ArtifactStore(tmp_path).save("phishing", 3, data)

    loaded_bytes, loaded = load_verified(version_for(data, uri), KEY)

    assert loaded_bytes == data
    assert loaded.predict_proba_one({"x": 0.5}) == model.predict_proba_one({"x": 0.5})


def test_onnx_artifact_is_returned_as_bytes_without_unpickling(tmp_path: Path) -> None:
    data = b"not a pickle at all"
    uri = ArtifactStore(tmp_path).save("phishing", 3, data)

    assert load_verified(version_for(data, uri, flavour="onnx"), KEY) == (data, data)


def test_signed_but_unreadable_pickle_raises_artifact_error(tmp_path: Path) -> None:
    data = b"\x80\x05garbage"
    uri = ArtifactStore(tmp_path).save("phishing", 3, data)

    with pytest.raises(ArtifactError, match="cannot load"):
        load_verified(version_for(data, uri), KEY)


def test_hostile_pickle_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    # The fixture's own check: without it the next tests could pass for the wrong reason.
    marker = tmp_path / "ran"

    pickle.loads(pickle.dumps(MakesMarkerWhenUnpickled(marker)))

    assert marker.exists()


def test_tampered_artifact_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    signed = serialize_river(default_classifier())
    uri = ArtifactStore(tmp_path).save("phishing", 3, signed)
    version = version_for(signed, uri)
    (artifact,) = (tmp_path / "phishing").glob("*.bin")
    artifact.write_bytes(pickle.dumps(MakesMarkerWhenUnpickled(marker)))

    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_verified(version, KEY)
    assert not marker.exists()


def test_hostile_pickle_signed_with_another_key_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = pickle.dumps(MakesMarkerWhenUnpickled(marker))
    uri = ArtifactStore(tmp_path).save("phishing", 3, hostile)

    with pytest.raises(ArtifactError, match="signature does not verify"):
        load_verified(version_for(hostile, uri, key=b"attacker-key"), KEY)
    assert not marker.exists()


def test_a_deeply_nested_model_still_serialises() -> None:
    # a Hoeffding tree on a time-like feature grew deep enough to stop pickle's default limit
    deep: list[object] = []
    for _ in range(3000):
        deep = [deep]
    with pytest.raises(RecursionError):
        pickle.dumps(deep)
    restored, depth = pickle.loads(serialize_river(deep)), 0
    while restored:
        restored, depth = restored[0], depth + 1
    assert depth == 3000
