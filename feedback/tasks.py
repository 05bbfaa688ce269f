"""Background jobs of the core domain: file imports, response generation, image sweeps.

Each task takes an id and calls one service; the services are idempotent (a finished job, or
one a live worker is running, is left alone), so a redelivered message does no harm. An
import or a generation whose worker died is taken over by the redelivered task
(feedback/jobs.py).
"""

from celery import shared_task

from feedback import generation, imports


@shared_task(name="feedback.tasks.import_run")
def import_run_task(import_id: int) -> str:
    return imports.import_run(import_id=import_id).status


@shared_task(name="feedback.tasks.generation_run")
def generation_run_task(generation_id: int) -> str:
    return generation.generation_run(generation_id=generation_id).status


@shared_task(name="feedback.tasks.images_sweep")
def images_sweep_task() -> dict[str, int]:
    from feedback.images import images_sweep_orphans

    return images_sweep_orphans()
