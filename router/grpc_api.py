"""Registers the public gRPC API (`specroute.v1.SpecRoute`) with a server, malformed messages included.

The generated `add_SpecRouteServicer_to_server` deserializes each request with the message's
`FromString`. Behind Ray Serve's gRPC proxy, that runs in the proxy, before any project code,
and a message that is not valid protobuf (wrong wire types, bad UTF-8 in a string field) fails
there with UNKNOWN. `add_servicer_to_server`, which the Serve config names instead, registers
the same methods with a deserializer that turns such bytes into a `MalformedMessage`; the
ingress answers it with INVALID_ARGUMENT like any other bad request. It also adds the API's TLS
port (`TLS_ENV`), which Serve's proxy has no option for.

The service's methods and messages come from `core.public_codec`. This module knows nothing
about routing; it is the service's registration, nothing more.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from core.public_codec import SERVICE, message_class
from core.tls import TlsFiles

TLS_ENV = "SPECROUTE_GRPC_TLS"
"""JSON {"host", "port", "files": {cert, key, ca}}: Serve's gRPC proxy binds plaintext only, so the
proxy process adds a TLS port itself. `specroute serve` sets it before it starts Ray; on a cluster
started elsewhere, set it in the environment of the nodes' Ray processes."""


@dataclass(frozen=True)
class MalformedMessage:
    """What a request that is not a valid protobuf message of its type deserializes to."""

    type_name: str
    error: str

    @property
    def message(self) -> str:
        return f"the request is not a valid {self.type_name} protobuf message: {self.error or 'decode error'}"


def _tolerant(message_class):
    def deserialize(data: bytes):
        try:
            return message_class.FromString(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as err:
            return MalformedMessage(message_class.DESCRIPTOR.full_name, str(err))
    return deserialize


def method_handlers(servicer) -> dict[str, grpc.RpcMethodHandler]:
    """The service's handlers, one per method of the proto, with tolerant deserializers."""
    handlers = {}
    for method in SERVICE.methods:
        request, response = message_class(method.input_type.name), message_class(method.output_type.name)
        if method.client_streaming:
            raise NotImplementedError(f"{method.name}: client streaming is not part of the public API")
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=_tolerant(request),
                                     response_serializer=response.SerializeToString)
    return handlers


def add_servicer_to_server(servicer, server) -> None:
    """Like the generated `add_SpecRouteServicer_to_server`, with malformed requests let through;
    with `TLS_ENV` set, also serves the API over TLS on the port it names."""
    handlers = method_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
    tls = os.environ.get(TLS_ENV)
    if tls:
        settings = json.loads(tls)
        files = TlsFiles(**settings["files"])
        if not server.add_secure_port(f"{settings['host']}:{settings['port']}", files.server_credentials()):
            raise RuntimeError(f"could not bind the TLS gRPC port {settings['host']}:{settings['port']}")
