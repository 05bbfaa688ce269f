from celery import shared_task

from datasets_app.services import dataset_version_build


@shared_task(name="datasets_app.tasks.build_dataset_version", acks_late=True)
def build_dataset_version(version_id: int) -> str:
    """Build one dataset version; a repeat delivery finds it built and does nothing."""
    return dataset_version_build(version_id=version_id).status
