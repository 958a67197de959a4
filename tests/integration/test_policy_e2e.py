"""Policy end to end: `mailguard serve` as a real process between a real SMTP client and
the capturing upstream sink, all on 127.0.0.1.

A passing message reaches the upstream; a blocked one gets 550 5.7.1 with a masked
reason and never reaches it; SIGHUP reloads the policy, and a bad policy is refused,
logged with file:line, and the last good one stays in force. The relay's stderr log
is checked for clear numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import aiosmtplib
import pytest

REPO = Path(__file__).resolve().parents[2]


from policy_cases import ANSWER, ASKER_INTERNAL, COLLEAGUE, ME, OTHER_CITIES, THREE, build, csv_attachment  # noqa: E402


BLOCKED = 550  # a policy block: replies.blocked() is 550 5.7.1


def relayed(upstream) -> list:
    """What the relay passed on, without mailguard's own notices to the sender
    (a block and a hold each send one in the background)."""
    return [m for m in upstream.messages if b"Auto-Submitted: auto-generated" not in m.data]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`python -m mailguard -c CFG serve` with its JSON log lines collected."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port
        self.events: list[dict] = []
        self.raw: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            text = line.decode("utf-8", "replace")
            self.raw.append(text)
            try:
                self.events.append(json.loads(text))
            except ValueError:
                pass

    async def wait_event(self, name: str, after: int = 0, timeout: float = 20) -> dict:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            for ev in self.events[after:]:
                if ev.get("event") == name:
                    return ev
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {name!r} event; log:\n{''.join(self.raw)[-3000:]}")

    async def send(self, rcpts: list[str], data: bytes) -> tuple[int, str]:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=60, start_tls=False)
        await smtp.connect()
        try:
            _errors, reply = await smtp.sendmail(ME, rcpts, data)
            return 250, reply
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        finally:
            smtp.close()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


@pytest.fixture
async def serve(tmp_path: Path, upstream):
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    port = _free_port()
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nhostname = "mailguard.test"\n'
        f'[upstream]\nurl = "{upstream.url}"\ntimeout = 10\n'
        '[organisation]\ninternal_domains = ["city.example.lg.jp"]\n'
        f'[store]\npath = "{tmp_path / "store"}"\n[policy]\ndir = "{policies}"\n'
        '[log]\nlevel = "debug"\n',  # "decided" (the details) is a debug event
        encoding="utf-8",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailguard", "-c", str(cfg), "serve",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    s = Serve(proc, port)
    await s.wait_event("listening")
    s.policies = policies  # type: ignore[attr-defined]
    yield s
    await s.stop()
    log = "".join(s.raw)
    assert not any(n in log for n in THREE), "a clear My Number reached the log"


REPLY_ALL = build(to=OTHER_CITIES[:1], cc=OTHER_CITIES[1:], attachments=[csv_attachment(THREE)], **ANSWER)
TO_ASKER = build(to=[ASKER_INTERNAL], attachments=[csv_attachment(THREE)], **ANSWER)


async def test_pass_reaches_upstream_block_gets_550_and_never_does(serve: Serve, upstream) -> None:
    code, _ = await serve.send([ASKER_INTERNAL], TO_ASKER)
    assert code == 250
    assert len(relayed(upstream)) == 1
    assert upstream.messages[0].rcpt_tos == [ASKER_INTERNAL]
    assert b"Re: " in upstream.messages[0].data or b"=?utf-8?" in upstream.messages[0].data

    code, text = await serve.send(OTHER_CITIES, REPLY_ALL)
    assert code == BLOCKED
    assert text.startswith("5.7.1"), text
    assert not any(n in text for n in THREE)
    assert len(relayed(upstream)) == 1  # the blocked one never arrived
    ev = await serve.wait_event("decided", after=0)
    assert ev["rule"] in ("internal-single-pass", "reply-all-external")
    decided = [e for e in serve.events if e.get("event") == "decided"]
    assert [(e["action"], e["rule"]) for e in decided] == [
        ("pass", "internal-single-pass"), ("block", "reply-all-external")]
    assert any("********" + THREE[0][-4:] in r for r in decided[1]["reasons"])

    # Headers internal, envelope external (Bcc): held in the store, never upstream.
    bcc = build(to=[COLLEAGUE], attachments=[csv_attachment(THREE)])
    code, _ = await serve.send([COLLEAGUE, "x@agency.example.go.jp"], bcc)
    assert code == 250  # durable in the hold store (DESIGN §3.1)
    assert len(relayed(upstream)) == 1
    decided = [e for e in serve.events if e.get("event") == "decided"]
    assert (decided[-1]["action"], decided[-1]["rule"]) == ("hold", "external-hold")


async def test_sighup_reloads_policy_and_keeps_last_good_on_error(serve: Serve, upstream) -> None:
    one_colleague = build(to=[COLLEAGUE], attachments=[csv_attachment(THREE)])
    assert (await serve.send([COLLEAGUE], one_colleague))[0] == 250
    assert len(relayed(upstream)) == 1

    # A local rule that wins before the defaults: no numbers to the colleague at all.
    (serve.policies / "05-local.toml").write_text(  # type: ignore[attr-defined]
        '[[rule]]\nname = "no-numbers-to-kacho"\npersons_min = 1\n'
        f'recipient_domain = ["city.example.lg.jp"]\nsender = ["{ME}"]\naction = "block"\n'
        'notice = { ja = "送信できません。", en = "Not sent." }\n',
        encoding="utf-8",
    )
    mark = len(serve.events)
    serve.proc.send_signal(signal.SIGHUP)
    await serve.wait_event("reloaded", after=mark)
    code, _ = await serve.send([COLLEAGUE], one_colleague)
    assert code == BLOCKED
    assert len(relayed(upstream)) == 1

    # A broken edit: refused with file:line, and the last good policy stays.
    (serve.policies / "06-bad.toml").write_text(  # type: ignore[attr-defined]
        '[[rule]]\nname = "oops"\npersons_min = 1\naction = "deliver"\n', encoding="utf-8")
    mark = len(serve.events)
    serve.proc.send_signal(signal.SIGHUP)
    ev = await serve.wait_event("reload_refused", after=mark)
    assert "06-bad.toml:4" in ev["reason"] and "unknown action" in ev["reason"]
    code, _ = await serve.send([COLLEAGUE], one_colleague)
    assert code == BLOCKED  # still the reloaded good policy, not the bad one, not the old one
    assert len(relayed(upstream)) == 1

    # Mail without numbers still flows under the kept policy.
    assert (await serve.send([COLLEAGUE], build(to=[COLLEAGUE], body="会議です。")))[0] == 250
    assert len(relayed(upstream)) == 2
