"""parse._feed_fast against the full feed: the same email.message tree and the
same parse_message result, on the third-party corpus and on hostile inputs.

The corpus lives in ../shared/corpus (third-party files, never copied here).
Each file is also tried with its line endings rewritten to CRLF and to LF, so
the fast path (CRLF headers) and the fallbacks both see every shape.
"""

from __future__ import annotations

import email.message
from pathlib import Path

import pytest

from mailguard import parse
from mailguard.parse import FEED_CHUNK, parse_message

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS_FILES = sorted(CORPUS.rglob("*.eml")) if CORPUS.is_dir() else []


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


BODY = b"".join(b"line %04d of a plain text body, long enough to look like mail.\r\n" % i
                for i in range(120))
HDR = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n"
MULTI = (b"--b1\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\n"
         b"Content-Type: text/html\r\n\r\n<p>two</p>\r\n--b1--\r\n")

HOSTILE = {
    "plain": HDR + b"\r\n" + BODY,
    "plain_declared": HDR + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + BODY,
    "bare_lf": _lf(HDR + b"\r\n" + BODY),
    "bare_cr": (HDR + b"\r\n" + BODY).replace(b"\r\n", b"\r"),
    "bare_lf_in_headers": b"From: a\nTo: b\r\n\r\n" + BODY,
    "bare_cr_in_headers": b"From: a\rTo: b\r\n\r\n" + BODY,
    "cr_before_blank_line": b"From: a\r\r\n\r\n" + BODY,
    "lf_after_blank_line": HDR + b"\r\n\n" + BODY,
    "mixed_body": HDR + b"\r\nA\nB\rC\r\nD\n\rE\r\r\n",
    "mixed_everywhere": b"From: a\r\nTo: b\nCc: c\r\r\n\n\r\nbody\n",
    "headers_only_no_blank": HDR,
    "headers_only_lf_end": HDR[:-2],
    "header_block_ends_data": HDR + b"\r\n",
    "blank_then_nothing_else": b"\r\n\r\n",
    "leading_blank_line": b"\r\n" + HDR + b"\r\n" + BODY,
    "empty": b"",
    "only_crlf": b"\r\n",
    "no_headers_body_only": b"just text, no headers\r\n\r\nmore\r\n",
    "eight_bit": b"Subject: \xe5\x80\x8b\xff\xfe\r\nFrom: \x93\xfa\x96\x7b <a@b>\r\n"
                 b"Content-Type: text/plain; charset=\xff\r\n\r\n\xe3\x81\x82\xff\x80\r\n",
    "invalid_utf8_charset_utf8": HDR + b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
                                 b"\xc3\x28\xa0\xa1\xf0\x28\x8c\xbc\r\n",
    "nul_bytes": b"Subject: a\x00b\r\n\r\nbody\x00with\x00nul\r\n",
    "nul_in_header_name": b"Subject: a\r\nX-N\x00: v\r\n\r\nbody\r\n",
    "long_header_line": b"Subject: " + b"x" * 200_000 + b"\r\n\r\n" + BODY,
    "long_folded_to": b"To: " + b",\r\n ".join(b"u%d@example.com" % i for i in range(20_000))
                      + b"\r\n\r\n" + BODY,
    "non_header_line_in_block": b"From: a\r\nthis is not a header\r\nTo: b\r\n\r\n" + BODY,
    "colon_first": b"From: a\r\n: no name\r\n\r\n" + BODY,
    "continuation_first": b" folded first\r\nFrom: a\r\n\r\n" + BODY,
    "unix_from_first": b"From sender@example.com Mon Jan  1 00:00:00 2024\r\n" + HDR
                        + b"\r\n" + BODY,
    "unix_from_last": HDR + b"From sender@example.com Mon Jan  1 00:00:00 2024\r\n\r\n" + BODY,
    "unix_from_middle": b"To: b\r\nFrom x\r\nSubject: s\r\n\r\n" + BODY,
    "multipart": HDR + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n' + MULTI,
    "multipart_claims_text_plain": HDR + b"Content-Type: text/plain\r\n\r\n" + MULTI,
    "multipart_missing_boundary": HDR + b"Content-Type: multipart/mixed\r\n\r\n" + MULTI,
    "multipart_bad_cte": HDR + b'Content-Type: multipart/mixed; boundary="b1"\r\n'
                         b"Content-Transfer-Encoding: base64\r\n\r\n" + MULTI,
    "message_rfc822": HDR + b"Content-Type: message/rfc822\r\n\r\n" + HDR + b"\r\n" + BODY,
    "delivery_status": HDR + b"Content-Type: message/delivery-status\r\n\r\n"
                       b"Reporting-MTA: dns; x\r\n\r\nAction: failed\r\n",
    "invalid_content_type": HDR + b"Content-Type: garbage\r\n\r\n" + BODY,
    "empty_content_type": HDR + b"Content-Type: \r\n\r\n" + BODY,
    "content_type_8bit": HDR + b"Content-Type: text/\xff\xfe; charset=\xe3\x81\x82\r\n\r\n" + BODY,
    "base64_text": HDR + b"Content-Transfer-Encoding: base64\r\n\r\n44GC44GE44GG\r\n",
    "uuencoded": HDR + b"\r\nbegin 644 a.txt\r\n#86)C\r\n`\r\nend\r\n",
    "bom": b"\xef\xbb\xbf" + HDR + b"\r\n" + BODY,
    "double_bom": b"\xef\xbb\xbf\xef\xbb\xbf" + HDR + b"\r\n" + BODY,
    "bom_in_body": HDR + b"\r\n\xef\xbb\xbf" + BODY,
    "headers_across_chunk": b"Subject: " + b"y" * (FEED_CHUNK - 10) + b"\r\nTo: b\r\n\r\n" + BODY,
    "blank_line_across_chunk": b"Subject: " + b"y" * (FEED_CHUNK - 12) + b"\r\n\r\n" + BODY,
    "big_body": HDR + b"\r\n" + BODY * 200,
    "body_cr_at_chunk_end": HDR + b"\r\n" + b"z" * (FEED_CHUNK - len(HDR) - 3) + b"\r\n" + BODY,
}


def _same_tree(fast: email.message.Message, full: email.message.Message, where: str) -> None:
    assert type(fast) is type(full), where
    a, b = vars(fast), vars(full)
    assert a.keys() == b.keys(), where
    for key in a:
        if key == "_payload":
            continue
        if key == "defects":
            assert [(type(d), str(d)) for d in a[key]] == [(type(d), str(d)) for d in b[key]], where
        else:
            assert a[key] == b[key], f"{where}: {key}"
    assert fast.items() == full.items(), where
    if isinstance(b["_payload"], list):
        assert isinstance(a["_payload"], list) and len(a["_payload"]) == len(b["_payload"]), where
        for i, (x, y) in enumerate(zip(a["_payload"], b["_payload"]), 1):
            _same_tree(x, y, f"{where}.{i}")
    else:
        assert a["_payload"] == b["_payload"], where
        assert fast.get_payload() == full.get_payload(), where


def _as_bytes(msg: email.message.Message) -> bytes | str:
    try:
        return msg.as_bytes()
    except Exception as exc:  # noqa: BLE001 - both trees must fail alike
        return type(exc).__name__


def _same_parts(fast: list[parse.Part], full: list[parse.Part], where: str) -> None:
    assert len(fast) == len(full), where
    for x, y in zip(fast, full):
        for attr in ("index", "content_type", "charset", "filename", "disposition"):
            assert getattr(x, attr) == getattr(y, attr), f"{where}: {attr}"
        assert x.payload == y.payload, where
        assert x.problems == y.problems, where
        assert (x.message is None) == (y.message is None), where
        if x.message is not None:
            _same_result(x.message, y.message, f"{where}/{x.index}")


def _same_result(fast: parse.Message, full: parse.Message, where: str) -> None:
    assert fast.headers == full.headers, where
    assert fast.problems == full.problems, where
    _same_parts(fast.parts, full.parts, where)


def _check(data: bytes, where: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Fast and full agree; True when the fast path was taken."""
    fast_tree = parse._feed_fast(data)
    full_tree = parse._feed_full(data)
    if fast_tree is not None:
        _same_tree(fast_tree, full_tree, where)
        assert _as_bytes(fast_tree) == _as_bytes(full_tree), where
    _same_tree(parse._feed(data), full_tree, where)
    fast_result = parse_message(data)
    with monkeypatch.context() as m:
        m.setattr(parse, "_feed", parse._feed_full)
        full_result = parse_message(data)
    _same_result(fast_result, full_result, where)
    return fast_tree is not None


TAKES_FAST = {"plain", "plain_declared", "header_block_ends_data", "eight_bit",
              "invalid_utf8_charset_utf8", "nul_bytes", "long_header_line", "long_folded_to",
              "multipart_claims_text_plain", "invalid_content_type", "empty_content_type",
              "content_type_8bit", "base64_text", "uuencoded", "bom_in_body",
              "headers_across_chunk", "blank_line_across_chunk", "big_body",
              "body_cr_at_chunk_end", "lf_after_blank_line", "mixed_body", "unix_from_first"}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_inputs_parse_alike(name, monkeypatch):
    data = HOSTILE[name]
    assert _check(data, name, monkeypatch) == (name in TAKES_FAST), name


def test_bom_is_stripped_before_the_fast_path():
    assert parse._feed_fast(HOSTILE["bom"]) is None
    assert parse._feed_fast(HOSTILE["bom"][3:]) is not None


@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus not present")
def test_corpus_parses_alike(monkeypatch):
    taken = 0
    for path in CORPUS_FILES:
        raw = path.read_bytes()
        rel = str(path.relative_to(CORPUS))
        for variant, data in (("as is", raw), ("crlf", _crlf(raw)), ("lf", _lf(raw))):
            taken += _check(data, f"{rel} ({variant})", monkeypatch)
            if data.startswith(b"\xef\xbb\xbf"):
                taken += _check(data[3:], f"{rel} ({variant}, no BOM)", monkeypatch)
    assert taken >= 20  # single-part mail in the corpus does take the fast path


def _header_items(data: bytes, policy) -> list[tuple[str, str]]:
    from email.parser import BytesHeaderParser
    return [(k, str(v)) for k, v in BytesHeaderParser(policy=policy).parsebytes(data).items()]


def test_header_block_gives_the_parser_the_same_headers():
    """parse.header_block (facts and holds read Subject / Message-ID from it): the
    headers parsed from the block are those parsed from the whole message, for
    every corpus file in three line-ending shapes and every hostile input."""
    from email.policy import compat32, default
    inputs = {f"hostile:{k}": v for k, v in HOSTILE.items()}
    for path in CORPUS_FILES:
        raw = path.read_bytes()
        inputs.update({f"{path.name}": raw, f"{path.name}:crlf": _crlf(raw), f"{path.name}:lf": _lf(raw)})
    inputs["no blank line"] = b"Subject: only headers\r\nX-A: 1\r\n"
    inputs["bare CR blank line"] = b"Subject: a\r\rX-B: body?\r\n\r\nbody\r\n"
    inputs["LF blank line before CRLF one"] = b"Subject: a\n\nX-B: 1\r\n\r\nbody\r\n"
    for where, data in inputs.items():
        block = parse.header_block(data)
        assert data.startswith(block), where
        # compat32 for all; the (slow) default policy where the whole message is small
        for policy in (compat32, default) if len(data) < 65536 else (compat32,):
            assert _header_items(block, policy) == _header_items(data, policy), where
    assert parse.header_block(b"Subject: a\r\n\r\nbody") == b"Subject: a\r\n\r\n"
    assert parse.header_block(b"Subject: a\r\n\r\nbody", limit=5) == b"Subje"
