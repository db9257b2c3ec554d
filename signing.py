"""Short-lived signed URLs, for the clients that cannot send an X-API-Key header.

A browser's `<img>`, `<video>` and `EventSource` send no custom headers, so when API_KEY is set
the URLs the API hands out for a session's artifacts and event stream carry their own proof:
`?expires=<unix time>&token=<hex>`, where the token is HMAC-SHA256 over the session id, the
name (the artifact's file name, or "events") and the expiry, keyed with a server secret. A token
opens that one URL until it expires; it cannot be moved to another name or session, or given a
later expiry, without the secret.

The secret is URL_SIGNING_SECRET, or else derived from API_KEY, so that replicas sharing the key
accept each other's URLs without another variable to keep in step.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from config import Settings

# The name the event stream of a session is signed under (artifact names are file names).
EVENTS = "events"
# ASCII digits only (str.isdigit takes "²"), and few enough for int() to be cheap.
_UNIX_TIME = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """A signed URL that has expired, was altered, or lacks its token; safe to show."""


@dataclass(frozen=True)
class UrlSigner:
    """Signs and checks the URLs of a server (and of every replica sharing its secret)."""

    secret: bytes = field(repr=False)
    lifetime_seconds: int = 3600

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlSigner | None:
        """The server's signer; None when API_KEY is not set (URLs then need no proof)."""
        if settings.api_key is None:
            return None
        if settings.url_signing_secret is not None:
            secret = settings.url_signing_secret.get_secret_value().encode()
        else:
            # A key of its own, not API_KEY itself: a token never helps to guess the API key.
            api_key = settings.api_key.get_secret_value().encode()
            secret = hmac.new(api_key, b"url-signing", hashlib.sha256).digest()
        return cls(secret, settings.signed_url_seconds)

    def token(self, session_id: str, name: str, expires: int) -> str:
        """The hex HMAC-SHA256 of (session id, name, expiry)."""
        # Newlines cannot occur in a path segment: no two triples give the same message.
        message = f"{session_id}\n{name}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def sign(self, url: str, session_id: str, name: str, now: float | None = None) -> str:
        """`url` with `expires` and `token` query parameters, valid for `lifetime_seconds`."""
        expires = int(now if now is not None else time.time()) + self.lifetime_seconds
        query = urlencode({"expires": expires, "token": self.token(session_id, name, expires)})
        return f"{url}{'&' if '?' in url else '?'}{query}"

    def verify(
        self,
        session_id: str,
        name: str,
        expires: str | None,
        token: str | None,
        now: float | None = None,
    ) -> None:
        """Check a signed URL's parameters.

        Raises:
            SignatureError: a parameter is missing or malformed, the token does not match
                (compared in constant time), or the URL has expired.
        """
        if not expires or not token or not _UNIX_TIME.fullmatch(expires):
            raise SignatureError("This link is incomplete: it needs its expires and token")
        expected = self.token(session_id, name, int(expires))
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise SignatureError("This link is not valid: it was changed or is for another file")
        if int(expires) < (now if now is not None else time.time()):
            raise SignatureError("This link has expired: ask for the results again for a new one")
