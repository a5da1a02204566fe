"""The alert rules and dashboard, checked for real: promtool validates the rules, and a real
Prometheus (Debian's package) scrapes the running services on loopback, holds every series
the rules and the dashboard use, parses every dashboard query, and fires the matching alert
when the fake provider answers with a billing error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from storyshort.status.v1 import status_pb2, status_pb2_grpc
from tests.conftest import IN_CI, OWN_SUBCHANNELS, metric, wait_until
from tests.e2e.helpers import MODEL, poll_until_done, post, provider_env, scenes
from tests.fakes import openai_fake as fo
from tools.processes import ROOT, System, free_port, wait_for_port

pytestmark = pytest.mark.slow
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "storyshort-dashboard.json"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if IN_CI:
            pytest.fail(f"CI=true and no {name}: .ci/run installs Debian's prometheus package")
        pytest.skip(f"no {name} on this machine (apt-get install prometheus); CI installs it")
    return found


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_the_alerts_that_need_time_fire_when_they_should() -> None:
    """promtool's rule unit tests (deploy/prometheus/rules.test.yml): the stalled-video alert
    after its 5 minutes and not before; the near-cap alert for the per-video cap."""
    tests = RULES.parent / "rules.test.yml"
    done = subprocess.run([tool("promtool"), "test", "rules", str(tests)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_stalled_gauge_counts_a_video_nobody_moves(make_system: Callable[..., System]) -> None:
    """The status service's own watch: a video left generating past STATUS_STALL_AFTER shows
    in storyshort_status_stalled_videos (what the alert reads), and leaves it once it moves."""
    system = make_system({"STATUS_STALL_AFTER": "1"})
    system.start("status")
    url = f"http://127.0.0.1:{system.metrics_port('status')}/metrics"
    with grpc.insecure_channel(f"127.0.0.1:{system.port('status')}", options=OWN_SUBCHANNELS) as channel:
        status = status_pb2_grpc.StatusServiceStub(channel)
        status.StartVideo(status_pb2.StartVideoRequest(video_id="stuck", scene_count=2), timeout=10)
        assert wait_until(lambda: metric(url, "storyshort_status_stalled_videos") == 1, timeout=20, every=0.2)
        status.UpdateVideo(status_pb2.UpdateVideoRequest(video_id="stuck", status="failed"), timeout=10)
        assert wait_until(lambda: metric(url, "storyshort_status_stalled_videos") == 0, timeout=20, every=0.2)


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in re.findall(r"\b(storyshort_[a-z_]+)", e)}


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], str]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: list[str]) -> str:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "storyshort", "static_configs": [{"targets": targets}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115
        )
        procs.append(proc)
        wait_for_port(port, 30, proc)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(15)


def query(base: str, expr: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    return answer


def test_prometheus_scrapes_every_series_and_a_billing_error_fires_the_alert(
    make_system: Callable[..., System],
    prometheus: Callable[[list[str]], str],
    tmp_path: Path,
    fake_openai: fo.FakeOpenAI,
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({MODEL: {"per_image": {"*": {"*": 0.04}}}}))
    fake_openai.script(MODEL, fo.Ok(), fo.BILLING)  # one paid image, then the billing limit
    system = make_system(
        provider_env(
            fake_openai.base_url,
            IMAGEGEN_PRICES_FILE=str(prices),
            BUDGET_DAILY_USD="100",
            SCENE_CONCURRENCY="1",
            STATUS_STALL_AFTER="60",
        )
    )
    system.start_all()
    targets = [f"127.0.0.1:{system.port('gateway')}"] + [
        f"127.0.0.1:{system.metrics_port(name)}" for name in ("imagegen", "storage", "status")
    ]
    base = prometheus(targets)
    assert wait_until(lambda: len([r for r in query(base, "up == 1")["data"]["result"]]) == 4, timeout=30)
    with httpx.Client(base_url=system.gateway_url, timeout=10) as client:
        post(client, "alerting", scenes(3))
        final = poll_until_done(client, "alerting")[-1]
        client.get("/api/video-status", params={"videoId": "alerting"})
    assert final["summary"]["hardProviderFailures"] >= 1

    def firing() -> bool:
        alerts = httpx.get(f"{base}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "StoryShortProviderHardFailure"
            and a["state"] == "firing"
            and a["labels"].get("provider") == MODEL
            for a in alerts
        )

    assert wait_until(firing, timeout=60, every=0.5), httpx.get(f"{base}/api/v1/alerts", timeout=10).text
    rules = yaml.safe_load(RULES.read_text())
    rule_exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    wanted = metric_names(rule_exprs + dashboard_queries())
    # Histograms are scraped as their _bucket/_sum/_count series. A series the run's end
    # set may be one scrape (1 s) away from Prometheus when the alert already fires.
    missing: list[str] = []

    def all_scraped() -> bool:
        missing[:] = [m for m in sorted(wanted) if not query(base, f'{{__name__=~"{m}"}}')["data"]["result"]]
        return not missing

    assert wait_until(all_scraped, timeout=15, every=0.5), (
        f"series the rules or the dashboard use but nobody exports: {missing}"
    )
    for expr in dashboard_queries() + rule_exprs:
        assert query(base, expr)["status"] == "success", expr


def test_prometheus_scrapes_the_queue_workers_and_their_budget_alert_fires(
    make_system: Callable[..., System],
    prometheus: Callable[[list[str]], str],
    tmp_path: Path,
    fake_openai: fo.FakeOpenAI,
    pg_dsn: str,
) -> None:
    """RUNS=queue: the runs happen in the workers, so the run, spend and budget series come
    from the workers' own /metrics; a real Prometheus scrapes gateways and workers, and the
    budget alert (min over every reporter) fires with the workers' data."""
    from tests.e2e.test_queue import queue_system

    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({MODEL: {"per_image": {"*": {"*": 0.04}}}}))
    fake_openai.script(MODEL, fo.Ok())
    system, gateways = queue_system(
        make_system, fake_openai, pg_dsn, IMAGEGEN_PRICES_FILE=str(prices), BUDGET_DAILY_USD="0.2"
    )
    workers = [f"127.0.0.1:{system.env[f'WORKER_{n}_METRICS_PORT']}" for n in (1, 2)]
    base = prometheus([url.removeprefix("http://") for url in gateways] + workers)
    assert wait_until(lambda: len(query(base, "up == 1")["data"]["result"]) == 4, timeout=30)
    with httpx.Client(base_url=gateways[0], timeout=10) as client:
        post(client, "queued-spend", scenes(5))
        assert poll_until_done(client, "queued-spend")[-1]["status"] == "assets_generated"

    def series(expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = query(base, expr)["data"]["result"]
        return result

    # The run and its spend are on a worker's target, not on a gateway's.
    assert wait_until(lambda: bool(series('sum(storyshort_gateway_runs_total{status="assets_generated"}) == 1')), 30)
    on_workers = series('storyshort_gateway_runs_total{status="assets_generated"} == 1')
    assert on_workers and {s["metric"]["instance"] for s in on_workers} <= set(workers)
    assert wait_until(lambda: bool(series("sum(storyshort_gateway_spend_usd_total) >= 0.19")), 30)

    def near_cap_fires() -> bool:
        alerts = httpx.get(f"{base}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return any(a["labels"]["alertname"] == "StoryShortBudgetNearCap" and a["state"] == "firing" for a in alerts)

    assert wait_until(near_cap_fires, timeout=60, every=0.5), httpx.get(f"{base}/api/v1/alerts", timeout=10).text
