"""One content hash for everything a cache or a signature is keyed by."""
from __future__ import annotations

import hashlib
import json


def content_hash(value, length: int = 16) -> str:
    """The first `length` hex digits of the sha256 of `value`: bytes as they are, anything else as its JSON
    (keys sorted, so that equal settings give equal hashes however they were built)."""
    data = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:length]
