"""Background jobs of the core domain: file imports, response generation, image sweeps.

Each task takes an id and calls one service; the services are idempotent (a finished job, or
one a live worker is running, is left alone), so a redelivered message does no harm. An
import or a generation whose worker died is taken over by the redelivered task
(feedback/jobs.py), or, should none come in time, by the task `jobs_rescue` sends again.
"""

from celery import Task, shared_task

from feedback import generation, imports
from feedback.models import ImportJob


@shared_task(name="feedback.tasks.import_run", bind=True, max_retries=None)
def import_run_task(self: Task, import_id: int) -> str:
    # An import whose campaign another import is writing into goes back to `queued` and its
    # task is sent again, rather than holding a worker process for as long as the other runs.
    # Run eagerly (no broker) there is no other process to leave the work to: it waits.
    try:
        return imports.import_run(
            import_id=import_id, defer_when_busy=not self.request.is_eager
        ).status
    except imports.ImportDeferred:
        raise self.retry(countdown=imports.IMPORT_RETRY_SECONDS) from None


@shared_task(name="feedback.tasks.generation_run")
def generation_run_task(generation_id: int) -> str:
    return generation.generation_run(generation_id=generation_id).status


@shared_task(name="feedback.tasks.images_sweep")
def images_sweep_task() -> dict[str, int]:
    from feedback.images import images_sweep_orphans

    return images_sweep_orphans()


@shared_task(name="feedback.tasks.jobs_rescue")
def jobs_rescue_task() -> int:
    """Send again the task of every job left `running` by a runner that died (it takes the
    job over), and of every job still `queued` a rescue interval after it was made (its task
    was lost). Beat runs it every JOB_RESCUE_SECONDS."""
    from django.conf import settings

    from feedback.jobs import jobs_left_running, jobs_never_started

    left = jobs_left_running() + jobs_never_started(
        older_than_seconds=float(settings.JOB_RESCUE_SECONDS)
    )
    for model, job_id in left:
        task = import_run_task if model is ImportJob else generation_run_task
        task.delay(job_id)
    return len(left)
