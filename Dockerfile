# One image for every StoryShort service; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
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
