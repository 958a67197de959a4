"""Links to the approval page and the notice to a held message's assigned approvers.

    (held_link(web, hold_id) lives in notices.py: the sender's hold notice carries it too)
    approver_addresses(config, held) -> [str]    e-mail addresses of the assigned, active approvers
    build_approver_notice(held, *, sender, to, link, timezone) -> bytes
    async notify_approvers(config, notifier, held) -> str  queued and tried once (notifier.SENT, QUEUED, ...)

The approver notice says that mail from someone they approve for is held and
where to look (the link), with the rule and masked findings; like the sender's
notice it never carries a number in the clear, the body or an attachment.

SECURITY: every text from the held message goes through notices.safe_text (NFKC,
one line, digits masked) and the whole body is scrubbed once more.
DIAGNOSTICS: ``approver_notice_failed`` when no notice could be built; sending,
retries and their audit records are the notifier's (kind ``approval-request``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid

from mailguard.config import Config
from mailguard.localtime import show_time
from mailguard.log import get_logger, scrub
from mailguard.notices import held_link, notice_mail_options, safe_text
from mailguard.notifier import NOT_SENT, Notifier
from mailguard.records import HeldMessage
from mailguard.web.users import UserStore, approvers_for

APPROVAL_REQUEST = "approval-request"  # the notice kind in the queue and the audit log
log = get_logger(component="web")


def approver_addresses(config: Config, held: HeldMessage) -> list[str]:
    names = approvers_for(config.web, held.mail_from)
    if not names:
        return []
    users = UserStore(config.store.path)
    out = []
    for name in sorted(names):
        u = users.get(name)
        if u and not u.disabled and u.email and u.is_approver and u.email != held.mail_from.lower():
            out.append(u.email)
    return out


def build_approver_notice(held: HeldMessage, *, sender: str, to: list[str], link: str,
                          timezone: str = "Asia/Tokyo") -> bytes:
    ascii_only = sender.isascii() and all(a.isascii() for a in to)
    policy = SMTP if ascii_only else SMTPUTF8
    msg = EmailMessage(policy=policy)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"[mailguard] 承認の依頼 / Approval requested ({held.id})"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid("mailguard-approval", domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Mailguard-Hold-Id"] = held.id
    findings = [f"  {safe_text(f.get('masked'), 40)}  {safe_text(f.get('confidence'), 10)}  "
                f"{safe_text(f.get('location'))}" for f in held.findings[:20]]
    rcpts = ", ".join(safe_text(r, 254) for r in held.rcpt_tos[:20])
    common = [f"  {safe_text(held.mail_from, 254)} -> {rcpts}", f"  {safe_text(held.subject)}",
              f"  {show_time(held.received, timezone)}  {safe_text(held.rule)}  ({held.persons})", *findings]
    lines = [
        "[日本語]", "",
        "あなたが承認者となっている送信者のメールが、個人番号(マイナンバー)を含む可能性があるため",
        "保留されています。内容を確認し、承認または差し戻しをしてください。", "",
        f"保留ID: {held.id}", *common, "",
        f"確認・承認: {link}" if link else "確認・承認: mailguard の承認ページ",
        "", "-" * 60, "", "[English]", "",
        "Mail from a sender you approve for is on hold because it may contain My Numbers.",
        "Please review it, then approve or reject it.", "",
        f"Hold ID: {held.id}", *common, "",
        f"Review and approve: {link}" if link else "Review and approve: the mailguard approval page",
        "", "-- ", "mailguard",
    ]
    msg.set_content(scrub("\n".join(lines) + "\n"), charset="utf-8", cte="base64")
    return msg.as_bytes(policy=policy)


async def notify_approvers(config: Config, notifier: Notifier, held: HeldMessage) -> str:
    """Queue the approval request and try it once, like the sender's notice: the
    relay's notice sender retries it until delivered or expired; never raised."""
    if not config.store.notify_sender:
        return NOT_SENT
    try:
        to = approver_addresses(config, held)
    except Exception as exc:  # noqa: BLE001 - an unreadable user file must not undo a hold
        log.warning("approver_notice_failed", id=held.id, error=f"users: {type(exc).__name__}")
        return NOT_SENT
    if not to:
        return NOT_SENT
    try:
        data = build_approver_notice(held, sender=notifier.sender, to=to, link=held_link(config.web, held.id),
                                     timezone=config.organisation.timezone)
    except Exception as exc:  # noqa: BLE001 - best effort: a notice never undoes a hold
        log.warning("approver_notice_failed", id=held.id, error=f"build: {type(exc).__name__}")
        return NOT_SENT
    options = [] if all(not notice_mail_options(notifier.sender, a) for a in to) else ["SMTPUTF8"]
    return await notifier.queue_and_send(APPROVAL_REQUEST, held.id, to, data, options)


