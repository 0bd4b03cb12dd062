"""The failures a runtime driver raises: a short ``code`` DM understands and the runtime's message.

No other exception escapes a driver (cancellation aside). The codes travel to dmd in the
agent's error replies: ``not_found``, ``image_not_found``, ``conflict``, ``invalid``,
``unavailable``, ``pull_failed``, ``timeout``, ``unsupported``, ``runtime_error``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ConflictError",
    "DriverError",
    "DriverTimeoutError",
    "ImageNotFoundError",
    "InvalidError",
    "NotFoundError",
    "PullFailedError",
    "RuntimeFailedError",
    "UnavailableError",
    "UnsupportedError",
    "error_for",
]


class DriverError(RuntimeError):
    """A runtime failure DM understands: a short ``code`` and the runtime's ``message``.

    Raise the subclasses (or :func:`error_for`), so that ``except NotFoundError`` works;
    code that only reports an error reads ``code`` and ``message``.
    """

    CODE: ClassVar[str] = "runtime_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class _CodedError(DriverError):
    def __init__(self, message: str) -> None:
        super().__init__(self.CODE, message)


class NotFoundError(_CodedError):
    """No such container."""

    CODE = "not_found"


class ImageNotFoundError(_CodedError):
    """No such image (``create`` never pulls)."""

    CODE = "image_not_found"


class ConflictError(_CodedError):
    """Name taken, container running, image in use, container not running for exec, ..."""

    CODE = "conflict"


class InvalidError(_CodedError):
    """The request is wrong (bad spec, bad archive, bad reference)."""

    CODE = "invalid"


class UnavailableError(_CodedError):
    """The runtime cannot be reached."""

    CODE = "unavailable"


class PullFailedError(_CodedError):
    """A registry pull failed (unreachable registry, denied, ...)."""

    CODE = "pull_failed"


class DriverTimeoutError(_CodedError):
    """The runtime did not answer or finish in time."""

    CODE = "timeout"


class UnsupportedError(_CodedError):
    """The driver cannot do this at all (see :class:`agent.protocol.types.Capabilities`)."""

    CODE = "unsupported"


class RuntimeFailedError(_CodedError):
    """The runtime failed for a reason of its own (engine 5xx)."""

    CODE = "runtime_error"


_ERRORS: dict[str, type[_CodedError]] = {
    cls.CODE: cls
    for cls in (
        NotFoundError,
        ImageNotFoundError,
        ConflictError,
        InvalidError,
        UnavailableError,
        PullFailedError,
        DriverTimeoutError,
        UnsupportedError,
        RuntimeFailedError,
    )
}


def error_for(code: str, message: str) -> DriverError:
    """The :class:`DriverError` subclass for ``code`` (a plain DriverError for unknown codes)."""
    cls = _ERRORS.get(code)
    return cls(message) if cls is not None else DriverError(code, message)
