"""schemathesis hooks for `make api-check` (scripts/api-check): the envelope check.

Loaded through SCHEMATHESIS_HOOKS. Every JSON answer of modelgen is the envelope
{"code": int, "msg": string, "data": object|array|null} (README, "API"), with code 0
exactly on success; the other answers are the documented non-JSON ones (image bytes,
Prometheus text, the OpenAPI document itself).
"""

import json

import schemathesis

# Paths whose answers are not envelopes: the document, metrics text, image bytes.
NOT_ENVELOPED = ("/openapi.json", "/metrics", "/images/")


@schemathesis.check
def envelope(ctx, response, case):
    """Every JSON answer is {"code", "msg", "data"}; code is 0 exactly when the status is 2xx."""
    path = case.path
    if any(path.startswith(p) for p in NOT_ENVELOPED) and response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    # Image bytes (a task's input photo for the console) answer 2xx as themselves.
    if content_type.lower().startswith("image/") and response.status_code < 300:
        return None
    if not content_type.lower().startswith("application/json"):
        raise AssertionError(
            f"{response.status_code} answer is `{content_type}`, not the JSON envelope"
        )
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"answer is not JSON: {exc}") from exc
    if not isinstance(body, dict) or set(body) != {"code", "msg", "data"}:
        raise AssertionError(f"answer is not the envelope: {str(body)[:200]}")
    code, msg = body["code"], body["msg"]
    if not isinstance(code, int) or isinstance(code, bool):
        raise AssertionError(f"`code` is not an integer: {code!r}")
    if not isinstance(msg, str) or not msg:
        raise AssertionError(f"`msg` is not a non-empty string: {msg!r}")
    if (code == 0) != (200 <= response.status_code < 300):
        raise AssertionError(f"code {code} with HTTP {response.status_code}")
    if code != 0 and not 1001 <= code <= 1011:
        raise AssertionError(f"unknown error code {code}")
    return None
