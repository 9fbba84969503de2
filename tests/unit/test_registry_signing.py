"""The registry: version records signed whole, the file store, and verified loading."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas import ModelVersion
from schemas.models import Flavour
from services.core.artifacts import LocalStore
from services.core.datasets import default_classifier
from services.core.exceptions import ArtifactError, ConfigurationError
from services.core.registry import (
    load_verified,
    serialize_river,
    sha256_hex,
    sign,
    signed,
    verify,
)
from services.core.signing import (
    Keyring,
    ed25519_key_id,
    private_hex,
    private_key_from,
    public_hex,
    public_key_from,
)

KEY = b"registry-test-key"
KEYS = Keyring(hmac_key=KEY)


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
        "key_id": "hmac:0000000000000000",
        "signature": "0" * 64,
        "trigger": "manual",
    }
    fields.update(changes)
    return signed(ModelVersion.model_validate(fields), Keyring(hmac_key=key))


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

    verify(version_for(data, "file:///unused"), data, KEYS)


def test_verify_refuses_a_wrong_key() -> None:
    data = b"model bytes"

    with pytest.raises(ArtifactError, match="signed by unknown key hmac:"):
        verify(version_for(data, "file:///unused", key=b"attacker-key"), data, KEYS)


def test_verify_refuses_tampered_bytes() -> None:
    version = version_for(b"model bytes", "file:///unused")

    with pytest.raises(ArtifactError, match="checksum mismatch"):
        verify(version, b"model bytez", KEYS)


def test_verify_refuses_a_tampered_checksum() -> None:
    data = b"model bytes"
    version = version_for(data, "file:///unused", sha256=sha256_hex(b"other"))

    with pytest.raises(ArtifactError, match="phishing v3: checksum mismatch"):
        verify(version, data, KEYS)


def test_verify_refuses_bytes_and_checksum_swapped_together() -> None:
    version = version_for(b"model bytes", "file:///unused")
    forged = version.model_copy(update={"sha256": sha256_hex(b"evil bytes")})

    with pytest.raises(ArtifactError, match="signature does not verify"):
        verify(forged, b"evil bytes", KEYS)


# The artifact store


def test_saved_artifact_loads_back_identical(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100

    uri = LocalStore(tmp_path).save("phishing", 1, data)

    assert uri.startswith("file://")
    assert LocalStore(tmp_path).load(uri) == data


def test_store_handles_a_root_with_spaces_and_unicode(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "my models é")

    uri = store.save("phishing", 1, b"data")

    assert "%20" in uri
    assert store.load(uri) == b"data"


def test_saving_the_same_version_twice_keeps_both_and_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)

    first = store.save("phishing", 1, b"one")
    second = store.save("phishing", 1, b"two")

    assert first != second
    assert (store.load(first), store.load(second)) == (b"one", b"two")
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
def test_unsupported_uri_scheme_raises_artifact_error(uri: str, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not in this registry"):
        LocalStore(tmp_path).load(uri)


def test_missing_artifact_raises_artifact_error(tmp_path: Path) -> None:
    uri = (tmp_path / "gone.bin").as_uri()

    with pytest.raises(ArtifactError, match="cannot read artifact"):
        LocalStore(tmp_path).load(uri)


def test_artifact_uri_that_is_a_directory_raises_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        LocalStore(tmp_path.parent).load(tmp_path.as_uri())


# Verified loading


def test_signed_river_model_loads_and_predicts_like_the_original(tmp_path: Path) -> None:
    model = default_classifier()
    model.learn_one({"x": 1.0}, True)
    model.learn_one({"x": -1.0}, False)
    data = serialize_river(model)
    uri = LocalStore(tmp_path).save("phishing", 3, data)

    loaded_bytes, loaded = load_verified(version_for(data, uri), KEYS, tmp_path)

    assert loaded_bytes == data
    assert loaded.predict_proba_one({"x": 0.5}) == model.predict_proba_one({"x": 0.5})


def test_onnx_artifact_is_returned_as_bytes_without_unpickling(tmp_path: Path) -> None:
    data = b"not a pickle at all"
    uri = LocalStore(tmp_path).save("phishing", 3, data)

    assert load_verified(version_for(data, uri, flavour="onnx"), KEYS, tmp_path) == (data, data)


def test_signed_but_unreadable_pickle_raises_artifact_error(tmp_path: Path) -> None:
    data = b"\x80\x05garbage"
    uri = LocalStore(tmp_path).save("phishing", 3, data)

    with pytest.raises(ArtifactError, match="cannot load"):
        load_verified(version_for(data, uri), KEYS, tmp_path)


def test_hostile_pickle_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    # The fixture's own check: without it the next tests could pass for the wrong reason.
    marker = tmp_path / "ran"

    pickle.loads(pickle.dumps(MakesMarkerWhenUnpickled(marker)))

    assert marker.exists()


def test_tampered_artifact_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = serialize_river(default_classifier())
    uri = LocalStore(tmp_path).save("phishing", 3, data)
    version = version_for(data, uri)
    (artifact,) = (tmp_path / "phishing").glob("*.bin")
    artifact.write_bytes(pickle.dumps(MakesMarkerWhenUnpickled(marker)))

    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_verified(version, KEYS, tmp_path)
    assert not marker.exists()


def test_hostile_pickle_signed_with_another_key_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = pickle.dumps(MakesMarkerWhenUnpickled(marker))
    uri = LocalStore(tmp_path).save("phishing", 3, hostile)

    with pytest.raises(ArtifactError, match="signed by unknown key"):
        load_verified(version_for(hostile, uri, key=b"attacker-key"), KEYS, tmp_path)
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


# The whole record is signed


@pytest.mark.parametrize(
    "change",
    [
        {"version": 93},
        {"trigger": "rollback"},
        {"parent_version": 1},
        {"feature_names": ["x"]},
        {"classes": [False, True]},
        {"artifact_uri": "file:///elsewhere.bin"},
        {"description": "harmless"},
        {"metrics": {"accuracy": 1.0}},
    ],
    ids=lambda change: next(iter(change)),
)
def test_changing_any_field_of_a_signed_record_breaks_its_signature(change: dict[str, Any]) -> None:
    data = b"model bytes"
    forged = version_for(data, "file:///unused").model_copy(update=change)

    with pytest.raises(ArtifactError, match="signature does not verify"):
        verify(forged, data, KEYS)


def test_a_signed_record_still_verifies_after_travelling_as_json() -> None:
    data = b"model bytes"
    sent = version_for(data, "file:///unused", metrics={"accuracy": 0.1 + 0.2}, classes=["a", 1])

    verify(ModelVersion.model_validate_json(sent.model_dump_json()), data, KEYS)


def test_an_artifact_outside_the_registry_folder_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    registry = tmp_path / "registry"
    registry.mkdir()
    for uri in (outside.as_uri(), (registry / ".." / "outside.bin").as_uri()):
        version = version_for(b"secret", uri)  # even a validly signed record
        with pytest.raises(ArtifactError, match="outside the registry folder"):
            load_verified(version, KEYS, registry)


# Ed25519: readers hold public keys only


def _ed25519_record(private: Ed25519PrivateKey, tmp_path: Path, data: bytes) -> ModelVersion:
    uri = LocalStore(tmp_path).save("phishing", 3, data)
    unsigned = version_for(data, uri)
    return signed(unsigned, Keyring(private=private))


def test_a_version_signed_with_a_private_key_verifies_with_its_public_key_alone(
    tmp_path: Path,
) -> None:
    private = Ed25519PrivateKey.generate()
    data = serialize_river(default_classifier())
    version = _ed25519_record(private, tmp_path, data)
    reader = Keyring(trusted={ed25519_key_id(private.public_key()): private.public_key()})

    assert version.key_id.startswith("ed25519:") and len(version.signature) == 128
    assert load_verified(version, reader, tmp_path)[0] == data
    with pytest.raises(ConfigurationError, match="no key to sign"):
        reader.sign({"x": 1})  # a reader cannot sign


def test_rotation_trusts_several_keys_and_a_revoked_or_unknown_key_is_refused(
    tmp_path: Path,
) -> None:
    old, new, stranger = (Ed25519PrivateKey.generate() for _ in range(3))
    trusted = {ed25519_key_id(k.public_key()): k.public_key() for k in (old, new)}
    data = b"model bytes"
    by_old = _ed25519_record(old, tmp_path, data)
    by_new = _ed25519_record(new, tmp_path, data)

    verify(by_old, data, Keyring(trusted=trusted))
    verify(by_new, data, Keyring(trusted=trusted))
    revoking = Keyring(trusted=trusted, revoked=frozenset({by_old.key_id}))
    with pytest.raises(ArtifactError, match="revoked key"):
        verify(by_old, data, revoking)
    with pytest.raises(ArtifactError, match="unknown key"):
        verify(_ed25519_record(stranger, tmp_path, data), data, Keyring(trusted=trusted))


def test_once_public_keys_are_trusted_a_shared_secret_signature_is_refused() -> None:
    data = b"model bytes"
    by_secret = version_for(data, "file:///unused")
    public = Ed25519PrivateKey.generate().public_key()

    with pytest.raises(ArtifactError, match="only Ed25519"):
        verify(by_secret, data, Keyring(hmac_key=KEY, trusted={ed25519_key_id(public): public}))


def test_keys_are_read_from_hex_and_pem_and_a_bad_one_names_the_setting() -> None:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    same = private_key_from(pem), private_key_from(private_hex(private))
    assert {public_hex(k) for k in same} == {public_hex(private)}
    assert public_hex(private) == public_hex(private_key_from(private_hex(private)))
    assert ed25519_key_id(public_key_from(public_hex(private))) == ed25519_key_id(
        private.public_key()
    )
    with pytest.raises(ConfigurationError, match="EDDY_SIGNING_PRIVATE_KEY"):
        private_key_from("not a key")
    with pytest.raises(ConfigurationError, match="EDDY_TRUSTED_KEYS"):
        public_key_from("00" * 31)
