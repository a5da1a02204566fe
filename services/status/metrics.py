from prometheus_client import Counter, Gauge, Histogram

STORE_SECONDS = Histogram(
    "storyshort_status_store_seconds",
    "Time of one store call",
    ["store", "op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STORE_ERRORS = Counter("storyshort_status_store_errors_total", "Store calls that failed", ["store", "op"])
DEGRADED = Counter("storyshort_status_degraded_total", "Get answers marked degraded", ["reason"])
BREAKER_OPEN = Gauge("storyshort_status_breaker_open", "1 while the store breaker is open", ["store"])
CORRECTIONS = Counter(
    "storyshort_status_corrections_total", "Videos at 100% still generating, corrected to assets_generated"
)
STALLED = Gauge("storyshort_status_stalled_videos", "Videos generating with no update for longer than the threshold")

for _reason in ("last_known", "unknown"):
    DEGRADED.labels(_reason)  # series exist at 0, so a rising share is visible from the start
