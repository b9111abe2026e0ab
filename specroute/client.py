"""The specroute client SDK: a sync `Client` and an asyncio `AsyncClient` for the gRPC API.

    from specroute.client import Client

    with Client("127.0.0.1:9000", api_key="secret", timeout=30) as client:
        done = client.generate("def fibonacci(n):", max_new_tokens=64)
        print(done.text, done.finish_reason, done.metadata.drafter, done.metadata.tau)
        for chunk in client.stream("Translate to French: good morning", temperature=0.7, seed=1):
            print(chunk.text, end="", flush=True)

    # asyncio: the same methods as coroutines; stream() is an async iterator.
    import asyncio
    from specroute.client import AsyncClient

    async def main():
        async with AsyncClient("127.0.0.1:9000") as client:
            async for chunk in client.stream("Hello"):
                print(chunk.text, end="", flush=True)

    asyncio.run(main())

What this module does: builds `specroute.v1` requests, attaches call metadata (an API key as
`authorization: Bearer ...`, the Ray Serve `application` name, whatever `metadata_hook` returns),
retries UNAVAILABLE calls that have produced no output yet, keeps one deadline over the whole call
(retries included), and turns responses into the plain dataclasses of `core.api` (re-exported
here) and failures into the typed exceptions of `specroute.errors`. Messages are converted by
`core.public_codec`, the server's codec too.

Retries are this module's, not the channel's `retryPolicy` (gRPC's retry support): gRPC resends
an attempt's metadata unchanged (here `metadata_hook` runs again for each attempt, so a refreshed
token reaches a retry), caps attempts at five, draws each back-off at random, and ends a call
whose back-off would pass the deadline with DEADLINE_EXCEEDED rather than the last UNAVAILABLE.

What it does not know: anything about models, drafters, tokenizers or routing. It does not check
arguments (an empty prompt, a bad temperature, an unknown drafter): the server is the authority and
answers INVALID_ARGUMENT / NOT_FOUND. Token ids are the target tokenizer's, opaque here.

It depends on grpcio, protobuf, the standard library and the pure-Python `core` modules
(`core.api`, `core.errors`, `core.public_codec`, `core.reports`, `core.seed`) only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import AsyncIterator, Callable, Iterable, Iterator, Sequence

import grpc

from core import public_codec as codec
from core.api import (Classification, Completion, DrafterInfo, DrafterList, GenerateParams, Health, Metadata,
                      RoundInfo, StreamChunk)
from specroute.errors import DeadlineExceededError, InvalidArgumentError, from_rpc_error

__all__ = [
    "Client",
    "AsyncClient",
    "Completion",
    "StreamChunk",
    "RoundInfo",
    "Metadata",
    "Classification",
    "DrafterInfo",
    "DrafterList",
    "Health",
]

DEFAULT_ADDRESS = "127.0.0.1:9000"

MetadataHook = Callable[[], Iterable[tuple[str, str]]]


# --------------------------------------------------------------------------------------------
# Requests and results (the types are `core.api`'s; `core.public_codec` converts them)
# --------------------------------------------------------------------------------------------

def _generate_request(prompt: str, *, max_new_tokens: int | None, temperature: float, top_p: float, top_k: int,
                      seed: int | None, stop: Sequence[str] | str, task: str | None, drafter: str | None,
                      request_id: str | None, single_response: bool = False):
    params = GenerateParams(prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            top_k=top_k, seed=seed, stop=(stop,) if isinstance(stop, str) else tuple(stop),
                            task=task, drafter=drafter,
                            request_id=request_id or uuid.uuid4().hex,  # fixed here: every retry carries it
                            stream=not single_response)
    try:
        return codec.generate_request_to_proto(params)
    except ValueError as err:  # the seed: outside what the wire's uint64 holds as int64 or uint64
        raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None


class _Collector:
    """Accumulates stream chunks into a `Completion`."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.token_ids: list[int] = []
        self.finish_reason = ""
        self.metadata = Metadata()

    def add(self, chunk: StreamChunk) -> None:
        self.texts.append(chunk.text)
        self.token_ids.extend(chunk.token_ids)
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        self.metadata = self.metadata.merged(chunk.metadata)

    def completion(self) -> Completion:
        return Completion("".join(self.texts), self.token_ids, self.finish_reason, self.metadata)


# --------------------------------------------------------------------------------------------
# Retries and deadlines
# --------------------------------------------------------------------------------------------

class _Attempts:
    """The deadline and retry budget of one call: retries UNAVAILABLE with exponential backoff."""

    def __init__(self, timeout: float | None, max_retries: int, backoff_s: float):
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._retries_left = max_retries
        self._backoff_s = backoff_s

    def remaining(self) -> float | None:
        """Seconds left before the deadline; None without one."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def attempt_timeout(self) -> float | None:
        """The next attempt's gRPC timeout. An expired deadline fails here: gRPC would read a
        timeout of 0 as no deadline at all."""
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the call")
        return remaining

    def backoff(self, err: grpc.RpcError) -> float | None:
        """Seconds to wait before retrying after `err`, or None when it must not be retried."""
        code = err.code() if callable(getattr(err, "code", None)) else None
        if code != grpc.StatusCode.UNAVAILABLE or self._retries_left <= 0:
            return None
        wait, remaining = self._backoff_s, self.remaining()
        if remaining is not None and wait >= remaining:
            return None  # the retry could not finish before the deadline
        self._retries_left -= 1
        self._backoff_s *= 2
        return wait


class _ClientConfig:
    """What `Client` and `AsyncClient` share: settings, call metadata, the retry policy."""

    def __init__(self, address: str, *, api_key: str | None, metadata_hook: MetadataHook | None,
                 timeout: float | None, max_retries: int, retry_backoff_s: float, application: str | None,
                 channel_options: list | None, credentials: grpc.ChannelCredentials | None):
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s must be >= 0, got {retry_backoff_s}")
        self.address = address
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self._metadata_hook = metadata_hook
        self._channel_options = list(channel_options or [])
        self._credentials = credentials
        self._static_metadata: list[tuple[str, str]] = []
        if api_key is not None:
            self._static_metadata.append(("authorization", f"Bearer {api_key}"))
        if application is not None:
            self._static_metadata.append(("application", application))

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of one attempt; `metadata_hook` runs each time, so it may refresh tokens."""
        pairs = list(self._static_metadata)
        if self._metadata_hook is not None:
            pairs.extend((key, value) for key, value in self._metadata_hook())
        return tuple(pairs)

    def _attempts(self, timeout: float | None) -> _Attempts:
        return _Attempts(self.timeout if timeout is None else timeout, self.max_retries, self.retry_backoff_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------

class Client(_ClientConfig):
    """A blocking specroute client over one gRPC channel; thread-safe like the channel.

    `timeout` is the default deadline of each call in seconds (None: no deadline), covering its
    retries; each method's own `timeout=` overrides it. `credentials` (optional) makes the channel
    secure; without it the channel is plaintext.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, api_key: str | None = None,
                 metadata_hook: MetadataHook | None = None, timeout: float | None = None, max_retries: int = 3,
                 retry_backoff_s: float = 0.2, application: str | None = None, channel_options: list | None = None,
                 credentials: grpc.ChannelCredentials | None = None):
        super().__init__(address, api_key=api_key, metadata_hook=metadata_hook, timeout=timeout,
                         max_retries=max_retries, retry_backoff_s=retry_backoff_s, application=application,
                         channel_options=channel_options, credentials=credentials)
        if credentials is not None:
            self._channel = grpc.secure_channel(address, credentials, options=self._channel_options)
        else:
            self._channel = grpc.insecure_channel(address, options=self._channel_options)
        self._stub = codec.SpecRouteStub(self._channel)

    def generate(self, prompt: str, *, max_new_tokens: int | None = None, temperature: float = 0.0,
                 top_p: float = 1.0, top_k: int = 0, seed: int | None = None, stop: Sequence[str] = (),
                 task: str | None = None, drafter: str | None = None, request_id: str | None = None,
                 timeout: float | None = None) -> Completion:
        """Generate a completion of `prompt`. The server sends it as one message when it is done
        (`single_response`): no per-round chunks cost the serving path CPU on the way."""
        request = _generate_request(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    top_k=top_k, seed=seed, stop=stop, task=task, drafter=drafter,
                                    request_id=request_id, single_response=True)
        collector = _Collector()
        for chunk in self._stream(request, self._attempts(timeout)):
            collector.add(chunk)
        return collector.completion()

    def stream(self, prompt: str, *, max_new_tokens: int | None = None, temperature: float = 0.0,
               top_p: float = 1.0, top_k: int = 0, seed: int | None = None, stop: Sequence[str] = (),
               task: str | None = None, drafter: str | None = None, request_id: str | None = None,
               timeout: float | None = None) -> Iterator[StreamChunk]:
        """Stream a completion of `prompt`, chunk by chunk. The deadline starts now, not at the first
        `next()`. Stopping early (break, close()) cancels the call on the server."""
        request = _generate_request(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    top_k=top_k, seed=seed, stop=stop, task=task, drafter=drafter,
                                    request_id=request_id)
        return self._stream(request, self._attempts(timeout))

    def _stream(self, request, attempts: _Attempts) -> Iterator[StreamChunk]:
        received = False
        while True:
            call = self._stub.Generate(request, timeout=attempts.attempt_timeout(), metadata=self._call_metadata())
            try:
                for response in call:
                    received = True
                    yield codec.stream_chunk_from_proto(response)
                return
            except grpc.RpcError as err:
                wait = None if received else attempts.backoff(err)  # never retry a partial response
                if wait is None:
                    raise from_rpc_error(err) from err
            finally:
                call.cancel()  # a no-op once the call is over; frees the server if the caller stopped
            time.sleep(wait)

    def classify(self, prompt: str, *, task: str | None = None, drafter: str | None = None,
                 timeout: float | None = None) -> Classification:
        """How the server would route `prompt` (task, drafter, confidence), without generating."""
        request = codec.classify_request_to_proto(prompt, task, drafter)
        return codec.classification_from_proto(self._unary(self._stub.Classify, request, timeout))

    def list_drafters(self, timeout: float | None = None) -> DrafterList:
        """The server's drafters, default drafter, known tasks and target."""
        return codec.drafter_list_from_proto(self._unary(self._stub.ListDrafters, codec.list_drafters_request(),
                                                         timeout))

    def health(self, timeout: float | None = None) -> Health:
        """The server's health: status, verifier replicas, version."""
        return codec.health_from_proto(self._unary(self._stub.Health, codec.health_request(), timeout))

    def _unary(self, method, request, timeout: float | None):
        attempts = self._attempts(timeout)
        while True:
            try:
                return method(request, timeout=attempts.attempt_timeout(), metadata=self._call_metadata())
            except grpc.RpcError as err:
                wait = attempts.backoff(err)
                if wait is None:
                    raise from_rpc_error(err) from err
            time.sleep(wait)

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AsyncClient(_ClientConfig):
    """The asyncio specroute client (`grpc.aio`): `Client`'s methods as coroutines.

    The channel is opened on first use, inside the running event loop, and belongs to that loop.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, api_key: str | None = None,
                 metadata_hook: MetadataHook | None = None, timeout: float | None = None, max_retries: int = 3,
                 retry_backoff_s: float = 0.2, application: str | None = None, channel_options: list | None = None,
                 credentials: grpc.ChannelCredentials | None = None):
        super().__init__(address, api_key=api_key, metadata_hook=metadata_hook, timeout=timeout,
                         max_retries=max_retries, retry_backoff_s=retry_backoff_s, application=application,
                         channel_options=channel_options, credentials=credentials)
        self._channel: grpc.aio.Channel | None = None
        self._stub: codec.SpecRouteStub | None = None
        self._closed = False

    def _get_stub(self) -> codec.SpecRouteStub:
        if self._closed:
            raise ValueError("the AsyncClient is closed")
        if self._stub is None:
            if self._credentials is not None:
                self._channel = grpc.aio.secure_channel(self.address, self._credentials, options=self._channel_options)
            else:
                self._channel = grpc.aio.insecure_channel(self.address, options=self._channel_options)
            self._stub = codec.SpecRouteStub(self._channel)
        return self._stub

    async def generate(self, prompt: str, *, max_new_tokens: int | None = None, temperature: float = 0.0,
                       top_p: float = 1.0, top_k: int = 0, seed: int | None = None, stop: Sequence[str] = (),
                       task: str | None = None, drafter: str | None = None, request_id: str | None = None,
                       timeout: float | None = None) -> Completion:
        """Generate a completion of `prompt`, sent as one message when it is done (see `Client.generate`)."""
        request = _generate_request(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    top_k=top_k, seed=seed, stop=stop, task=task, drafter=drafter,
                                    request_id=request_id, single_response=True)
        collector = _Collector()
        async for chunk in self._stream(request, self._attempts(timeout)):
            collector.add(chunk)
        return collector.completion()

    def stream(self, prompt: str, *, max_new_tokens: int | None = None, temperature: float = 0.0,
               top_p: float = 1.0, top_k: int = 0, seed: int | None = None, stop: Sequence[str] = (),
               task: str | None = None, drafter: str | None = None, request_id: str | None = None,
               timeout: float | None = None) -> AsyncIterator[StreamChunk]:
        """Stream a completion of `prompt`: `async for chunk in client.stream(...)`. The deadline
        starts now. Stopping early (break, task cancellation) cancels the call on the server."""
        request = _generate_request(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    top_k=top_k, seed=seed, stop=stop, task=task, drafter=drafter,
                                    request_id=request_id)
        return self._stream(request, self._attempts(timeout))

    async def _stream(self, request, attempts: _Attempts) -> AsyncIterator[StreamChunk]:
        received = False
        while True:
            call = self._get_stub().Generate(request, timeout=attempts.attempt_timeout(), metadata=self._call_metadata())
            try:
                async for response in call:
                    received = True
                    yield codec.stream_chunk_from_proto(response)
                return
            except grpc.RpcError as err:
                wait = None if received else attempts.backoff(err)  # never retry a partial response
                if wait is None:
                    raise from_rpc_error(err) from err
            finally:
                call.cancel()
            await asyncio.sleep(wait)

    async def classify(self, prompt: str, *, task: str | None = None, drafter: str | None = None,
                       timeout: float | None = None) -> Classification:
        """How the server would route `prompt` (task, drafter, confidence), without generating."""
        request = codec.classify_request_to_proto(prompt, task, drafter)
        return codec.classification_from_proto(await self._unary("Classify", request, timeout))

    async def list_drafters(self, timeout: float | None = None) -> DrafterList:
        """The server's drafters, default drafter, known tasks and target."""
        return codec.drafter_list_from_proto(await self._unary("ListDrafters", codec.list_drafters_request(), timeout))

    async def health(self, timeout: float | None = None) -> Health:
        """The server's health: status, verifier replicas, version."""
        return codec.health_from_proto(await self._unary("Health", codec.health_request(), timeout))

    async def _unary(self, method_name: str, request, timeout: float | None):
        attempts = self._attempts(timeout)
        while True:
            method = getattr(self._get_stub(), method_name)
            try:
                return await method(request, timeout=attempts.attempt_timeout(), metadata=self._call_metadata())
            except grpc.RpcError as err:
                wait = attempts.backoff(err)
                if wait is None:
                    raise from_rpc_error(err) from err
            await asyncio.sleep(wait)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled. The client cannot be used afterwards."""
        self._closed = True
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
