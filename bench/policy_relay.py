"""Relay throughput with scanning and policy on, beside pass-through, in one run.

    .venv/bin/python bench/policy_relay.py [--messages N] [--concurrency C]

Three figures, each msg/s through a real relay process on 127.0.0.1 to a
counting upstream sink in this process:

    pass-through    10 KB clean messages, a pipeline that passes without scanning
    policy 10 KB    the same messages, real Pipeline (scan + facts + shipped policy)
    policy xlsx     ~200 KB xlsx attachment (a list of numbers with valid check
                    digits, one internal recipient, so the policy passes it and it
                    is forwarded), real Pipeline

The relay runs in a child process (this file with --child) so the load generator
and the sink do not share its interpreter; each mode gets a fresh child. Every
message must be accepted (250) and reach the sink, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from mynumbers import my_numbers  # noqa: E402

SENDER = "tanaka@city.example.lg.jp"
RCPT = "kacho@city.example.lg.jp"


# -- messages ------------------------------------------------------------------


def clean_message(size: int = 10 * 1024, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    words = ["会議", "資料", "予定", "確認", "報告", "住民", "窓口", "案内", "the", "meeting", "schedule"]
    body = []
    while sum(len(w.encode()) + 1 for w in body) < size - 600:
        body.append(rnd.choice(words) + ("。\n" if rnd.random() < 0.1 else " "))
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = SENDER, RCPT, f"定例会議 {seed}"
    m.set_content("".join(body))
    return m.as_bytes()


def xlsx_message(target: int = 200 * 1024) -> bytes:
    import openpyxl

    rows = 3000
    while True:
        wb = openpyxl.Workbook()
        ws = wb.active
        ws.title = "名簿"
        ws.append(["氏名", "住所", "個人番号", "備考"])
        for i, n in enumerate(my_numbers(rows)):
            ws.append([f"住民{i:05d}", f"東京都千代田区{i % 97}-{i % 13}", n, f"memo {i * 7919 % 100000}"])
        buf = io.BytesIO()
        wb.save(buf)
        data = buf.getvalue()
        if len(data) >= target * 0.95 or rows > 100000:
            break
        rows = int(rows * target / len(data)) + 100
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = SENDER, RCPT, "名簿"
    m.set_content("名簿を送付します。")
    m.add_attachment(data, maintype="application",
                     subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet", filename="名簿.xlsx")
    return m.as_bytes()


# -- the relay child -----------------------------------------------------------


def child(mode: str, cfg_path: str) -> None:
    """Run the relay with either a pass-everything pipeline or the real one."""
    from mailguard.config import load_config
    from mailguard.log import configure_logging
    from mailguard.policy import PASS, Decision
    from mailguard.server import App, Services, build_services, local_hostname
    from mailguard.upstream import UpstreamPool

    class PassAll:
        async def inspect(self, mail_from, rcpt_tos, data):
            return Decision(PASS, "bench-pass")

    configure_logging("error")
    config = load_config(cfg_path)

    async def main() -> None:
        if mode == "pass":
            services = Services(pipeline=PassAll(),
                                pool=UpstreamPool(config.upstream, local_hostname=local_hostname(config)))
        else:
            services = build_services(config)
        app = App(config, cfg_path, services=services)
        port = await app.start(port=0)
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until parent closes
        await app.stop(grace=5)

    asyncio.run(main())


# -- the parent: sink + load -----------------------------------------------------


async def start_sink():
    from aiosmtpd.smtp import SMTP

    class Handler:
        count = 0

        async def handle_DATA(self, server, session, envelope):
            Handler.count += 1
            return "250 2.0.0 Ok"

    loop = asyncio.get_running_loop()
    handler = Handler()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.bench", loop=loop, data_size_limit=None), "127.0.0.1", 0)
    return server, handler


async def load(port: int, data: bytes, n: int, concurrency: int) -> float:
    import aiosmtplib

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    failures: list[str] = []

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120, start_tls=False)
        await smtp.connect()
        try:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    await smtp.sendmail(SENDER, [RCPT], data)
                except aiosmtplib.SMTPException as exc:
                    failures.append(str(exc)[:200])
        finally:
            smtp.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} message(s) not accepted, e.g. {failures[0]}")
    return n / elapsed


async def run_mode(mode: str, data: bytes, n: int, concurrency: int, tmp: Path, sink_port: int,
                   sink_handler) -> float:
    cfg = tmp / f"{mode}.toml"
    cfg.write_text(
        '[server]\nlisten = "127.0.0.1:10025"\nhostname = "mailguard.bench"\n'
        f'[upstream]\nurl = "smtp://127.0.0.1:{sink_port}"\ntimeout = 30\n'
        '[organisation]\ninternal_domains = ["city.example.lg.jp"]\n'
        f'[store]\npath = "{tmp / "store"}"\n[policy]\ndir = "{ROOT / "policies"}"\n',
        encoding="utf-8",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", "real" if mode != "pass" else "pass", str(cfg),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stdin is not None
    port = int((await asyncio.wait_for(proc.stdout.readline(), 60)).strip())
    try:
        before = sink_handler.count
        await load(port, data, max(4, n // 10), concurrency)  # warm-up (pools, workers, imports)
        before = sink_handler.count
        rate = await load(port, data, n, concurrency)
        if sink_handler.count - before != n:
            raise SystemExit(f"{mode}: sink got {sink_handler.count - before} of {n}")
        return rate
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)


async def parent(n: int, concurrency: int, n_xlsx: int) -> dict:
    clean = clean_message()
    xlsx = xlsx_message()
    server, handler = await start_sink()
    sink_port = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results = {
            "clean_message_bytes": len(clean),
            "xlsx_message_bytes": len(xlsx),
            "messages": n,
            "xlsx_messages": n_xlsx,
            "concurrency": concurrency,
            "cpus": os.cpu_count(),
            "pass_through_10k_msg_s": round(await run_mode("pass", clean, n, concurrency, tmp, sink_port, handler), 1),
            "policy_10k_msg_s": round(await run_mode("real", clean, n, concurrency, tmp, sink_port, handler), 1),
            "pass_through_xlsx_msg_s": round(await run_mode("pass", xlsx, n_xlsx, concurrency, tmp, sink_port, handler), 1),
            "policy_xlsx_msg_s": round(await run_mode("real", xlsx, n_xlsx, concurrency, tmp, sink_port, handler), 1),
        }
    server.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--xlsx-messages", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    results = asyncio.run(parent(args.messages, args.concurrency, args.xlsx_messages))
    print(json.dumps(results, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
