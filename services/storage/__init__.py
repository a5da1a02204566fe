"""storage: ensure the bucket once, upload with retries, answer the public URL."""
