"""The hub's own Celery task: a bulk job ("restart all matching") run in the background."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from django_tasks_hub import services
from django_tasks_hub.models import BulkJob

logger = logging.getLogger(__name__)


# acks_late + reject_on_worker_lost: a worker that dies mid-job gives the message back, and the
# next delivery goes on from the job's cursor; the claims keep each task from being done twice.
@shared_task(
    name=services.BULK_TASK_NAME,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=5,
    default_retry_delay=5,
)
def run_bulk_job(self: Any, job_id: int) -> dict[str, Any]:
    """Run bulk job ``job_id`` (see :func:`services.run_bulk`); return its counts."""
    try:
        job = services.run_bulk(job_id)
    except BulkJob.DoesNotExist:
        # Deleted (in the admin, or with its tables) before a worker took it: a retry would
        # find it no more than this attempt did.
        logger.warning("tasks-hub bulk job #%s no longer exists; nothing to do", job_id)
        return {"job": job_id, "status": "deleted"}
    except Exception as exc:
        logger.warning("tasks-hub bulk job #%s failed, retrying: %s", job_id, exc)
        raise self.retry(exc=exc) from exc
    return {
        "job": job.pk,
        "status": job.status,
        "processed": job.processed,
        "changed": job.succeeded,
        "skipped": job.skipped,
    }
