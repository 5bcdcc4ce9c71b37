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
# A real tracked link's and open pixel's marks, for the same reason.
_REAL_MARKS = {"/t/{token}": os.environ.get("POSTA_FUZZ_CLICK", ""), "/o/{token}": os.environ.get("POSTA_FUZZ_OPEN", "")}


# Campaigns scripts/fuzz-api.sh made for one state-changing operation
# each, in the state that operation needs. Whatever order the fuzzer runs
# operations in, no other state-changing operation gets their ids, so each
# owner can still answer 2xx when its turn comes (the reach check).
_CAMPAIGNS = "/api/v1/users/me/campaigns/{id}"
_OWNED = {
    ("PATCH", _CAMPAIGNS): 5,
    ("POST", _CAMPAIGNS + "/send"): 6,
    ("DELETE", _CAMPAIGNS): 7,
    ("POST", _CAMPAIGNS + "/pause"): 2,
    ("POST", _CAMPAIGNS + "/resume"): 3,
    ("POST", _CAMPAIGNS + "/cancel"): 4,
    ("POST", _CAMPAIGNS + "/ab/winner"): 8,
}
_RESERVED = set(_OWNED.values())
_DOMAIN = "/api/v1/admin/users/{id}/domains/{domain}"
_SENDER_DOMAIN = "example.org"


def _drawn(path_parameters):
    """A checksum of what was drawn: which cases get a real value is
    deterministic for a seed."""
    return zlib.crc32(repr(sorted(path_parameters.items())).encode())


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    """About a third of the unsubscribe cases get the real link and of each
    owner's cases its campaign; other state-changing campaign operations
    never get an owned campaign (they get an unknown id instead)."""
    operation = getattr(ctx, "operation", None)
    if not (path_parameters and operation):
        return path_parameters
    if operation.path in _REAL_MARKS:
        if _REAL_MARKS[operation.path] and _drawn(path_parameters) % 3 == 0:
            path_parameters = dict(path_parameters, token=_REAL_MARKS[operation.path])
        return path_parameters
    if operation.path.startswith("/unsubscribe"):
        if _REAL_UNSUBSCRIBE and _drawn(path_parameters) % 3 == 0:
            campaign, subscriber, token = _REAL_UNSUBSCRIBE.split("/", 2)
            path_parameters = dict(path_parameters, campaign=int(campaign), subscriber=int(subscriber), token=token)
        return path_parameters
    key = (operation.method.upper(), operation.path)
    if key == ("DELETE", _DOMAIN) and path_parameters.get("domain") == _SENDER_DOMAIN:
        # The campaigns' own sender domain stays: without it every later
        # send, edit and resume is a 422 and never reaches its operation.
        return dict(path_parameters, domain="not-granted.example")
    if key not in _OWNED:
        return path_parameters
    owned = _OWNED[key]
    if _drawn(path_parameters) % 3 == 0:
        return dict(path_parameters, id=owned)
    drawn = path_parameters.get("id")
    if drawn in _RESERVED and drawn != owned:
        return dict(path_parameters, id=1_000_000 + drawn)
    return path_parameters


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """The same guards for every call, also those whose path parameters come
    from another operation's answer (the stateful phase follows the
    document's links, and map_path_parameters does not see those): the
    sender domain is never removed, and no state-changing operation gets a
    campaign another one owns."""
    params = case.path_parameters
    if not params:
        return
    key = (case.operation.method.upper(), case.operation.path)
    if key == ("DELETE", _DOMAIN) and params.get("domain") == _SENDER_DOMAIN:
        params["domain"] = "not-granted.example"
    elif key in _OWNED and params.get("id") in _RESERVED and params.get("id") != _OWNED[key]:
        params["id"] = 1_000_000 + params["id"]
