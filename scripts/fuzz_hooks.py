"""Schemathesis checks of our own, loaded by scripts/fuzz-api.sh
(SCHEMATHESIS_HOOKS=fuzz_hooks)."""

import schemathesis


@schemathesis.check
def json_error_shape(ctx, response, case):
    """Every 4xx and 5xx carries the API's one error shape:
    {"error": {"code": "...", "message": "..."}} as application/json."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    if not content_type.startswith("application/json"):
        raise AssertionError(f"{response.status_code} answered with content type {content_type!r}")
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not (isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
        raise AssertionError(f"{response.status_code} body is not the error shape: {body!r}")
    return None
