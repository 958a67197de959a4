"""The approval page: Starlette, server-rendered Jinja2, no JavaScript needed.

    create_app(config, *, store=None) -> Starlette
    GET  /login                 the login form          POST /login, POST /logout
    GET  /held                  held mail this person may see
    GET  /held/<id>             one held message (masked), with the forms this person may use
    POST /held/<id>/approve     approve; delivers once enough distinct people approved
    POST /held/<id>/reject      approver or admin: refuse it (the sender is notified)
    POST /held/<id>/cancel      the sender: take it back (a reject, notified the same way)
    GET  /static/style.css

Every action goes through mailguard.hold (release_message, reject_message): the
two-person rule, blank-reason refusal and "released only after the upstream's
250" are the CLI's own rules, not copies. Each action is first recorded in the
audit log as ``web-action`` with the person, their role and their address; logins
are ``web-login`` / ``web-login-failed`` / ``web-logout``.

SECURITY: untrusted input is the HTTP request (form fields, cookies, the path id,
headers) and the held message's own texts. Ids are validated before use; forms
need the session's CSRF token (the login form a cookie-bound one); sessions are
server-side with a Secure, HttpOnly, SameSite=Strict cookie; failed logins are
limited per name and per address; a held message the person may not see is a 403.
Pages are rendered with autoescape and the whole HTML is run through the digit
scrubber, so no number appears in the clear even from a field we forgot; the
message body and attachments are never shown (attachment names only).
Headers: CSP default-src 'self' with frame-ancestors 'none', nosniff, no-referrer,
no-store.

DIAGNOSTICS: logs ``web_login``, ``web_login_failed``, ``web_action`` with the hold id
and person; never content.
"""

from __future__ import annotations

import secrets
import unicodedata
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailguard.config import Config
from mailguard.errors import AuditError, MailguardError, NotFound, StoreError
from mailguard.facts import domain_of, is_internal
from mailguard.holdstore import HoldStore, open_store
from mailguard.localtime import show_time
from mailguard.log import get_logger, scrub
from mailguard.policy import split_notice
from mailguard.heldrows import ID_RE
from mailguard.records import HELD
from mailguard.web.auth import Access, LoginLimiter, Session, Sessions, client_address, same_token, trusted_peer
from mailguard.web.users import NAME_RE, User, UserStore

log = get_logger(component="web")
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "mailguard_session"
LOGIN_COOKIE = "mailguard_login"
MAX_REASON = 500
MAX_FORM = 16 * 1024
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _mask(value: Any) -> str:
    """Any text from a held message or a person, fit for the page: NFKC, one line, digits masked."""
    return scrub(" ".join(unicodedata.normalize("NFKC", str(value if value is not None else "")).split()))


class WebApp:
    def __init__(self, config: Config, store: HoldStore | None = None) -> None:
        self.config = config
        self.web = config.web
        self.store = store or open_store(config)
        self.users = UserStore(config.store.path)
        self.sessions = Sessions(self.web.session_minutes)
        self.limiter = LoginLimiter(self.web.login_attempts)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(("html",)), trim_blocks=True, lstrip_blocks=True)
        self.env.filters["m"] = _mask
        self.env.filters["t"] = lambda v: show_time(v, config.organisation.timezone)

    # -- plumbing ------------------------------------------------------------

    def ip(self, request: Request) -> str:
        peer = request.client.host if request.client else ""
        return client_address(peer, request.headers, self.web.trusted_proxies)

    def render(self, request: Request, template: str, status: int = 200, session: Session | None = None,
               **ctx: Any) -> HTMLResponse:
        flashes = []
        if session is not None:
            flashes, session.flash = session.flash, []
        html = self.env.get_template(template).render(session=session, flashes=flashes, **ctx)
        # The last line of defence (DESIGN §3.3): no 12-digit run leaves in a page.
        return HTMLResponse(scrub(html), status_code=status)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.web.cookie_secure,
                            httponly=True, samesite="strict")

    def identify(self, request: Request) -> tuple[User | None, Session | None, bool]:
        """(user, session, fresh): from the session cookie, else from the SSO header
        of a trusted proxy (a fresh session the caller must set as a cookie)."""
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        sso_name = None
        if self.web.sso_header:
            peer = request.client.host if request.client else ""
            if trusted_peer(peer, self.web.trusted_proxies):
                sso_name = request.headers.get(self.web.sso_header, "").strip() or None
        if session is not None and sso_name is not None and session.user != sso_name:
            # Behind the SSO proxy its header is who is asking, not an older cookie.
            self.sessions.drop(session.sid)
            session = None
        if session is not None:
            user = self.users.get(session.user)
            if user is None or user.disabled:
                self.sessions.drop_user(session.user)
                return None, None, False
            return user, session, False
        if sso_name is not None and NAME_RE.match(sso_name):
            user = self.users.get(sso_name)
            if user is not None and not user.disabled:
                ip = self.ip(request)
                session = self.sessions.new(user.name, ip)
                self.audit("web-login", user.name, ip, method="sso-header", role=user.role)
                return user, session, True
        return None, None, False

    def audit(self, event: str, operator: str, ip: str, **fields: Any) -> None:
        self.store.audit.append(event, operator=operator, ip=ip, via="web", **fields)

    async def form(self, request: Request) -> dict[str, str]:
        if int(request.headers.get("content-length") or 0) > MAX_FORM:
            return {}
        data = await request.form(max_files=0, max_fields=20)
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def forbidden(self, request: Request, session: Session | None, user: User | None,
                  status: int = 403) -> HTMLResponse:
        return self.render(request, "error.html", status=status, session=session, user=user, status_code=status)

    def finish(self, response: Response, session: Session | None, fresh: bool) -> Response:
        if fresh and session is not None:
            self.set_cookie(response, SESSION_COOKIE, session.sid)
        return response

    # -- login -----------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        user, session, fresh = self.identify(request)
        if user is not None:
            return self.finish(RedirectResponse("/held", status_code=303), session, fresh)
        return self.login_form(request)

    def login_form(self, request: Request, status: int = 200, error: str = "", name: str = "") -> Response:
        token = secrets.token_urlsafe(32)
        response = self.render(request, "login.html", status=status, login_csrf=token, error=error,
                               name=name if NAME_RE.match(name or "") else "")
        self.set_cookie(response, LOGIN_COOKIE, token, max_age=3600)
        return response

    async def login(self, request: Request) -> Response:
        ip = self.ip(request)
        form = await self.form(request)
        name = form.get("username", "").strip()[:64]
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
            return self.login_form(request, 403, "csrf", name)
        if self.limiter.blocked(name, ip):
            self.audit("web-login-failed", _mask(name) or "-", ip, reason="rate limited")
            log.warning("web_login_failed", ip=ip, reason="rate limited")
            return self.login_form(request, 429, "limited", name)
        user = self.users.verify(name, form.get("password", ""))
        if user is None:
            self.limiter.failed(name, ip)
            self.audit("web-login-failed", _mask(name) or "-", ip, reason="bad name or password")
            log.warning("web_login_failed", ip=ip, reason="bad name or password")
            return self.login_form(request, 401, "bad", name)
        self.limiter.succeeded(name)
        session = self.sessions.new(user.name, ip)
        self.audit("web-login", user.name, ip, method="password", role=user.role)
        log.info("web_login", user=user.name, ip=ip)
        response = RedirectResponse("/held", status_code=303)
        self.set_cookie(response, SESSION_COOKIE, session.sid)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        user, session, _ = self.identify(request)
        form = await self.form(request)
        if session is None or user is None:
            return RedirectResponse("/login", status_code=303)
        if not same_token(form.get("csrf"), session.csrf):
            return self.forbidden(request, session, user)
        self.sessions.drop(session.sid)
        self.audit("web-logout", user.name, self.ip(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- pages -----------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return RedirectResponse("/held", status_code=303)

    async def held_list(self, request: Request) -> Response:
        user, session, fresh = self.identify(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        access = Access(user, self.web)
        rows = [h for h in self.store.list(HELD) if access.may_view(h)]
        items = [{"held": h, "role": access.role_here(h), "external": self.external_count(h)} for h in rows]
        return self.finish(self.render(request, "list.html", session=session, user=user, items=items), session, fresh)

    def external_count(self, held: Any) -> int:
        internal = self.config.organisation.internal_domains
        return sum(1 for r in held.rcpt_tos if not is_internal(domain_of(r.lower()), internal))

    def lookup(self, request: Request) -> tuple[User | None, Session | None, bool, Any, Response | None]:
        """The person and the held message of /held/<id>..., or the response that refuses."""
        user, session, fresh = self.identify(request)
        if user is None:
            return None, None, False, None, RedirectResponse("/login", status_code=303)
        hold_id = request.path_params["hold_id"]
        held = None
        if ID_RE.match(hold_id):
            try:
                held = self.store.get(hold_id)
            except (NotFound, StoreError):
                held = None
        if held is None:
            return user, session, fresh, None, self.forbidden(request, session, user, 404)
        if not Access(user, self.web).may_view(held):
            self.audit("web-denied", user.name, self.ip(request), id=held.id, path=request.url.path[:100])
            return user, session, fresh, None, self.forbidden(request, session, user, 403)
        return user, session, fresh, held, None

    async def held_detail(self, request: Request) -> Response:
        user, session, fresh, held, refusal = self.lookup(request)
        if refusal is not None:
            return self.finish(refusal, session, fresh)
        return self.finish(self.detail(request, user, session, held), session, fresh)

    def detail(self, request: Request, user: User, session: Session, held: Any, status: int = 200,
               error: str = "", reason: str = "") -> HTMLResponse:
        access = Access(user, self.web)
        internal = self.config.organisation.internal_domains
        recipients = [{"address": r, "internal": is_internal(domain_of(r.lower()), internal)} for r in held.rcpt_tos]
        notice_ja, notice_en = split_notice(held.notice or "")
        return self.render(
            request, "detail.html", status=status, session=session, user=user, held=held,
            recipients=recipients, attachments=self.attachment_names(held), notice_ja=notice_ja.strip(),
            notice_en=notice_en.strip(), may_approve=access.may_approve(held), may_reject=access.may_reject(held),
            may_cancel=access.may_cancel(held), is_sender=access.is_sender(held), error=error, reason=reason,
            held_open=held.state == HELD,
        )

    def attachment_names(self, held: Any) -> list[str]:
        """The names only (RFC 2231 decoded, masked), from the stored message; never the bytes."""
        if held.purged_at:
            return []
        try:
            _, data = self.store.read_message(held.id)
            msg = BytesParser(policy=default_policy).parsebytes(data)
            names = []
            for part in msg.walk():
                name = part.get_filename()
                if name:
                    names.append(_mask(name)[:200])
                if len(names) >= 100:
                    break
            return names
        except Exception:  # noqa: BLE001 - a hostile message must not break the page
            return ["(読み取れません / could not be read)"]

    # -- actions ---------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        action = request.path_params["action"]
        user, session, fresh, held, refusal = self.lookup(request)
        if refusal is not None:
            if user is None:  # no session: a form post from nowhere
                return self.forbidden(request, None, None)
            return self.finish(refusal, session, fresh)
        form = await self.form(request)
        if not same_token(form.get("csrf"), session.csrf):
            return self.forbidden(request, session, user)
        access = Access(user, self.web)
        allowed = {"approve": access.may_approve, "reject": access.may_reject, "cancel": access.may_cancel}
        if action not in allowed:
            return self.forbidden(request, session, user, 404)
        if not allowed[action](held):
            self.audit("web-denied", user.name, self.ip(request), id=held.id, action=action)
            return self.forbidden(request, session, user)
        reason = " ".join(form.get("reason", "").split())[:MAX_REASON]
        if not reason:
            return self.detail(request, user, session, held, 400, error="blank")
        ip = self.ip(request)
        try:
            self.audit("web-action", user.name, ip, action=action, id=held.id, role=access.role_here(held),
                       reason=reason)
        except AuditError:
            return self.detail(request, user, session, held, 503, error="audit", reason=reason)
        log.info("web_action", id=held.id, user=user.name, action=action, ip=ip)
        from mailguard.hold import reject_message, release_message

        try:
            if action == "approve":
                out = await release_message(self.config, self.store, self.store.audit, held.id, user.name, reason)
                if out.delivered:
                    session.flash.append(("ok", "released"))
                elif out.error:
                    fresh_held = self.store.get(held.id)
                    return self.detail(request, user, session, fresh_held, 502, error="upstream",
                                       reason=reason) if not out.refused else self.detail(
                        request, user, session, fresh_held, 502, error="partial", reason=reason)
                else:
                    session.flash.append(("ok", f"approved:{out.approvals}:{out.needed}"))
            else:
                await reject_message(self.config, self.store, self.store.audit, held.id, user.name, reason)
                session.flash.append(("ok", "cancelled" if action == "cancel" else "rejected"))
        except StoreError as exc:
            current = self.store.get(held.id)
            text = str(exc)
            kind = "already" if "already approved" in text else "busy" if "busy" in text else "state"
            return self.detail(request, user, session, current, 409, error=kind, reason=reason)
        except MailguardError as exc:
            log.error("web_action_failed", id=held.id, error=str(exc)[:200])
            return self.detail(request, user, session, self.store.get(held.id), 503, error="failed", reason=reason)
        return RedirectResponse(f"/held/{quote(held.id)}", status_code=303)

    async def style(self, request: Request) -> Response:
        return Response((HERE / "static" / "style.css").read_bytes(), media_type="text/css")


def create_app(config: Config, *, store: HoldStore | None = None) -> Starlette:
    web = WebApp(config, store)
    routes = [
        Route("/", web.index),
        Route("/login", web.login_page, methods=["GET"]),
        Route("/login", web.login, methods=["POST"]),
        Route("/logout", web.logout, methods=["POST"]),
        Route("/held", web.held_list, methods=["GET"]),
        Route("/held/{hold_id}", web.held_detail, methods=["GET"]),
        Route("/held/{hold_id}/{action}", web.act, methods=["POST"]),
        Route("/static/style.css", web.style, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.web = web
    app.add_middleware(SecurityHeaders)
    return app
