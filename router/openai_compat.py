"""The OpenAI completions format: request body -> GenerateParams, chunks -> response objects.

Follows the public OpenAI Completions API (`POST /v1/completions`, `stream: true` as server-sent
events ending with `data: [DONE]`), so the official `openai` client works unchanged. Defaults are
OpenAI's (temperature 1, top_p 1, max_tokens 16 unless the server sets its own default). A
`model` naming a deployed drafter forces that drafter; any other model name routes automatically.
`task` and `drafter` may be given as extra fields (`extra_body` in the openai client).
Unsupported options (n > 1, best_of, logprobs, echo, suffix) are refused with a clear 400.
Each response carries specroute's per-request metadata under `specroute`: the same fields and
units as the gRPC API's `RequestMetadata` (`core.public_codec.metadata_fields`). Errors are
`core.errors.ServiceError`s, answered with `core.errors.http_status` and an OpenAI-shaped body;
a 429 says when to retry (`Retry-After`).

This module is the HTTP API's codec: it knows nothing about routing, and of HTTP only shapes and statuses.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from core.api import GenerateParams, RequestStatus
from core.errors import Code, ServiceError, http_status
from core.public_codec import metadata_fields
from router.frontend import checked_text

AUTO_MODEL = "specroute"
FINISH = {"length": "length", "context": "length", "eos": "stop", "stop": "stop"}
RETRY_AFTER_S = 0.1  # the back-off a RESOURCE_EXHAUSTED answer suggests when the error names none


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = AUTO_MODEL
    prompt: str | list[str]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = 1
    best_of: int | None = None
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    user: str | None = None
    task: str | None = None
    drafter: str | None = None
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = Field(0.0)
    frequency_penalty: float = Field(0.0)


def to_params(body: CompletionRequest, drafters: set[str], request_id: str, max_name_bytes: int) -> GenerateParams:
    checked_text("model", body.model, max_name_bytes)  # it is echoed in the response: check it before any work
    if body.n != 1 or (body.best_of not in (None, 1)):
        raise ServiceError(Code.INVALID_ARGUMENT, "n and best_of must be 1")
    for name in ("logprobs", "suffix"):
        if getattr(body, name) is not None:
            raise ServiceError(Code.INVALID_ARGUMENT, f"{name} is not supported")
    if body.echo:
        raise ServiceError(Code.INVALID_ARGUMENT, "echo is not supported")
    if body.presence_penalty or body.frequency_penalty:
        raise ServiceError(Code.INVALID_ARGUMENT, "presence and frequency penalties are not supported: "
                                               "they would change the target's distribution")
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise ServiceError(Code.INVALID_ARGUMENT, "prompt must be one string (batches are not supported)")
        prompt = prompt[0]
    stop = () if body.stop is None else (body.stop,) if isinstance(body.stop, str) else tuple(body.stop)
    drafter = body.drafter or (body.model if body.model in drafters else None)
    return GenerateParams(prompt=prompt, max_new_tokens=body.max_tokens, temperature=body.temperature,
                          top_p=body.top_p, top_k=body.top_k, seed=body.seed, stop=stop, task=body.task,
                          drafter=drafter, request_id=request_id, stream=body.stream)


def completion(request_id: str, model: str, text: str, finish: str | None, usage: dict | None,
               metadata: dict | None, created: int | None = None) -> dict:
    """One completion object: the whole response, or one streamed event."""
    out = {"id": f"cmpl-{request_id}", "object": "text_completion", "created": created or int(time.time()),
           "model": model, "choices": [{"index": 0, "text": text, "logprobs": None,
                                        "finish_reason": FINISH.get(finish) if finish else None}]}
    if usage is not None:
        out["usage"] = usage
    if metadata is not None:
        out["specroute"] = metadata
    return out


def metadata_json(status: RequestStatus) -> dict:
    """The `specroute` field of a response: the request's metadata as JSON values."""
    return metadata_fields(status)


def usage(metadata: dict) -> dict:
    prompt, completion_tokens = metadata.get("prompt_tokens", 0), metadata.get("num_generated", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def error_body(err: ServiceError) -> tuple[int, dict]:
    name = err.code.value
    kind = "invalid_request_error" if err.code is Code.INVALID_ARGUMENT else name.lower()
    return http_status(err.code), {"error": {"message": err.message, "type": kind, "param": None, "code": name}}


def retry_after_s(err: ServiceError) -> float:
    return err.retry_after_s if err.retry_after_s is not None else RETRY_AFTER_S


def error_response(err: ServiceError) -> JSONResponse:
    """The error as an HTTP response; RESOURCE_EXHAUSTED (429) says when to retry (Retry-After)."""
    status, body = error_body(err)
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s(err))))} if status == 429 else None  # whole seconds
    return JSONResponse(body, status_code=status, headers=headers)


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"
