from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from gateway.vocabulary import FINAL

if TYPE_CHECKING:
    from services.common.summary import RunSummary

RUNS = Counter("storyshort_gateway_runs_total", "Video runs by final status", ["status"])
SCENES = Counter("storyshort_gateway_scenes_total", "Scenes by outcome", ["outcome"])
HARD_FAILURES = Counter("storyshort_gateway_hard_provider_failures_total", "Hard provider failures seen by runs")
PROVIDER_ATTEMPTS = Counter("storyshort_gateway_provider_attempts_total", "Provider attempts made for runs")
RUN_SECONDS = Histogram(
    "storyshort_gateway_run_seconds", "Wall time of one video run", buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800)
)
RESULTS = Counter(
    "storyshort_gateway_scene_results_total",
    "Scene results: recorded as they finished, deferred (status did not answer), recorded at the run's end, "
    "journaled for the next run, recorded from the journal",
    ["how"],
)
for _how in ("recorded", "deferred", "recorded_at_end", "journaled", "recorded_from_journal"):
    RESULTS.labels(_how)  # every series exists from the start
REENCODED = Counter("storyshort_gateway_images_reencoded_total", "Images re-encoded to fit the bucket's size limit")
EVENT_FOLLOWERS = Gauge("storyshort_gateway_event_followers", "Open event streams (and POSTs waiting) on videos")
EVENTS_PUBLISHED = Counter("storyshort_gateway_events_published_total", "New status answers handed to followers")
STATUS_DEGRADED = Counter(
    "storyshort_gateway_status_degraded_total", "Video-status answers marked degraded", ["reason"]
)


BUDGET_CAP = Gauge("storyshort_gateway_budget_cap_usd", "Configured budget caps", ["cap"])
BUDGET_REMAINING = Gauge("storyshort_gateway_budget_remaining_usd", "USD left under a budget cap", ["cap"])
BUDGET_BREACHES = Counter("storyshort_gateway_budget_breaches_total", "Budget caps reached (once per period)", ["cap"])
SPEND = Counter("storyshort_gateway_spend_usd_total", "Estimated spend of video runs")


def record_run(final: str, summary: RunSummary) -> None:
    RUNS.labels(final).inc()
    SCENES.labels("generated").inc(summary.generated)
    SCENES.labels("placeholder").inc(summary.placeholders)
    SCENES.labels("failed").inc(summary.failed)
    SCENES.labels("skipped").inc(summary.skipped)
    HARD_FAILURES.inc(summary.hard_provider_failures)
    PROVIDER_ATTEMPTS.inc(summary.provider_attempts)
    RUN_SECONDS.observe(summary.elapsed_ms / 1000)
    SPEND.inc(summary.spend_usd)


for _outcome in ("generated", "placeholder", "failed", "skipped"):
    SCENES.labels(_outcome)
for _final in FINAL:  # a run's final status (gateway/reporting.py)
    RUNS.labels(_final)
for _reason in ("last_known", "unknown"):
    STATUS_DEGRADED.labels(_reason)
HOP_BREAKER_OPEN = Gauge(
    "storyshort_gateway_hop_breaker_open", "1 while the gateway's breaker to a service is open", ["service"]
)
HOP_BREAKER_TRANSITIONS = Counter(
    "storyshort_gateway_hop_breaker_transitions_total",
    "Gateway hop breaker changes, by the state entered",
    ["service", "to"],
)
VIDEOS = Gauge("storyshort_gateway_videos", "Videos running or waiting their turn in the gateway", ["state"])
ADMISSIONS = Counter(
    "storyshort_gateway_admissions_total", "Starts that had to wait their turn, or were refused (429)", ["outcome"]
)
for _outcome in ("queued", "refused"):
    ADMISSIONS.labels(_outcome)
HEALS = Counter(
    "storyshort_gateway_heals_total",
    "Videos with placeholders from provider trouble: resumed to heal them, or given up on",
    ["outcome"],
)
PLACEHOLDERS_HEALED = Counter(
    "storyshort_gateway_placeholders_healed_total", "Placeholder scenes replaced by a real image on a later run"
)
for _outcome in ("started", "given_up"):
    HEALS.labels(_outcome)
PREVIEWS = Counter(
    "storyshort_gateway_previews_total",
    "Partial images made the scene's preview (stored and recorded), or dropped when that failed",
    ["outcome"],
)
for _outcome in ("shown", "dropped"):
    PREVIEWS.labels(_outcome)
