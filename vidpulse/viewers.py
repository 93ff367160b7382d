"""Signed viewer ids: how a platform proves to the ingest that a viewer id is its user's.

With a signing key configured, an event whose `viewer_id` is not anonymous must carry
`viewer_sig` = hex HMAC-SHA256(key, viewer_id); the platform's backend computes it with
`sign()` and renders it into the page (docs/security.md, "Signed viewers").
"""

from __future__ import annotations

import hashlib
import hmac

# The tracker's anonymous ids (and the compatibility routes') start with this; they
# need no signature, as nobody owns them.
ANONYMOUS_PREFIX = "anon-"


def is_anonymous(viewer_id: str) -> bool:
    return viewer_id.startswith(ANONYMOUS_PREFIX)


def sign(key: bytes, viewer_id: str) -> str:
    """The signature of `viewer_id`: hex HMAC-SHA256 under `key`."""
    return hmac.new(key, viewer_id.encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, viewer_id: str, signature: str) -> bool:
    """Whether `signature` signs `viewer_id` (compared in constant time, any hex case)."""
    return hmac.compare_digest(sign(key, viewer_id).encode(), signature.lower().encode())
