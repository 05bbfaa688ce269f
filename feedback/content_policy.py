"""The Content-Security-Policy header, set as django-csp sets it, built once per process.

django-csp builds the policy string afresh for every response, twice (the enforced policy and
the report-only one): 4% of the Python an API claim and submit cost in the web process. No
view here changes the policy and no page uses a nonce, so the header is the same on every
response: it is built once, when first needed (again after a test changes the settings), and
set as django-csp would set it. A response or request that does change it (a view decorated
with `csp_update`, `csp_replace` or `csp_exempt`, a template that asks for a nonce), DEBUG's
error pages and excluded URL prefixes go through django-csp's own code (with DEBUG on, every
response does), so those work as documented if they are ever used.
"""

from __future__ import annotations

from typing import Any

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.http.response import HttpResponseBase

# What a view's decorators set on its response to change or drop the policy.
_PER_RESPONSE = (
    "_csp_config",
    "_csp_update",
    "_csp_replace",
    "_csp_exempt",
    "_csp_config_ro",
    "_csp_update_ro",
    "_csp_replace_ro",
    "_csp_exempt_ro",
)

# "headers": (enforced, report-only, whether any URL prefix is excluded), once built. Read and
# written whole (a thread that finds it emptied builds it again).
_built: dict[str, tuple[str, str, bool]] = {}


def _headers() -> tuple[str, str, bool]:
    headers = _built.get("headers")
    if headers is None:
        excluded = any(
            (getattr(settings, name, None) or {}).get("EXCLUDE_URL_PREFIXES")
            for name in ("CONTENT_SECURITY_POLICY", "CONTENT_SECURITY_POLICY_REPORT_ONLY")
        )
        headers = (build_policy(), build_policy(report_only=True), excluded)
        _built["headers"] = headers
    return headers


@receiver(setting_changed)
def _forget_headers(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("CONTENT_SECURITY_POLICY") or setting == "DEBUG":
        _built.clear()


class PolicyOnceMiddleware(CSPMiddleware):
    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        policy, report_only, excluded = _headers()
        if (
            settings.DEBUG
            or excluded
            or getattr(request, "_csp_nonce", None) is not None
            or any(hasattr(response, name) for name in _PER_RESPONSE)
        ):
            return super().process_response(request, response)
        if policy and HEADER not in response:
            response[HEADER] = policy
        if report_only and HEADER_REPORT_ONLY not in response:
            response[HEADER_REPORT_ONLY] = report_only
        # As django-csp does: a nonce asked for after the header is written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response
