"""A queue worker: `python -m gateway.worker` (RUNS=queue, DATABASE_URL). Runs video jobs
with the same pipeline as the gateway, and retries the jobs of workers whose heartbeat
stopped (a killed worker) after WORKER_STALLED_AFTER seconds."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from procrastinate import App

from gateway.clients import ServiceClients
from gateway.queue import DATABASE_ERRORS, QueueRunner, ensure_schema, queue_app
from gateway.settings import GatewaySettings
from gateway.wiring import build_healer, build_pipeline
from services.common.config import load_settings, url_without_password
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


# Beyond SHUTDOWN_GRACE, what procrastinate does after it (aborting the jobs left, taking
# the worker off the list, closing the pool) may take before the worker gives up on it.
STOP_MARGIN = 5.0


async def main() -> None:
    settings = load_settings(GatewaySettings)
    setup_logging("worker", settings.log_level)
    # SIGTERM and SIGINT are ours from the first moment (procrastinate's own handlers come
    # only once its worker runs): the first stops the worker gracefully (procrastinate stops
    # when its task is cancelled: no new job, the running ones get SHUTDOWN_GRACE), and if
    # that has not ended STOP_MARGIN later (the queue's database does not answer: each of
    # its steps would wait for a connection), the process exits. Nothing is lost either way:
    # a job still marked as running is retried by the other workers once this one's
    # heartbeat is stale, as after a killed worker.
    loop = asyncio.get_running_loop()
    work = asyncio.create_task(serve(settings), name="worker")
    asked = False

    def stop() -> None:
        nonlocal asked
        if asked or work.done():
            return
        asked = True
        log.info("stopping", extra={"grace_s": settings.shutdown_grace})
        work.cancel()
        loop.call_later(settings.shutdown_grace + STOP_MARGIN, give_up)

    def give_up() -> None:
        log.error(
            "the worker did not stop in time (the queue's database does not answer?); exiting: its jobs are "
            "retried by the other workers once its heartbeat is stale",
            extra={"waited_s": settings.shutdown_grace + STOP_MARGIN},
        )
        logging.shutdown()
        os._exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    try:
        await work
    except asyncio.CancelledError:
        if not asked:
            raise
    log.info("worker stopped")


async def reach(jobs: App, database_url: str) -> None:
    """Open procrastinate's pool (it waits up to 30 s for the database) and make sure of its
    schema: a worker has nothing to do without its database, so it stops, saying why."""
    await jobs.open_async()
    try:
        await ensure_schema(jobs, database_url)
    except BaseException:
        await jobs.close_async()
        raise


async def serve(settings: GatewaySettings) -> None:
    tune_allocator()
    # The runs happen here, not in the gateway: their series are served from here.
    serve_metrics(settings.worker_metrics_port, settings.http_host)
    if not settings.database_url:
        raise SystemExit("the worker needs DATABASE_URL (the PostgreSQL that holds the queue)")
    clients = ServiceClients.connect(settings)
    pipeline = build_pipeline(settings, clients)
    jobs = queue_app(settings.database_url)
    try:
        await reach(jobs, settings.database_url)
    except DATABASE_ERRORS as exc:
        raise SystemExit(
            f"the worker cannot reach the queue's database ({url_without_password(settings.database_url)}): {exc}"
        ) from None
    # Heals of the videos this worker ran are enqueued like a POST would enqueue them.
    healer = build_healer(settings, clients)
    runner = QueueRunner(pipeline, jobs, settings.database_url, settings.queue_timeout)
    runner.schema_ready = True
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
            install_signal_handlers=False,  # ours (main): cancelling the run stops it gracefully
        )
    finally:
        recovery.cancel()
        await healer.close()
        await runner.drain(settings.shutdown_grace)
        await clients.close()
        await jobs.close_async()


if __name__ == "__main__":
    asyncio.run(main())
