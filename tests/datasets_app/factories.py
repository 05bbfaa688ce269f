"""Reviews made the way experts make them: claim through the queue, submit through the service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone

from datasets_app import services
from datasets_app.models import Dataset, DatasetVersion
from feedback.models import Campaign, ExpertProfile, Item, Response, User
from reviews.models import Review
from reviews.services import assignment_claim, review_submit
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

Body = Callable[[Item, list[Response]], dict[str, Any] | None]


def experts(n: int, *, trust: list[float] | None = None) -> list[User]:
    people = [UserFactory(role=User.Role.EXPERT) for _ in range(n)]
    for person, score in zip(people, trust or [], strict=False):
        ExpertProfile.objects.filter(user=person).update(trust_score=score)
    return people


def campaign(kind: str = "pairwise", *, overlap: int = 1, items: int = 0, **extra: Any) -> Campaign:
    made = CampaignFactory(kind=kind, overlap=overlap, **extra)
    for _ in range(items):
        ItemFactory(campaign=made)
    return made


def by_text(prefix: str) -> Callable[[list[Response]], int]:
    """Pick the response whose text starts with `prefix` (texts are "Answer <position> to ...")."""
    return lambda responses: next(r.pk for r in responses if r.text.startswith(prefix))


def review_all(campaign: Campaign, people: list[User], body: Body) -> list[Review]:
    """Each expert claims until the queue is dry for them and submits `body(item, responses)`.

    `body` returning None skips nothing: the claim is answered with a neutral body instead,
    so tests decide per item which judgement an expert gives.
    """
    made = []
    for person in people:
        while True:
            assignment = assignment_claim(campaign=campaign, expert=person)
            if assignment is None:
                break
            item = Item.objects.get(pk=assignment.item_id)
            responses = list(item.responses.order_by("position", "id"))
            review, _ = review_submit(
                assignment_id=assignment.pk, expert=person, body=body(item, responses)
            )
            made.append(review)
    return made


def prefer(prefix: str, strength: int = 2) -> Body:
    return lambda item, responses: {
        "preference": {"chosen": by_text(prefix)(responses), "strength": strength}
    }


def correct_first(prefix: str = "Fixed: ") -> Body:
    """A correction of the item's first response: its text with `prefix` in front."""
    return lambda item, responses: {
        "correction": {"response": responses[0].pk, "text": f"{prefix}{responses[0].text}"}
    }


def supersede(review: Review, *, lead: User, **changes: Any) -> Review:
    """A lead's change: a new accepted row that supersedes the original (never an edit)."""
    fields = {
        f.name: getattr(review, f.name)
        for f in Review._meta.concrete_fields
        if f.name not in {"id", "supersedes"}
    }
    fields.update(
        supersedes=review,
        verdict=Review.Verdict.ACCEPTED,
        verdict_by=lead,
        verdict_at=timezone.now(),
        created_at=timezone.now(),
    )
    fields.update(changes)
    return Review.objects.create(**fields)


def dataset(owner: User, campaigns: list[Campaign], fmt: str, **recipe: Any) -> Dataset:
    recipe.setdefault("test_fraction", 0.0)
    return services.dataset_create(
        owner=owner, name=f"{fmt} set", campaigns=campaigns, format=fmt, **recipe
    )


def build(dataset: Dataset, owner: User, django_capture_on_commit_callbacks: Any) -> DatasetVersion:
    with django_capture_on_commit_callbacks(execute=True):
        version = services.dataset_version_create(dataset=dataset, actor=owner)
    version.refresh_from_db()
    return version


def materialise(version: DatasetVersion, folder: Any) -> Any:
    """Copy a version's files out of storage into `folder`, as a download would."""
    storage = services.dataset_storage()
    for entry in version.files:
        target = folder / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with storage.open(f"{version.storage_prefix}/{entry['path']}", "rb") as handle:
            target.write_bytes(handle.read())
    return folder


def jsonl_rows(folder: Any, split: str = "train") -> list[dict[str, Any]]:
    import json

    path = folder / "data" / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]
