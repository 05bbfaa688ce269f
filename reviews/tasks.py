from celery import shared_task

from reviews.services import assignments_expire_due, progress_refresh


@shared_task(name="reviews.tasks.expire_leases")
def expire_leases() -> int:
    """Periodic: free the slots of claims whose lease ran out."""
    total = 0
    while True:
        freed = assignments_expire_due(limit=500)
        total += freed
        if freed < 500:
            return total


@shared_task(name="reviews.tasks.refresh_progress")
def refresh_progress() -> int:
    """Periodic: count again the progress of large campaigns being worked on, so pages read it
    instead of counting (reviews.selectors.campaigns_progress)."""
    return progress_refresh()
