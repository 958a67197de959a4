"""The first report to the Personal Information Protection Commission, drafted
from the audit records of one message (issue 17).

    build_incident(records, ref, config) -> dict | None
        the facts of the message a Message-ID or hold id names (None: no record):
        persons (exact, from the decision record), serious (persons > 100),
        sent / detected times, recipients with their organisations, the items
        suggested by headers next to the findings, the cause as mailguard saw it
    render_markdown(facts, config) -> str
        the Japanese Markdown draft; what only staff know is left as 【要記入】

Only the records are read: a held message purged long ago can still be reported.

SECURITY: records hold masked findings, fingerprints, addresses and counts; the
draft shows counts, locations and the decision's reasons (numbers masked as
there, `********9018`). DIAGNOSTICS: none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from mailguard.facts import clean_address, domain_of, is_internal, organisation_of
from mailguard.items import items_of
from mailguard.trace import for_message
from mailguard.tracefmt import local_time

SERIOUS_PERSONS = 100  # more than this many persons: 重大事態 (DESIGN §4)
DECISIONS = ("pass", "hold", "block", "hold-failed")
TO_FILL = "【要記入】"
STAFF_ONLY = ("二次被害又はそのおそれの有無及びその内容", "本人への対応等", "公表の実施状況",
              "再発防止のための措置")
_EVENT_JA = {
    "pass": "通過（送信）", "hold": "保留", "block": "遮断（送信されず）", "hold-failed": "保留失敗（再送待ち）",
    "approve": "承認", "release": "解除（送信）", "release-partial": "一部の宛先へ解除",
    "release-failed": "解除失敗", "reject": "却下（送信されず）", "expire": "期限切れ（送信されず）",
    "purge": "保存期間経過で削除", "show-raw": "管理者が原文を表示", "release-interrupted": "解除中断",
}


def build_incident(records: Iterable[dict[str, Any]], ref: str, config: Any) -> dict[str, Any] | None:
    recs = for_message(records, ref)
    if not recs:
        return None
    internal = tuple(config.organisation.internal_domains)
    decision = next((r for r in recs if r.get("event") in DECISIONS), recs[0])
    release = next((r for r in recs if r.get("event") == "release"), None)
    final = next((r for r in reversed(recs) if r.get("event") in (
        "pass", "block", "release", "reject", "expire", "hold", "hold-failed")), decision)
    sent_rec = decision if decision.get("event") == "pass" else release
    persons = int(decision.get("persons") or 0)
    to = [str(a) for a in (decision.get("to") or [])]
    recipients = []
    for a in to:
        d = domain_of(clean_address(a))
        recipients.append({"address": a, "organisation": organisation_of(d) if d else "",
                           "external": not is_internal(d, internal)})
    external_orgs = sorted({r["organisation"] for r in recipients if r["external"] and r["organisation"]})
    findings = [f for f in (decision.get("findings") or []) if isinstance(f, dict)]
    near = [str(w) for w in (decision.get("near_findings") or [])]
    locations = list(dict.fromkeys(_place(str(f.get("location", ""))) for f in findings))
    approvals = [{"operator": r.get("operator", ""), "time": r.get("time", ""), "reason": r.get("reason", "")}
                 for r in recs if r.get("event") == "approve"]
    return {
        "ref": ref,
        "id": next((str(r["id"]) for r in recs if r.get("id")), ""),
        "message_id": next((str(r["message_id"]) for r in recs if r.get("message_id")), ""),
        "sender": str(decision.get("from") or ""),
        "event": decision.get("event", ""),
        "final_event": final.get("event", ""),
        "sent": sent_rec is not None,
        "sent_at": sent_rec.get("time") if sent_rec else None,
        "detected_at": decision.get("time"),
        "persons": persons,
        "persons_by_confidence": decision.get("persons_by_confidence") or {},
        "serious": persons > SERIOUS_PERSONS,
        "items": ["個人番号", *[i for i in items_of(near) if i != "個人番号"]],
        "near_findings": near,
        "findings": len(findings),
        "locations": locations,
        "recipients": recipients,
        "organisations": sorted({r["organisation"] for r in recipients if r["organisation"]}),
        "external_organisations": external_orgs,
        "external_recipients": sum(1 for r in recipients if r["external"]),
        "rule": str(decision.get("rule") or ""),
        "reasons": [str(x) for x in (decision.get("reasons") or [])],
        "is_reply": decision.get("is_reply"),
        "reply_all": decision.get("is_reply_all"),
        "visible": decision.get("visible_count"),
        "visible_external": decision.get("visible_external"),
        "released_by": release.get("operator") if release else None,
        "release_reason": release.get("reason") if release else None,
        "released_at": release.get("time") if release else None,
        "approvals": approvals,
        "events": [{"time": r.get("time", ""), "event": r.get("event", ""), "operator": r.get("operator", "")}
                   for r in recs],
        "to_fill": list(STAFF_ONLY),
    }


def _place(location: str) -> str:
    """A finding's location without the cell: 'attachment:名簿.csv!B3' -> 'attachment:名簿.csv'."""
    return location.split("!", 1)[0]


def _yes_no(v: Any) -> str:
    return "不明（記録なし）" if v is None else ("はい" if v else "いいえ")


def render_markdown(f: dict[str, Any], config: Any) -> str:
    t = (lambda iso: local_time(iso, config) if iso else "—")
    now = local_time(datetime.now(UTC).isoformat(), config)
    out = [
        "# 特定個人情報の漏えい等事案に関する報告（速報）下書き",
        "",
        f"> mailguard の監査記録から {now} に作成した下書きです。数値・日時・宛先は記録どおりです。"
        f"{TO_FILL} の箇所は担当者が確認のうえ記入してください。個人番号そのものは記載していません。",
        "",
        "## 1. 対象のメール",
        "",
        f"- Message-ID: `{f['message_id'] or '—'}`",
        f"- 保留ID: {f['id'] or '—（保留されていません）'}",
        f"- 送信者（エンベロープ）: {f['sender'] or '—'}",
        f"- mailguard の判定: {_EVENT_JA.get(f['event'], f['event'])}（規則 `{f['rule'] or '—'}`）",
        f"- 最終状態: {_EVENT_JA.get(f['final_event'], f['final_event'])}",
        "",
        "## 2. 発生日時・発覚日時",
        "",
        f"- 送信日時: {t(f['sent_at']) if f['sent'] else '送信されていません（mailguard が送出していない）'}",
        f"- mailguard が検出した日時: {t(f['detected_at'])}",
        f"- 事案を把握した日時・経緯: {TO_FILL}",
        "",
        "## 3. 漏えい等が発生し、又は発生したおそれがある特定個人情報の項目",
        "",
        f"- 個人番号（マイナンバー）: 検出 {f['findings']} 箇所",
        f"- 併せて含まれていたと思われる項目（番号の近くの列見出し・語から）: "
        f"{'、'.join(i for i in f['items'] if i != '個人番号') or 'なし（見出しは記録されていません）'}",
        f"- 番号の近くで見つかった列見出し・語: {'、'.join(f['near_findings']) or '—'}",
        f"- 検出された場所: {'、'.join(f['locations'][:10]) or '—'}"
        + (f" ほか {len(f['locations']) - 10} 箇所" if len(f['locations']) > 10 else ""),
        f"- 上記以外の項目: {TO_FILL}",
        "",
        "## 4. 本人の数",
        "",
        f"- {f['persons']} 人（異なる個人番号の数。確信度 中・高）",
        f"- 重大事態（本人の数が100人を超える）: {'該当する（直ちに報告）' if f['serious'] else '該当しない'}",
        "",
        "## 5. 送信先",
        "",
        "| 宛先 | 組織（登録ドメイン） | 区分 |",
        "|---|---|---|",
        *(f"| {r['address']} | {r['organisation'] or '—'} | {'外部' if r['external'] else '内部'} |"
          for r in f["recipients"]),
        "",
        f"- 外部の宛先: {f['external_recipients']} 件、外部の組織: {'、'.join(f['external_organisations']) or 'なし'}",
        "",
        "## 6. 発生原因（mailguard の記録から）",
        "",
        f"- 返信: {_yes_no(f['is_reply'])}　全員に返信: {_yes_no(f['reply_all'])}",
        f"- To/Cc に見えていた宛先: {f['visible'] if f['visible'] is not None else '不明'} 件"
        f"（うち外部 {f['visible_external'] if f['visible_external'] is not None else '不明'} 件）",
        f"- 判定の理由: {'; '.join(f['reasons']) or '—'}",
    ]
    if f["released_by"]:
        out.append(f"- 保留の解除: {t(f['released_at'])} に {f['released_by']} が解除（理由: {f['release_reason'] or '—'}）")
    for a in f["approvals"]:
        out.append(f"- 承認: {t(a['time'])} {a['operator']}（理由: {a['reason'] or '—'}）")
    out += [f"- 原因の詳細（職員の操作・確認の経緯）: {TO_FILL}", ""]
    for n, title in enumerate(STAFF_ONLY, 7):
        out += [f"## {n}. {title}", "", f"{TO_FILL}", ""]
    out += ["## 記録（監査ログ）", "", "| 日時 | 出来事 | 操作者 |", "|---|---|---|",
            *(f"| {t(e['time'])} | {_EVENT_JA.get(e['event'], e['event'])} | {e['operator'] or '—'} |"
              for e in f["events"]), ""]
    return "\n".join(out)
