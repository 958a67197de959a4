#!/usr/bin/env python3
"""Detector throughput, beside ripgrep over the same bytes in the same run.

    .venv/bin/python bench/detect.py [--mb 4] [--runs 7]

Inputs, generated deterministically:
  (a) Japanese prose without numbers        target >= 200 MB/s
  (b) a digit-dense CSV of names and numbers  target >= 25 MB/s
  (c) a realistic mixed business mail, 1 MB   target < 10 ms

MB/s counts the UTF-8 bytes of the text (what the mail carried); detect()
is timed on the decoded str, as the extractor hands it over. The baselines:
`rg -c '[0-9]{12}' FILE` (wall time, so it includes process start; the
speed-of-light reference for "find 12 digits"), and Python's own
re.findall('[0-9]{12}') over the same str (the floor for any pure-Python
detector). Figures are medians of --runs runs.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard.detect import Span, check_digit, detect  # noqa: E402

KANJI = "市役所住民課税務課福祉課申請書類受付交付通知確認手続窓口担当者変更届出提出期限本人確認書類" \
        "郵送返信封筒同封送付資料会議議事録予算決算報告事業計画令和年度第四半期実施状況"
KANA = "のはをにがでとしてますでしたおりますいたしますくださいよろしくお願い申し上げます"
KATA = "システムメールアドレスファイルデータサーバーパスワードログインマニュアルスケジュール"
PUNCT = "、。「」（）・：！？"
SURNAMES = ["山田", "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "中村", "小林", "加藤"]
GIVEN = ["太郎", "花子", "一郎", "美咲", "健太", "陽子", "翔太", "由美", "大輔", "直子"]


def my_number(rnd: random.Random) -> str:
    body = f"{rnd.randrange(10**11):011d}"
    return body + str(check_digit(body))


def prose(rnd: random.Random, size: int) -> str:
    """Japanese business prose, no digits at all."""
    out, n = [], 0
    pools = (KANJI, KANA, KANA, KATA)
    while n < size:
        sentence = "".join(
            "".join(rnd.choice(pool) for _ in range(rnd.randint(2, 6)))
            for pool in rnd.sample(pools, k=4)
        ) + rnd.choice(PUNCT)
        if rnd.random() < 0.1:
            sentence += "\n"
        out.append(sentence)
        n += len(sentence.encode())
    return "".join(out)


def csv(rnd: random.Random, size: int) -> str:
    rows = ["番号,氏名,フリガナ,生年月日,個人番号,郵便番号,電話番号,備考"]
    n, i = len(rows[0]), 0
    while n < size:
        i += 1
        row = (f"{i},{rnd.choice(SURNAMES)} {rnd.choice(GIVEN)},ヤマダ タロウ,"
               f"{rnd.randint(1940, 2010)}/{rnd.randint(1, 12):02d}/{rnd.randint(1, 28):02d},"
               f"{my_number(rnd)},{rnd.randint(100, 999)}-{rnd.randint(0, 9999):04d},"
               f"0{rnd.randint(3, 99)}-{rnd.randint(100, 9999)}-{rnd.randint(0, 9999):04d},")
        rows.append(row)
        n += len(row.encode()) + 1
    return "\n".join(rows) + "\n"


def mixed(rnd: random.Random, size: int) -> str:
    """A long business mail: prose, dates, amounts, phone numbers, a quoted
    reply, a pasted table, URLs, a few My Numbers near keywords and some bare
    12-digit ids."""
    parts, n = [], 0
    while n < size:
        kind = rnd.random()
        if kind < 0.55:
            p = prose(rnd, rnd.randint(200, 800))
        elif kind < 0.7:
            p = (f"令和{rnd.randint(1, 7)}年{rnd.randint(1, 12)}月{rnd.randint(1, 28)}日 "
                 f"{rnd.randint(9, 17)}:{rnd.randint(0, 59):02d} 請求金額 {rnd.randint(1000, 9999999):,}円（税込）\n"
                 f"TEL 03-{rnd.randint(1000, 9999)}-{rnd.randint(1000, 9999)} / FAX 03-{rnd.randint(1000, 9999)}-"
                 f"{rnd.randint(1000, 9999)}\nhttps://www.city.example.lg.jp/kurashi/{rnd.randint(1000, 99999)}.html\n")
        elif kind < 0.8:
            p = "\n".join(f"> {line}" for line in prose(rnd, 300).split("。")) + "\n"
        elif kind < 0.9:
            p = "\n".join(f"{rnd.choice(SURNAMES)}\t{rnd.randint(20, 90)}歳\t{rnd.randint(1, 99)}件"
                          for _ in range(rnd.randint(3, 10))) + "\n"
        elif kind < 0.95:
            num = my_number(rnd)
            p = f"本人のマイナンバー（個人番号）は {num[:4]}-{num[4:8]}-{num[8:]} です。\n"
        else:
            p = f"お問い合わせ伝票番号：{rnd.randrange(10**12):012d}\n受付ID {rnd.randrange(10**12):012d}\n"
        parts.append(p)
        n += len(p.encode())
    return "".join(parts)


def median_time(fn, runs: int, cpu: list[float] | None = None) -> float:
    """Median wall time of `runs` calls; with `cpu`, also appends the median
    CPU time of this process (on a shared machine, wall minus CPU is time
    spent waiting for a core)."""
    times, cpus = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if cpu is not None:
        cpu.append(statistics.median(cpus))
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=4.0, help="size of inputs (a) and (b) in MB")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    rnd = random.Random(1)
    size = int(args.mb * 1_000_000)
    inputs = [
        ("(a) Japanese prose, no numbers", prose(rnd, size), 200.0, None),
        ("(b) digit-dense CSV", csv(rnd, size), 25.0, None),
        ("(c) mixed business mail, 1 MB", mixed(rnd, 1_000_000), None, 10.0),
    ]
    rg = shutil.which("rg")
    if rg is None:
        print("ripgrep (rg) not found: install the Debian package ripgrep for the reference figure")
    pyre = re.compile(r"[0-9]{12}")
    key = os.urandom(32)
    detect([Span("個人番号 123456789018", "warm-up")], key=key)  # builds the automaton once
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, text, target_mbs, target_ms in inputs:
            data = text.encode()
            mb = len(data) / 1e6
            path = Path(tmp) / "input.txt"
            path.write_bytes(data)
            result = detect([Span(text, "body")], key=key)
            cpu: list[float] = []
            t_det = median_time(lambda: detect([Span(text, "body")], key=key), args.runs, cpu)
            t_re = median_time(lambda: pyre.findall(text), args.runs)
            line = (f"{name}: {mb:.2f} MB, {len(result.findings)} findings, persons {result.persons}\n"
                    f"    detect      {mb / t_det:8.1f} MB/s  {t_det * 1000:8.2f} ms   (CPU {cpu[0] * 1000:.2f} ms)\n"
                    f"    python re   {mb / t_re:8.1f} MB/s  {t_re * 1000:8.2f} ms"
                    f"   detect/re time ratio {t_det / t_re:.1f}x")
            if rg:
                t_rg = median_time(
                    lambda: subprocess.run([rg, "-c", "[0-9]{12}", str(path)], stdout=subprocess.DEVNULL,
                                           check=False),
                    args.runs,
                )
                line += (f"\n    rg -c       {mb / t_rg:8.1f} MB/s  {t_rg * 1000:8.2f} ms"
                         f"   detect/rg time ratio {t_det / t_rg:.1f}x (rg includes process start)")
            if target_mbs is not None:
                met = mb / t_det >= target_mbs
                line += f"\n    target >= {target_mbs:.0f} MB/s: {'met' if met else 'MISSED'}"
            else:
                met = t_det * 1000 < target_ms
                line += f"\n    target < {target_ms:.0f} ms: {'met' if met else 'MISSED'}"
            ok &= met
            print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
