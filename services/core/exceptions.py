"""The root of every error Eddy raises on purpose, so callers can catch Eddy's errors alone."""


class EddyError(Exception):
    """Base class of Eddy's own errors."""


class ConfigurationError(EddyError):
    """A setting is missing or wrong; the message says which and how to fix it."""


class StackError(EddyError):
    """The embedded broker or Redis server could not be started or reached."""


class DeliveryError(EddyError):
    """The broker did not acknowledge a produced message; offsets stay uncommitted."""


class MessageTooLargeError(EddyError):
    """A message is larger than the producer may send (``EDDY_KAFKA__MAX_MESSAGE_BYTES``)."""


class ArtifactError(EddyError):
    """A model artifact is missing, corrupt, or its signature does not verify."""
