# One image for every StoryShort service; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
# MALLOC_MMAP_THRESHOLD_: multi-MiB image buffers go back to the OS when freed (see README).
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MALLOC_MMAP_THRESHOLD_=1048576
# Runtime dependencies only (requirements-runtime.lock; the test and lint tools stay out).
COPY requirements-runtime.lock pyproject.toml ./
RUN pip install --no-cache-dir -r requirements-runtime.lock
COPY storyshort ./storyshort
COPY services ./services
COPY gateway ./gateway
COPY sql ./sql
COPY tools ./tools
RUN useradd --create-home app && mkdir -p /app/data && chown app /app/data
USER app
