"""`mailguard web`: serve the approval page (mailguard/web/) on web.listen.

Runs uvicorn in the foreground, one process; TLS belongs to the reverse proxy in
front of it (docs/web.md). The page listens on loopback unless web.listen says
otherwise, and then warns when session cookies are not Secure.

SECURITY: see mailguard/web/app.py. DIAGNOSTICS: uvicorn's access log is off (paths
carry hold ids only, but the page audits what matters); errors go to stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from mailguard.cli import EXIT_OK, add_config_option
from mailguard.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="serve the approval page (web.listen, default 127.0.0.1:8025)")
    add_config_option(p)
    p.set_defaults(func=run_web)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run_web(args: argparse.Namespace, config: Config) -> int:
    import uvicorn

    from mailguard.config import split_hostport
    from mailguard.log import configure_logging
    from mailguard.web.app import create_app

    configure_logging(config.log.level)
    host, port = split_hostport(config.web.listen)
    if not _loopback(host) and not config.web.cookie_secure:
        print("mailguard web: warning: web.cookie_secure = false on a non-loopback address; "
              "session cookies can travel in the clear", file=sys.stderr)
    app = create_app(config)
    print(f"mailguard web: listening on http://{config.web.listen}/", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning",
                proxy_headers=False, server_header=False, date_header=True)
    return EXIT_OK
