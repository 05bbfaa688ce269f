"""From one item's reviews to a decision: which response is best, which worst, how sure.

Every judgement becomes a set of ordered pairs "a over b":
- a pairwise preference: the chosen response over each other one, with its strength (1-3);
- a ranking: each response over every one ranked below it (strength 1);
- ratings of two or more responses: a response over each one whose mean score is lower.

`majority` and `trust_weighted` add the pairs up (each review weighs 1, or its expert's trust
score) and order the responses by wins minus losses; `all_pairs` keeps each distinct pair.
Agreement is the weighted share of the reviews whose own best response is the consensus best.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets_app.source import SourceItem, SourceResponse, SourceReview


@dataclass(slots=True)
class Judgement:
    """What one review says about the order of an item's responses."""

    review: SourceReview
    top: int | None
    # (winner, loser, strength)
    pairs: list[tuple[int, int, float]]
    # wins minus losses of each response in this review alone
    net: dict[int, float]


@dataclass(slots=True)
class Consensus:
    order: list[int]  # best -> worst
    net: dict[int, float]
    total_weight: float
    votes: int
    agreement: float
    tie_at_top: bool
    all_tied: bool
    judgements: list[Judgement] = field(default_factory=list)


def _mean_scores(review: SourceReview, ids: set[int]) -> dict[int, float]:
    means: dict[int, float] = {}
    for key, scores in review.ratings.items():
        try:
            rid = int(key)
        except (TypeError, ValueError):
            continue
        values = [v for v in scores.values() if isinstance(v, int | float)]
        if rid in ids and values:
            means[rid] = sum(values) / len(values)
    return means


def judgement_of(
    review: SourceReview, responses: list[SourceResponse], ids: list[int] | None = None
) -> Judgement | None:
    """The ordered pairs a review states; None when it states no order (one response, no ratings)."""
    if ids is None:
        ids = [r.id for r in responses]
    if len(ids) < 2:
        return None
    pairs: list[tuple[int, int, float]]
    top: int | None = None
    chosen = review.chosen_id
    if chosen is not None and chosen in ids:
        # The chosen response over each other one: +1 for it per pair, -1 for each other.
        strength = float(review.strength or 1)
        pairs = [(chosen, other, strength) for other in ids if other != chosen]
        if not pairs:
            return None
        net = {chosen: float(len(pairs))}
        for _, other, _ in pairs:
            net[other] = -1.0
        return Judgement(review, chosen, pairs, net)
    ranking = [r for r in review.ranking if r in ids] if review.ranking else []
    if len(ranking) > 1:
        top = ranking[0]
        pairs = [(a, b, 1.0) for i, a in enumerate(ranking) for b in ranking[i + 1 :]]
    else:
        means = _mean_scores(review, set(ids)) if review.ratings else {}
        if len(means) < 2:
            return None
        best = max(means.values())
        leaders = [rid for rid, m in means.items() if m == best]
        top = leaders[0] if len(leaders) == 1 else None
        pairs = [(a, b, 1.0) for a in means for b in means if means[a] > means[b]]
    if not pairs:
        return None
    net = {}
    for a, b, _ in pairs:
        net[a] = net.get(a, 0.0) + 1.0
        net[b] = net.get(b, 0.0) - 1.0
    return Judgement(review, top, pairs, net)


def consensus_of(item: SourceItem, *, trust_weighted: bool) -> Consensus | None:
    ids = [r.id for r in item.responses]
    judgements = []
    for review in item.reviews:
        judgement = judgement_of(review, item.responses, ids)
        if judgement is not None:
            judgements.append(judgement)
    if not judgements:
        return None
    net = dict.fromkeys(ids, 0.0)
    total = top_weight = 0.0
    for j in judgements:
        weight = max(j.review.trust, 0.0) if trust_weighted else 1.0
        total += weight
        if j.top is not None:
            top_weight += weight
        for a, b, _ in j.pairs:
            net[a] += weight
            net[b] -= weight
    if trust_weighted:
        # Rounded so that float sums of trust scores compare equal when they are equal.
        net = {rid: round(value, 9) for rid, value in net.items()}
    # Best first; equal scores keep the item's response order (position, then id).
    order = sorted(ids, key=net.__getitem__, reverse=True)  # stable: ties keep their order
    best = order[0]
    agreeing = 0.0
    for j in judgements:
        if j.top == best:
            agreeing += max(j.review.trust, 0.0) if trust_weighted else 1.0
    return Consensus(
        order,
        net,
        total,  # total_weight
        len(judgements),  # votes
        round(agreeing / top_weight, 4) if top_weight > 0 else 0.0,  # agreement
        len(order) > 1 and net[best] == net[order[1]],  # tie_at_top
        net[best] == net[order[-1]],  # all_tied
        judgements,
    )


def margin_of(consensus: Consensus, chosen: int, rejected: int, *, trust_weighted: bool) -> float:
    """Weighted mean strength with which the reviews put `chosen` over `rejected` (negative: under)."""
    signed = weights = 0.0
    for j in consensus.judgements:
        weight = max(j.review.trust, 0.0) if trust_weighted else 1.0
        for a, b, strength in j.pairs:
            if (a, b) == (chosen, rejected):
                signed += weight * strength
                weights += weight
            elif (a, b) == (rejected, chosen):
                signed -= weight * strength
                weights += weight
    return round(signed / weights, 4) if weights > 0 else 0.0


@dataclass(slots=True)
class PairTally:
    winner: int
    loser: int
    votes: int
    strengths: list[float]
    review_ids: list[int]


def distinct_pairs(item: SourceItem) -> list[PairTally]:
    """`all_pairs`: every ordered pair any review states, with the reviews that state it."""
    tallies: dict[tuple[int, int], PairTally] = {}
    for review in item.reviews:
        j = judgement_of(review, item.responses)
        if j is None:
            continue
        for a, b, strength in j.pairs:
            tally = tallies.setdefault((a, b), PairTally(a, b, 0, [], []))
            tally.votes += 1
            tally.strengths.append(strength)
            tally.review_ids.append(review.id)
    return [tallies[k] for k in sorted(tallies)]


def mean_rating(item: SourceItem, response_id: int) -> float | None:
    """Mean over the reviews that rated the response of each review's mean criterion score."""
    means = [
        m
        for m in (_mean_scores(r, {response_id}).get(response_id) for r in item.reviews)
        if m is not None
    ]
    return sum(means) / len(means) if means else None


def corrections_of(item: SourceItem) -> list[SourceReview]:
    for review in item.reviews:
        if review.correction_text:
            break
    else:
        return []
    known = {r.id for r in item.responses}
    return [
        r for r in item.reviews if r.correction_text.strip() and r.correction_response_id in known
    ]
