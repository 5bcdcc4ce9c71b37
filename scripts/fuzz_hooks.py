"""Schemathesis checks of our own, loaded by scripts/fuzz-api.sh
(SCHEMATHESIS_HOOKS=fuzz_hooks)."""

import os
import zlib

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


# A real unsubscribe link ("CAMPAIGN/SUBSCRIBER/TOKEN", taken from a message
# the fuzz server sent): its token is an HMAC the fuzzer cannot guess, so
# without it the public unsubscribe operations are only ever reached as 404s.
_REAL_UNSUBSCRIBE = os.environ.get("POSTA_FUZZ_UNSUBSCRIBE", "")


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    """Puts the real link into about a third of the unsubscribe cases,
    chosen by a checksum of what was drawn (deterministic for a seed)."""
    operation = getattr(ctx, "operation", None)
    if not (_REAL_UNSUBSCRIBE and path_parameters and operation and operation.path.startswith("/unsubscribe")):
        return path_parameters
    if zlib.crc32(repr(sorted(path_parameters.items())).encode()) % 3 == 0:
        campaign, subscriber, token = _REAL_UNSUBSCRIBE.split("/", 2)
        path_parameters = dict(path_parameters, campaign=int(campaign), subscriber=int(subscriber), token=token)
    return path_parameters
