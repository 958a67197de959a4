"""What the running relay last did with its configuration, for `mailguard status`.

    record_state(config, policy, *, result, error="", previous=None) -> dict
        written by serve at start and after every SIGHUP (reloaded or refused)
    read_state(config) -> dict | None                  status reads it
    policy_fingerprint(policy) -> dict                 dir, files, rules, sha256

The file is ``<store.path>/relay-state.json``, written whole with durable.py
(temporary name, fsync, rename), so a reader sees the old state or the new one,
never half. A refused reload keeps the policy in force of the previous record:
that is the policy the relay still runs (issue 13.8).

Fields: ``pid``, ``started`` (ISO 8601 UTC), ``source`` (the config file),
``last_reload`` (``result`` "started" | "reloaded" | "refused", ``time``,
``error``), ``policy`` (``dir``, ``files``, ``rules``, ``summary``, ``sha256``
over the policy files' bytes as read at load).

SECURITY: no message content; errors are the config/policy loader's messages
(file, line, reason), scrubbed. DIAGNOSTICS: none; serve logs a failed write.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailguard.durable import write_file
from mailguard.log import scrub

STATE_FILE = "relay-state.json"
MAX_ERROR = 4000


def state_path(store_path: str | os.PathLike[str]) -> Path:
    return Path(store_path) / STATE_FILE


def policy_fingerprint(policy: Any, policy_dir: str) -> dict[str, Any]:
    """The policy in force, so an admin can tell which edit is running."""
    digest = hashlib.sha256()
    files = [str(f) for f in getattr(policy, "files", ())]
    for f in files:
        try:
            digest.update(Path(f).name.encode() + b"\0" + Path(f).read_bytes() + b"\0")
        except OSError:
            digest.update(Path(f).name.encode() + b"\0?\0")
    return {
        "dir": policy_dir,
        "files": [Path(f).name for f in files],
        "rules": len(getattr(policy, "rules", ())),
        "summary": policy.summary() if hasattr(policy, "summary") else "",
        "sha256": digest.hexdigest(),
    }


def record_state(store_path: str, *, result: str, source: str = "", policy: dict[str, Any] | None = None,
                 error: str = "", previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the relay's state after a start or a reload; returns what was written.
    ``policy`` None keeps the previous record's policy (a refused reload)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    prev = previous or {}
    state = {
        "pid": os.getpid(),
        "started": prev.get("started") or now,
        "source": source or prev.get("source", ""),
        "last_reload": {"result": result, "time": now, "error": scrub(error)[:MAX_ERROR]},
        "policy": policy if policy is not None else prev.get("policy"),
    }
    path = state_path(store_path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(path, json.dumps(state, ensure_ascii=False, indent=1).encode("utf-8") + b"\n",
               tmp=path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp"))
    return state


def read_state(store_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last recorded state, None if serve never wrote one; OSError/ValueError propagate."""
    try:
        text = state_path(store_path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    state = json.loads(text)
    return state if isinstance(state, dict) else None
