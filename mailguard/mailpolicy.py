"""email.policy objects whose header classes are made once, not once per header.

The standard library's HeaderRegistry builds a new class (``type(...)``) every
time a header is parsed or set under an EmailPolicy; a notice sets nine headers
and a hold or an audit record parses the headers of every message, so that was
a measurable share of a hold's CPU (issue 15). The classes it builds for a name
are always the same, so they are kept here. Same policies otherwise: the bytes
written and the values read do not change.

SECURITY: none (no input is handled here). DIAGNOSTICS: none.
"""

from __future__ import annotations

import email.policy
import threading
from email.headerregistry import HeaderRegistry


class _CachedRegistry(HeaderRegistry):
    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            with self._lock:
                made = self._made.setdefault(key, super().__getitem__(name))
        return made


DEFAULT = email.policy.default.clone(header_factory=_CachedRegistry())
SMTP = email.policy.SMTP.clone(header_factory=_CachedRegistry())
SMTPUTF8 = email.policy.SMTPUTF8.clone(header_factory=_CachedRegistry())
