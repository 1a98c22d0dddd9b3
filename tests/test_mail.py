"""The SMTP backend delivers the reset email to a real SMTP server, and its link works once."""
import asyncio
import email
import email.policy
import re

import pytest

from domain.mailer import make_mailer
from handlers.app import build_services
from tests.conftest import make_settings
from tests.stores import DEFAULT_STORE, discard_store, new_store, open_store

pytestmark = pytest.mark.gen_test


@pytest.fixture
def services(mailbox, io_loop):
    settings = make_settings(mail_backend="smtp", mail_server="127.0.0.1", mail_port=mailbox[1],
                             mail_default_sender="events@example.com")
    store = new_store(DEFAULT_STORE)
    io_loop.run_sync(lambda: open_store(store))
    yield build_services(settings, store=store, mailer=make_mailer(settings))
    io_loop.run_sync(lambda: discard_store(store))


async def test_the_reset_email_arrives_over_smtp_and_its_link_works_once(api, mailbox):
    messages = mailbox[0].messages
    await api.register(email="mail.me@example.com")
    reply = await api.call("POST", "/api/v1/auth/forgot-password", {"email": "mail.me@example.com"})
    assert reply.status == 200
    for _ in range(200):  # bounded wait: the email is sent in the background
        if messages:
            break
        await asyncio.sleep(0.025)
    assert len(messages) == 1
    envelope = messages[0]
    assert envelope.rcpt_tos == ["mail.me@example.com"]
    assert envelope.mail_from == "events@example.com"
    text = email.message_from_bytes(envelope.content, policy=email.policy.default).get_content()
    link = re.search(r"http://testserver/reset-password#token=(\S+)", text)
    assert link
    token = link.group(1)
    first = await api.call("POST", "/api/v1/auth/reset-password", {"token": token, "password": "new password 1"})
    assert first.status == 200
    second = await api.call("POST", "/api/v1/auth/reset-password", {"token": token, "password": "new password 2"})
    assert second.status == 401


async def test_an_unknown_email_sends_nothing(api, mailbox):
    messages = mailbox[0].messages
    reply = await api.call("POST", "/api/v1/auth/forgot-password", {"email": "ghost@example.com"})
    assert reply.status == 200
    await asyncio.sleep(0.1)
    assert messages == []
