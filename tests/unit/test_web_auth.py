"""The approval page's building blocks without a server: password hashes, approver
assignment, the address a person came from, login limits, sessions, permissions."""

from __future__ import annotations

import time

import pytest

from mailguard.config import WebConfig
from mailguard.records import HeldMessage
from mailguard.web.auth import Access, LoginLimiter, Sessions, client_address, same_token
from mailguard.web.users import User, UserError, UserStore, approvers_for, check_password, hash_password

WEB = WebConfig(approvers={"jinji.city.example.lg.jp": ("kacho",), "boss@city.example.lg.jp": ("bucho",)})


def held(mail_from: str) -> HeldMessage:
    return HeldMessage(id="abcdefghjkmnpqrs", state="held", rule="r", reasons=(), notice="", mail_from=mail_from,
                       rcpt_tos=("x@example.com",), persons=1, findings=(), fingerprints=(), unscannable=(),
                       subject="", message_id="", size=1, sha256="", approvals_required=2, approvals=(),
                       received="2026-01-01T00:00:00+00:00", updated="2026-01-01T00:00:00+00:00")


def test_password_hash_is_salted_scrypt_and_checks() -> None:
    a, b = hash_password("a long password"), hash_password("a long password")
    assert a != b and a.startswith("scrypt$32768$8$1$")
    assert check_password(a, "a long password")
    assert not check_password(a, "a long passwore")
    assert not check_password("garbage", "x") and not check_password("md5$x$y$z$a$b", "x")


@pytest.mark.parametrize("sender, names", [
    ("yamada@jinji.city.example.lg.jp", {"kacho"}),
    ("YAMADA@Jinji.City.Example.LG.JP", {"kacho"}),
    ("a@sub.jinji.city.example.lg.jp", {"kacho"}),
    ("a@notjinji.city.example.lg.jp", set()),
    ("boss@city.example.lg.jp", {"bucho"}),
    ("other@city.example.lg.jp", set()),
    ("<>", set()),
])
def test_approvers_for_address_domain_and_subdomain(sender: str, names: set[str]) -> None:
    assert approvers_for(WEB, sender) == names


def test_client_address_believes_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = ("127.0.0.1/32",)
    assert client_address("127.0.0.1", {"x-forwarded-for": "10.0.0.1, 203.0.113.9"}, trusted) == "203.0.113.9"
    assert client_address("192.0.2.1", {"x-forwarded-for": "203.0.113.9"}, trusted) == "192.0.2.1"
    assert client_address("127.0.0.1", {"x-forwarded-for": "not-an-ip"}, trusted) == "127.0.0.1"


def test_login_limiter_per_name_and_address() -> None:
    lim = LoginLimiter(2)
    lim.failed("kacho", "192.0.2.1")
    assert not lim.blocked("kacho", "192.0.2.1")
    lim.failed("kacho", "192.0.2.2")
    assert lim.blocked("kacho", "192.0.2.9") and not lim.blocked("bucho", "192.0.2.9")
    lim.failed("bucho", "192.0.2.1")
    assert lim.blocked("someone", "192.0.2.1")


def test_sessions_expire_and_tokens_compare() -> None:
    s = Sessions(30)
    one = s.new("kacho", "192.0.2.1")
    assert s.get(one.sid) is one and s.get("nope") is None and s.get(None) is None
    s.idle = 0.01
    time.sleep(0.02)
    assert s.get(one.sid) is None
    assert same_token("abc", "abc") and not same_token("abc", "abd") and not same_token("", "")


def test_access_rules() -> None:
    kacho = Access(User("kacho", "approver", "kacho@jinji.city.example.lg.jp"), WEB)
    sender = Access(User("yamada", "sender", "yamada@jinji.city.example.lg.jp"), WEB)
    admin = Access(User("root", "admin", "root@city.example.lg.jp"), WEB)
    mine = held("yamada@jinji.city.example.lg.jp")
    other = held("sato@soumu.city.example.lg.jp")
    own_by_kacho = held("kacho@jinji.city.example.lg.jp")
    assert kacho.may_approve(mine) and kacho.may_reject(mine) and not kacho.may_cancel(mine)
    assert not kacho.may_view(other)
    assert kacho.may_view(own_by_kacho) and not kacho.may_approve(own_by_kacho), "never one's own mail"
    assert sender.may_view(mine) and sender.may_cancel(mine) and not sender.may_approve(mine)
    assert not sender.may_view(other)
    assert admin.may_view(other) and admin.may_approve(other)


def test_user_store_add_disable_verify(tmp_path) -> None:
    users = UserStore(tmp_path)
    users.add("kacho", "approver", "a long password", email="Kacho@Example.jp")
    assert users.get("kacho").email == "kacho@example.jp"
    assert users.verify("kacho", "a long password").role == "approver"
    assert users.verify("kacho", "wrong password") is None and users.verify("x y", "z") is None
    with pytest.raises(UserError):
        users.add("kacho", "approver", "a long password")
    with pytest.raises(UserError):
        users.add("new", "approver", "short")
    users.disable("kacho")
    assert users.verify("kacho", "a long password") is None
    assert (tmp_path / "web-users.json").stat().st_mode & 0o777 == 0o600
