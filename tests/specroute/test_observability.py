"""The system's metrics and logs, read where an operator reads them: Ray's Prometheus endpoint and the log files.

One system on the tiny zoo (on the shared local Ray, whose metrics are reported every second),
with JSON logs written to a directory. Requests go through the SDK; then:
- the counters on the real metrics endpoint match what the responses said: requests by code,
  tokens, rounds, drafted and accepted tokens, per-position acceptance, and tau computed from the
  counters as a PromQL query would;
- the verifier's and the drafters' metrics are there, with Ray's deployment and replica labels;
- one request's id is on its log lines at every hop: router, drafter, verifier session.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from specroute import errors
from specroute.client import Client
from tests.specroute.systems import start_tiny_system

pytestmark = pytest.mark.integration

DRAFTER = "generic-llama"
APP = "observed"
MAX_NEW = 16


@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def system(built_zoo, logs_dir):
    system = start_tiny_system(built_zoo, (DRAFTER,), app_name=APP, logs={"format": "json", "dir": str(logs_dir)})
    yield system
    system.stop()


@pytest.fixture(scope="module")
def prompts(built_zoo):
    from specroute.zoo.corpus import load_split
    from specroute.zoo.manifest import load_manifest
    tests = load_split(built_zoo / load_manifest(built_zoo)["corpus"]["files"]["test"])
    return [ex.prompt for ex in tests[:4]]


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of this test's application on the endpoint: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("application") == APP:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items()))


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (n, ls), v in samples.items():
        if n == name:
            out[dict(ls)[label]] += v
    return dict(out)


def test_counters_on_the_metrics_endpoint_match_the_requests_sent(system, prompts):
    url = system.metrics_url
    assert url is not None
    before = scrape(url)
    results = []
    with Client(system.grpc_address, timeout=120) as client:
        for i, prompt in enumerate(prompts):
            results.append(client.generate(prompt, max_new_tokens=MAX_NEW, drafter=DRAFTER,
                                           temperature=0.0 if i % 2 == 0 else 1.0, seed=i))
        with pytest.raises(errors.InvalidArgumentError):
            client.generate("x", max_new_tokens=-1)
    sent = {"tokens": sum(len(r.token_ids) for r in results), "rounds": sum(r.metadata.rounds for r in results),
            "drafted": sum(r.metadata.num_drafted for r in results),
            "accepted": sum(r.metadata.num_accepted for r in results)}
    assert sent["rounds"] > 0 and sent["tokens"] > 0

    def delta(samples, name, **labels):
        return total(samples, name, **labels) - total(before, name, **labels)

    deadline = time.monotonic() + 60
    while True:  # Ray's agent exports what the replicas recorded about once a second
        now = scrape(url)
        arrived = (delta(now, "ray_specroute_requests_total", code="OK") >= len(prompts)
                   and delta(now, "ray_specroute_requests_total", code="INVALID_ARGUMENT") >= 1
                   and delta(now, "ray_specroute_generated_tokens_total") >= sent["tokens"])
        if arrived or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert delta(now, "ray_specroute_requests_total", code="OK", drafter=DRAFTER) == len(prompts)
    assert delta(now, "ray_specroute_requests_total", code="INVALID_ARGUMENT") == 1
    got = {"tokens": delta(now, "ray_specroute_generated_tokens_total", drafter=DRAFTER),
           "rounds": delta(now, "ray_specroute_rounds_total", drafter=DRAFTER),
           "drafted": delta(now, "ray_specroute_drafted_tokens_total", drafter=DRAFTER),
           "accepted": delta(now, "ray_specroute_accepted_tokens_total", drafter=DRAFTER)}
    assert got == sent
    # tau as PromQL computes it: increase(generated) / increase(rounds), the bonus included.
    assert got["tokens"] / got["rounds"] == pytest.approx(sent["tokens"] / sent["rounds"])
    # Per draft position: position p counts the rounds that accepted at least p tokens, so
    # the positions add up to the accepted tokens and never rise with p.
    per_position = {int(p): v - by_label(before, "ray_specroute_accepted_tokens_per_position_total", "position")
                    .get(p, 0.0) for p, v in by_label(now, "ray_specroute_accepted_tokens_per_position_total",
                                                      "position").items()}
    assert sum(per_position.values()) == sent["accepted"]
    counts = [per_position.get(p, 0.0) for p in range(1, max(per_position, default=0) + 1)]
    assert counts == sorted(counts, reverse=True) and (not counts or counts[0] <= sent["rounds"])
    assert delta(now, "ray_specroute_e2e_latency_seconds_count", drafter=DRAFTER) == len(prompts)
    assert delta(now, "ray_specroute_ttft_seconds_count", drafter=DRAFTER) == len(prompts)

    deployments = by_label(now, "ray_specroute_verifier_batch_tokens_count", "deployment")
    assert set(deployments) == {"Verifier"} and deployments["Verifier"] > 0
    assert total(now, "ray_specroute_drafter_draft_seconds_count") > 0
    assert all(dict(ls).get("replica") for (n, ls) in now if n.startswith("ray_specroute_"))


def test_one_requests_id_is_on_its_log_lines_at_every_hop(system, prompts, logs_dir):
    request_id = "trace-me-0001"
    with Client(system.grpc_address, timeout=120) as client:
        result = client.generate(prompts[0], max_new_tokens=MAX_NEW, drafter=DRAFTER, request_id=request_id)
    assert result.metadata.request_id == request_id
    deadline = time.monotonic() + 30
    while True:  # the verifier logs its session's close after the drafter's stream has ended
        lines = [json.loads(line) for f in logs_dir.glob("*.log") for line in f.read_text().splitlines() if line]
        mine = [line for line in lines if line["request_id"] == request_id]
        components = {line["component"].split("-")[0] for line in mine}
        if {"router", "drafter", "verifier"} <= components or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {"router", "drafter", "verifier"} <= components, mine
    assert all(line["pid"] and line["time"] and line["replica"] for line in mine)


def test_http_clients_name_their_requests_and_every_completions_response_returns_the_id(system):
    """X-Request-ID in and out through Serve's real HTTP proxy: answered, streamed, refused."""
    def post(body: dict, request_id: str | None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body)."""
        headers = {"content-type": "application/json", **({"X-Request-ID": request_id} if request_id else {})}
        req = urllib.request.Request(f"{system.http_url}/v1/completions", json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as reply:
                return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    body = {"model": DRAFTER, "prompt": "def add(a, b):", "max_tokens": 8}
    status, headers, data = post(body, "http-1")
    assert status == 200 and headers["x-request-id"] == "http-1" and json.loads(data)["id"] == "cmpl-http-1"
    status, headers, data = post({**body, "stream": True}, "http-2")
    assert status == 200 and headers["x-request-id"] == "http-2" and b"cmpl-http-2" in data
    status, headers, data = post({**body, "max_tokens": "many"}, "http-3")
    assert status == 400 and headers["x-request-id"] == "http-3"
    status, headers, data = post(body, "x" * 1000)  # an id over the limit is refused
    assert status == 400 and "X-Request-ID" in json.loads(data)["error"]["message"]
    status, headers, data = post(body, None)  # unnamed: Serve's proxy names it, and that is its id
    assert status == 200 and json.loads(data)["id"] == f"cmpl-{headers['x-request-id']}"
