from celery import shared_task

from datasets_app.services import dataset_version_build


@shared_task(name="datasets_app.tasks.build_dataset_version", acks_late=True)
def build_dataset_version(version_id: int) -> str:
    """Build one dataset version; a repeat delivery finds it built (or building) and stops.

    No automatic retry: a failed build is marked failed with its reason, and building again
    is one POST that makes a new version number.
    """
    return dataset_version_build(version_id=version_id).status
