# The two commands in the README. Both work on a fresh Debian machine.
.PHONY: run test test-fast bench

# A demo in a checkout may be started as root (a fresh machine, a container):
# the store is ./var/mailguard, not a production store an admin group shares.
run:
	scripts/setup run
	MAILGUARD_ALLOW_ROOT=1 .venv/bin/mailguard serve

test:
	scripts/setup test
	.venv/bin/python -m pytest

# Everything but the slow suites (real Postfix, corpus sweep).
test-fast:
	.venv/bin/python -m pytest -m "not slow"

bench:
	for b in bench/*.py; do .venv/bin/python $$b || exit 1; done
