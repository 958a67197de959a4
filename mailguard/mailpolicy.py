"""email.policy objects whose header classes are made once, not once per header.

The standard library's HeaderRegistry builds a new class (``type(...)``) every
time a header is parsed or set under an EmailPolicy; a UTF-8 notice sets nine
headers and a hold reads the headers of every message, so that was
a measurable share of a hold's CPU (issue 15). The classes it builds for a name
are always the same, so they are kept here. Same policies otherwise: the bytes
written and the values read do not change.

    default_header(msg, name)    the first ``name`` header as DEFAULT reads it, from a
                                 message parsed with any policy (e.g. compat32, cheap);
                                 the registry only where the value needs it
    default_value(name, raw)     the same for one raw value

SECURITY: none (no input is handled here). DIAGNOSTICS: none.
"""

from __future__ import annotations

import email.message
import email.policy
import re
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


# A Message-ID the email policy would give back unchanged: <...> without blanks,
# comments, quotes or nested brackets.
_PLAIN_MESSAGE_ID = re.compile(r"<[^<>()\"\\\s]+>")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def default_header(msg: email.message.Message, name: str) -> str:
    """The first ``name`` header of ``msg`` (parsed with any policy, e.g. compat32)
    as the email package's default policy reads it; "" when there is none."""
    key = name.lower()
    raw = next((v for k, v in msg.raw_items() if k.lower() == key), None)
    return default_value(name, raw) if isinstance(raw, str) else ""


def default_value(name: str, raw: str) -> str:
    """A raw header value as the default policy reads it (RFC 2047 decoded,
    unfolded, 8-bit bytes as UTF-8 or replacement characters): its header registry
    only where the value needs it, since that is the costly part (a plain ASCII
    subject, a plain <id> are read as they are)."""
    key = name.lower()
    raw = "".join(_LINE_BREAK.split(raw))  # what header_fetch_parse does before parsing
    if key == "subject" and raw.isascii() and "=?" not in raw:
        return raw
    if key == "message-id" and _PLAIN_MESSAGE_ID.fullmatch(raw.strip()):
        return raw
    return str(DEFAULT.header_fetch_parse(name, raw))
