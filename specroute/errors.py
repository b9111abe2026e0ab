"""Typed exceptions for the specroute client SDK, one per gRPC status code.

Every `grpc.RpcError` that leaves `specroute.client` is turned into a `SpecrouteError` (or one of
its subclasses) by `from_rpc_error`, so callers can write

    try:
        client.generate(prompt)
    except ResourceExhaustedError:
        ...                      # the server is full: back off
    except SpecrouteError as err:
        print(err.code, err.details, err.retryable)

`retryable` says whether the same request may succeed if sent again unchanged (the server's
`core.errors.Code.retryable`: UNAVAILABLE); the client only retries such errors itself, and
only before a stream has produced output. The classes mirror the codes of `core.errors`, the
server's one error type.

This module depends on grpcio and `core.errors` only.
"""

from __future__ import annotations

import grpc

from core.errors import Code, grpc_status

__all__ = [
    "SpecrouteError",
    "InvalidArgumentError",
    "ResourceExhaustedError",
    "UnavailableError",
    "DeadlineExceededError",
    "NotFoundError",
    "RequestCancelledError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "FailedPreconditionError",
    "InternalError",
    "from_rpc_error",
]


class SpecrouteError(Exception):
    """A failed specroute call: the gRPC status `code`, the server's `details`, and `retryable`."""

    def __init__(self, code: grpc.StatusCode, details: str = "", *, retryable: bool | None = None):
        self.code = code
        self.details = details or ""
        self.retryable = Code.of(code).retryable if retryable is None else retryable
        super().__init__(code, self.details)

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, grpc.StatusCode) else str(self.code)
        return f"{name}: {self.details}" if self.details else name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class InvalidArgumentError(SpecrouteError):
    """The server rejected the request's arguments (INVALID_ARGUMENT)."""


class ResourceExhaustedError(SpecrouteError):
    """The server is out of capacity or over a quota (RESOURCE_EXHAUSTED)."""


class UnavailableError(SpecrouteError):
    """The server could not be reached or is not serving (UNAVAILABLE); retryable."""


class DeadlineExceededError(SpecrouteError):
    """The call's deadline passed before it finished (DEADLINE_EXCEEDED)."""


class NotFoundError(SpecrouteError):
    """A named resource (a drafter, a task) does not exist (NOT_FOUND)."""


class RequestCancelledError(SpecrouteError):
    """The call was cancelled, by the client or the server (CANCELLED)."""


class UnauthenticatedError(SpecrouteError):
    """The call carried no valid credentials (UNAUTHENTICATED)."""


class PermissionDeniedError(SpecrouteError):
    """The credentials do not allow this call (PERMISSION_DENIED)."""


class FailedPreconditionError(SpecrouteError):
    """The server is not in a state that allows this call (FAILED_PRECONDITION)."""


class InternalError(SpecrouteError):
    """The server failed while handling the call (INTERNAL)."""


_BY_CODE: dict[grpc.StatusCode, type[SpecrouteError]] = {grpc_status(code): cls for code, cls in {
    Code.INVALID_ARGUMENT: InvalidArgumentError,
    Code.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    Code.UNAVAILABLE: UnavailableError,
    Code.DEADLINE_EXCEEDED: DeadlineExceededError,
    Code.NOT_FOUND: NotFoundError,
    Code.CANCELLED: RequestCancelledError,
    Code.UNAUTHENTICATED: UnauthenticatedError,
    Code.PERMISSION_DENIED: PermissionDeniedError,
    Code.FAILED_PRECONDITION: FailedPreconditionError,
    Code.INTERNAL: InternalError,
}.items()}
assert set(_BY_CODE) == {grpc_status(code) for code in Code}, "an SDK exception for every server code"


def error_class(code: grpc.StatusCode) -> type[SpecrouteError]:
    """The exception class for a status code; `SpecrouteError` itself for unmapped codes."""
    return _BY_CODE.get(code, SpecrouteError)


def from_rpc_error(err: grpc.RpcError) -> SpecrouteError:
    """Convert a `grpc.RpcError` (sync or `grpc.aio.AioRpcError`) into a typed `SpecrouteError`.

    An error that does not carry a status (a bare `grpc.RpcError`) maps to UNKNOWN with its text.
    """
    code = _call_or_none(err, "code")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = _call_or_none(err, "details")
    if details is None:
        details = str(err)
    return error_class(code)(code, str(details))


def _call_or_none(err: grpc.RpcError, name: str):
    method = getattr(err, name, None)
    if not callable(method):
        return None
    try:
        return method()
    except Exception:  # a half-initialised call object: fall back to the defaults
        return None
