"""Table grids: a number a person reads across cells (DESIGN §4 "layout").

Extraction hands table cells with their place in the grid (Span.row/col):
xlsx sheets, ods, docx/odt/pptx tables and HTML tables. This module joins
adjacent cells of a row (or, for vertical forms, of a column) into one
candidate when the joined digits make one of the layouts people use:

    4-4-4     three 4-digit cells (Excel 方眼紙 forms, an Excel range pasted as <td>s)
    6-6       two 6-digit cells
    12 x 1    one digit per box (扶養控除等申告書, 給与支払報告書)
    11        one 11-digit cell whose leading 0 Excel dropped (read as 0 + 11)

and only with evidence that the cells hold a My Number:

    header    the cells' column header names a My Number (merged header cells:
              only the first column has the text, the others are empty)
    label     a short label cell (個人番号, マイナンバー, ...) just left of the
              first cell in the same row, or in one of the two rows above
    list      (4-4-4, 6-6, 12 x 1 in rows only) the same columns joined in at
              least 5 rows and 80 % of the joins pass the check digit

Never across unrelated columns: a row's digit cells are cut into segments at
every cell whose own non-empty header differs from the segment's, so a phone
column next to an ID column never joins; a segment joins only when it IS one
layout (a run of 4 cells of 4 digits is not guessed at). Every join is high
confidence (its evidence is a header, a label or a list) and one person.

SPEED: called once per detect() batch with the cells that have a grid place;
the per-cell work is a strip/isdigit and a dict insert, and labels are looked
for only in short cells holding an anchor character, so a 10,000-row sheet of
ordinary cells costs a few milliseconds.

SECURITY: reads untrusted cell text; work is linear in the number of cells
(each cell is in at most one row segment and one column run). Reasons name
the layout, the cells and the word, never the number.

DIAGNOSTICS: logs nothing.
"""

from __future__ import annotations

import re
from collections import defaultdict

from mailguard.detect.context import _header_kind, _list_rule
from mailguard.detect.numbers import _valid
from mailguard.detect.words import _words, _Words
from mailguard.records import Finding, Span

HIGH = "high"
LABEL_MAX = 24  # a label cell is short: a longer one is a sentence, read as text
JOIN_MAX = 11  # digit cells of 1-11 digits may be part of a number
_LAYOUTS = {(4, 4, 4): "4-4-4", (6, 6): "6-6", (1,) * 12: "12 x 1", (11,): "11"}
_VERTICAL = {(1,) * 12: "12 x 1", (4, 4, 4): "4-4-4", (6, 6): "6-6"}
_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")
# Every default keyword holds one of these; a cell without any is no label.
_ANCHOR = re.compile("[番個カｶマﾏ通共特mMｍＭnNｎＮiIｉＩ]")


def join_digits(text: str) -> str | None:
    """The ASCII digits of a cell that may be part of a split number, else None."""
    if len(text) > JOIN_MAX + 4:
        return None
    s = text.strip()
    if not s or len(s) > JOIN_MAX or not s.isdigit():
        return None
    if not s.isascii():
        s = s.translate(_FULLWIDTH)
        if not s.isascii():
            return None  # other scripts' digits: not what a form holds
    return s


def label_word(text: str, words: _Words | None = None) -> str | None:
    """The My Number keyword a short label cell holds, else None."""
    if len(text) > LABEL_MAX or not _ANCHOR.search(text):
        return None
    hit = _header_kind(text.strip(), words or _words((), ()))
    return None if hit is None or hit.negative else hit.word


def keep_grid_cell(text: str) -> bool:
    """Extraction's test for a short cell: a digit cell that could join, or a label."""
    return join_digits(text) is not None or label_word(text) is not None


def _ref(location: str) -> str:
    return location.rsplit("!", 1)[-1]


def join_cells(cells: list[Span], words: _Words, key: bytes) -> tuple[list[Finding], set[str]]:
    """Findings for numbers split over adjacent cells, and their numbers (persons)."""
    tables: dict[str, list[Span]] = defaultdict(list)
    for span in cells:
        tables[span.group or span.location.rsplit("!", 1)[0]].append(span)
    findings: list[Finding] = []
    numbers: set[str] = set()
    for table in tables.values():
        _join_table(table, words, key, findings, numbers)
    return findings, numbers


def _join_table(table: list[Span], words: _Words, key: bytes, findings: list[Finding],
                numbers: set[str]) -> None:
    digits: dict[tuple[int, int], tuple[str, Span]] = {}
    labels: dict[tuple[int, int], str] = {}
    for span in table:
        d = join_digits(span.text)
        if d is not None:
            digits[(span.row, span.col)] = (d, span)
        else:
            word = label_word(span.text, words)
            if word is not None:
                labels[(span.row, span.col)] = word
    if not digits:
        return
    used: set[tuple[int, int]] = set()
    lists: dict[tuple, list[tuple[str, list[Span]]]] = defaultdict(list)

    def label_for(r: int, c0: int, c1: int) -> str | None:
        for c in range(c0 - 1, c0 - 4, -1):  # beside: nearest cells to the left
            if (r, c) in labels:
                return f"beside label ({labels[(r, c)]})"
            if (r, c) in digits:
                break
        for dr in (1, 2):  # under: a label in one of the two rows above
            for c in range(c0, c1 + 1):
                if (r - dr, c) in labels:
                    return f"under label ({labels[(r - dr, c)]})"
        return None

    # Rows: runs of adjacent digit cells, cut where a new column header starts.
    for r, c0, run in _row_segments(digits):
        shape = tuple(len(digits[(r, c)][0]) for c in run)
        layout = _LAYOUTS.get(shape)
        if layout is None:
            continue
        spans = [digits[(r, c)][1] for c in run]
        header = next((s.header for s in spans if s.header.strip() and not s.header.strip().isdigit()), "")
        hit = _header_kind(header, words)
        if hit is not None and hit.negative:
            continue  # the column names another number (電話, 伝票番号)
        number = "".join(digits[(r, c)][0] for c in run).rjust(12, "0")
        if hit is not None:
            evidence = f"under column header ({hit.word})"
        else:
            evidence = label_for(r, run[0], run[-1])
        if evidence is None:
            if layout != "11":
                lists[(layout, tuple(run))].append((number, spans))
            continue
        used.update((r, c) for c in run)
        _add(findings, numbers, number, layout, evidence, spans, key)
    for (layout, _cols), joins in lists.items():
        n_valid = sum(1 for number, _ in joins if _valid(number))
        listed = _list_rule(len(joins), n_valid)
        if listed is None:
            continue
        evidence = f"list rule: {n_valid} of {len(joins)} joins pass the check digit"
        for number, spans in joins:
            _add(findings, numbers, number, layout, evidence, spans, key)
            used.update((s.row, s.col) for s in spans)

    # Columns (vertical forms): an exact run below a label or beside one.
    for c, r0, run in _column_runs(digits, used):
        layout = _VERTICAL.get(tuple(len(digits[(r, c)][0]) for r in run))
        if layout is None:
            continue
        evidence = None
        for cc in range(c - 1, c - 4, -1):
            if (r0, cc) in labels:
                evidence = f"beside label ({labels[(r0, cc)]})"
                break
            if (r0, cc) in digits:
                break
        if evidence is None and layout == "12 x 1":
            for dr in (1, 2):
                if (r0 - dr, c) in labels:
                    evidence = f"under label ({labels[(r0 - dr, c)]})"
                    break
        if evidence is None:
            continue
        spans = [digits[(r, c)][1] for r in run]
        number = "".join(digits[(r, c)][0] for r in run)
        _add(findings, numbers, number, layout, evidence, spans, key)


def _row_segments(digits):
    """(row, first column, [columns]) for each run of adjacent digit cells in a
    row, cut where a cell brings a non-empty header other than the run's."""
    by_row: dict[int, list[int]] = defaultdict(list)
    for r, c in digits:
        by_row[r].append(c)
    for r in sorted(by_row):
        run: list[int] = []
        run_header = ""
        for c in sorted(by_row[r]):
            h = digits[(r, c)][1].header.strip()
            if h.isdigit():
                h = ""  # a sheet without a header row: its first row's values are no header
            if run and (c != run[-1] + 1 or (h and run_header and h != run_header)):
                yield r, run[0], run
                run, run_header = [], ""
            run.append(c)
            run_header = run_header or h
        if run:
            yield r, run[0], run


def _column_runs(digits, used):
    by_col: dict[int, list[int]] = defaultdict(list)
    for r, c in digits:
        if (r, c) not in used:
            by_col[c].append(r)
    for c in sorted(by_col):
        run: list[int] = []
        for r in sorted(by_col[c]):
            if run and r != run[-1] + 1:
                yield c, run[0], run
                run = []
            run.append(r)
        if run:
            yield c, run[0], run


def _add(findings: list[Finding], numbers: set[str], number: str, layout: str, evidence: str,
         spans: list[Span], key: bytes) -> None:
    if not _valid(number) or number == number[0] * 12:
        return
    first, last = spans[0], spans[-1]
    location = first.location if first is last else f"{first.location}:{_ref(last.location)}"
    if layout == "11":
        reason = f"11-digit cell read with its dropped leading 0, {evidence}"
    else:
        reason = f"table cells joined ({layout}) {evidence}"
    findings.append(Finding("********" + number[-4:], HIGH, reason, location, 0, len(first.text),
                            number, key))
    numbers.add(number)
