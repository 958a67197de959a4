"""No My Number in the clear outside the stored message files (DESIGN §3.3).

Known numbers go through every path (pass, hold, block; release, reject, expire,
show, list, export, purge) and then the serve log, the audit log, the SQLite files,
the notices and every CLI output are searched for them in any common form
(contiguous, grouped with space/hyphen/dot, full-width). Only `held show --raw`,
the held message files and the mail actually released or passed may carry them.
"""

from __future__ import annotations

import email
import time
from email.policy import default

from hold_support import INTERNAL, NUMBERS, SENDER, Serve, Sink, cli, held_list, message_with_numbers, send, write_config




def forms(n: str) -> list[str]:
    grouped = [n[:4] + sep + n[4:8] + sep + n[8:] for sep in (" ", "-", ".", "")]
    full = n.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    return grouped + [full, n[:8]]  # the first 8 digits never appear in a masked form


def leaks(blob: bytes | str, where: str) -> list[str]:
    """Where a known number shows up in ``blob``, as masked labels (safe to print)."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [f"{where}: ********{n[-4:]}" for n in NUMBERS for f in forms(n) if f in text]


def test_no_number_in_logs_audit_db_notices_or_cli_output(tmp_path):
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port, expiry_hours=0.0005)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    outputs: list[tuple[str, bytes]] = []
    try:
        subject = f"名簿 {NUMBERS[3]}"  # a number in the Subject too
        # pass: one internal recipient; hold: external; block: reply-all to outside.
        code, _ = send(srv.port, [f"clerk@{INTERNAL}"], message_with_numbers(NUMBERS[:1], to=f"clerk@{INTERNAL}"))
        assert code == 250
        ids = []
        for _ in range(4):
            code, text = send(srv.port, ["someone@example.com"], message_with_numbers(NUMBERS, subject=subject))
            assert code == 250
            ids.append(text.split("held for review as ")[1][:16])
        reply_all = message_with_numbers(NUMBERS[:2], subject="Re: 名簿", to="a@example.com, b@example.net")
        reply_all = reply_all.replace(b"To: ", b"In-Reply-To: <q1@example.com>\r\nTo: ", 1)
        code, text = send(srv.port, ["a@example.com", "b@example.net"], reply_all)
        assert code >= 500
        outputs.append(("block reply", text.encode()))

        for args in (("held", "list"), ("held", "list", "--json", "--state", "all"), ("held", "show", ids[0]),
                     ("held", "show", ids[0], "--json"),
                     ("held", "release", ids[0], "--reason", f"ok, checked {NUMBERS[0]}"),
                     ("held", "reject", ids[1], "--reason", f"contains {NUMBERS[1]}")):
            r = cli(cfg, *args)
            assert r.returncode == 0, leaks(r.stderr, "stderr") or r.returncode
            outputs += [(" ".join(args[:2]), r.stdout), (" ".join(args[:2]) + " stderr", r.stderr)]
        raw = cli(cfg, "held", "show", ids[3], "--raw")
        shown = email.message_from_bytes(raw.stdout, policy=default)
        # --raw is the one (audited) way to see them: the exact bytes, numbers included.
        assert raw.returncode == 0 and leaks(shown.get_body().get_content(), "raw")
        time.sleep(2)
        for args in (("held", "expire"), ("held", "purge", "--older-than", "0"), ("audit", "verify"),
                     ("audit", "export", "--since", "2000-01-01"),
                     ("audit", "export", "--since", "2000-01-01", "--format", "csv")):
            r = cli(cfg, *args)
            assert r.returncode == 0
            outputs += [(" ".join(args[:2]), r.stdout), (" ".join(args[:2]) + " stderr", r.stderr)]
    finally:
        srv.stop()
        sink.stop()

    store = tmp_path / "store"
    found: list[str] = []
    for name, blob in outputs:
        found += leaks(blob, name)
    found += leaks((tmp_path / "serve.log").read_bytes(), "serve log")
    found += leaks((store / "audit.jsonl").read_bytes(), "audit.jsonl")
    for p in store.iterdir():
        if p.name.startswith("meta.sqlite"):
            found += leaks(p.read_bytes(), p.name)
    notices = [m for m in sink.messages if m[1] == [SENDER]]
    assert len(notices) >= 5  # held x4, rejected, expired
    for _, _, raw_notice in notices:
        msg = email.message_from_bytes(raw_notice, policy=default)
        found += leaks(raw_notice, "notice bytes") + leaks(msg.get_content(), "notice text")
        found += leaks(str(msg["Subject"]), "notice subject")
    assert found == []
    assert held_list(cfg, "expired")
    assert "show-raw" in (store / "audit.jsonl").read_text()
