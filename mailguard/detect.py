"""Find My Numbers in text. Pure: text in, findings out, no I/O.

INTERFACE (fixed; other stages code against it):

    Span(text, location, header="", group="")
        text      the readable text of one place in the message
        location  "body", "header:Subject", "attachment:名簿.xlsx/Sheet1!C3", ...
        header    column header of a table cell ("" when not a cell)
        group     spans with the same non-empty group count together for the
                  list rule (one sheet, one CSV); "" = the span is its own group

    detect(spans: Iterable[Span], extra_keywords=(), extra_negative=()) -> Detection

    Finding: masked, confidence ("high"|"medium"|"low"), reason, location,
             start, end (offsets into the span's original text), fingerprint,
             number (the clear number; repr=False; only for the hold store)
    Detection: findings (tuple), persons (int), fingerprints (frozenset of str)

    mask(number) -> "********9018"
    fingerprint(number, key) -> hex HMAC-SHA256
"""
# TODO(issue 3): implementation.
