"""Where artifact bytes live: files under the registry folder, or S3-compatible object storage.

``EDDY_REGISTRY_URI`` chooses: empty (the default) keeps artifacts as files under
``EDDY_REGISTRY_DIR``, addressed by ``file://`` URIs; ``s3://bucket/prefix`` keeps them in an
S3-compatible object store (AWS S3, MinIO, Ceph...; ``EDDY_OBJECT_STORE__*``), addressed by
``s3://`` URIs that any machine with the store's credentials can read. Either store reads only
what lies inside it: a version record naming anything else is refused before anything is read,
and an artifact over ``MAX_ARTIFACT_BYTES`` is refused before it is fetched. The record's
SHA-256 and signature are checked by the registry after this.
"""

from __future__ import annotations

import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from services.core.exceptions import ArtifactError, ConfigurationError
from services.core.settings import Settings

#: Largest artifact serving will read, so a hostile URI cannot exhaust memory.
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024


class ArtifactStore(Protocol):
    """Saves artifacts and reads them back by the URI it gave."""

    def save(self, model_name: str, version: int, data: bytes) -> str:
        """Store ``data`` for a version; its URI."""
        ...

    def load(self, uri: str) -> bytes:
        """The bytes behind ``uri``, or ArtifactError saying why they cannot be read."""
        ...


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store the settings name."""
    uri = settings.registry_uri.strip()
    if not uri:
        return LocalStore(settings.registry_dir)
    if uri.startswith("s3://"):
        return ObjectStore(uri, settings)
    raise ConfigurationError(
        f"EDDY_REGISTRY_URI={uri!r}: give s3://bucket/prefix, or leave it empty for files "
        "under EDDY_REGISTRY_DIR"
    )


def _name(model_name: str, version: int) -> str:
    return f"{model_name}/v{version}-{uuid.uuid4().hex[:8]}.bin"


class LocalStore:
    """Artifacts as files under one folder, addressed by ``file://`` URIs."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, model_name: str, version: int, data: bytes) -> str:
        """Write an artifact (atomically) and return its URI."""
        path = self.root / _name(model_name, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path.resolve().as_uri()

    def load(self, uri: str) -> bytes:
        """The file behind ``uri``, if it lies inside the folder.

        A record that names any other path (``file:///etc/passwd``, ``../``) is refused before
        anything is opened.
        """
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ArtifactError(
                f"artifact {uri} is not in this registry (files under {self.root}: is "
                "EDDY_REGISTRY_URI the same here as where it was published?)"
            )
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ArtifactError(f"artifact {uri} is outside the registry folder {self.root}")
        try:
            size = path.stat().st_size
            if size > MAX_ARTIFACT_BYTES:
                raise ArtifactError(f"artifact {uri} is {size} bytes, over {MAX_ARTIFACT_BYTES}")
            return path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {uri}: {exc.strerror}") from exc


class ObjectStore:
    """Artifacts in an S3-compatible bucket, under a prefix, through obstore."""

    def __init__(self, uri: str, settings: Settings) -> None:
        from obstore.store import S3Store

        parsed = urlparse(uri)
        bucket, prefix = parsed.netloc, parsed.path.strip("/")
        if not bucket:
            raise ConfigurationError(f"EDDY_REGISTRY_URI={uri!r}: no bucket (s3://bucket/prefix)")
        options = settings.object_store
        config: dict[str, Any] = {}
        if options.endpoint:
            config["endpoint"] = options.endpoint
        if options.region:
            config["region"] = options.region
        if options.access_key_id:
            config["access_key_id"] = options.access_key_id
        secret = options.secret_access_key.get_secret_value()
        if secret:
            config["secret_access_key"] = secret
        self.store = S3Store(
            bucket,
            prefix=prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options={"allow_http": options.allow_http},
        )
        self.base = f"s3://{bucket}/{prefix + '/' if prefix else ''}"

    def save(self, model_name: str, version: int, data: bytes) -> str:
        """Put an artifact (an object appears whole or not at all) and return its URI."""
        import obstore

        key = _name(model_name, version)
        try:
            obstore.put(self.store, key, data)
        except Exception as exc:  # the store's own errors, whatever the backend
            raise ArtifactError(f"cannot store artifact {self.base}{key}: {exc}") from exc
        return self.base + key

    def load(self, uri: str) -> bytes:
        """The object behind ``uri``, if it lies under this store's bucket and prefix."""
        import obstore

        key = uri[len(self.base) :] if uri.startswith(self.base) else ""
        parts = PurePosixPath(key).parts
        if not key or ".." in parts or key.startswith("/"):
            raise ArtifactError(f"artifact {uri} is outside the registry {self.base}")
        try:
            size = obstore.head(self.store, key)["size"]
            if size > MAX_ARTIFACT_BYTES:
                raise ArtifactError(f"artifact {uri} is {size} bytes, over {MAX_ARTIFACT_BYTES}")
            return bytes(obstore.get(self.store, key).bytes())
        except ArtifactError:
            raise
        except Exception as exc:  # not found, refused, unreachable: the store says which
            raise ArtifactError(f"cannot read artifact {uri}: {exc}") from exc
