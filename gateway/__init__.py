"""gateway: the HTTP front door for the frontend, and the per-video scene pipeline."""
