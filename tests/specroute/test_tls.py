"""TLS end to end, with certificates made in the test: mutual TLS between drafters and verifiers
and on the public gRPC API, HTTPS, and the SDK over TLS."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import ssl
import urllib.error
import urllib.request

import grpc
import pytest

from specroute.client import Client
from tests.specroute.systems import start_tiny_system

pytestmark = pytest.mark.integration


def _certificates(out):
    """A CA, and one certificate it signs for 127.0.0.1 (server and client use), as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("specroute test CA")).issuer_name(name("specroute test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": out / "ca.pem", "cert": out / "cert.pem", "key": out / "key.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in files.items()}


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return _certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def system(built_zoo, tls):
    from router.redis_server import free_port
    system = start_tiny_system(built_zoo, ("generic-llama", "ngram"), verifier={"tls": tls},
                               endpoints={"tls": tls, "grpc_tls_port": free_port()})
    yield system
    system.stop()


def _credentials(tls, with_client_cert=True):
    read = lambda k: open(tls[k], "rb").read()  # noqa: E731
    if with_client_cert:
        return grpc.ssl_channel_credentials(read("ca"), read("key"), read("cert"))
    return grpc.ssl_channel_credentials(read("ca"))


def test_the_sdk_over_tls_gets_the_targets_output_through_mutual_tls_between_the_services(system, tls, built_zoo):
    from specroute.engine import Engine
    prompt = "def fibonacci(n):"
    expected = Engine.load(built_zoo / "target", device="cpu").generate(prompt, 12).token_ids
    with Client(system.grpc_tls_address, credentials=_credentials(tls), timeout=120) as client:
        done = client.generate(prompt, max_new_tokens=12, drafter="generic-llama")
    assert done.token_ids == expected  # the drafter reached the verifier over mutual TLS


def test_https_and_no_plaintext_on_its_port(system, tls):
    """HTTPS with the server's certificate (Ray Serve's HTTP proxy does not ask for client
    certificates: API keys authenticate HTTP clients)."""
    body = json.dumps({"prompt": "def f(x):", "max_tokens": 4, "temperature": 0}).encode()
    request = urllib.request.Request(system.http_url + "/v1/completions", data=body, method="POST",
                                     headers={"content-type": "application/json"})
    assert system.http_url.startswith("https://")
    context = ssl.create_default_context(cafile=tls["ca"])
    with urllib.request.urlopen(request, timeout=60, context=context) as answer:
        assert answer.status == 200 and json.loads(answer.read())["usage"]["completion_tokens"] == 4
    plain = urllib.request.Request(system.http_url.replace("https://", "http://") + "/healthz")
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(plain, timeout=30).read()


def test_public_grpc_over_tls_needs_a_client_certificate(system, tls):
    with Client(system.grpc_tls_address, credentials=_credentials(tls), timeout=60) as client:  # the control
        assert client.health().serving
    with Client(system.grpc_tls_address, credentials=_credentials(tls, with_client_cert=False), timeout=30,
                max_retries=0) as client:
        with pytest.raises(Exception) as err:
            client.generate("def f(x):", max_new_tokens=4)
    assert "UNAVAILABLE" in str(err.value)


def test_the_verifier_refuses_plaintext_and_clients_without_a_certificate(system, tls):
    from ray import serve

    from protos.specroute.v1 import verifier_pb2, verifier_pb2_grpc
    directory = serve.get_deployment_handle("VerifierDirectory", system.config.app_name)
    address = directory.replicas.remote().result(timeout_s=10)[0]["address"]
    opening = [verifier_pb2.SessionRequest(open=verifier_pb2.OpenSession(prompt_ids=[5, 6]))]
    with grpc.secure_channel(address, _credentials(tls)) as channel:  # the control: a certificate opens a session
        answers = list(verifier_pb2_grpc.VerifierStub(channel).Session(iter(opening), timeout=30))
        assert answers[0].WhichOneof("kind") == "opened"
    for channel in (grpc.insecure_channel(address), grpc.secure_channel(address, _credentials(tls, False))):
        with channel, pytest.raises(grpc.RpcError) as err:
            list(verifier_pb2_grpc.VerifierStub(channel).Session(iter(opening), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
