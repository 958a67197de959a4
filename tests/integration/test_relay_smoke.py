from email.message import EmailMessage

async def test_smoke(relay, upstream, client):
    data = b"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
    errors, msg = await client.sendmail("a@city.example.lg.jp", ["b@example.com"], data)
    assert errors == {}
    assert upstream.messages[0].data == data
    assert upstream.messages[0].rcpt_tos == ["b@example.com"]
