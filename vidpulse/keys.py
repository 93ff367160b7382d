"""Every Redis key and consumer-group name of a deployment, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

PROCESSOR_NAMES = ("raw", "heatmap", "progress", "metrics")
MILESTONES = (25, 50, 75, 90)


@dataclass(frozen=True)
class Keys:
    """Key names derived from the stream key, which prefixes all of them."""

    stream: str

    @property
    def dlq(self) -> str:
        return f"{self.stream}:dlq"

    def milestone_dedupe(self, video_id: str, viewer_id: str, milestone: int) -> str:
        return f"{self.stream}:dedupe:{key_part(video_id)}:{key_part(viewer_id)}:m{milestone}"

    def watched50_dedupe(self, video_id: str, user_id: str) -> str:
        """The dedupe key of the watched-50% call, `POST /analytics` (ids encoded)."""
        return f"{self.stream}:dedupe:video:{key_part(video_id)}:user:{key_part(user_id)}:watched50"

    @property
    def rate_limit_prefix(self) -> str:
        """Prefix of the per-client rate-limit counters (hashed addresses follow it)."""
        return f"{self.stream}:ratelimit"

    @property
    def rate_limit_salt(self) -> str:
        """The deployment's random salt of the client-address hashes of the rate limit."""
        return f"{self.stream}:ratelimit:salt"

    def legacy_session(self, session_id: str) -> str:
        """What the view/progress/complete routes keep of a session (video, viewer, duration)."""
        return f"{self.stream}:legacy:session:{session_id}"

    # -- the dashboard's cache (version keys are bumped by the processors) --------

    def cache_version(self, scope: str) -> str:
        """Counter bumped after each commit touching `scope`.

        Scopes: a processor name (anything it wrote), `catalogue` (the videos table),
        `video:<video_id>` (anything any processor wrote about that one video).
        """
        return f"{self.stream}:cache:version:{scope}"

    def cache_entry(self, endpoint: str, versions: str, params_digest: str) -> str:
        """A cached answer: the endpoint, the versions it was computed at, its parameters."""
        return f"{self.stream}:cache:{endpoint}:{versions}:{params_digest}"

    # -- what `vidpulse forget` erases of a viewer ------------------------------------

    def viewer_keys(self, video_id: str, viewer_id: str) -> list[str]:
        """Every key named after a (video, viewer) pair: the milestone dedupe keys."""
        return [
            *(self.milestone_dedupe(video_id, viewer_id, m) for m in MILESTONES),
            self.watched50_dedupe(video_id, viewer_id),
        ]

    @staticmethod
    def group(processor: str) -> str:
        """Consumer-group name of a processor."""
        return processor


@lru_cache(maxsize=4096)
def key_part(ident: str) -> str:
    """An id as one segment of a key: percent-encoded, so it holds no ':' (nor '%' bare).

    Ids may contain ':', the key separator; encoded, no two different id tuples give
    one key (video `a:b` with viewer `c` and video `a` with viewer `b:c` stay apart).
    Ids without ':' or '%' are unchanged.
    """
    return quote(ident, safe="")


def text(value: Any) -> str:
    """A Redis reply value (bytes, as the clients here are not decoding) as text."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
