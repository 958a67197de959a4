"""Every SMTP reply the relay sends, in one table (Postfix's cleanup_stat_map).

    REPLIES[name] -> Reply(code, status, text)     our own replies
    reply(name, **fields) -> str                   one formatted reply line
    relayed(code, text) -> str                     an upstream reply, sanitised
    blocked(rule, reasons, notice) -> str          the policy block, ASCII-safe
    AIOSMTPD_REPLIES                               aiosmtpd's built-in replies, restated
                                                   with enhanced status codes

Multi-line replies are returned with "\\r\\n" between lines ("550-5.1.1 ...").

SECURITY: upstream reply texts and policy texts are untrusted here: every line is
cut to printable ASCII (no CR, LF or other control characters, so no reply or
header injection), bounded in length and count, and given an enhanced status
code of the reply's class. Policy texts lose their digits, so a reply can never
carry a number, masked or not.

DIAGNOSTICS: none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from mailguard.log import scrub

MAX_LINE = 400  # text per line; RFC 5321 allows 512 octets per reply line
MAX_LINES = 20


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    status: str  # enhanced status code (RFC 3463)
    text: str

    def format(self, **fields: object) -> str:
        text = self.text.format(**fields) if fields else self.text
        return multiline(self.code, self.status, text.split("\n"))


R = Reply
REPLIES: dict[str, Reply] = {
    # connection
    "client_denied": R(554, "5.7.1", "Access denied: this relay accepts mail only from the"
                       " networks in server.allowed_clients; ask the mailguard administrator"),
    "denied_command": R(503, "5.7.1", "Access denied for this client; send QUIT"),
    "too_many_commands": R(421, "4.7.0", "Too many commands on one connection;"
                           " closing, reconnect to continue"),
    "shutting_down": R(421, "4.3.2", "mailguard is shutting down; try again shortly"),
    "too_many_connections": R(421, "4.7.0", "Too many connections (server.max_connections);"
                              " try again shortly"),
    "bye": R(221, "2.0.0", "Bye"),
    "ok": R(250, "2.0.0", "Ok"),
    # envelope
    "sender_ok": R(250, "2.1.0", "Sender ok"),
    "recipient_ok": R(250, "2.1.5", "Recipient ok"),
    "too_many_recipients": R(452, "4.5.3", "Too many recipients (limit {limit});"
                             " send the rest in another transaction"),
    "bad_address": R(553, "5.1.3", "Address contains control characters or is malformed"),
    "address_needs_smtputf8": R(553, "5.6.7", "Non-ASCII address: declare SMTPUTF8 in MAIL FROM"
                                " to send it"),
    "smtputf8_unavailable": R(451, "4.4.0", "The upstream no longer offers SMTPUTF8;"
                              " try again later"),
    # message
    "too_big": R(552, "5.3.4", "Message too big: the limit is {limit} bytes"),
    "queued": R(250, "2.0.0", "Ok: accepted by upstream (transaction {tx})"),
    "held": R(250, "2.0.0", "Ok: held for review as {hold_id}; an administrator must"
              " release it before it is delivered"),
    "hold_unavailable": R(451, "4.7.0", "Message must be held for review but the hold store"
                          " is not available; try again later"),
    "insufficient_storage": R(451, "4.3.1", "Insufficient system storage in mailguard's store;"
                              " the message was not accepted, try again later"),
    "internal_error": R(451, "4.3.0", "Internal error in mailguard; the message was not"
                        " accepted, try again later"),
    # upstream
    "upstream_unreachable": R(451, "4.4.1", "Upstream mail server unreachable;"
                              " the message was not accepted, try again later"),
    "upstream_timeout": R(451, "4.4.1", "Upstream mail server did not answer in time;"
                          " the message was not accepted, try again later"),
    "upstream_busy": R(451, "4.4.5", "All connections to the upstream mail server are in use"
                       " (upstream.max_connections); try again later"),
    "upstream_dropped": R(451, "4.4.2", "Connection to the upstream mail server was lost;"
                          " the message was not accepted, try again later"),
    "upstream_tempfail": R(451, "4.4.0", "Upstream mail server deferred this;"
                           " try again later. Upstream said:"),
    "upstream_auth": R(451, "4.7.0", "Upstream mail server refused mailguard's"
                       " credentials; try again later (administrator: check"
                       " upstream.auth_file). Upstream said:"),
}

# aiosmtpd's own replies, restated with enhanced codes and clearer words. Replies
# not listed here pass through (sanitised) as aiosmtpd wrote them.
AIOSMTPD_REPLIES: dict[str, Reply] = {
    "250 OK": REPLIES["ok"],
    "221 Bye": REPLIES["bye"],
    "503 Error: need MAIL command": R(503, "5.5.1", "Send MAIL FROM first"),
    "503 Error: need RCPT command": R(503, "5.5.1", "Send RCPT TO first; no recipient was accepted"),
    "503 Error: nested MAIL command": R(503, "5.5.1", "Sender already given; send RSET to start over"),
    "503 Error: send HELO first": R(503, "5.5.1", "Send EHLO or HELO first"),
    "503 Error: send EHLO first": R(503, "5.5.1", "Send EHLO or HELO first"),
    "500 Error: bad syntax": R(500, "5.5.2", "Syntax error"),
    "500 Command line too long": R(500, "5.5.2", "Command line too long"),
    "500 Error: strict ASCII mode": R(500, "5.6.7", "Non-ASCII command; SMTPUTF8 not offered"),
    "501 Error: SMTPUTF8 disabled": R(555, "5.6.7", "SMTPUTF8 is not offered because the"
                                      " upstream does not support it"),
    "552 Error: message size exceeds fixed maximum message size":
        R(552, "5.3.4", "Message too big for this relay (see the SIZE in EHLO)"),
    "552 Error: Too much mail data": R(552, "5.3.4", "Message too big for this relay"
                                       " (see the SIZE in EHLO)"),
    "553 5.1.3 Error: malformed address": R(553, "5.1.3", "Malformed address"),
    "555 MAIL FROM parameters not recognized or not implemented":
        R(555, "5.5.4", "MAIL FROM parameter not supported"),
    "555 RCPT TO parameters not recognized or not implemented":
        R(555, "5.5.4", "RCPT TO parameter not supported"),
}

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
_UNSAFE = re.compile(r"[^\x20-\x7e]")


def clean(text: str) -> str:
    """Printable ASCII only, bounded; anything else becomes '?'."""
    return _UNSAFE.sub("?", text).strip()[:MAX_LINE]


def multiline(code: int, status: str, lines: Iterable[str]) -> str:
    """``code`` + ``status`` on every line, continuation marks where due."""
    out = [clean(line) for line in lines]
    out = [line for line in out if line][:MAX_LINES] or [""]
    parts = []
    for i, line in enumerate(out):
        sep = " " if i == len(out) - 1 else "-"
        parts.append(f"{code}{sep}{status} {line}".rstrip())
    return "\r\n".join(parts)


def reply(name: str, **fields: object) -> str:
    return REPLIES[name].format(**fields)


def _default_status(code: int) -> str:
    return f"{code // 100}.0.0"


def relayed(code: int, text: str) -> str:
    """An upstream reply, relayed faithfully but safely.

    The upstream's enhanced status code is kept when it belongs to the reply's class
    (taken from its first line); otherwise X.0.0. Each line's own leading status is
    dropped and the chosen one written on every line.
    """
    if not 200 <= code <= 599:
        code = 451
    lines = [clean(line) for line in (text or "").split("\n")] or [""]
    status = None
    stripped = []
    for line in lines:
        m = _STATUS.match(line)
        if m:
            if status is None and int(m.group(1)) == code // 100:
                status = ".".join(m.groups())
            line = line[m.end():]
        stripped.append(line)
    return multiline(code, status or _default_status(code), stripped)


def with_upstream(name: str, code: int, text: str) -> str:
    """One of our replies followed by the upstream's own words on further lines."""
    ours = REPLIES[name]
    upstream = [f"{code} {clean(line)}" for line in (text or "").split("\n") if clean(line)]
    return multiline(ours.code, ours.status, [ours.text, *upstream[: MAX_LINES - 1]])


# A masked number ("********9018") or any run of 5+ digits: the reply is read by the
# sender's server and quoted in bounces, so it carries counts but never digits
# that could be part of a number.
_NUMBERISH = re.compile(r"\*+[0-9]*|[0-9０-９][0-9０-９ \-.]{4,}[0-9０-９]")


def _policy_text(text: str) -> str:
    """ASCII-safe, counts kept, no number or masked number: the English part of a policy text."""
    text = _NUMBERISH.sub("", scrub(text))
    text = re.sub(r"[^\x20-\x7e]+", " ", text)
    text = re.sub(r"\s*,(\s*,)+", ",", text)
    text = re.sub(r"\(\s*[,;]?\s*\)|:\s*(?=$|[,;)])", "", text)
    return re.sub(r"\s+", " ", text).strip(" ,;:-")


def blocked(rule: str, reasons: Iterable[str], notice: str = "") -> str:
    """550 5.7.1 for a policy block: the rule, its reasons and the English notice."""
    lines = [f"Message blocked by mailguard policy (rule {_policy_text(rule) or 'unnamed'})"]
    lines += [_policy_text(r) for r in reasons]
    lines += [_policy_text(part) for part in notice.splitlines()]
    lines.append("Change the message or its recipients, or ask your mailguard administrator")
    return multiline(550, "5.7.1", [line for line in lines if line])


def translate(status: str) -> str:
    """aiosmtpd's built-in reply -> our table's wording (unknown ones unchanged)."""
    r = AIOSMTPD_REPLIES.get(status)
    return r.format() if r else status


def sanitise_outgoing(status: str) -> str:
    """Last check before bytes hit the wire: every line printable ASCII."""
    return "\r\n".join(_UNSAFE.sub("?", line)[:512] for line in status.split("\r\n"))
