"""Who may publish a model version: version records signed whole, by keys serving cannot forge.

A version record's signature covers every field of it (name, number, trigger, parent, spec,
features, classes, the artifact's URI and SHA-256, ...), so no field can be changed, and no
old record renumbered, without the signing key. Two kinds of key:

- **Ed25519** (``EDDY_SIGNING_PRIVATE_KEY`` to publish, ``EDDY_TRUSTED_KEYS`` to verify): the
  services that only read versions (serving, monitoring) hold public keys, so a reader that is
  broken into cannot sign a version. Several trusted keys may be listed at once (rotation), and
  a key id in ``EDDY_REVOKED_KEYS`` is refused even if it is still listed.
- **HMAC-SHA256** with ``EDDY_SIGNING_KEY``, the shared secret, when no private key is set: one
  key for publishing and verifying. Once trusted keys are listed, HMAC-signed versions are
  refused: a shared secret would let any reader sign.

Each record names its key (``key_id``): ``ed25519:<16 hex>`` (from the public key) or
``hmac:<16 hex>`` (an HMAC of a fixed text, which names the key without revealing it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.core.exceptions import ArtifactError, ConfigurationError
from services.core.settings import Settings

#: Prepended to what is signed, so a signature of one kind of thing is never one of another.
DOMAIN = b"eddy model version record v1\x00"


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the record as JSON, keys sorted, no spaces, ASCII."""
    return DOMAIN + json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def hmac_key_id(key: bytes) -> str:
    """The id of an HMAC key: names it in a record without revealing it."""
    return "hmac:" + hmac.new(key, b"eddy key id", hashlib.sha256).hexdigest()[:16]


def ed25519_key_id(public: Ed25519PublicKey) -> str:
    """The id of an Ed25519 key: the start of the SHA-256 of its raw public bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def private_key_from(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from 64 hex characters (its seed) or a PEM block."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("not an Ed25519 key")
            return key
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text))
    except ValueError as error:
        raise ConfigurationError(
            "EDDY_SIGNING_PRIVATE_KEY is not an Ed25519 private key (64 hex characters or a "
            f"PEM block; `eddy keys generate` makes one): {error}"
        ) from None


def public_key_from(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from 64 hex characters or a PEM block."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            return key
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError as error:
        raise ConfigurationError(
            f"a key in EDDY_TRUSTED_KEYS is not an Ed25519 public key ({text[:20]}...): {error}"
        ) from None


def public_hex(key: Ed25519PrivateKey) -> str:
    """The public half of a private key, as 64 hex characters (what EDDY_TRUSTED_KEYS lists)."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def private_hex(key: Ed25519PrivateKey) -> str:
    """A private key as 64 hex characters (its seed): what EDDY_SIGNING_PRIVATE_KEY takes."""
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return raw.hex()


@dataclass(frozen=True)
class Keyring:
    """The keys of one process: what it signs with, and what it accepts."""

    hmac_key: bytes = b""
    private: Ed25519PrivateKey | None = None
    trusted: dict[str, Ed25519PublicKey] | None = None
    revoked: frozenset[str] = frozenset()

    @classmethod
    def of(cls, settings: Settings) -> Keyring:
        """The keyring the settings describe (checked: a bad key is a configuration error)."""
        secret = settings.signing_private_key.get_secret_value()
        trusted = [public_key_from(text) for text in settings.trusted_keys]
        return cls(
            settings.signing_key.get_secret_value().encode(),
            private_key_from(secret) if secret else None,
            {ed25519_key_id(key): key for key in trusted} or None,
            frozenset(settings.revoked_keys),
        )

    def require_verifying(self) -> Keyring:
        """The keyring itself, or a configuration error if it accepts no signature at all."""
        if not (self.hmac_key or self.trusted or self.private):
            raise ConfigurationError(
                "no key to verify model versions with: set EDDY_TRUSTED_KEYS (Ed25519 public "
                "keys) or EDDY_SIGNING_KEY (the shared secret)"
            )
        return self

    def sign(self, record: dict[str, Any]) -> tuple[str, str]:
        """(key id, signature in hex) of a record, with the private key if there is one."""
        message = canonical(record)
        if self.private is not None:
            return ed25519_key_id(self.private.public_key()), self.private.sign(message).hex()
        if not self.hmac_key:
            raise ConfigurationError(
                "no key to sign model versions with: set EDDY_SIGNING_PRIVATE_KEY (Ed25519, "
                "`eddy keys generate`) or EDDY_SIGNING_KEY (a shared secret)"
            )
        key_id = hmac_key_id(self.hmac_key)
        return key_id, hmac.new(self.hmac_key, message, hashlib.sha256).hexdigest()

    def verify(self, record: dict[str, Any], key_id: str, signature: str, what: str) -> None:
        """Raise ArtifactError unless ``signature`` is ``record``'s by a key this ring accepts."""
        if key_id in self.revoked:
            raise ArtifactError(f"{what}: signed by revoked key {key_id}")
        message = canonical(record)
        if key_id.startswith("ed25519:"):
            public = (self.trusted or {}).get(key_id)
            if public is None and self.private is not None:
                own = self.private.public_key()
                public = own if ed25519_key_id(own) == key_id else None
            if public is None:
                raise ArtifactError(f"{what}: signed by unknown key {key_id} (EDDY_TRUSTED_KEYS)")
            try:
                public.verify(bytes.fromhex(signature), message)
            except (InvalidSignature, ValueError):
                raise ArtifactError(f"{what}: signature does not verify") from None
            return
        if self.trusted:
            raise ArtifactError(
                f"{what}: signed with a shared HMAC key ({key_id}), but EDDY_TRUSTED_KEYS is set: "
                "only Ed25519 signatures are accepted"
            )
        if not self.hmac_key or key_id != hmac_key_id(self.hmac_key):
            raise ArtifactError(f"{what}: signed by unknown key {key_id}")
        expected = hmac.new(self.hmac_key, message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise ArtifactError(f"{what}: signature does not verify")
