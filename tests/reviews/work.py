"""An expert's claim and submit through the services, for tests that need reviews to exist."""

from __future__ import annotations

from typing import Any

from reviews import services
from reviews.models import Assignment


def review_first_response(campaign: Any, expert: Any) -> Assignment:
    """Claim the expert's next item in a pairwise campaign and prefer its first response shown."""
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None, f"nothing left for {expert} in {campaign}"
    services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0], "strength": 1}},
    )
    return assignment
