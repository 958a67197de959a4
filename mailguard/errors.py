"""The exception tree.

    MailguardError
    ├── ConfigError          bad mailguard.toml (names file, key and reason)
    ├── PolicyError          bad policy file (names file, line and reason)
    ├── ForwardError         the upstream did not take the message
    │   ├── UpstreamRefused  the upstream answered 4xx/5xx (carries code and text)
    │   ├── UpstreamUnreachable  no connection (refused, DNS, TLS, AUTH failed)
    │   ├── UpstreamTimeout  the upstream stopped answering mid-conversation
    │   └── UpstreamBusy     every link (upstream.max_connections) stayed in use too long
    ├── ScanError            the scanner itself failed (tempfail, never pass)
    ├── StoreError           the hold store could not do what was asked
    │   └── NotFound         no held message with that id
    └── AuditError           the audit log is broken or unwritable

Foreign exceptions are translated where they enter (``raise ForwardError(...) from
exc``); the CLI maps this tree to exit codes in exactly one place.
"""

from __future__ import annotations


class MailguardError(Exception):
    """Root of every error mailguard raises on purpose."""


class ConfigError(MailguardError):
    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")


class PolicyError(MailguardError):
    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {reason}")


class ForwardError(MailguardError):
    """The upstream could not be reached or dropped the connection."""


class UpstreamRefused(ForwardError):
    def __init__(self, code: int, text: str) -> None:
        self.code, self.text = code, text
        super().__init__(f"upstream replied {code} {text}")


class UpstreamUnreachable(ForwardError):
    """No usable connection to the upstream: refused, unresolvable, TLS or AUTH failure."""


class UpstreamTimeout(ForwardError):
    """The upstream did not answer within upstream.timeout."""


class UpstreamBusy(ForwardError):
    """No upstream link came free within upstream.connection_wait (451 4.4.5)."""


class ScanError(MailguardError):
    pass


class StoreError(MailguardError):
    pass


class NotFound(StoreError):
    pass


class AuditError(MailguardError):
    pass
