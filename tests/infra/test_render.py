"""infra/grafana/render.py: the dashboard's arithmetic on synthetic scrapes, and rendering with missing series."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

RENDER = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "render.py"


@pytest.fixture(scope="module")
def render():
    spec = importlib.util.spec_from_file_location("specroute_dashboard_render", RENDER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _scrape(t: float, rounds: float, generated: float, pos: list[float], ttft: dict[str, float]) -> str:
    lab = 'application="specroute",deployment="Router",replica="r1",task="code",drafter="d1"'
    lines = [f"# SCRAPE {t}",
             "# TYPE ray_specroute_rounds_total counter", f"ray_specroute_rounds_total{{{lab}}} {rounds}",
             "# TYPE ray_specroute_generated_tokens_total counter",
             f"ray_specroute_generated_tokens_total{{{lab}}} {generated}",
             "# TYPE ray_specroute_accepted_tokens_per_position_total counter"]
    lines += [f'ray_specroute_accepted_tokens_per_position_total{{{lab},position="{i + 1}"}} {v}'
              for i, v in enumerate(pos)]
    lines.append("# TYPE ray_specroute_ttft_seconds histogram")
    lines += [f'ray_specroute_ttft_seconds_bucket{{{lab},le="{le}"}} {c}' for le, c in ttft.items()]
    lines += [f"ray_specroute_ttft_seconds_sum{{{lab}}} 1.0",
              f"ray_specroute_ttft_seconds_count{{{lab}}} {ttft['+Inf']}"]
    return "\n".join(lines) + "\n"


def test_rates_ratios_and_quantiles_follow_the_dashboard(render):
    text = (_scrape(100, 0, 0, [0, 0], {"0.1": 0, "1.0": 0, "+Inf": 0})
            + _scrape(110, 10, 30, [8, 4], {"0.1": 5, "1.0": 10, "+Inf": 10}))
    s = render.Series(render.parse_scrapes(text))
    assert s.times() == [10.0]
    tau = s.ratio(s.increase("ray_specroute_generated_tokens_total", ("task", "drafter")),
                  s.increase("ray_specroute_rounds_total", ("task", "drafter")))
    assert tau == {("code", "d1"): [3.0]}
    assert s.increase("ray_specroute_accepted_tokens_per_position_total", ("position",)) == {("1",): [8.0],
                                                                                              ("2",): [4.0]}
    # Prometheus: rank 5 of 10 falls at the top of the first bucket; rank 9.5 in (0.1, 1.0].
    assert s.quantile(0.5, "ray_specroute_ttft_seconds")[()] == [pytest.approx(0.1)]
    assert s.quantile(0.95, "ray_specroute_ttft_seconds")[()] == [pytest.approx(0.1 + 0.9 * 4.5 / 5)]


def test_bucket_quantile_matches_prometheus_edge_cases(render):
    q = render._bucket_quantile
    assert math.isnan(q(0.5, [(math.inf, 0.0)]))
    assert q(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0  # in +Inf: the highest finite bound
    assert q(0.5, [(2.0, 10.0), (math.inf, 10.0)]) == pytest.approx(1.0)


def test_a_counter_reset_is_a_gap_not_a_negative_rate(render):
    text = (_scrape(0, 10, 30, [], {"+Inf": 0}) + _scrape(10, 2, 5, [], {"+Inf": 0}))
    s = render.Series(render.parse_scrapes(text))
    assert math.isnan(s.increase("ray_specroute_rounds_total")[()][0])


def test_renders_with_every_series_missing_and_from_one_plain_scrape(render, tmp_path):
    render.render(render.parse_scrapes("# TYPE other gauge\nother 1\n"), tmp_path / "empty.png")
    plain = _scrape(5, 10, 25, [7, 3], {"0.1": 2, "1.0": 4, "+Inf": 4}).split("\n", 1)[1]
    render.render(render.parse_scrapes(plain), tmp_path / "one.png")
    assert (tmp_path / "empty.png").stat().st_size > 0 and (tmp_path / "one.png").stat().st_size > 0
