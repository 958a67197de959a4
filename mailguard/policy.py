"""Facts + Policy -> Decision (pure).

INTERFACE (fixed; the relay and hold store code against it):

    Decision(action, rule, reasons, notice="", approvals=1,
             persons=0, findings=(), unscannable=())
        action     "pass" | "hold" | "block"
        rule       the deciding rule's name
        reasons    short masked texts (never a number in the clear)
        notice     the rule's text for the sender (Japanese first, English second)
        approvals  distinct approvers needed to release a hold (two-person rule)
        persons    distinct numbers at medium or high confidence (added by issue 5)
        findings   the scan's detect.Finding objects, for the hold store (issue 5)
        unscannable  the scan's Unscannable items (issue 5)

    load_policy(directory) -> Policy      raises PolicyError(path, line, reason)
    decide(facts, policy) -> Decision     pure; first matching rule decides

Policy files are ``*.toml`` in one directory, read in file-name order; see
docs/policy.md for every key. A file holds ``[[rule]]`` tables (name, conditions,
action, optional notice and approvals), at most one ``[default]`` table across the
directory (the final action; required), and ``[detector]`` keyword lists that are
added to the detector's own.

SECURITY: reads admin-owned files; every key is checked and an error names the
file and line, so a typo can never silently widen what passes. Reasons are built
from masked findings and are scrubbed once more before they leave this module.

DIAGNOSTICS: none; the pipeline logs each decision.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailguard.errors import PolicyError
from mailguard.facts import clean_address, is_internal, normalise_domain
from mailguard.log import scrub

# The decision record and its actions live in records (the bottom module); re-exported here.
from mailguard.records import ACTIONS, BLOCK, CONFIDENCES, HOLD, PASS, Decision, Facts, Unscannable

__all__ = ["ACTIONS", "BLOCK", "HOLD", "PASS", "Decision", "Policy", "Rule", "decide",
           "load_policy", "split_notice"]

MAX_LISTED = 5  # masked numbers / domains named in one reason

# A validated condition: a count, a flag, a confidence name, or a list of
# lower-cased patterns / addresses / domains.
Condition = int | bool | str | tuple[str, ...]


# -- conditions --------------------------------------------------------------
# Each condition: name -> (kind, fact getter). Counts get _min and _max forms.

_COUNTS: dict[str, Callable[[Facts], int]] = {
    "recipients": lambda f: f.recipient_count,  # a distribution list counts as many
    "list_recipients": lambda f: len(f.list_recipients),
    "external_recipients": lambda f: len(f.external_recipients),
    "external_domains": lambda f: len(f.external_domains),
    "external_orgs": lambda f: len(f.external_orgs),
    "visible": lambda f: len(f.visible),
    "visible_external": lambda f: len(f.visible_external),
    "attachments": lambda f: len(f.attachments),
}
_BOOLS: dict[str, Callable[[Facts], bool]] = {
    "unscannable": lambda f: bool(f.unscannable),
    "any_external": lambda f: f.any_external,
    "all_internal": lambda f: f.all_internal,
    "is_reply": lambda f: f.is_reply,
    "is_reply_all": lambda f: f.is_reply_all,
}
_LISTS = ("sender", "sender_domain", "recipient_domain", "attachment_type", "attachment_name",
          "unscannable_except")

# Persons by where the numbers were read (issue 12): from images by OCR, or
# from text (everything else). Counted at the rule's confidence like persons.
_PERSONS_BY_SOURCE: dict[str, Callable[[Facts, str], int]] = {
    "ocr_persons": lambda f, floor: f.ocr_persons_at(floor),
    "text_persons": lambda f, floor: f.text_persons_at(floor),
}

CONDITIONS: tuple[str, ...] = (
    ("persons_min", "persons_max", "confidence")
    + tuple(f"{n}_{s}" for n in _PERSONS_BY_SOURCE for s in ("min", "max"))
    + tuple(f"{n}_{s}" for n in _COUNTS for s in ("min", "max"))
    + tuple(_BOOLS)
    + _LISTS
)
RULE_KEYS = ("name", "action", "notice", "approvals")
TOP_KEYS = ("rule", "default", "detector")
DEFAULT_KEYS = ("action", "notice", "approvals")
DETECTOR_KEYS = ("keywords", "negative")
NOTICE_KEYS = ("ja", "en")
NOTICE_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    action: str
    conditions: dict[str, Condition]
    notice: str = ""
    approvals: int = 1
    source: str = ""  # "file:line" of its [[rule]] header

    @property
    def is_catch_all(self) -> bool:
        return not any(k != "confidence" for k in self.conditions)


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]
    default_action: str
    default_notice: str = ""
    default_approvals: int = 1
    keywords: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def summary(self) -> str:
        counts = {a: sum(1 for r in self.rules if r.action == a) for a in ACTIONS}
        return (
            f"{len(self.files)} file(s), {len(self.rules)} rule(s) "
            f"(block {counts[BLOCK]}, hold {counts[HOLD]}, pass {counts[PASS]}), "
            f"default {self.default_action}; detector: {len(self.keywords)} extra keyword(s), "
            f"{len(self.negative)} extra negative word(s)"
        )


# -- decide ------------------------------------------------------------------


def decide(facts: Facts, policy: Policy) -> Decision:
    """The first rule whose conditions all hold decides; else the default."""
    for rule in policy.rules:
        if all(_holds(name, value, rule.conditions, facts) for name, value in rule.conditions.items()):
            return _decision(rule.action, rule.name, rule.notice, rule.approvals, rule.conditions, facts)
    return _decision(
        policy.default_action, "default", policy.default_notice, policy.default_approvals, {}, facts
    )


def _holds(name: str, value: Condition, conds: dict[str, Condition], f: Facts) -> bool:
    floor = conds.get("confidence", "medium")
    if name == "confidence":
        return True
    if name == "persons_min":
        return f.persons_at(floor) >= value
    if name == "persons_max":
        return f.persons_at(floor) <= value
    if name[:-4] in _PERSONS_BY_SOURCE:
        n = _PERSONS_BY_SOURCE[name[:-4]](f, floor)
        return n >= value if name.endswith("_min") else n <= value
    if name in _BOOLS:
        return _BOOLS[name](f) is value
    if name.endswith("_min"):
        return _COUNTS[name[:-4]](f) >= value
    if name.endswith("_max"):
        return _COUNTS[name[:-4]](f) <= value
    if name == "sender":
        return f.sender in value
    if name == "sender_domain":
        return is_internal(f.sender_domain, value)
    if name == "recipient_domain":
        return any(is_internal(d, value) for d in f.recipient_domains)
    if name == "attachment_type":
        return any(
            fnmatch.fnmatchcase((a.mime_type or "").lower(), p) for a in f.attachments for p in value
        )
    if name == "attachment_name":
        return any(fnmatch.fnmatchcase((a.name or "").lower(), p) for a in f.attachments for p in value)
    if name == "unscannable_except":
        return bool(_unscannable_beyond(f, value))
    raise AssertionError(f"unvalidated condition {name}")  # load_policy rejects these


def _unscannable_beyond(f: Facts, patterns: tuple[str, ...]) -> list[Unscannable]:
    """Unscannable items whose reason matches none of the admin's patterns
    (e.g. "image*": a site that accepts uninspected images to outside)."""
    return [u for u in f.unscannable
            if not any(fnmatch.fnmatchcase((u.reason or "").lower(), p) for p in patterns)]


def _listed(items: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", … (+{len(items) - MAX_LISTED})" if len(items) > MAX_LISTED else "")


def _decision(
    action: str, rule: str, notice: str, approvals: int, conds: dict[str, Condition], f: Facts
) -> Decision:
    """Reasons say which facts made the rule match, with masked numbers only."""
    floor = conds.get("confidence", "medium")
    reasons: list[str] = []
    persons = f.persons_at(floor)
    if persons:
        by = f.persons_by_confidence
        from_images = f.ocr_persons_at(floor)
        ocr_note = f", {from_images} read from images (OCR)" if from_images else ""
        reasons.append(
            f"{persons} My Number(s) at {floor} confidence or above "
            f"(high {by['high']}, medium {by['medium'] - by['high']}{ocr_note}): {_listed(f.masked_at(floor))}"
        )
    elif any(k.endswith(("persons_max", "persons_min")) for k in conds):
        reasons.append(f"no My Number at {floor} confidence or above")
    if f.is_reply_all and conds.get("is_reply_all") is True:
        reasons.append(f"reply-all: {len(f.visible)} address(es) in To/Cc")
    elif f.is_reply and conds.get("is_reply") is True:
        reasons.append("a reply")
    if f.external_recipients and (
        conds.get("any_external") is True
        or any(k.startswith(("external_", "recipients")) for k in conds)
    ):
        reasons.append(
            f"{len(f.external_recipients)} external recipient(s) in "
            f"{len(f.external_orgs)} organisation(s): {_listed(list(f.external_domains))}"
        )
    if f.all_internal and (conds.get("all_internal") is True or "recipients_min" in conds
                           or any(k.startswith("list_") for k in conds)):
        if f.list_recipients:
            reasons.append(f"{len(f.recipients)} internal recipient(s), {len(f.list_recipients)} of them "
                           f"distribution list(s): {_listed(list(f.list_recipients))}")
        else:
            reasons.append(f"{len(f.recipients)} internal recipient(s)")
    if f.unscannable and (conds.get("unscannable") is True or "unscannable_except" in conds or not conds):
        shown = _unscannable_beyond(f, conds["unscannable_except"]) if "unscannable_except" in conds else f.unscannable
        items = [f"{u.location} ({u.reason})" for u in shown]
        reasons.append(f"{len(items)} item(s) could not be inspected: {_listed(items)}")
    if any(k.startswith("visible") for k in conds):
        reasons.append(
            f"{len(f.visible_external)} external address(es) visible in To/Cc "
            f"(of {len(f.visible)})"
        )
    return Decision(
        action=action,
        rule=rule,
        reasons=tuple(scrub(r)[:1000] for r in reasons),
        notice=scrub(notice),
        approvals=approvals,
        persons=f.persons,
        findings=f.findings,
        unscannable=f.unscannable,
    )


# -- load and validate -------------------------------------------------------


def load_policy(directory: str | Path) -> Policy:
    """Read every ``*.toml`` in ``directory`` in file-name order and validate it."""
    d = Path(directory)
    if not d.is_dir():
        raise PolicyError(str(d), None, "policy directory not found")
    files = sorted(p for p in d.iterdir() if p.suffix == ".toml" and p.is_file())
    if not files:
        raise PolicyError(str(d), None, "no policy files (*.toml) in the policy directory")
    rules: list[Rule] = []
    default: tuple[str, str, int, str] | None = None  # action, notice, approvals, where
    keywords: list[str] = []
    negative: list[str] = []
    names: dict[str, str] = {}
    for path in files:
        loaded = _load_file(path)
        for rule in loaded.rules:
            if rule.name in names:
                raise PolicyError(
                    *_split(rule.source), f"rule name {rule.name!r} already used at {names[rule.name]}"
                )
            names[rule.name] = rule.source
            _check_reachable(rule, rules)
            rules.append(rule)
        if loaded.default is not None:
            if default is not None:
                raise PolicyError(
                    *_split(loaded.default[3]), f"[default] already given at {default[3]}; give it once"
                )
            default = loaded.default
        keywords += loaded.keywords
        negative += loaded.negative
    if default is None:
        raise PolicyError(
            str(d), None, 'no [default] table with the final action (e.g. [default] action = "pass")'
        )
    return Policy(
        rules=tuple(rules),
        default_action=default[0],
        default_notice=default[1],
        default_approvals=default[2],
        keywords=tuple(dict.fromkeys(keywords)),
        negative=tuple(dict.fromkeys(negative)),
        files=tuple(str(p) for p in files),
    )


def _split(source: str) -> tuple[str, int | None]:
    path, _, line = source.rpartition(":")
    return (path, int(line)) if line.isdigit() else (source, None)


def _check_reachable(rule: Rule, earlier: list[Rule]) -> None:
    for prev in earlier:
        if prev.is_catch_all:
            raise PolicyError(
                *_split(rule.source),
                f"rule {rule.name!r} is unreachable: rule {prev.name!r} at {prev.source} "
                "has no conditions and matches every message first",
            )
        if prev.conditions == rule.conditions:
            raise PolicyError(
                *_split(rule.source),
                f"rule {rule.name!r} is unreachable: rule {prev.name!r} at {prev.source} "
                "has the same conditions and matches first",
            )


@dataclass
class _Loaded:
    rules: list[Rule]
    default: tuple[str, str, int, str] | None
    keywords: list[str]
    negative: list[str]


class _Lines:
    """Find the line of a table header or key; tomllib gives no positions.

    The file is scanned once: each line is tagged with the table it belongs to
    ("rule#3", "default", "detector", "" for top level), skipping the inside of
    multi-line strings so a quoted "[[rule]]" there cannot confuse the count.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
    _KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*[.=]""")

    def __init__(self, text: str) -> None:
        self.tags: list[tuple[str, str]] = []  # (table tag, key on this line)
        self.headers: dict[str, int] = {}
        rule_index = -1
        tag = ""
        in_multi: str | None = None
        for n, line in enumerate(text.splitlines(), start=1):
            key = ""
            if in_multi:
                if line.count(in_multi) % 2 == 1:
                    in_multi = None
                self.tags.append((tag, ""))
                continue
            m = self._HEADER.match(line)
            if m:
                name = m.group(2).strip().replace(" ", "")
                top = name.split(".", 1)[0].strip("\"'")
                if m.group(1) == "[[" and name == "rule":
                    rule_index += 1
                    tag = f"rule#{rule_index}"
                elif top == "rule" and rule_index >= 0:
                    tag = f"rule#{rule_index}.{name.split('.', 1)[1]}" if "." in name else tag
                else:
                    tag = name
                self.headers.setdefault(tag, n)
            else:
                k = self._KEY.match(line)
                if k:
                    key = k.group(1).strip("\"'")
                for q in ('"""', "'''"):
                    if line.count(q) % 2 == 1:
                        in_multi = q
                        break
            self.tags.append((tag, key))

    def header(self, tag: str) -> int | None:
        return self.headers.get(tag)

    def key(self, tag: str, key: str) -> int | None:
        """Line of ``key`` inside table ``tag`` (or its sub-tables); else the header."""
        for n, (t, k) in enumerate(self.tags, start=1):
            if (t == tag or t.startswith(tag + ".")) and k == key:
                return n
        # A sub-table header such as [rule.notice] names the key itself.
        for t, n in self.headers.items():
            if t == f"{tag}.{key}":
                return n
        return self.header(tag)


def _load_file(path: Path) -> _Loaded:
    p = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a Windows editor is fine
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise PolicyError(p, line, "not UTF-8 text") from None
    except OSError as exc:
        raise PolicyError(p, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)) or "invalid TOML"
        raise PolicyError(p, int(m.group(1)) if m else None, f"not valid TOML: {reason}") from None
    lines = _Lines(text)

    def err(tag: str, key: str | None, reason: str) -> PolicyError:
        line = lines.key(tag, key) if key else lines.header(tag)
        if line is None and key:
            # Inline tables (rule = [ { ... } ]): the first line with "key =".
            m = re.search(rf"(?m)[{{,\s]{re.escape(key)}\s*=", "\n" + text)
            line = text[: m.start()].count("\n") + 1 if m else None
        if line is None:
            line = lines.key("", tag.split("#", 1)[0]) if tag else None
        return PolicyError(p, line, reason)

    for key, value in raw.items():
        if key in TOP_KEYS:
            continue
        if isinstance(value, dict) and lines.header(key):
            raise err(key, None, f"unknown table [{key}]; valid tables: [[rule]], [default], [detector]")
        raise err("", key, f"unknown key {key!r}; valid tables: [[rule]], [default], [detector]")

    rules: list[Rule] = []
    raw_rules = raw.get("rule", [])
    if not isinstance(raw_rules, list):
        raise err("rule", None, "rule must be an array of tables: write each rule as [[rule]]")
    for i, r in enumerate(raw_rules):
        rules.append(_load_rule(r, f"rule#{i}", err, lines, p))

    default = None
    if "default" in raw:
        dv = raw["default"]
        if not isinstance(dv, dict):
            raise err("", "default", 'default must be a table: [default] action = "pass"')
        for k in dv:
            if k not in DEFAULT_KEYS:
                raise err("default", k, f"unknown key {k!r} in [default]; valid: {', '.join(DEFAULT_KEYS)}")
        if "action" not in dv:
            raise err("default", None, "[default] needs an action (pass, hold or block)")
        action = _action(dv["action"], lambda reason: err("default", "action", reason))
        notice = _notice(dv.get("notice"), lambda reason: err("default", "notice", reason))
        approvals = _approvals(dv.get("approvals", 1), lambda reason: err("default", "approvals", reason))
        default = (action, notice, approvals, f"{p}:{lines.header('default') or 0}")

    keywords: list[str] = []
    negative: list[str] = []
    if "detector" in raw:
        det = raw["detector"]
        if not isinstance(det, dict):
            raise err("", "detector", "detector must be a table: [detector] keywords = [...]")
        for k, v in det.items():
            if k not in DETECTOR_KEYS:
                raise err("detector", k, f"unknown key {k!r} in [detector]; valid: {', '.join(DETECTOR_KEYS)}")
            if not isinstance(v, list) or not all(isinstance(s, str) and s.strip() for s in v):
                raise err("detector", k, f"{k} must be a list of non-empty strings")
            (keywords if k == "keywords" else negative).extend(s.strip() for s in v)
    return _Loaded(rules, default, keywords, negative)


def _load_rule(r: object, tag: str, err: Callable[..., PolicyError], lines: _Lines, p: str) -> Rule:
    if not isinstance(r, dict):
        raise err(tag, None, "each rule must be a table")
    source = f"{p}:{lines.header(tag) or lines.key('', 'rule') or 0}"
    for k in ("name", "action"):
        if k not in r:
            raise err(tag, None, f"rule has no {k!r}")
    name = r["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise err(tag, "name", "name must be a non-empty string of at most 100 characters")
    action = _action(r["action"], lambda reason: err(tag, "action", reason))
    notice = _notice(r.get("notice"), lambda reason: err(tag, "notice", reason))
    approvals = _approvals(r.get("approvals", 1), lambda reason: err(tag, "approvals", reason))
    conds: dict[str, Condition] = {}
    for k, v in r.items():
        if k in RULE_KEYS:
            continue
        if k not in CONDITIONS:
            raise err(
                tag, k,
                f"unknown condition {k!r} in rule {name!r}; valid conditions: {', '.join(CONDITIONS)}",
            )
        conds[k] = _condition(k, v, lambda reason, k=k: err(tag, k, reason))
    for base in ("persons", *_PERSONS_BY_SOURCE, *_COUNTS):
        lo, hi = conds.get(f"{base}_min"), conds.get(f"{base}_max")
        if lo is not None and hi is not None and lo > hi:
            raise err(tag, f"{base}_max", f"{base}_min {lo} > {base}_max {hi}: rule {name!r} can never match")
    if conds.get("any_external") is True and conds.get("all_internal") is True:
        raise err(tag, "all_internal", f"any_external and all_internal both true: rule {name!r} can never match")
    return Rule(name.strip(), action, conds, notice, approvals, source)


def _action(value: object, fail: Callable[[str], PolicyError]) -> str:
    if not isinstance(value, str):
        raise fail(f"action must be a string (pass, hold or block), got {type(value).__name__}")
    if value not in ACTIONS:
        raise fail(f"unknown action {value!r}; valid: pass, hold, block")
    return value


def _notice(value: object, fail: Callable[[str], PolicyError]) -> str:
    """notice = { ja = "...", en = "..." } -> one text, Japanese first, English second."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise fail('notice must be a table: notice = { ja = "…", en = "…" }')
    for k, v in value.items():
        if k not in NOTICE_KEYS:
            raise fail(f"unknown key {k!r} in notice; valid: ja, en")
        if not isinstance(v, str):
            raise fail(f"notice.{k} must be a string")
    # Blank lines inside a part are folded so the one blank line between the
    # parts is unambiguous (split_notice relies on it).
    parts = (re.sub(r"\n\s*\n", "\n", value.get(k, "").strip()) for k in NOTICE_KEYS)
    return NOTICE_SEPARATOR.join(p for p in parts if p)


def split_notice(text: str) -> tuple[str, str]:
    """A rule's notice -> (Japanese, English); a text with one part counts as both."""
    ja, sep, en = text.partition(NOTICE_SEPARATOR)
    if not sep:
        return text, text
    return ja, en


def _approvals(value: object, fail: Callable[[str], PolicyError]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
        raise fail(f"approvals must be an integer 1-5, got {value!r}")
    return value


def _condition(name: str, value: object, fail: Callable[[str], PolicyError]) -> Condition:
    if name == "confidence":
        if value not in CONFIDENCES:
            raise fail(f"confidence must be one of {', '.join(CONFIDENCES)}, got {value!r}")
        return value
    if name.endswith(("_min", "_max")):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise fail(f"{name} must be a non-negative integer, got {value!r}")
        return value
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise fail(f"{name} must be true or false, got {value!r}")
        return value
    # lists of strings
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and s.strip() for s in value):
        raise fail(f"{name} must be a non-empty list of strings, got {value!r}")
    if name == "sender":
        return tuple(clean_address(s) for s in value)
    if name in ("sender_domain", "recipient_domain"):
        return tuple(normalise_domain(s.lstrip("@")) for s in value)
    return tuple(s.strip().lower() for s in value)
