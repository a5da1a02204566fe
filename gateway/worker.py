"""A queue worker: `python -m gateway.worker` (RUNS=queue, DATABASE_URL). Runs video jobs
with the same pipeline as the gateway, and retries the jobs of workers whose heartbeat
stopped (a killed worker) after WORKER_STALLED_AFTER seconds."""

from __future__ import annotations

import asyncio
import logging

from procrastinate import App

from gateway.clients import ServiceClients
from gateway.queue import QueueRunner, ensure_schema, queue_app
from gateway.settings import GatewaySettings
from gateway.wiring import build_healer, build_pipeline
from services.common.config import load_settings
from services.common.logs import setup_logging
from services.common.memory import settle_heap, tune_allocator
from services.common.metrics import serve_metrics

log = logging.getLogger("worker")


async def retry_stalled(jobs: App, stalled_after: float) -> None:
    """Hand the jobs of dead workers back to the queue, until cancelled."""
    while True:
        await asyncio.sleep(max(1.0, stalled_after / 3))
        try:
            for job in await jobs.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
                try:
                    await jobs.job_manager.retry_job(job)
                    log.warning("retrying the job of a stalled worker", extra={"job_id": job.id, "video_id": job.lock})
                except Exception as exc:  # another worker retried it first
                    log.info("stalled job already handled", extra={"job_id": job.id, "error": str(exc)})
            await jobs.job_manager.prune_stalled_workers(seconds_since_heartbeat=stalled_after)
        except Exception as exc:
            log.warning("could not check for stalled jobs", extra={"error": str(exc)})


async def main() -> None:
    settings = load_settings(GatewaySettings)
    setup_logging("worker", settings.log_level)
    tune_allocator()
    # The runs happen here, not in the gateway: their series are served from here.
    serve_metrics(settings.worker_metrics_port, settings.http_host)
    if not settings.database_url:
        raise SystemExit("the worker needs DATABASE_URL (the PostgreSQL that holds the queue)")
    clients = ServiceClients.connect(settings)
    pipeline = build_pipeline(settings, clients)
    jobs = queue_app(settings.database_url)
    async with jobs.open_async():
        await ensure_schema(jobs)
        # Heals of the videos this worker ran are enqueued like a POST would enqueue them.
        healer = build_healer(settings, clients)
        runner = QueueRunner(pipeline, jobs, settings.database_url)
        await runner.open()
        healer.resume = runner.start
        recovery = asyncio.create_task(retry_stalled(jobs, settings.worker_stalled_after))
        settle_heap()
        log.info("worker started", extra={"concurrency": settings.worker_concurrency})
        try:
            await jobs.run_worker_async(
                concurrency=settings.worker_concurrency,
                additional_context={"pipeline": pipeline, "healer": healer},
                update_heartbeat_interval=settings.worker_stalled_after / 3,
                stalled_worker_timeout=settings.worker_stalled_after,
                shutdown_graceful_timeout=settings.shutdown_grace,
                fetch_job_polling_interval=1.0,
            )
        finally:
            recovery.cancel()
            await healer.close()
            await runner.drain(settings.shutdown_grace)
            await clients.close()
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
