"""Signals other apps listen to; reviews never imports them.

review_verdict_changed(sender=Review, review_id: int, verdict: str): sent after commit when a
review is accepted or rejected (payouts accrue or reverse earnings).
"""

from django.dispatch import Signal

review_verdict_changed = Signal()
