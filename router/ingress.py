"""The router ingress: the Ray Serve deployment clients talk to, over gRPC and HTTP.

- gRPC (`specroute.v1.SpecRoute`, through Ray Serve's gRPC proxy): `Generate` (server
  streaming), `Classify`, `ListDrafters`, `Health`, converted by `core.public_codec`. Errors end
  the call with the status of their `core.errors.ServiceError` (`grpc_status`, mapped here once)
  and its message; any other exception is a bug, INTERNAL.
- HTTP (FastAPI): `POST /v1/completions` (OpenAI-compatible, streaming or not),
  `GET /v1/models`, `GET /healthz`.

Each request is validated and routed by `router.frontend`, then streamed from the chosen drafter
deployment through a Serve handle: one handle call per request. Per-round traffic never passes
here; it runs between the drafter and a verifier replica over gRPC.

Observability: the replica configures the project's logs (`core.logs`, component "router") and
creates its metrics (`router.metrics.RouterMetrics`), which the frontend, the router and the
routing statistics record into. Every Generate call and every `POST /v1/completions` ends in
exactly one finished-request record, refusals at the edge included (no API key, a body too large
or invalid, a malformed message). Over HTTP a request is named by its `X-Request-ID` header
(printable, at most `max_name_bytes`, like gRPC's `request_id` field), which Serve's proxy sets
when the client does not and returns on every response.

The replica receives its own settings (`IngressSettings`) and the descriptions of the drafters
it lists, never the whole system's config. This module adapts transports; it holds no routing
logic of its own.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types at runtime.

import contextlib
import dataclasses
import logging
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from core import public_codec as codec
from core.api import Classification, DrafterInfo, DrafterList, Health
from core.errors import Code, ServiceError, grpc_status
from core.logs import LogSettings, configure_logging, request_scope
from router import openai_compat as oai
from router.assign import GREEDY, RoutingTable, Routes
from router.detect import load_tasks
from router.frontend import Limits, RouterFrontend, request_id_or_fresh
from router.grpc_api import MalformedMessage
from router.metrics import RouterMetrics
from router.quota import KeyQuota, QuotaConfig
from router.router import Router, RouterConfig
from router.stats import RoutingStats

VERSION = "specroute.v1"

log = logging.getLogger("specroute.router")

http = FastAPI(title="specroute", description="OpenAI-compatible completions with task-routed speculative decoding.")


# The replica's authorization check and its frontend, set by RouterIngress.__init__ (one ingress
# per replica process) through `set_authorizer` and `set_frontend`. The middleware below runs the
# check before any route, body parsing included, and records the completions it refuses through
# the frontend. (Functions, not assignments in __init__: Serve wraps the ingress class in a class
# it ships by value, whose copied globals would not be this module's.)
_AUTHORIZE: list = []
_FRONTEND: list = []
UNAUTHENTICATED_PATHS = ("/healthz",)
COMPLETIONS_PATH = "/v1/completions"
REQUEST_ID_HEADER = "X-Request-ID"
MAX_BODY_BYTES = 4 << 20  # far above a 64 kB prompt's JSON (escapes included); refused unread beyond it


def set_authorizer(authorize) -> None:
    _AUTHORIZE[:] = [authorize] if authorize is not None else []


def set_frontend(frontend: RouterFrontend | None) -> None:
    _FRONTEND[:] = [frontend] if frontend is not None else []


def _request_id_of(header: str | None) -> tuple[str, ServiceError | None]:
    """The request's id from its X-Request-ID header (a fresh one without it), and the error when
    the header is not a valid id (then the fresh id names the refusal, never the invalid value)."""
    max_bytes = _FRONTEND[0].limits.max_name_bytes if _FRONTEND else Limits().max_name_bytes
    request_id, err = request_id_or_fresh(header, max_bytes)
    return request_id, err and ServiceError(err.code, f"{REQUEST_ID_HEADER}: {err.message}")


def _refused(request: Request, err: ServiceError) -> JSONResponse:
    """The error response to a completions request refused before its route ran, recorded as
    finished; other paths' refusals are answered but not counted as requests."""
    if request.url.path == COMPLETIONS_PATH and _FRONTEND:
        _FRONTEND[0].refused(err, request.state.request_id, request.state.start)
    return oai.error_response(err)


@http.middleware("http")
async def _edge(request: Request, call_next):
    """Names each completions request by its `X-Request-ID`, then checks every request before
    FastAPI reads its body."""
    if request.url.path != COMPLETIONS_PATH:
        return await _require_api_key(request, call_next, None)
    request.state.start = time.perf_counter()  # the request's start, for its latencies
    # Serve's HTTP proxy names every request: the client's X-Request-ID, or one it generates and
    # adds to the request's headers; it also returns that header on the response (Ray Serve's
    # `RequestIdMiddleware`), so the id here is the one in Serve's own logs and on the response.
    request.state.request_id, invalid = _request_id_of(request.headers.get(REQUEST_ID_HEADER))
    return await _require_api_key(request, call_next, invalid)


async def _require_api_key(request: Request, call_next, invalid_id: ServiceError | None):
    """Every path but the health check needs the key when keys are configured: an unauthenticated
    request learns nothing but 401 (not the routes, the models, the docs or a body's errors)."""
    if _AUTHORIZE and request.url.path not in UNAUTHENTICATED_PATHS:
        try:
            _AUTHORIZE[0]({k.lower(): v for k, v in request.headers.items()})
        except ServiceError as err:
            return _refused(request, err)
    size = request.headers.get("content-length", "0")
    if not size.isdigit() or int(size) > MAX_BODY_BYTES:  # before FastAPI reads and parses it
        return _refused(request, ServiceError(Code.INVALID_ARGUMENT, f"the body is over {MAX_BODY_BYTES} bytes"))
    if invalid_id is not None:
        return _refused(request, invalid_id)
    return await call_next(request)


@http.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body")
    return _refused(request, ServiceError(Code.INVALID_ARGUMENT, f"{where}: {first['msg']}"))


@http.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception):
    """A bug is still an OpenAI-shaped JSON error, never a plain-text page."""
    return oai.error_response(_internal(exc))


def _internal(exc: Exception) -> ServiceError:
    """A bug, reported as INTERNAL (never the caller's fault), with its type but not its text."""
    log.error("internal error", exc_info=exc)
    return ServiceError(Code.INTERNAL, f"internal error ({type(exc).__name__})")


class IngressSettings(BaseModel):
    """What a router replica needs: its limits, its task artifacts and routing table, the routing
    policy, the per-key quota, where the shared statistics live, and the target's name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: Limits = Field(default_factory=Limits)
    tasks: Path
    routing: Path
    policy: RouterConfig = Field(default_factory=RouterConfig)
    quota: QuotaConfig = Field(default_factory=QuotaConfig)
    redis_url: str | None = Field(description="The routing statistics' Redis; None: none kept.")
    redis_prefix: str
    target: str = Field(description="The target model, as ListDrafters names it.")


async def _close(stream) -> None:
    """Closes a frontend stream now, so its quota and drafter stream are freed with the request.
    (Defined above the ingress: Serve copies the routes, with the globals they name, when the
    class is decorated, so a helper defined below it would be missing there.)"""
    if stream is not None:
        await stream.aclose()


def routing_table_for(table: RoutingTable, deployed: list[str]) -> RoutingTable:
    """The table restricted to deployed drafters; every mode's default must be one of them. A
    task whose eligible drafters are none deployed goes to its mode's default."""
    modes = {}
    for mode, routes in table.modes.items():
        if routes.default not in deployed:
            raise ValueError(f"the routing table's default for {mode} requests, {routes.default!r}, "
                             f"is not deployed: {deployed}")
        eligible = {t: [d for d in ds if d in deployed] or [routes.default] for t, ds in routes.eligible.items()}
        modes[mode] = Routes({t: ds[0] for t, ds in eligible.items()}, eligible, routes.matrix, routes.default)
    return RoutingTable(modes, {n: d for n, d in table.drafters.items() if n in deployed}, table.tasks_version,
                        table.target)


@serve.deployment(name="Router")
@serve.ingress(http)
class RouterIngress:
    def __init__(self, settings: IngressSettings, drafters: dict, catalog: list[DrafterInfo], directory,
                 verifier=None, logs: LogSettings = LogSettings()):
        """drafters: name -> the drafter deployment's handle; catalog: the drafters' descriptions.
        The verifier is bound so that it deploys with the app; nothing calls it here. logs: how
        this replica writes its log lines."""
        configure_logging(logs, component="router", replica=serve.get_replica_context().replica_tag)
        self.metrics = RouterMetrics()
        tasks = load_tasks(settings.tasks)
        table = routing_table_for(RoutingTable.load(settings.routing), list(drafters))
        stats = RoutingStats(settings.redis_url, prefix=settings.redis_prefix,
                             recorder=self.metrics) if settings.redis_url else None
        self.router = Router(tasks, table, stats, settings.policy, recorder=self.metrics)
        self.drafters, self.directory, self.target = drafters, directory, settings.target
        self.catalog = {d.name: d for d in catalog}
        self.frontend = RouterFrontend(self.router, self._drafter_stream, settings.limits, KeyQuota(settings.quota),
                                       recorder=self.metrics)
        set_authorizer(self.frontend.authorize if settings.limits.api_keys else None)
        set_frontend(self.frontend)

    def _drafter_stream(self, name: str, request):
        return self.drafters[name].options(stream=True).generate.remote(request)

    # --- gRPC --------------------------------------------------------------------------------
    @staticmethod
    def _fail(grpc_context, err: Exception):
        """Ends the call with the error's status (INTERNAL for a bug) and message."""
        error = err if isinstance(err, ServiceError) else _internal(err)
        grpc_context.set_code(grpc_status(error.code))
        grpc_context.set_details(error.message)
        if error.code is Code.RESOURCE_EXHAUSTED:
            # Serve's proxy forwards details, not trailing metadata, on an error: the hint is in the
            # message too ("retry after ..."); set here for a proxy that does forward it.
            grpc_context.set_trailing_metadata([("retry-after-ms", str(round(oai.retry_after_s(error) * 1e3)))])
        raise error

    def _checked(self, request, grpc_context) -> str:
        """Authorizes the call (its API key), then refuses a request that was not valid protobuf."""
        key = self.frontend.authorize(dict(grpc_context.invocation_metadata()))
        if isinstance(request, MalformedMessage):
            raise ServiceError(Code.INVALID_ARGUMENT, request.message)
        return key

    async def Generate(self, request, grpc_context):
        start = time.perf_counter()
        try:
            try:
                key = self._checked(request, grpc_context)
                params = codec.generate_request_from_proto(request)
            except Exception as err:  # refused before the frontend saw it: recorded here
                self.frontend.refused(err, self.frontend.request_id_for(getattr(request, "request_id", "")), start)
                raise
            first = True
            async with contextlib.aclosing(self.frontend.generate(params, key, start)) as chunks:
                async for chunk, progress in chunks:
                    status = progress.status() if first or chunk.finish_reason is not None else None
                    first = False
                    yield codec.generate_response_to_proto(chunk.text, chunk.token_ids, chunk.finish_reason,
                                                           chunk.round, status)
        except Exception as err:
            self._fail(grpc_context, err)

    async def Classify(self, request, grpc_context):
        try:
            self._checked(request, grpc_context)
            d = self.frontend.classify(*codec.classify_request_from_proto(request))
            return codec.classification_to_proto(Classification(d.task or "", d.drafter, d.confidence, d.source))
        except Exception as err:
            self._fail(grpc_context, err)

    async def ListDrafters(self, request, grpc_context):
        try:
            self._checked(request, grpc_context)
            return codec.drafter_list_to_proto(self._drafter_list())
        except Exception as err:
            self._fail(grpc_context, err)

    async def Health(self, request, grpc_context):
        replicas = await self._verifier_replicas()
        return codec.health_to_proto(Health("SERVING" if replicas else "NOT_SERVING", replicas, VERSION))

    def _drafter_list(self) -> DrafterList:
        routes = self.router.table.routes(GREEDY)
        infos = [dataclasses.replace(self.catalog[name], serves_tasks=[t for t, n in routes.table.items() if n == name])
                 for name in self.drafters]
        return DrafterList(infos, routes.default, list(self.router.table.tasks), self.target)

    async def _verifier_replicas(self) -> int:
        try:
            return len(await self.directory.replicas.remote())
        except Exception:
            return 0

    # --- HTTP ----------------------------------------------------------------------------------
    @http.get("/healthz")
    async def healthz(self):
        replicas = await self._verifier_replicas()
        return JSONResponse({"status": "ok" if replicas else "no verifier", "verifier_replicas": replicas},
                            status_code=200 if replicas else 503)

    @http.get("/v1/models")
    async def models(self):
        names = [oai.AUTO_MODEL, *self.drafters]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "specroute"}
                                           for n in names]}

    @http.post(COMPLETIONS_PATH)
    async def completions(self, body: oai.CompletionRequest, request: Request):
        """The request's id and start come from the middleware (`X-Request-ID`; Serve's proxy puts
        the id on the response)."""
        request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
        start = getattr(request.state, "start", None) or time.perf_counter()
        with request_scope(request_id):
            return await self._completions(body, request, request_id, start)

    async def _completions(self, body: oai.CompletionRequest, request: Request, request_id: str, start: float):
        created = int(time.time())
        stream = None
        try:
            key = self.frontend.authorize({k.lower(): v for k, v in request.headers.items()})
            params = oai.to_params(body, set(self.drafters), request_id, self.frontend.limits.max_name_bytes)
        except Exception as err:  # refused before the frontend saw it: recorded here
            error = err if isinstance(err, ServiceError) else _internal(err)
            self.frontend.refused(error, request_id, start)
            return oai.error_response(error)
        try:
            stream = self.frontend.generate(params, key, start)
            first = await anext(stream)  # errors before the first chunk are plain HTTP errors
        except ServiceError as err:
            await _close(stream)
            return oai.error_response(err)
        except StopAsyncIteration:
            return oai.error_response(ServiceError(Code.INTERNAL, "the drafter sent nothing"))
        except Exception as err:  # a bug, recorded by the frontend
            await _close(stream)
            return oai.error_response(_internal(err))

        if not body.stream:
            text, (chunk, progress) = [first[0].text], first
            try:
                async for chunk, progress in stream:
                    text.append(chunk.text)
            except ServiceError as err:
                return oai.error_response(err)
            finally:
                await _close(stream)  # at once, not when the garbage collector finalises it
            meta = oai.metadata_json(progress.status())
            return oai.completion(request_id, body.model, "".join(text), chunk.finish_reason, oai.usage(meta), meta,
                                  created)

        async def events():
            try:
                chunk, progress = first
                while True:
                    last = chunk.finish_reason is not None
                    meta = oai.metadata_json(progress.status()) if last else None
                    yield oai.sse(oai.completion(request_id, body.model, chunk.text, chunk.finish_reason,
                                                 oai.usage(meta) if last else None, meta, created))
                    if last:
                        await anext(stream, None)  # lets the frontend end the request (its statistics)
                        break
                    chunk, progress = await anext(stream, (None, None))
                    if chunk is None:
                        break
            except ServiceError as err:
                yield oai.sse(oai.error_body(err)[1])
            finally:
                await _close(stream)  # also when the client went away mid-stream
            yield oai.sse("[DONE]")
        return StreamingResponse(events(), media_type="text/event-stream")

