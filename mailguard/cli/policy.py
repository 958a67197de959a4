"""`mailguard policy check`: validate the policy directory before a reload.

Exit 0 with a one-line summary, or 2 with ``file:line: reason`` (the PolicyError
is turned into the message and exit code by mailguard.cli.main, like every other
configuration error).
"""

from __future__ import annotations

import argparse

import sys

from mailguard.cli import EXIT_OK, EXIT_USAGE, add_config_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="work with the policy files")
    add_config_option(p)
    actions = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="validate the policy; exit 2 with file:line on error"
    )
    add_config_option(check)
    check.add_argument("--strict", action="store_true",
                       help="treat warnings (such as a rule an earlier rule shadows) as errors (exit 2)")
    check.set_defaults(func=run)


def run(args: argparse.Namespace, config: object) -> int:
    from mailguard.policy import load_policy

    policy = load_policy(config.policy.dir)  # type: ignore[attr-defined]
    print(f"policy OK: {config.policy.dir}: {policy.summary()}")  # type: ignore[attr-defined]
    for rule in policy.rules:
        conds = ", ".join(f"{k}={_show(v)}" for k, v in rule.conditions.items()) or "(always)"
        print(f"  {rule.source}  {rule.name}: {conds} -> {rule.action}")
    print(f"  default -> {policy.default_action}")
    from mailguard.policy_lint import shadowed_rules

    warnings = shadowed_rules(policy, config.organisation.internal_domains)  # type: ignore[attr-defined]
    for w in warnings:
        print(f"mailguard policy check: {w}", file=sys.stderr)
    if warnings and args.strict:
        print(f"mailguard policy check: {len(warnings)} warning(s) and --strict: failed", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return str(value)
