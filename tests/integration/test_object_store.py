"""Artifacts in S3-compatible object storage, on a real moto server the tests start."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from schemas import Prediction
from services.core import registry
from services.core.artifacts import ObjectStore, artifact_store
from services.core.exceptions import ArtifactError
from services.core.settings import ObjectStoreSettings, Settings
from services.core.signing import Keyring
from services.core.supervisor import service_env
from tests.integration.support import (
    OpenReader,
    StartService,
    feature_events,
    produce_features,
    publish_model,
)

ACCESS, SECRET = "eddy-test", "eddy-test-secret"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free port, for this module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def in_bucket(settings: Settings, s3_endpoint: str, tmp_path: Path) -> Settings:
    """``settings`` whose artifacts go to a fresh bucket, and whose local folder stays empty."""
    import boto3

    bucket = f"eddy-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return settings.model_copy(
        update={
            "registry_uri": f"s3://{bucket}/registry",
            "registry_dir": tmp_path / "publisher-disk",
            "object_store": ObjectStoreSettings(
                endpoint=s3_endpoint,
                region="us-east-1",
                access_key_id=ACCESS,
                secret_access_key=SecretStr(SECRET),
                allow_http=True,
            ),
        }
    )


def test_a_serving_without_training_disk_serves_a_version_from_the_object_store(
    in_bucket: Settings,
    start_service: StartService,
    reader: OpenReader,
    tmp_path: Path,
) -> None:
    version = publish_model(in_bucket)
    assert version.artifact_uri.startswith(in_bucket.registry_uri + "/")
    assert not (tmp_path / "publisher-disk").exists(), "nothing was written to a local disk"
    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()

    store_env = {
        k: v for k, v in service_env(in_bucket).items() if "REGISTRY_URI" in k or "OBJECT" in k
    }
    start_service("serving", **store_env, EDDY_REGISTRY_DIR=str(elsewhere))
    produce_features(in_bucket, feature_events(30))

    out = reader("predictions", Prediction).read_until(lambda items: len(items) >= 30)
    assert {p.model_version for p in out} == {version.version}  # type: ignore[attr-defined]
    assert list(elsewhere.iterdir()) == [], "serving read the artifact from the object store"


def test_the_store_reads_only_under_its_bucket_and_prefix(in_bucket: Settings) -> None:
    store = artifact_store(in_bucket)
    assert isinstance(store, ObjectStore)
    uri = store.save("default", 1, b"artifact bytes")

    assert store.load(uri) == b"artifact bytes"
    for hostile in (
        uri.replace("/registry/", "/elsewhere/"),
        uri.replace("s3://", "s3://another-bucket-"),
        f"{in_bucket.registry_uri}/../secrets/key.bin",
        "file:///etc/passwd",
    ):
        with pytest.raises(ArtifactError, match="outside the registry"):
            store.load(hostile)
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        store.load(f"{in_bucket.registry_uri}/default/v9-missing.bin")


def test_a_version_whose_artifact_was_changed_in_the_bucket_is_refused(
    in_bucket: Settings,
) -> None:
    version = registry.publish(in_bucket, "default", registry.serialize_river({"a": 1}))
    store = artifact_store(in_bucket)
    assert isinstance(store, ObjectStore)
    key = version.artifact_uri[len(store.base) :]
    import obstore  # someone with write access to the bucket

    obstore.put(store.store, key, registry.serialize_river({"a": 2}))

    with pytest.raises(ArtifactError, match="checksum mismatch"):
        registry.load_verified(version, Keyring.of(in_bucket), store)
