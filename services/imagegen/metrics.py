from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter(
    "storyshort_imagegen_attempts_total", "Provider attempts by provider and outcome", ["provider", "outcome"]
)
ATTEMPT_SECONDS = Histogram(
    "storyshort_imagegen_attempt_seconds",
    "Time of one provider attempt",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90),
)
FALLBACKS = Counter(
    "storyshort_imagegen_fallbacks_total", "Times the chain moved past a provider", ["provider", "outcome"]
)
PLACEHOLDERS = Counter("storyshort_imagegen_placeholders_total", "Generate calls answered by the placeholder")
BREAKER_OPEN = Gauge("storyshort_imagegen_breaker_open", "1 while a provider's breaker is open", ["provider"])
MODEL_AVAILABLE = Gauge(
    "storyshort_imagegen_model_available", "0 when the model check at start found the model unusable", ["provider"]
)
SPEND = Counter("storyshort_imagegen_spend_usd_total", "Estimated spend on images, by provider", ["provider"])
UNPRICED_IMAGES = Counter(
    "storyshort_imagegen_unpriced_images_total", "Images paid for by a model with no configured price", ["provider"]
)
BUDGET_SKIPS = Counter(
    "storyshort_imagegen_budget_skips_total",
    "Attempts skipped because the image would cross a budget cap",
    ["provider"],
)
REPLAYS = Counter("storyshort_imagegen_replays_total", "Images answered again from the replay cache, not bought again")
BREAKER_STATE = Gauge(
    "storyshort_imagegen_breaker_state", "A provider's breaker: 0 closed, 1 half-open, 2 open", ["provider"]
)
BREAKER_TRANSITIONS = Counter(
    "storyshort_imagegen_breaker_transitions_total", "Breaker state changes, by the state entered", ["provider", "to"]
)
LATE_IMAGES = Counter(
    "storyshort_imagegen_late_images_total",
    "Images that arrived after the chain stopped waiting, kept for their scene (paid for, not wasted)",
    ["provider"],
)
LATE_TAKEN = Counter(
    "storyshort_imagegen_late_taken_total",
    "Images that came after the chain stopped waiting but before the next model's, and answered their call",
    ["provider"],
)
LATE_ABANDONED = Counter(
    "storyshort_imagegen_late_abandoned_total",
    "Timed-out requests cancelled instead of finishing in the background (the bound on them was full)",
    ["provider"],
)
SHARED_UP = Gauge(
    "storyshort_imagegen_shared_state_up",
    "1 while the replicas' shared state (Redis) answers; 0 while this replica uses its own limits and breakers",
)
SHARED_SETTLING = Gauge(
    "storyshort_imagegen_shared_state_settling",
    "1 while Redis answers but this replica keeps to its part of each limit: a replica it counts has not said it "
    "shares again since Redis came back (its slots taken alone are not registered yet), or says it works alone",
)
SHARED_ERRORS = Counter(
    "storyshort_imagegen_shared_state_errors_total",
    "Shared-state (Redis) calls that failed, by operation; the request goes on without them",
    ["op"],
)
SHARED_REPLICAS = Gauge(
    "storyshort_imagegen_shared_state_replicas",
    "imagegen replicas alive as this one last saw them in the shared state (its part of each limit while Redis "
    "is down is the limit split among them)",
)
SHARED_LATE = Counter(
    "storyshort_imagegen_shared_state_late_total",
    "Shared-state (Redis) calls answered after the request stopped waiting (IMAGEGEN_SHARED_TIMEOUT), by "
    "operation; a late answer alone never marks the shared state down",
    ["op"],
)
PARTIALS = Counter(
    "storyshort_imagegen_partial_images_total",
    "Partial images from models that stream: passed on, or dropped because they did not decode",
    ["provider", "outcome"],
)
