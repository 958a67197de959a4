"""Notices to the envelope sender: held, blocked, rejected, expired (Japanese first,
English second).

A notice names the hold id (none for a block: nothing was kept), the rule, the
reasons (in Japanese in the Japanese part: reason_ja) and the masked findings so
the sender knows which mail, why and what to do, and never carries the number in the clear or any
part of the original message (no attachment, no body). It is a text/plain UTF-8
message with an RFC 2047 Subject, CRLF line ends and ``Auto-Submitted:
auto-generated`` (RFC 3834) so auto-responders stay quiet; it goes out through
the configured upstream like any other mail.

SECURITY: everything that came from the held message (its Subject, Message-ID,
addresses) or from an operator (the reason text) is NFKC-normalised and run
through the digit scrubber before it is placed in a notice, and the finished text
is scrubbed once more, so a number cannot slip through a field we forgot.
Header injection: only a plain addr-spec reaches From/To (_address), and the
hold id and Message-ID reach a header only as one line of printable text
(_printable); the header block is composed here, not by EmailMessage (issue 15).
A sender that is the null reverse-path (a bounce) gets no notice.

DIAGNOSTICS: none; the caller logs ``notice_sent`` / ``notice_failed``.
"""

from __future__ import annotations

import base64
import re
import socket
import unicodedata
from email import _header_value_parser as _hvp
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import UTC, datetime, timedelta
from mailguard.config import OrganisationConfig, ServerConfig, StoreConfig, WebConfig
from mailguard.localtime import DEFAULT_TIMEZONE, iso_time, show_time
from mailguard.log import scrub
from mailguard.mailpolicy import SMTPUTF8
from mailguard.policy import split_notice
from mailguard.records import HeldMessage

HELD_NOTICE, REJECTED_NOTICE, EXPIRED_NOTICE = "held", "rejected", "expired"
BLOCKED_NOTICE = "blocked"
KINDS = (HELD_NOTICE, BLOCKED_NOTICE, REJECTED_NOTICE, EXPIRED_NOTICE)
MAX_FIELD = 200

_SUBJECTS = {
    HELD_NOTICE: ("送信を保留しました", "Your message is on hold"),
    BLOCKED_NOTICE: ("送信されませんでした(規則により停止)", "Your message was not sent (blocked by policy)"),
    REJECTED_NOTICE: ("送信されませんでした(管理者が拒否)", "Your message was not sent (rejected)"),
    EXPIRED_NOTICE: ("送信されませんでした(保留期限切れ)", "Your message was not sent (hold expired)"),
}



def held_link(web: WebConfig, hold_id: str) -> str:
    """The held message's page on `mailguard web` (web.base_url), or "" without one."""
    if not web.base_url or not hold_id:
        return ""
    return web.base_url.rstrip("/") + "/held/" + hold_id

def safe_text(value: object, limit: int = MAX_FIELD) -> str:
    """Text from a message or an operator, fit for a notice: normalised, masked, bounded, one line."""
    text = unicodedata.normalize("NFKC", str(value or ""))
    text = " ".join(text.split())
    text = scrub(text)
    return text if len(text) <= limit else text[:limit] + "…"


def notice_sender(store_cfg: StoreConfig, server_cfg: ServerConfig | None = None,
                  org_cfg: OrganisationConfig | None = None) -> str:
    """The notices' sender: store.notice_from, else postmaster@<first internal
    domain> (a domain the organisation's mail accepts replies for), else
    postmaster@<server.hostname or the host's FQDN>."""
    if store_cfg.notice_from:
        return store_cfg.notice_from
    domains = [d.strip().lstrip(".").lower() for d in (org_cfg.internal_domains if org_cfg is not None else ())
               if d.strip().lstrip(".")]
    if domains:
        return f"postmaster@{domains[0]}"
    return f"postmaster@{ehlo_name(server_cfg)}"


_fqdn: str | None = None


def ehlo_name(server_cfg: ServerConfig | None = None) -> str:
    """The name mailguard gives in EHLO to the upstream: server.hostname, else the host's FQDN."""
    global _fqdn
    if server_cfg is not None and server_cfg.hostname:
        return server_cfg.hostname
    if _fqdn is None:
        _fqdn = socket.getfqdn() or "localhost"
    return _fqdn


def build_notice(
    kind: str,
    held: HeldMessage,
    *,
    sender: str,
    reason: str = "",
    expiry_hours: float | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    link: str = "",
) -> bytes:
    """The notice for ``held`` as bytes ready for SMTP (``link``: its page on `mailguard web`)."""
    if kind not in KINDS:
        raise ValueError(kind)
    ja_subj, en_subj = _SUBJECTS[kind]
    from_header, to_header = _address(sender), _address(held.mail_from)
    # Everything from the held message that reaches a header is one line of
    # printable text: safe_text folds CR/LF/TAB into spaces, _printable drops
    # what is left (NUL, other C0/C1 controls).
    hold_id = _printable(safe_text(held.id, 64)) if held.id else ""
    ref = f" ({hold_id})" if hold_id else ""
    subject = f"[mailguard] {ja_subj} / {en_subj}{ref}"
    date = format_datetime(datetime.now(UTC))
    # The notice's own id on the sender's domain (the host's name when that is
    # empty or, for a 7-bit notice, not ASCII; make_msgid would look it up each time).
    domain = "".join(_printable(sender.rpartition("@")[2]).split())
    if not domain or not (domain.isascii() or not (from_header.isascii() and to_header.isascii())):
        domain = ehlo_name()
    message_id = make_msgid("mailguard-notice", domain=domain)
    original_id = _printable(safe_text(held.message_id, 250))
    if not (original_id.startswith("<") and original_id.endswith(">") and " " not in original_id):
        original_id = ""
    body = _body(kind, held, reason=safe_text(reason, 500), expiry_hours=expiry_hours, timezone=timezone,
                 link=safe_text(link, 500))
    # The same body bytes as EmailMessage.set_content(..., cte="base64") under
    # the SMTP policy: every line ending CRLF, base64 in 76-character lines.
    payload = b"\r\n".join(scrub(body).encode("utf-8").splitlines()) + b"\r\n"
    if not (from_header.isascii() and to_header.isascii()):
        return _utf8_notice(from_header, to_header, subject, date, message_id, hold_id, original_id, payload)
    # The common case, composed directly (issue 15: EmailMessage's header registry,
    # folding and generator cost about a quarter of the relay's CPU per hold):
    # 7-bit headers, the Subject as RFC 2047 encoded-words, every line folded to
    # at most 78 characters (an addr-spec longer than that cannot be folded and is
    # written whole on its own line, as EmailMessage did).
    lines = [
        _plain_field("From", from_header),
        _plain_field("To", to_header),
        _text_field("Subject", subject),
        _plain_field("Date", date),
        _plain_field("Message-ID", message_id),
        "Auto-Submitted: auto-generated",
    ]
    if hold_id:
        lines.append(_text_field("X-Mailguard-Hold-Id", hold_id))
    if original_id:
        lines.append(_id_field("In-Reply-To", original_id))
        lines.append(_id_field("References", original_id))
    lines += [
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: base64",
        "",
        "",
    ]
    head = "\r\n".join(lines).encode("ascii")
    return head + base64.encodebytes(payload).replace(b"\n", b"\r\n")


def _utf8_notice(from_header: str, to_header: str, subject: str, date: str, message_id: str,
                 hold_id: str, original_id: str, payload: bytes) -> bytes:
    """A notice to or from an SMTPUTF8 address (山田@city.example.lg.jp): its
    headers can only be RFC 6532 UTF-8, so it must be sent with SMTPUTF8 (see
    notice_mail_options). Rare, so EmailMessage still writes it: simpler than a
    second hand-made serialisation."""
    msg = EmailMessage(policy=SMTPUTF8)
    msg["From"] = from_header
    msg["To"] = to_header
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    if hold_id:
        msg["X-Mailguard-Hold-Id"] = hold_id
    if original_id:
        msg["In-Reply-To"] = original_id
        msg["References"] = original_id
    msg.set_content(payload.decode("utf-8"), charset="utf-8", cte="base64")
    return msg.as_bytes(policy=SMTPUTF8)


def notice_mail_options(sender: str, mail_from: str) -> list[str]:
    """MAIL parameters for a notice from ``sender`` to ``mail_from``: SMTPUTF8 when
    either envelope address is non-ASCII (RFC 6531), else none."""
    return [] if str(sender).isascii() and str(mail_from).isascii() else ["SMTPUTF8"]


# The usual address: an ASCII dot-atom local part and dot-atom domain (RFC 5322
# 3.2.3, 3.4.1). Address(addr_spec=...) gives such an address back unchanged, so
# it is taken as it is; anything else goes to the email header parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*")


def _address(addr: str) -> str:
    # Header injection: only a plain addr-spec ever reaches a header.
    addr = safe_text(addr, 254).replace("\r", "").replace("\n", "")
    if _PLAIN_ADDRESS.fullmatch(addr):
        return addr
    try:
        return str(Address(addr_spec=addr))
    except NonASCIILocalPartDefect:
        return _utf8_address(addr)
    except Exception:  # noqa: BLE001 - hostile text: HeaderParseError ("@x.example"), AttributeError ("0@[")
        return "undisclosed-recipients:;"


def _utf8_address(addr: str) -> str:
    """An addr-spec whose local part is UTF-8 (RFC 6531/6532): the same parse as
    Address(addr_spec=...), refusing anything but that one defect and trailing text."""
    try:
        spec, rest = _hvp.get_addr_spec(addr)
    except Exception:  # noqa: BLE001 - hostile text: HeaderParseError ("@x.example"), AttributeError ("0@[")
        return "undisclosed-recipients:;"
    defects = [d for d in spec.all_defects if not isinstance(d, NonASCIILocalPartDefect)]
    if rest or defects or not spec.local_part or not spec.domain:
        return "undisclosed-recipients:;"
    return str(Address(username=spec.local_part, domain=spec.domain))


# Header lines: RFC 5322 2.1.1 (at most 78 characters), 2.2.3 (folding before
# whitespace); RFC 2047 encoded-words of at most 75 characters.
_LINE = 78
_EW_OPEN, _EW_CLOSE = "=?utf-8?b?", "?="
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str) -> str:
    """``text`` without control characters or line separators (never a new header line)."""
    return _CONTROL.sub("", text) if _CONTROL.search(text) else text


def _plain_field(name: str, value: str) -> str:
    """``Name: value`` for one token that must not be split or encoded (an
    addr-spec, a msg-id, a date): on the next line when it does not fit on this one."""
    if len(name) + 2 + len(value) <= _LINE:
        return f"{name}: {value}"
    return f"{name}:\r\n {value}"


def _id_field(name: str, msg_id: str) -> str:
    """In-Reply-To / References: the msg-id as it is when it is printable ASCII
    and fits a line; else encoded-words, as EmailMessage wrote it."""
    if msg_id.isascii() and len(msg_id) < _LINE and "=?" not in msg_id:
        return _plain_field(name, msg_id)
    return _fold(name, [(msg_id, True)])


def _text_field(name: str, value: str) -> str:
    """An unstructured header (RFC 5322 3.2.5): ASCII words as they are, runs of
    words with non-ASCII (or that could be read as an encoded-word, or are too
    long for a line) as encoded-words, folded at the spaces between words."""
    pieces: list[tuple[str, bool]] = []
    for word in value.split():
        encode = not word.isascii() or "=?" in word or len(word) >= _LINE
        if encode and pieces and pieces[-1][1]:
            pieces[-1] = (pieces[-1][0] + " " + word, True)  # the space is inside the encoded text
        else:
            pieces.append((word, encode))
    return _fold(name, pieces)


def _fold(name: str, pieces: list[tuple[str, bool]]) -> str:
    """``name:`` then the pieces (text, encode?) separated by single spaces, folded."""
    lines: list[str] = []
    line = name + ":"
    for text, encode in pieces:
        if not encode:
            if len(line) + 1 + len(text) > _LINE:
                lines.append(line)
                line = ""
            line += " " + text
            continue
        rest = text
        while rest:
            room = min(_LINE - len(line) - 1, 75) - len(_EW_OPEN) - len(_EW_CLOSE)
            chunk = _ew_prefix(rest, room // 4 * 3)
            if line and (not chunk or (chunk != rest and len(chunk.encode("utf-8")) < 12)):
                # nothing (or only a sliver) fits after what is on this line: fold first
                lines.append(line)
                line = ""
                continue
            line += " " + _EW_OPEN + base64.b64encode(chunk.encode("utf-8")).decode("ascii") + _EW_CLOSE
            rest = rest[len(chunk):]
    lines.append(line)
    return "\r\n".join(lines)


def _ew_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 fits in ``max_bytes`` (whole characters)."""
    if max_bytes <= 0:
        return ""
    size = 0
    for i, ch in enumerate(text):
        size += 1 if ch < "\x80" else len(ch.encode("utf-8"))
        if size > max_bytes:
            return text[:i]
    return text


# The policy's reasons (policy._decision) are English; the Japanese part of a
# notice shows each in Japanese. Masked numbers, counts, domains and locations are
# carried over; an unknown shape is shown as it is rather than dropped.
_CONFIDENCE_JA = {"high": "高", "medium": "中", "low": "低"}
_REASONS_JA: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), t) for p, t in (
    (r"^(\d+) My Number\(s\) at (\w+) confidence or above \(high (\d+), medium (\d+)\): (.*)$",
     "個人番号 {0} 人分(信頼度「{1}」以上; 高 {2}、中 {3}): {4}"),
    (r"^no My Number at (\w+) confidence or above$", "信頼度「{0}」以上の個人番号は見つかりませんでした"),
    (r"^reply-all: (\d+) address\(es\) in To/Cc$", "全員に返信(To/Cc に {0} 件のアドレス)"),
    (r"^a reply$", "返信"),
    (r"^(\d+) external recipient\(s\) in (\d+) organisation\(s\): (.*)$",
     "外部の宛先 {0} 件({1} 組織): {2}"),
    (r"^(\d+) internal recipient\(s\)$", "内部の宛先 {0} 件"),
    (r"^(\d+) internal recipient\(s\), (\d+) of them distribution list\(s\): (.*)$",
     "内部の宛先 {0} 件(うち配布リスト {1} 件): {2}"),
    (r"^(\d+) item\(s\) could not be inspected: (.*)$", "検査できなかった内容 {0} 件: {1}"),
    (r"^(\d+) external address\(es\) visible in To/Cc \(of (\d+)\)$",
     "To/Cc に見える外部のアドレス {0} 件({1} 件中)"),
    (r"^hold expired$", "保留期限切れ"),
))


def reason_ja(reason: str) -> str:
    """A policy reason in Japanese (the English text when its shape is unknown)."""
    for pattern, template in _REASONS_JA:
        m = pattern.match(reason)
        if m:
            return template.format(*(_CONFIDENCE_JA.get(g, g) for g in m.groups()))
    return reason


def _body(kind: str, held: HeldMessage, *, reason: str, expiry_hours: float | None,
          timezone: str = DEFAULT_TIMEZONE, link: str = "") -> str:
    rcpts = ", ".join(safe_text(r, 254) for r in held.rcpt_tos[:20])
    if len(held.rcpt_tos) > 20:
        rcpts += f", … (+{len(held.rcpt_tos) - 20})"
    subject = safe_text(held.subject)
    reasons = [safe_text(r) for r in held.reasons] or ["-"]
    reasons_ja = [safe_text(reason_ja(r)) for r in reasons]
    findings = [
        f"  {safe_text(f.get('masked'), 40)}  {safe_text(f.get('confidence'), 10)}  {safe_text(f.get('location'))}"
        for f in held.findings[:50]
    ]
    if len(held.findings) > 50:
        findings.append(f"  … (+{len(held.findings) - 50})")
    unscannable = [f"  {safe_text(u.get('location'))}: {safe_text(u.get('reason'))}" for u in held.unscannable[:20]]
    notice_ja, notice_en = (
        [safe_text(line, 300) for line in part.splitlines() if line.strip()][:10]
        for part in split_notice(held.notice or "")
    )
    hours = f"{expiry_hours:g}" if expiry_hours else "?"
    received = show_time(held.received, timezone)  # local, with its offset (issue 13.9)
    expires = ""
    if kind == HELD_NOTICE and expiry_hours and iso_time(held.received):
        expires = show_time(datetime.fromisoformat(iso_time(held.received) or "")
                            + timedelta(hours=expiry_hours), timezone)
    with_notice = kind in (HELD_NOTICE, BLOCKED_NOTICE)

    ja_lead = {
        HELD_NOTICE: [
            "あなたが送信したメールは、個人番号(マイナンバー)を含む可能性があるため、",
            "送信を保留しました。管理者が確認して承認するまで、宛先には届きません。",
            f"{hours} 時間以内に確認されない場合は送信されずに破棄されます。",
        ],
        BLOCKED_NOTICE: [
            "あなたが送信したメールは、個人番号(マイナンバー)の取り扱いの規則により",
            "送信を止めました。宛先には届いていません(メールは保存されていません)。",
        ],
        REJECTED_NOTICE: [
            "あなたが送信したメールは、管理者の確認の結果、送信されませんでした。",
            "宛先には届いていません。必要であれば、個人番号を除いてから送り直してください。",
        ],
        EXPIRED_NOTICE: [
            f"あなたが送信したメールは、保留期限({hours} 時間)までに承認されなかったため、",
            "送信されませんでした。宛先には届いていません。",
        ],
    }[kind]
    en_lead = {
        HELD_NOTICE: [
            "The message you sent may contain My Numbers (individual numbers), so it is",
            "on hold. It will not reach its recipients until an administrator approves it.",
            f"If nobody confirms it within {hours} hours it is not sent.",
        ],
        BLOCKED_NOTICE: [
            "The message you sent was stopped by the organisation's rules for My Numbers",
            "(individual numbers). It was not delivered and it was not kept.",
        ],
        REJECTED_NOTICE: [
            "After review an administrator rejected the message you sent. It was not",
            "delivered. If it is needed, remove the My Numbers and send it again.",
        ],
        EXPIRED_NOTICE: [
            f"The message you sent was not approved within the hold period ({hours} hours),",
            "so it was not sent. It was not delivered to its recipients.",
        ],
    }[kind]
    ja_todo = ["対応: 宛先と内容を見直し、個人番号を除くか宛先を必要な相手だけにして、",
               "送り直してください。送る必要がある場合は管理者に相談してください。"]
    en_todo = ["What to do: check the recipients and the content; remove the My Numbers or",
               "send it only to the recipients who need it. If it must be sent as it is,",
               "ask your mailguard administrator."]

    lines = ["[日本語]", "", *ja_lead, ""]
    if held.id:
        lines.append(f"保留ID: {held.id}")
    if link:
        lines.append(f"確認・取り消し: {link}")
    lines += [f"件名: {subject}", f"宛先: {rcpts}", f"受付日時: {received}",
              f"規則: {safe_text(held.rule)}", "理由:"]
    lines += [f"  {r}" for r in reasons_ja]
    if expires:
        lines.append(f"保留期限: {expires}")
    if reason and kind == REJECTED_NOTICE:
        lines.append(f"管理者のコメント: {reason}")
    if findings:
        lines += ["検出(番号は伏せてあります):", *findings]
    if unscannable:
        lines += ["検査できなかった内容:", *unscannable]
    if notice_ja and with_notice:
        lines += ["", *notice_ja]
    if kind == BLOCKED_NOTICE:
        lines += ["", *ja_todo]
    lines += ["", "-" * 60, "", "[English]", "", *en_lead, ""]
    if held.id:
        lines.append(f"Hold ID: {held.id}")
    if link:
        lines.append(f"See or cancel it: {link}")
    lines += [f"Subject: {subject}", f"Recipients: {rcpts}",
              f"Received: {received}", f"Rule: {safe_text(held.rule)}", "Reasons:"]
    lines += [f"  {r}" for r in reasons]
    if expires:
        lines.append(f"Hold expires: {expires}")
    if reason and kind == REJECTED_NOTICE:
        lines.append(f"Administrator's comment: {reason}")
    if findings:
        lines += ["Findings (numbers masked):", *findings]
    if unscannable:
        lines += ["Content that could not be inspected:", *unscannable]
    if notice_en and with_notice:
        lines += ["", *notice_en]
    if kind == BLOCKED_NOTICE:
        lines += ["", *en_todo]
    lines += ["", "-- ", "mailguard"]
    return "\n".join(lines) + "\n"
