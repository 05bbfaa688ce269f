"""Seed the demo: users for every role and two campaigns that look like the real work.

Idempotent: running it again changes nothing that exists and adds what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from feedback import services
from feedback.models import Campaign, User

DATA = Path(__file__).resolve().parents[2] / "demo_data"
PASSWORD = "demo-pass-2026"

USERS = [
    ("admin@demo.test", User.Role.ADMIN, []),
    ("lead@demo.test", User.Role.LEAD, ["contracts", "python"]),
    ("engineer@demo.test", User.Role.ENGINEER, []),
    ("lawyer@demo.test", User.Role.EXPERT, ["contracts"]),
    ("dev@demo.test", User.Role.EXPERT, ["python"]),
]

CONTRACT_RUBRIC = [
    {
        "key": "legal_accuracy",
        "label": "Legal accuracy",
        "min": 1,
        "max": 5,
        "anchors": {
            "1": "States the law or the clause wrongly in a way that would mislead the client",
            "2": "Several errors of law or reading",
            "3": "Broadly right, with one material error or omission",
            "4": "Right, with minor imprecision",
            "5": "Right on the law and on the clause; nothing a partner would correct",
        },
    },
    {
        "key": "risk_coverage",
        "label": "Risk coverage",
        "min": 1,
        "max": 5,
        "anchors": {
            "1": "Misses the main risk to the client",
            "3": "Finds the main risk, misses carve-outs or interactions with other clauses",
            "5": "Finds every material risk and how the clauses interact",
        },
    },
    {
        "key": "actionability",
        "label": "Actionable redline",
        "min": 1,
        "max": 5,
        "anchors": {
            "1": "No usable suggestion",
            "3": "Suggestions a lawyer must rewrite",
            "5": "Drafting the client could send to the counterparty as is",
        },
    },
]

CAMPAIGNS: list[dict[str, Any]] = [
    {
        "slug": "contract-clause-review",
        "name": "Contract clause review",
        "kind": Campaign.Kind.CORRECTION,
        "file": "contract_clause_review.json",
        "skills": ["contracts"],
        "overlap": 2,
        "rubric": CONTRACT_RUBRIC,
        "pay": {
            "currency": "USD",
            "per_review": 1500,
            "per_hour": 18000,
            "max_minutes_per_review": 30,
        },
        "acceptance": Campaign.Acceptance.LEAD,
        "instructions": (
            "You are reviewing a model's advice on one clause of a commercial contract.\n\n"
            "1. Read the clause under review (highlighted) **and** the clauses it interacts with.\n"
            "2. Score the advice on each criterion; the anchor texts say what each score means.\n"
            "3. Correct the advice so that a partner would sign it off: fix errors of law, add "
            "missed risks, and make the redline usable. Keep what is right.\n\n"
            "Do not paste text from other tools; write the correction yourself."
        ),
    },
    {
        "slug": "code-pr-review",
        "name": "Code PR review",
        "kind": Campaign.Kind.PAIRWISE,
        "file": "code_pr_review.json",
        "skills": ["python"],
        "overlap": 3,
        "rubric": [],
        "pay": {
            "currency": "USD",
            "per_review": 400,
            "per_hour": 9000,
            "max_minutes_per_review": 15,
        },
        "acceptance": Campaign.Acceptance.AUTO,
        "instructions": (
            "Two models reviewed the same pull request. Read the diff first, then both reviews.\n\n"
            "Choose the review you would rather receive from a senior colleague: the one that "
            "finds the real bugs (security, correctness, concurrency) and proposes fixes that "
            "work. Length is not quality. Use the strength to say how clear the difference is, "
            "and say in the rationale what decided it."
        ),
    },
]


class Command(BaseCommand):
    help = "Seed demo users and the two demo campaigns (idempotent) and print the logins."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--quiet", action="store_true", help="Do not print the logins.")

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            users = {}
            for email, role, skills in USERS:
                existing = User.objects.filter(email=email).first()
                users[role] = services.user_add(
                    email=email,
                    role=role,
                    skills=skills,
                    password=None if existing and existing.has_usable_password() else PASSWORD,
                )
            admin = users[User.Role.ADMIN]
            added = 0
            for spec in CAMPAIGNS:
                campaign = Campaign.objects.filter(slug=spec["slug"]).first()
                if campaign is None:
                    campaign = services.campaign_create(
                        actor=admin,
                        data=services.CampaignInput(
                            name=spec["name"],
                            slug=spec["slug"],
                            kind=spec["kind"],
                            instructions=spec["instructions"],
                            rubric=spec["rubric"],
                            overlap=spec["overlap"],
                            required_skills=spec["skills"],
                            pay=spec["pay"],
                            acceptance=spec["acceptance"],
                            status=Campaign.Status.ACTIVE,
                        ),
                    )
                raw = json.loads((DATA / spec["file"]).read_text())
                parsed = services.items_parse_batch(campaign=campaign, raw_items=raw)
                added += len(
                    services.items_add(actor=admin, campaign=campaign, items=parsed).created
                )

        if options["quiet"]:
            return
        self.stdout.write(
            f"Demo ready ({added} new items). Sign in at http://127.0.0.1:8000/ with:"
        )
        for email, role, skills in USERS:
            extra = f" (skills: {', '.join(skills)})" if skills and role == User.Role.EXPERT else ""
            self.stdout.write(f"  {role:<9} {email:<22} password {PASSWORD}{extra}")
        self.stdout.write(
            "The admin sets up an authenticator app (TOTP) at first sign-in: admins need MFA."
        )
        self.stdout.write(
            "API key for the engineer:"
            " DEBUG=1 .venv/bin/python manage.py create_api_key engineer@demo.test"
        )
