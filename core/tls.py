"""TLS, or mutual TLS, for the drafter-verifier channel.

One `TlsFiles` (PEM paths) serves both ends. The verifier presents `cert`/`key` and, when `ca`
is set, requires and verifies a client certificate signed by it (mutual TLS). A drafter verifies
the verifier's certificate against `ca` (the system's roots when unset) and presents the same
`cert`/`key` as its client certificate. The certificate must name the address drafters dial
(`advertise_host`, or this node's IP) in its subject alternative names.

This module knows nothing about sessions; it makes gRPC credentials from files.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from pydantic import BaseModel, ConfigDict, Field, field_validator


class TlsFiles(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cert: Path = Field(description="PEM certificate chain this end presents.")
    key: Path = Field(description="PEM private key of `cert`.")
    ca: Path | None = Field(None, description="PEM CA that signs the peers' certificates; on the verifier it turns "
                                              "on mutual TLS (client certificates required).")

    @field_validator("cert", "key", "ca")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{path} does not exist")
        return path

    def _read(self) -> tuple[bytes, bytes, bytes | None]:
        return self.key.read_bytes(), self.cert.read_bytes(), self.ca.read_bytes() if self.ca else None

    def server_credentials(self) -> grpc.ServerCredentials:
        key, cert, ca = self._read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        key, cert, ca = self._read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
