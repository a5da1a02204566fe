from prometheus_client import Counter, Histogram

UPLOADS = Counter("storyshort_storage_uploads_total", "Uploads by outcome", ["outcome"])
UPLOAD_ATTEMPTS = Counter("storyshort_storage_upload_attempts_total", "Upload attempts, retries included")
UPLOAD_BYTES = Counter("storyshort_storage_upload_bytes_total", "Bytes stored")
UPLOAD_SECONDS = Histogram(
    "storyshort_storage_upload_seconds",
    "Time to store one object, retries included",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BUCKETS_CREATED = Counter("storyshort_storage_buckets_created_total", "Buckets this process created")
