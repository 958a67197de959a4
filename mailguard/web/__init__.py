"""The approval page (上長承認): a second door to the hold store, its rules and its audit log.

    users.py    people, roles, scrypt password hashes, approver assignment (no web framework)
    auth.py     sessions, CSRF tokens, login rate limiting, who may see and do what
    notify.py   links to /held/<id> and the notice to assigned approvers (no web framework)
    app.py      the Starlette application (server-rendered Jinja2 pages, no JavaScript)

Release and reject go through mailguard.hold (release_message, reject_message), so the
two-person rule, blank-reason refusal and release-after-250 are the CLI's own.
"""
