"""What every message is: a request (with its reply type and time limit) or a notice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from agent.protocol.types import BAD_REQUEST

__all__ = ["Empty", "Notice", "Request"]

R = TypeVar("R")



class Request(Generic[R]):
    """A message dmd sends to the agent; the agent answers with one ``REPLY``."""

    __slots__ = ()
    TYPE: ClassVar[str]
    REPLY: ClassVar[type[Any]]
    TIMEOUT_S: ClassVar[float] = 60.0  # the agent's limit; dmd waits as long unless told otherwise
    INVALID_CODE: ClassVar[str] = BAD_REQUEST  # the error code of a request whose data does not decode


class Notice:
    """A message without a reply."""

    __slots__ = ()
    TYPE: ClassVar[str]


@dataclass(frozen=True, slots=True)
class Empty:
    """A reply that carries nothing but success."""


