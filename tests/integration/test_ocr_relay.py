"""OCR end to end (issue 12): a real `mailguard serve` holds a message whose only
attachment is a photo of a card, and the number is masked in every output;
without the engine, `mailguard scan` reports images unscannable (fail closed)
and `mailguard status` says OCR is unavailable.
"""

from __future__ import annotations

import json
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from PIL import Image

from hold_support import INTERNAL, SENDER, Serve, Sink, cli, held_list, send, write_config
from ocr_images import NUMBER, card, encode, require_engine


def forms(n: str) -> list[str]:
    grouped = [n[:4] + sep + n[4:8] + sep + n[8:] for sep in (" ", "-", ".", "")]
    return grouped + [n[:8]]


def leaked(blob: bytes | str) -> bool:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return any(f in text for f in forms(NUMBER))


def photo_message() -> bytes:
    m = EmailMessage()
    m["From"] = SENDER
    m["To"] = "tanto@example.com"
    m["Subject"] = "写真"
    m["Message-ID"] = f"<{time.monotonic_ns()}.ocr@{INTERNAL}>"
    m.set_content("")
    m.add_attachment(encode(card(), "JPEG", quality=85), maintype="image", subtype="jpeg", filename="IMG_0421.JPG")
    return m.as_bytes(policy=SMTP)


def test_card_photo_through_serve_is_held_and_masked_everywhere(tmp_path):
    require_engine()
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        code, text = send(srv.port, ["tanto@example.com"], photo_message())
        assert code == 250 and "held" in text and not leaked(text)
        [held] = held_list(cfg)
        assert held["rule"] == "external-hold" and held["persons"] == 1
        show = cli(cfg, "held", "show", held["id"], "--json")
        assert show.returncode == 0 and not leaked(show.stdout)
        detail = json.loads(show.stdout)
        [finding] = detail["findings"]
        assert finding["location"] == "attachment:IMG_0421.JPG (OCR)" and finding["masked"].endswith(NUMBER[-4:])
        plain = cli(cfg, "held", "show", held["id"])
        assert plain.returncode == 0 and b"(OCR)" in plain.stdout and not leaked(plain.stdout)
        notices = sink.wait_for(lambda m: SENDER in m[1])
        assert notices and not leaked(notices[0][2])
        assert sink.to("tanto@example.com") == []
    finally:
        srv.stop()
        sink.stop()
    assert not leaked((tmp_path / "serve.log").read_bytes())
    assert not leaked((tmp_path / "store" / "audit.jsonl").read_bytes())


def _no_tesseract_path(tmp_path: Path) -> str:
    """A PATH without tesseract (the CLI runs by the interpreter's full path)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return str(bin_dir)


def test_without_the_engine_images_are_unscannable_and_status_says_so(tmp_path):
    photo = tmp_path / "IMG_0421.JPG"
    photo.write_bytes(encode(Image.new("RGB", (300, 200), "white"), "JPEG"))
    cfg = write_config(tmp_path, 1)
    env = {"PATH": _no_tesseract_path(tmp_path)}
    r = cli(cfg, "scan", "--json", str(photo), env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["findings"] == [] and out["skipped"] == []
    [u] = out["unscannable"]
    assert u["location"] == "file:IMG_0421.JPG" and "OCR unavailable" in u["reason"]
    st = cli(cfg, "status", "--json", "--timeout", "1", env=env)
    assert st.returncode == 1
    ocr = json.loads(st.stdout)["checks"]["ocr"]
    assert ocr["ok"] is False and "OCR unavailable" in ocr["detail"]


def test_scan_cli_lists_skipped_images(tmp_path):
    icon = tmp_path / "icon.png"
    Image.new("RGB", (16, 16), "red").save(icon)
    r = cli(write_config(tmp_path, 1), "scan", "--json", str(icon))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["unscannable"] == [] and out["skipped"][0]["location"] == "file:icon.png"
    assert "decorative" in out["skipped"][0]["reason"]
