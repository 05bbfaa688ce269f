"""Reads of datasets, scoped to the acting user."""

from __future__ import annotations

from django.db.models import QuerySet

from datasets_app.models import Dataset, DatasetVersion
from feedback.errors import NotFound
from feedback.models import User


def datasets_for_user(*, user: User) -> QuerySet[Dataset]:
    if not user.manages_campaigns:
        return Dataset.objects.none()
    return Dataset.objects.all()


def dataset_get_for_user(*, user: User, dataset_id: int | str) -> Dataset:
    dataset = datasets_for_user(user=user).filter(pk=int(dataset_id)).first()
    if dataset is None:
        raise NotFound(f"No dataset {dataset_id} that you can see.")
    return dataset


def version_get_for_user(*, user: User, dataset_id: int | str, number: int | str) -> DatasetVersion:
    dataset = dataset_get_for_user(user=user, dataset_id=dataset_id)
    version = dataset.versions.filter(number=int(number)).first()
    if version is None:
        raise NotFound(f"Dataset {dataset_id} has no version {number}.")
    return version


def version_card(*, version: DatasetVersion) -> str:
    """The version's dataset card as markdown, without its YAML header ('' until it is ready)."""
    if version.status != DatasetVersion.Status.READY:
        return ""
    from datasets_app.services import dataset_storage

    with dataset_storage().open(f"{version.storage_prefix}/README.md", "rb") as handle:
        text = handle.read().decode()
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            text = text[end + 5 :]
    return text.strip()
