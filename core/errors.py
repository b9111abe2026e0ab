"""One error type for every expected failure, with a code that maps to gRPC and to HTTP once.

    raise ServiceError(Code.INVALID_ARGUMENT, "max_new_tokens must be in [1, 1024], got 0")

Whoever finds a problem raises `ServiceError` with a `Code` and a message that names the
problem; it crosses Ray (it pickles) and the services unchanged, and only the boundaries turn it
into a transport's form: `grpc_status(code)` for a gRPC status, `http_status(code)` for an HTTP
response. Anything that is not a `ServiceError` is a bug and is reported as INTERNAL, never as
the caller's fault.

The codes are gRPC's own names (a subset), so a client sees the same code whichever door it
used. `retryable` says whether the same request may succeed if sent again unchanged.

This module depends on grpcio only (the light SDK imports it); it knows nothing about who raised.
"""

from __future__ import annotations

import enum

import grpc


class Code(enum.Enum):
    """What went wrong, in gRPC's status names."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"

    @property
    def retryable(self) -> bool:
        return self is Code.UNAVAILABLE

    @classmethod
    def of(cls, status: grpc.StatusCode) -> Code:
        """The code of a gRPC status; INTERNAL for a status outside the subset (UNKNOWN, say)."""
        return cls.__members__.get(status.name, cls.INTERNAL)


class ServiceError(Exception):
    """An expected failure: a `Code`, a message for the caller and, for RESOURCE_EXHAUSTED, how
    long to back off."""

    def __init__(self, code: Code, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.code, self.message, self.retry_after_s = Code(code), message, retry_after_s

    def __reduce__(self):  # Ray pickles exceptions raised in replicas
        return ServiceError, (self.code, self.message, self.retry_after_s)

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"

    @property
    def retryable(self) -> bool:
        return self.code.retryable


_HTTP = {
    Code.INVALID_ARGUMENT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 500,  # the server's state, not the request's
    Code.DEADLINE_EXCEEDED: 504,
    Code.CANCELLED: 500,
    Code.UNAVAILABLE: 503,
    Code.INTERNAL: 500,
}


def grpc_status(code: Code) -> grpc.StatusCode:
    return grpc.StatusCode[code.value]


def http_status(code: Code) -> int:
    return _HTTP[code]
