"""Delivery into a local maildir: the upstream of the shipped defaults
(`upstream.url = "maildir:var/outbox"`), so the relay works with no other mail
server present.

    write_maildir(root, mail_from, rcpt_tos, data) -> file name
    MaildirLink(root)        a Link (upstream.Link) that accepts every recipient

SECURITY: the file name is ours (time, pid, counter, host); message bytes are
written as received, after a Return-Path and X-Envelope-To lines. Durable like a
held message (durable.write_file). DIAGNOSTICS: `maildir_written`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path

from mailguard.durable import write_file
from mailguard.errors import ForwardError
from mailguard.log import get_logger
from mailguard.records import UpstreamReply

log = get_logger(component="upstream")

_counter = itertools.count()
MAILDIR_EXTENSIONS = frozenset({"8bitmime", "smtputf8", "size"})


def write_maildir(root: str, mail_from: str, rcpt_tos: list[str], data: bytes) -> str:
    """Deliver one message into ``root`` (a maildir) durably; returns the file name.

    Postfix's discipline: a unique name in tmp/ created O_EXCL 0600, write, fsync,
    link into new/, unlink tmp, fsync new/. The envelope goes first as
    ``Return-Path:`` and one ``X-Envelope-To:`` per recipient; the message bytes
    follow exactly as received (CRLF line ends).
    """
    base = Path(root)
    for sub in ("tmp", "new", "cur"):
        (base / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    now = time.time()
    name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{host}"
    head = "Return-Path: <%s>\r\n" % ("" if mail_from == "<>" else mail_from)
    head += "".join(f"X-Envelope-To: <{r}>\r\n" for r in rcpt_tos)
    # link, not rename: an existing name in new/ is never overwritten.
    write_file(base / "new" / name, (head.encode("utf-8", "surrogateescape"), data),
               tmp=base / "tmp" / name, replace=False)
    return name


class MaildirLink:
    """A maildir behaves like an upstream that accepts every recipient."""

    extensions = MAILDIR_EXTENSIONS
    alive = True
    reused = False

    def __init__(self, root: str) -> None:
        self.root = root
        self.sender: str | None = None
        self.rcpts: list[str] = []

    async def mail(self, sender: str, options: Iterable[str] = ()) -> UpstreamReply:
        self.sender, self.rcpts = sender, []
        return UpstreamReply(250, "2.1.0 Ok")

    async def rcpt(self, recipient: str) -> UpstreamReply:
        self.rcpts.append(recipient)
        return UpstreamReply(250, "2.1.5 Ok")

    async def data(self, data: bytes) -> UpstreamReply:
        sender, rcpts = self.sender or "<>", self.rcpts
        self.sender, self.rcpts = None, []
        try:
            name = await asyncio.to_thread(write_maildir, self.root, sender, rcpts, data)
        except OSError as exc:
            raise ForwardError(f"maildir delivery failed: {exc.strerror}") from exc
        log.info("maildir_written", file=name, recipients=len(rcpts), size=len(data))
        return UpstreamReply(250, f"2.0.0 Ok: delivered as {name}")

    async def rset(self) -> None:
        self.sender, self.rcpts = None, []

    async def close(self) -> None:
        pass
