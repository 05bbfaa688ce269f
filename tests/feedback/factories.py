from __future__ import annotations

import factory

from feedback.item_input import ResponseInput, content_hash
from feedback.models import Campaign, ExpertProfile, Item, QueueEntry, Response, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"person{n}@example.test")
    role = User.Role.EXPERT
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def profile(self, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        if create:
            self.save()
            ExpertProfile.objects.get_or_create(user=self, defaults={"skills": extracted or []})


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    slug = factory.Sequence(lambda n: f"campaign-{n}")
    kind = Campaign.Kind.PAIRWISE
    status = Campaign.Status.ACTIVE
    overlap = 1
    pay = {"currency": "USD", "per_review": 250, "per_hour": 6000, "max_minutes_per_review": 20}


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item
        skip_postgeneration_save = True

    campaign = factory.SubFactory(CampaignFactory)
    external_id = factory.Sequence(lambda n: f"item-{n}")
    prompt = factory.Sequence(lambda n: f"Question number {n}?")
    content_hash = factory.LazyAttribute(
        lambda o: content_hash(o.prompt, {}, [ResponseInput("x", o.external_id, "text")])
    )

    @factory.post_generation
    def responses(self, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        if not create:
            return
        count = (
            extracted
            if extracted is not None
            else (2 if self.campaign.kind in ("pairwise", "ranking") else 1)
        )
        for position in range(count):
            Response.objects.create(
                item=self,
                model_name=f"model-{chr(97 + position)}",
                text=f"Answer {position} to {self.prompt}",
                position=position,
            )

    @factory.post_generation
    def open_slots(self, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        """The item's queue row: the campaign's overlap in open slots unless given (none for
        gold, which is served apart)."""
        if not create:
            return
        QueueEntry.objects.create(
            item=self,
            campaign_id=self.campaign_id,
            priority=self.priority,
            open_slots=extracted
            if extracted is not None
            else (0 if self.is_gold else self.campaign.overlap),
        )
