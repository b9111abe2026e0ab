"""The router ingress: the Ray Serve deployment clients talk to, over gRPC and HTTP.

- gRPC (`specroute.v1.SpecRoute`, through Ray Serve's gRPC proxy): `Generate` (server
  streaming), `Classify`, `ListDrafters`, `Health`. Errors end the call with the status the
  frontend chose (`router.frontend.RequestError`) and its message.
- HTTP (FastAPI): `POST /v1/completions` (OpenAI-compatible, streaming or not),
  `GET /v1/models`, `GET /healthz`.

Each request is validated and routed by `router.frontend`, then streamed from the chosen drafter
deployment through a Serve handle: one handle call per request. Per-round traffic never passes
here; it runs between the drafter and a verifier replica over gRPC.

This module adapts transports; it holds no routing logic of its own.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types at runtime.

import contextlib
import time
import uuid

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from protos.specroute.v1 import specroute_pb2 as pb
from router import openai_compat as oai
from router.assign import GREEDY, RoutingTable, Routes
from router.detect import load_tasks
from router.frontend import GenerateParams, Limits, RequestError, RouterFrontend
from router.grpc_api import MalformedMessage
from router.quota import KeyQuota, QuotaConfig
from router.router import Router, RouterConfig
from router.stats import RoutingStats

VERSION = "specroute.v1"

http = FastAPI(title="specroute", description="OpenAI-compatible completions with task-routed speculative decoding.")


# The replica's authorization check, set by RouterIngress.__init__ (one ingress per replica
# process) through `set_authorizer`. The middleware below runs it before any route, body parsing
# included. (A function, not an assignment in __init__: Serve wraps the ingress class in a class
# it ships by value, whose copied globals would not be this module's.)
_AUTHORIZE: list = []
UNAUTHENTICATED_PATHS = ("/healthz",)
MAX_BODY_BYTES = 4 << 20  # far above a 64 kB prompt's JSON (escapes included); refused unread beyond it


def set_authorizer(authorize) -> None:
    _AUTHORIZE[:] = [authorize] if authorize is not None else []


@http.middleware("http")
async def _require_api_key(request: Request, call_next):
    """Every path but the health check needs the key when keys are configured: an unauthenticated
    request learns nothing but 401 (not the routes, the models, the docs or a body's errors)."""
    if _AUTHORIZE and request.url.path not in UNAUTHENTICATED_PATHS:
        try:
            _AUTHORIZE[0]({k.lower(): v for k, v in request.headers.items()})
        except RequestError as err:
            return oai.error_response(err)
    size = request.headers.get("content-length", "0")
    if not size.isdigit() or int(size) > MAX_BODY_BYTES:  # before FastAPI reads and parses it
        return oai.error_response(RequestError("INVALID_ARGUMENT", f"the body is over {MAX_BODY_BYTES} bytes"))
    return await call_next(request)


@http.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body")
    return oai.error_response(RequestError("INVALID_ARGUMENT", f"{where}: {first['msg']}"))


@http.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception):
    """A bug is still an OpenAI-shaped JSON error, never a plain-text page."""
    return oai.error_response(RequestError("INTERNAL", f"internal error ({type(exc).__name__})"))


def _quota_config(router_cfg: dict, verifier_cfg: dict) -> QuotaConfig:
    """The per-key limits; with several API keys and no `shared_streams`, the fair share is over
    the verifier sessions at the most replicas the config allows."""
    quota = QuotaConfig(**router_cfg.get("quota", {}))
    if quota.shared_streams is None and len(router_cfg.get("api_keys", ())) > 1:
        deployment = verifier_cfg.get("deployment", {})
        replicas = (deployment.get("autoscaling") or {}).get("max_replicas") or deployment.get("num_replicas", 1)
        quota = quota.model_copy(update={"shared_streams": verifier_cfg.get("max_sessions", 16) * replicas})
    return quota


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
    def __init__(self, config: dict, drafters: dict, directory, verifier=None):
        router_cfg, self.drafter_info = config["router"], {d["name"]: d for d in config["drafters"]}
        tasks = load_tasks(router_cfg["tasks"])
        table = routing_table_for(RoutingTable.load(router_cfg["routing"]), list(drafters))
        redis_url = config["redis"].get("url")
        stats = RoutingStats(redis_url, prefix=config["redis"].get("prefix", "specroute")) if redis_url else None
        self.router = Router(tasks, table, stats, RouterConfig(**router_cfg.get("policy", {})))
        limits = Limits(**{k: router_cfg[k] for k in ("default_max_new_tokens", "max_new_tokens_limit",
                                                       "max_prompt_bytes", "max_stop_strings", "request_timeout_s")},
                        api_keys=tuple(router_cfg.get("api_keys", ())))
        self.drafters, self.directory = drafters, directory
        self.frontend = RouterFrontend(self.router, self._drafter_stream, limits,
                                       KeyQuota(_quota_config(router_cfg, config["verifier"])))
        set_authorizer(self.frontend.authorize if limits.api_keys else None)
        self.target = str(config["target"]["path"])

    def _drafter_stream(self, name: str, request):
        return self.drafters[name].options(stream=True).generate.remote(request)

    # --- gRPC --------------------------------------------------------------------------------
    @staticmethod
    def _fail(grpc_context, err: RequestError):
        grpc_context.set_code(getattr(grpc.StatusCode, err.code, grpc.StatusCode.INTERNAL))
        grpc_context.set_details(err.message)
        if err.code == "RESOURCE_EXHAUSTED":
            # Serve's proxy forwards details, not trailing metadata, on an error: the hint is in the
            # message too ("retry after ..."); set here for a proxy that does forward it.
            grpc_context.set_trailing_metadata([("retry-after-ms", str(round(oai.retry_after_s(err) * 1e3)))])
        raise err

    def _checked(self, request, grpc_context) -> str:
        """Authorizes the call (its API key), then refuses a request that was not valid protobuf."""
        key = self.frontend.authorize(dict(grpc_context.invocation_metadata()))
        if isinstance(request, MalformedMessage):
            raise RequestError("INVALID_ARGUMENT", request.message)
        return key

    async def Generate(self, request: pb.GenerateRequest, grpc_context):
        try:
            key = self._checked(request, grpc_context)
            s = request.sampling
            params = GenerateParams(
                prompt=request.prompt,
                max_new_tokens=request.max_new_tokens if request.HasField("max_new_tokens") else None,
                temperature=s.temperature, top_p=s.top_p if s.top_p != 0 else 1.0, top_k=s.top_k,
                seed=s.seed if s.HasField("seed") else None, stop=tuple(request.stop), task=request.task,
                drafter=request.drafter, request_id=request.request_id, stream=not request.single_response)
            first = True
            async with contextlib.aclosing(self.frontend.generate(params, key)) as chunks:
                async for chunk, progress in chunks:
                    message = pb.GenerateResponse(text=chunk.text, token_ids=chunk.token_ids,
                                                  finish_reason=chunk.finish_reason or "")
                    if chunk.round is not None:
                        message.round.CopyFrom(pb.RoundInfo(**chunk.round))
                    if first or chunk.finish_reason is not None:
                        message.metadata.CopyFrom(pb.RequestMetadata(**progress.metadata()))
                    first = False
                    yield message
        except RequestError as err:
            self._fail(grpc_context, err)

    async def Classify(self, request: pb.ClassifyRequest, grpc_context) -> pb.ClassifyResponse:
        try:
            self._checked(request, grpc_context)
            d = self.frontend.classify(request.prompt, request.task, request.drafter)
        except RequestError as err:
            self._fail(grpc_context, err)
        return pb.ClassifyResponse(task=d.task or "", drafter=d.drafter, confidence=d.confidence, route_source=d.source)

    async def ListDrafters(self, request: pb.ListDraftersRequest, grpc_context) -> pb.ListDraftersResponse:
        try:
            self._checked(request, grpc_context)
        except RequestError as err:
            self._fail(grpc_context, err)
        return pb.ListDraftersResponse(**self._drafters())

    async def Health(self, request: pb.HealthRequest, grpc_context) -> pb.HealthResponse:
        replicas = await self._verifier_replicas()
        status = pb.HealthResponse.SERVING if replicas else pb.HealthResponse.NOT_SERVING
        return pb.HealthResponse(status=status, verifier_replicas=replicas, version=VERSION)

    def _drafters(self) -> dict:
        table = self.router.table
        infos = []
        for name in self.drafters:
            d = self.drafter_info[name]
            infos.append(pb.DrafterInfo(name=name, kind=d["kind"], family=d.get("family") or "",
                                        params=d.get("params") or 0, specialised_for=d.get("specialised_for") or "",
                                        serves_tasks=[t for t, n in table.routes(GREEDY).table.items() if n == name]))
        return {"drafters": infos, "default_drafter": table.routes(GREEDY).default, "tasks": table.tasks,
                "target": self.target}

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

    @http.post("/v1/completions")
    async def completions(self, body: oai.CompletionRequest, request: Request):
        request_id = uuid.uuid4().hex
        created = int(time.time())
        stream = None
        try:
            key = self.frontend.authorize({k.lower(): v for k, v in request.headers.items()})
            params = oai.to_params(body, set(self.drafters), request_id, self.frontend.limits.max_name_bytes)
            stream = self.frontend.generate(params, key)
            first = await anext(stream)  # errors before the first chunk are plain HTTP errors
        except RequestError as err:
            await _close(stream)
            return oai.error_response(err)
        except StopAsyncIteration:
            return oai.error_response(RequestError("INTERNAL", "the drafter sent nothing"))

        if not body.stream:
            text, (chunk, progress) = [first[0].text], first
            try:
                async for chunk, progress in stream:
                    text.append(chunk.text)
            except RequestError as err:
                return oai.error_response(err)
            finally:
                await _close(stream)  # at once, not when the garbage collector finalises it
            meta = progress.metadata()
            return oai.completion(request_id, body.model, "".join(text), chunk.finish_reason, oai.usage(meta), meta,
                                  created)

        async def events():
            try:
                chunk, progress = first
                while True:
                    last = chunk.finish_reason is not None
                    meta = progress.metadata() if last else None
                    yield oai.sse(oai.completion(request_id, body.model, chunk.text, chunk.finish_reason,
                                                 oai.usage(meta) if last else None, meta, created))
                    if last:
                        break
                    chunk, progress = await anext(stream, (None, None))
                    if chunk is None:
                        break
            except RequestError as err:
                yield oai.sse(oai.error_body(err)[1])
            finally:
                await _close(stream)  # also when the client went away mid-stream
            yield oai.sse("[DONE]")
        return StreamingResponse(events(), media_type="text/event-stream")

