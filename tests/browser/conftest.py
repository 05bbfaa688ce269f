"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server.

Playwright never downloads a browser here: `make browser` installs /usr/bin/chromium with
apt-get. Every page a test opens is watched for JavaScript errors, Content-Security-Policy
violations, dialogs (alert/confirm/prompt: an injected script's favourite proof) and requests
to any origin but the live server's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from feedback.models import User
from reviews.models import Assignment
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

# Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from a
# thread with a running loop unless told that this is deliberate.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(settings.BASE_DIR) / "static" / "vendor" / "axe-core-4.14.1" / "axe.min.js"
# Test runs write to var/ (ignored by git); `make screenshots` refreshes the ones in docs/.
SCREENSHOTS = Path(
    os.environ.get("SCREENSHOTS_DIR", Path(settings.BASE_DIR) / "var" / "screenshots")
)
PASSWORD = "correct horse battery"  # tests.feedback.factories.UserFactory's password


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium.")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@dataclass
class Watch:
    """What a page did that it should not have."""

    origin: str
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_console(message: Any) -> None:
            if (
                "Content Security Policy" in message.text
                or "Content-Security-Policy" in message.text
            ):
                self.csp.append(message.text)

        def on_request(request: Any) -> None:
            url = request.url
            if url.startswith(("data:", "blob:", "about:")):
                return
            parts = urlsplit(url)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                self.foreign_requests.append(url)

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("request", on_request)

    def assert_clean(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors
        assert self.foreign_requests == [], self.foreign_requests
        assert self.csp == [], self.csp


@dataclass
class Session:
    context: BrowserContext
    page: Page
    watch: Watch
    base: str

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def open_session(browser: Browser, live_server: Any) -> Iterator[Callable[..., Session]]:
    """A fresh browser context, optionally signed in as a user, with a watched page."""
    contexts: list[BrowserContext] = []

    def make(
        user: Any = None,
        *,
        bypass_csp: bool = False,
        viewport: dict[str, int] | None = None,
        permissions: list[str] | None = None,
    ) -> Session:
        context = browser.new_context(
            base_url=live_server.url,
            viewport=viewport or {"width": 1440, "height": 900},
            bypass_csp=bypass_csp,
            reduced_motion="reduce",
        )
        contexts.append(context)
        if permissions:
            context.grant_permissions(permissions, origin=live_server.url)
        if user is not None:
            client = Client()
            client.force_login(user)
            cookie = client.cookies[settings.SESSION_COOKIE_NAME]
            context.add_cookies(
                [
                    {
                        "name": settings.SESSION_COOKIE_NAME,
                        "value": cookie.value,
                        "url": live_server.url,
                    }
                ]
            )
        page = context.new_page()
        page.set_default_timeout(15_000)
        watch = Watch(origin=live_server.url)
        watch.attach(page)
        return Session(context=context, page=page, watch=watch, base=live_server.url)

    yield make
    for context in contexts:
        context.close()


def start_reviewing(page: Page, campaign_name: str | None = None) -> None:
    """From the home page, Start reviewing (in the named campaign's card, or the first there
    is), and wait for the review page of the claim it makes and the heartbeat it sends on
    opening, so a test that then changes the claim does not race that beat."""
    page.goto("/")
    scope: Any = page
    if campaign_name is not None:
        scope = page.locator(".campaign-card", has=page.get_by_role("heading", name=campaign_name))
    with page.expect_response(re.compile(r"/heartbeat/$")):
        scope.get_by_role("button", name=re.compile("Start reviewing")).click()
        page.wait_for_url(re.compile(r"/review/a/\d+/$"))


def open_claimed_review(
    open_session: Callable[..., Session],
    email: str,
    *,
    fake_clock: bool = False,
    **campaign: Any,
) -> tuple[Session, User, Assignment]:
    """An expert with a pairwise campaign of one item, signed in, on the review page of their
    claim: (session, expert, assignment). With `fake_clock`, Playwright's clock is installed
    before the first script runs, so app.js's timers and Date.now are the fake ones."""
    expert = UserFactory(role=User.Role.EXPERT, email=email)
    ItemFactory(campaign=CampaignFactory(**{"name": "Answer comparison", **campaign}))
    session = open_session(expert)
    if fake_clock:
        session.page.clock.install()
    start_reviewing(session.page)
    return session, expert, Assignment.objects.get(expert=expert)


def tab_to(page: Page, selector: str, limit: int = 60) -> None:
    """Press Tab until the focused element matches the selector, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(
            "(s) => !!document.activeElement && document.activeElement.matches(s)", selector
        ):
            return
    raise AssertionError(f"{selector} was not reached with Tab in {limit} presses")


def run_axe(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it stands.

    The script is evaluated through the DevTools protocol, which the page's CSP does not
    govern, so the page under test keeps its real policy.
    """
    if not page.evaluate("() => !!window.axe"):
        page.evaluate(AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in result["violations"]
        if v["impact"] in {"serious", "critical"}
    ]
