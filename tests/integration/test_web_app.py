"""The approval page through an HTTP client (Starlette's TestClient over the real app,
the real store, the real audit log and a real capturing upstream): every route and
every permission, the rules (two-person, blank reasons, release after 250) and the
security properties (cookies, CSRF, rate limit, expiry, headers, no clear numbers)."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from hold_support import NUMBERS, Serve, Sink, cli, message_with_numbers, send
from web_support import (INTERNAL, JINJI, PASSWORD, PEOPLE, SOUMU, TWELVE_DIGITS, add_people, hold, load,
                         web_config)

from mailguard.web.app import create_app

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture()
def sink():
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture()
def env(tmp_path: Path, sink: Sink):
    cfg = web_config(tmp_path, sink.port)
    config = load(cfg)
    add_people(config)
    app = create_app(config)
    yield config, app, cfg


def client(app, addr: str = "192.0.2.10", **kw) -> TestClient:
    return TestClient(app, base_url="https://testserver", client=(addr, 40000), **kw)


def login(app, name: str, password: str = PASSWORD, addr: str = "192.0.2.10") -> TestClient:
    c = client(app, addr)
    r = c.get("/login")
    token = CSRF.search(r.text)[1]
    r = c.post("/login", data={"username": name, "password": password, "csrf": token})
    assert r.status_code == 200 and r.url.path == "/held", (r.status_code, r.text[:500])
    return c


def token(c: TestClient, path: str) -> str:
    return CSRF.search(c.get(path).text)[1]


def assert_no_numbers(text: str) -> None:
    for n in NUMBERS:
        assert n not in text and n not in re.sub(r"\D", "", text), "a number in the clear"
    assert not TWELVE_DIGITS.search(text)


def audit_records(config) -> list[dict]:
    lines = (Path(config.store.path) / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines if x.strip()]


# -- login, sessions, headers --------------------------------------------------------


def test_login_page_headers_and_cookie_flags(env) -> None:
    config, app, _ = env
    c = client(app)
    r = c.get("/login")
    assert r.status_code == 200
    assert "ログイン" in r.text and "Log in" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "<script" not in r.text
    assert c.get("/static/style.css").headers["content-type"].startswith("text/css")
    r = c.post("/login", data={"username": "kacho", "password": PASSWORD, "csrf": CSRF.search(r.text)[1]},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/held"
    cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("mailguard_session=")][0]
    flags = cookie.lower()
    assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
    rec = [a for a in audit_records(config) if a["event"] == "web-login"][-1]
    assert rec["operator"] == "kacho" and rec["ip"] == "192.0.2.10"


def test_login_refuses_wrong_password_missing_csrf_and_is_rate_limited(env) -> None:
    config, app, _ = env
    c = client(app)
    tok = token(c, "/login")
    assert c.post("/login", data={"username": "kacho", "password": PASSWORD}).status_code == 403
    for _ in range(config.web.login_attempts):
        tok = token(c, "/login")
        r = c.post("/login", data={"username": "kacho", "password": "wrong password", "csrf": tok})
        assert r.status_code == 401 and "違います" in r.text
    tok = token(c, "/login")
    r = c.post("/login", data={"username": "kacho", "password": PASSWORD, "csrf": tok})
    assert r.status_code == 429, "the right password after too many failures is still refused"
    failed = [a for a in audit_records(config) if a["event"] == "web-login-failed"]
    assert len(failed) == config.web.login_attempts + 1 and all(a["ip"] == "192.0.2.10" for a in failed)
    # The address is locked out for everyone; another person elsewhere is not.
    tok = token(c, "/login")
    assert c.post("/login", data={"username": "bucho", "password": PASSWORD, "csrf": tok}).status_code == 429
    login(app, "bucho", addr="192.0.2.11")


def test_unknown_and_disabled_users_cannot_log_in_and_a_disabled_session_ends(env) -> None:
    config, app, _ = env
    c = client(app)
    r = c.post("/login", data={"username": "nobody", "password": PASSWORD, "csrf": token(c, "/login")})
    assert r.status_code == 401
    k = login(app, "kacho")
    app.state.web.users.disable("kacho")
    r = k.get("/held", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = c.post("/login", data={"username": "kacho", "password": PASSWORD, "csrf": token(c, "/login")})
    assert r.status_code == 401


def test_session_expires_when_idle_and_logout_ends_it(env) -> None:
    config, app, _ = env
    c = login(app, "kacho")
    assert c.get("/held").status_code == 200
    app.state.web.sessions.idle = 0.05
    time.sleep(0.1)
    r = c.get("/held", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    app.state.web.sessions.idle = 1800
    c = login(app, "kacho")
    tok = token(c, "/held")
    assert c.post("/logout", data={"csrf": "wrong"}).status_code == 403
    r = c.post("/logout", data={"csrf": tok}, follow_redirects=False)
    assert r.status_code == 303
    assert c.get("/held", follow_redirects=False).status_code == 303


def test_pages_need_a_login(env) -> None:
    config, app, _ = env
    h = hold(config, f"yamada@{JINJI}", ["x@example.com"])
    c = client(app)
    for path in ("/", "/held", f"/held/{h.id}"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] in ("/login", "/held"), path
    for action in ("approve", "reject", "cancel"):
        r = c.post(f"/held/{h.id}/{action}", data={"reason": "x", "csrf": "x"}, follow_redirects=False)
        assert r.status_code == 403, action
    assert open_held(config, h.id).state == "held"


# -- who sees what -----------------------------------------------------------------


def open_held(config, hold_id):
    from mailguard.holdstore import open_store

    return open_store(config).get(hold_id)


def test_list_shows_what_each_person_may_see(env) -> None:
    config, app, _ = env
    jinji = hold(config, f"yamada@{JINJI}", ["x@example.com"], subject="人事の名簿")
    soumu = hold(config, f"sato@{SOUMU}", ["y@example.com"], subject="総務の名簿")
    other = hold(config, f"suzuki@{INTERNAL}", ["z@example.com"], subject="その他")
    seen = {}
    for name in PEOPLE:
        text = login(app, name).get("/held").text
        seen[name] = {h.id for h in (jinji, soumu, other) if h.id in text}
        assert_no_numbers(text)
    assert seen == {
        "kacho": {jinji.id}, "bucho": {jinji.id}, "soumu-kacho": {soumu.id},
        "yamada": {jinji.id}, "root-admin": {jinji.id, soumu.id, other.id},
    }


def test_detail_shows_masked_facts_and_refuses_others(env) -> None:
    config, app, _ = env
    h = hold(config, f"yamada@{JINJI}", ["x@example.com", f"boss@{JINJI}"], approvals=2)
    k = login(app, "kacho")
    r = k.get(f"/held/{h.id}")
    assert r.status_code == 200
    text = r.text
    assert_no_numbers(text)
    assert "********" + NUMBERS[0][-4:] in text and "attachment:名簿.csv!B2" in text
    assert "名簿.csv" in text and "external-recipient" in text and "外部宛てのため保留しました" in text
    assert re.search(r"外部 / external</span>\s*x@example.com", text)
    assert re.search(r"内部 / internal</span>\s*boss@", text)
    assert "0 / 2" in text and 'action="/held/%s/approve"' % h.id in text
    s = login(app, "soumu-kacho")
    assert s.get(f"/held/{h.id}").status_code == 403
    r = s.post(f"/held/{h.id}/approve", data={"reason": "ok", "csrf": token(s, "/held")})
    assert r.status_code == 403
    assert any(a["event"] == "web-denied" and a["operator"] == "soumu-kacho" for a in audit_records(config))
    assert k.get("/held/notanidatall").status_code == 404
    assert k.get("/held/..%2F..%2Fetc").status_code == 404
    assert k.get("/held/abcdefghjkmnpqrs").status_code == 404


# -- actions -----------------------------------------------------------------------


def test_two_person_rule_blank_reason_csrf_and_release_after_250(env, sink: Sink) -> None:
    config, app, _ = env
    h = hold(config, f"yamada@{JINJI}", ["x@example.com"], approvals=2)
    k = login(app, "kacho")
    tok = token(k, f"/held/{h.id}")
    assert k.post(f"/held/{h.id}/approve", data={"reason": "ok"}).status_code == 403
    assert k.post(f"/held/{h.id}/approve", data={"reason": "ok", "csrf": "forged"}).status_code == 403
    r = k.post(f"/held/{h.id}/approve", data={"reason": "   ", "csrf": tok})
    assert r.status_code == 400 and "理由を入力してください" in r.text
    r = k.post(f"/held/{h.id}/approve", data={"reason": "送付先を確認済み", "csrf": tok})
    assert r.status_code == 200 and "承認を記録しました (1 / 2)" in r.text
    r = k.post(f"/held/{h.id}/approve", data={"reason": "again", "csrf": tok})
    assert r.status_code == 409 and "すでに承認" in r.text
    assert sink.messages == [] and open_held(config, h.id).state == "held"
    # The sender may not approve their own mail (even with the right token).
    y = login(app, "yamada")
    assert y.post(f"/held/{h.id}/approve", data={"reason": "mine", "csrf": token(y, "/held")}).status_code == 403
    b = login(app, "bucho")
    r = b.post(f"/held/{h.id}/approve", data={"reason": "課長と確認", "csrf": token(b, f"/held/{h.id}")})
    assert r.status_code == 200 and "送信しました" in r.text
    assert open_held(config, h.id).state == "released"
    got = sink.wait_for(lambda m: "x@example.com" in m[1])
    assert got and got[0][0] == f"yamada@{JINJI}"
    recs = audit_records(config)
    actions = [a for a in recs if a["event"] == "web-action"]
    assert [(a["operator"], a["action"], a["ip"]) for a in actions] == [
        ("kacho", "approve", "192.0.2.10"), ("kacho", "approve", "192.0.2.10"), ("bucho", "approve", "192.0.2.10")]
    release = [a for a in recs if a["event"] == "release"][-1]
    assert release["approvers"] == ["kacho", "bucho"] and release["reply"].startswith("250")
    # Nothing more to do once released.
    r = b.post(f"/held/{h.id}/reject", data={"reason": "late", "csrf": token(b, f"/held/{h.id}")})
    assert r.status_code == 409


def test_upstream_refusal_keeps_it_held_and_the_page_says_so(env, sink: Sink) -> None:
    config, app, _ = env
    h = hold(config, f"yamada@{JINJI}", ["x@example.com"])
    sink.refuse_data = "554 5.7.1 refused by the test"
    a = login(app, "root-admin")
    r = a.post(f"/held/{h.id}/approve", data={"reason": "ok", "csrf": token(a, f"/held/{h.id}")})
    assert r.status_code == 502 and "保留のまま" in r.text and "stays held" in r.text
    assert open_held(config, h.id).state == "held"
    sink.refuse_data = ""
    r = a.post(f"/held/{h.id}/approve", data={"reason": "retry", "csrf": token(a, f"/held/{h.id}")})
    assert r.status_code == 200 and open_held(config, h.id).state == "released"


def test_reject_by_approver_and_cancel_by_sender(env, sink: Sink) -> None:
    config, app, _ = env
    h1 = hold(config, f"yamada@{JINJI}", ["x@example.com"])
    h2 = hold(config, f"yamada@{JINJI}", ["y@example.com"])
    y = login(app, "yamada")
    page = y.get(f"/held/{h1.id}").text
    assert "/cancel" in page and "/approve" not in page and "/reject" not in page
    assert y.post(f"/held/{h1.id}/reject", data={"reason": "x", "csrf": token(y, "/held")}).status_code == 403
    r = y.post(f"/held/{h1.id}/cancel", data={"reason": "宛先を間違えました", "csrf": token(y, "/held")})
    assert r.status_code == 200 and "取り消しました" in r.text
    assert open_held(config, h1.id).state == "rejected"
    k = login(app, "kacho")
    assert k.post(f"/held/{h2.id}/cancel", data={"reason": "x", "csrf": token(k, "/held")}).status_code == 403
    r = k.post(f"/held/{h2.id}/reject", data={"reason": "外部に送らないこと", "csrf": token(k, "/held")})
    assert r.status_code == 200 and "差し戻しました" in r.text
    done = open_held(config, h2.id)
    assert done.state == "rejected" and done.decided_by == "kacho"
    notices = sink.wait_for(lambda m: m[1] == [f"yamada@{JINJI}"])
    assert notices, "the sender heard of the rejection"
    assert all(n[1] != ["x@example.com"] and n[1] != ["y@example.com"] for n in sink.messages)


def test_forwarded_address_and_sso_header_only_from_trusted_proxies(tmp_path: Path, sink: Sink) -> None:
    cfg = web_config(tmp_path, sink.port, extra='sso_header = "X-Remote-User"\ntrusted_proxies = ["127.0.0.1/32"]')
    config = load(cfg)
    add_people(config)
    app = create_app(config)
    proxy = TestClient(app, base_url="https://testserver", client=("127.0.0.1", 50000))
    r = proxy.get("/held", headers={"X-Remote-User": "kacho", "X-Forwarded-For": "203.0.113.7"})
    assert r.status_code == 200 and "kacho" in r.text
    rec = [a for a in audit_records(config) if a["event"] == "web-login"][-1]
    assert rec["method"] == "sso-header" and rec["ip"] == "203.0.113.7"
    stranger = TestClient(app, base_url="https://testserver", client=("192.0.2.99", 50000))
    r = stranger.get("/held", headers={"X-Remote-User": "kacho"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = proxy.get("/held", headers={"X-Remote-User": "nobody"}, follow_redirects=False)
    assert r.status_code == 303


# -- the CLI ----------------------------------------------------------------------


def test_user_cli_add_list_disable(tmp_path: Path, sink: Sink) -> None:
    import subprocess
    import sys

    cfg = web_config(tmp_path, sink.port)
    config = load(cfg)

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mailguard", "-c", str(cfg), "user", *args],
                              input=stdin.encode(), capture_output=True, timeout=60)

    r = run("add", "kacho", "--role", "approver", "--email", f"Kacho@{JINJI}", stdin="a long password\n")
    assert r.returncode == 0, r.stderr
    assert run("add", "kacho", "--role", "approver", stdin="a long password\n").returncode == 1
    assert run("add", "short", "--role", "sender", stdin="abc\n").returncode == 2
    assert run("add", "bad name", "--role", "sender", stdin="a long password\n").returncode == 2
    assert run("add", "x", "--role", "boss", stdin="a long password\n").returncode == 2
    path = Path(config.store.path) / "web-users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "a long password" not in path.read_text() and "scrypt$" in path.read_text()
    r = run("list", "--json")
    rows = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert rows == [{"name": "kacho", "role": "approver", "email": f"kacho@{JINJI}", "disabled": False,
                     "created": rows[0]["created"]}]
    assert run("disable", "kacho").returncode == 0
    assert "disabled" in run("list").stdout.decode()
    assert run("disable", "nobody").returncode == 1
    from mailguard.web.users import UserStore

    assert UserStore(config.store.path).verify("kacho", "a long password") is None


# -- notices from a real relay -----------------------------------------------------


def test_hold_notices_link_to_the_page_and_reach_the_approvers(tmp_path: Path, sink: Sink) -> None:
    import base64
    import email
    from email.policy import default

    cfg = web_config(tmp_path, sink.port)
    config = load(cfg)
    add_people(config)
    relay = Serve(cfg, tmp_path / "serve.log").start()
    try:
        code, _ = send(relay.port, ["someone@example.com"], message_with_numbers(NUMBERS[:2]),
                       mail_from=f"yamada@{JINJI}")
        assert code == 250
        to_sender = sink.wait_for(lambda m: m[1] == [f"yamada@{JINJI}"])
        to_approvers = sink.wait_for(lambda m: f"kacho@{JINJI}" in m[1])
    finally:
        relay.stop()
    assert to_sender and to_approvers
    assert sorted(to_approvers[0][1]) == sorted([f"kacho@{JINJI}", f"bucho@{JINJI}"])
    held = [h for h in open_store_list(config)][0]
    link = f"https://mailguard.{INTERNAL}/held/{held.id}"
    for m in (to_sender[0], to_approvers[0]):
        body = email.message_from_bytes(m[2], policy=default).get_content()
        assert link in body
        assert_no_numbers(body)
    assert not sink.to("someone@example.com")


def open_store_list(config):
    from mailguard.holdstore import open_store

    return open_store(config).list()
