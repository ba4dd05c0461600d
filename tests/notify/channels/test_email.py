"""The email channel against a real local SMTP server (``aiosmtpd``): the conversation and
the mail it delivers."""

from __future__ import annotations

import email
import email.policy
import json
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.notify.channels.conftest import message, notification, stop_smtp
from tests.notify.far_side import closed_port
from vigil.local import free_port
from vigil.notify.channels.base import DeliveryFailed, Thread
from vigil.notify.channels.email import EmailChannel
from vigil.notify.channels.registry import build_channels
from vigil.notify.config import NotificationsInvalid, parse_notifications

PASSWORD = "smtp-pa55word"
LONG_REFUSAL = "5.1.1 mailbox unavailable " * 20


@dataclass
class Delivery:
    """One mail the server took, and how the conversation went."""

    tls: bool
    login: LoginPassword | None
    mail_from: str
    rcpt_tos: list[str]
    mail: EmailMessage


@dataclass
class Server:
    port: int
    delivered: list[Delivery] = field(default_factory=list)
    logins: list[LoginPassword] = field(default_factory=list)
    refuse_rcpt: str | None = None


class Handler:
    def __init__(self, server: Server) -> None:
        self.server = server

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.server.refuse_rcpt is not None and address != "oncall@example.com":
            return self.server.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        self.server.delivered.append(
            Delivery(
                tls=smtp.transport is not None
                and smtp.transport.get_extra_info("ssl_object") is not None,
                login=session.auth_data if session.authenticated else None,
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                mail=mail,
            )
        )
        return "250 Message accepted for delivery"


@dataclass
class Certificates:
    server: ssl.SSLContext
    ca_file: Path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certificates(server=context, ca_file=ca_file)


ServerFactory = Callable[..., Server]


@pytest.fixture
def smtp_server() -> Iterator[ServerFactory]:
    """Starts a local SMTP server: ``tls`` ``starttls`` (offered and required), ``tls``
    (from the first byte) or ``none``; logins are accepted with :data:`PASSWORD`."""
    controllers: list[Controller] = []

    def start(security: str, context: ssl.SSLContext | None = None) -> Server:
        server = Server(port=free_port())

        def authenticate(
            smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            assert isinstance(data, LoginPassword)
            server.logins.append(data)
            if data.password != PASSWORD.encode():
                return AuthResult(success=False, handled=False)
            return AuthResult(success=True, auth_data=data)

        options: dict[str, Any] = {
            "authenticator": authenticate,
            # aiosmtpd counts only STARTTLS as TLS for AUTH: with TLS from the first byte the
            # connection is encrypted all the same
            "auth_require_tls": security == "starttls",
        }
        if security == "starttls":
            options.update(tls_context=context, require_starttls=True)
        elif security == "tls":
            options.update(ssl_context=context)
        controller = Controller(Handler(server), hostname="127.0.0.1", port=server.port, **options)
        controller.start()
        controllers.append(controller)
        return server

    yield start
    for controller in controllers:
        stop_smtp(controller)


def mailer(
    port: int,
    security: str,
    *,
    login: bool = True,
    to: str = "[oncall@example.com, Web <web@example.com>]",
    password: str = PASSWORD,
) -> EmailChannel:
    credentials = "    username: vigil\n    password: ${SMTP_PASSWORD}\n" if login else ""
    text = f"""
channels:
  - name: mail
    type: email
    host: 127.0.0.1
    port: {port}
    security: {security}
{credentials}    from: Vigil <vigil@example.com>
    to: {to}
routes:
  - channels: [mail]
"""
    notifications = parse_notifications(
        text, source="notifications.yaml", env={"SMTP_PASSWORD": password}
    )
    channel = build_channels(notifications, timeout=2.0)["mail"]
    assert isinstance(channel, EmailChannel)
    return channel


def parts(mail: EmailMessage) -> dict[str, str]:
    found = {}
    for part in mail.walk():
        if part.get_content_maintype() == "text":
            assert isinstance(part, EmailMessage)
            found[part.get_content_type()] = str(part.get_content()).replace("\r\n", "\n")
    return found


async def test_starttls_login_and_both_parts(
    smtp_server: ServerFactory, certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    server = smtp_server("starttls", certificates.server)
    channel = mailer(server.port, "starttls")
    record = notification(reason='disk <b>full</b> & "more"')
    refs = await channel.send(message(record))

    [delivery] = server.delivered
    assert delivery.tls
    assert delivery.login == LoginPassword(b"vigil", PASSWORD.encode())
    assert delivery.mail_from == "vigil@example.com"
    assert delivery.rcpt_tos == ["oncall@example.com", "web@example.com"]
    mail = delivery.mail
    assert mail["Subject"] == "Action failed: web-cpu-high on web-01"
    assert mail["From"] == "Vigil <vigil@example.com>"
    assert mail["To"] == "oncall@example.com, Web <web@example.com>"
    assert mail["X-Vigil-Event"] == "action_failed"
    assert refs == {11: {"message_id": mail["Message-ID"]}}
    assert mail.get_content_type() == "multipart/alternative"
    text = parts(mail)
    assert set(text) == {"text/plain", "text/html"}
    assert 'disk <b>full</b> & "more"' in text["text/plain"]
    assert "Action id: 42" in text["text/plain"]
    assert "Action: https://vigil.example.com/api/v1/actions/42" in text["text/plain"]
    assert "disk &lt;b&gt;full&lt;/b&gt; &amp; &quot;more&quot;" in text["text/html"]
    assert "<b>" not in text["text/html"]
    assert '<a href="https://vigil.example.com/api/v1/actions/42">Action</a>' in text["text/html"]


async def test_tls_from_the_first_byte(
    smtp_server: ServerFactory, certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    server = smtp_server("tls", certificates.server)
    await mailer(server.port, "tls").send(message())
    [delivery] = server.delivered
    assert delivery.tls
    assert delivery.login == LoginPassword(b"vigil", PASSWORD.encode())


async def test_no_encryption_with_and_without_login(smtp_server: ServerFactory) -> None:
    server = smtp_server("none")
    await mailer(server.port, "none", login=False).send(message())
    await mailer(server.port, "none").send(message())
    first, second = server.delivered
    assert (first.tls, first.login) == (False, None)
    assert (second.tls, second.login) == (False, LoginPassword(b"vigil", PASSWORD.encode()))


async def test_an_unknown_certificate_is_refused(
    smtp_server: ServerFactory, certificates: Certificates
) -> None:
    server = smtp_server("starttls", certificates.server)
    with pytest.raises(DeliveryFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await mailer(server.port, "starttls").send(message())
    assert server.delivered == []
    assert server.logins == []


async def test_a_server_without_starttls_gets_no_password(smtp_server: ServerFactory) -> None:
    server = smtp_server("none")
    with pytest.raises(DeliveryFailed, match="STARTTLS"):
        await mailer(server.port, "starttls").send(message())
    assert server.logins == []
    assert server.delivered == []


async def test_a_wrong_password_is_the_servers_answer(smtp_server: ServerFactory) -> None:
    server = smtp_server("none")
    channel = mailer(server.port, "none", password="wrong")
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(message())
    assert str(caught.value) == "answered 535: 5.7.8 Authentication credentials invalid"
    assert server.delivered == []


async def test_a_refused_recipient_is_the_servers_answer(smtp_server: ServerFactory) -> None:
    server = smtp_server("none")
    server.refuse_rcpt = "550 " + LONG_REFUSAL
    with pytest.raises(DeliveryFailed) as caught:
        await mailer(server.port, "none", login=False, to="[web@example.com]").send(message())
    assert str(caught.value) == "answered 550: " + " ".join(LONG_REFUSAL.split())[:200]


async def test_a_mail_some_recipients_took_is_delivered(smtp_server: ServerFactory) -> None:
    server = smtp_server("none")
    server.refuse_rcpt = "550 5.1.1 no such mailbox"
    refs = await mailer(server.port, "none", login=False).send(message())
    [delivery] = server.delivered
    assert delivery.rcpt_tos == ["oncall@example.com"]
    assert refs == {11: {"message_id": delivery.mail["Message-ID"]}}


async def test_a_server_that_is_down() -> None:
    with pytest.raises(DeliveryFailed, match="SMTPConnectError"):
        await mailer(closed_port(), "starttls").send(message())


async def test_a_group_and_a_thread(smtp_server: ServerFactory) -> None:
    server = smtp_server("none")
    channel = mailer(server.port, "none", login=False)
    records = [notification(id=i, target=f"web-0{i}") for i in (1, 2, 3)]
    refs = await channel.send(message(*records))
    first = refs[1]["message_id"]
    assert refs == {i: {"message_id": first} for i in (1, 2, 3)}
    later = notification(id=4, event="action_completed", target="web-01")
    await channel.send(message(later, threads={4: Thread(ref=refs[1], origin=records[0])}))

    group, reply = (d.mail for d in server.delivered)
    assert group["Subject"] == (
        "3 Vigil events: Action failed: web-cpu-high on web-01, Action failed: web-cpu-high"
        " on web-02, Action failed: web-cpu-high on web-03"
    )
    plain = parts(group)["text/plain"]
    assert plain.startswith("3 Vigil events\n")
    assert all(f"Action failed: web-cpu-high on web-0{i}" in plain for i in (1, 2, 3))
    assert reply["In-Reply-To"] == first
    assert reply["References"] == first
    assert reply["Subject"] == "Action completed: web-cpu-high on web-01"


async def test_a_subject_is_one_line(smtp_server: ServerFactory) -> None:
    server = smtp_server("none")
    channel = mailer(server.port, "none", login=False)
    await channel.send(message(notification(target="web-01\r\nBcc: someone@example.com")))
    [delivery] = server.delivered
    assert delivery.mail["Subject"] == (
        "Action failed: web-cpu-high on web-01 Bcc: someone@example.com"
    )
    assert delivery.mail["Bcc"] is None
    assert delivery.rcpt_tos == ["oncall@example.com", "web@example.com"]


@pytest.mark.parametrize(
    "address",
    [
        "oncall",
        "a@example.com, b@example.com",
        "x@example.com\nBcc: y@example.com",
        "x@example.com\\nBcc: y@example.com",
        "On call <oncall@example.com> <x@example.com>",
    ],
)
def test_an_address_that_is_not_one_is_refused(address: str) -> None:
    text = f"""
channels:
  - name: mail
    type: email
    host: smtp.example.com
    from: vigil@example.com
    to: [{json.dumps(address)}]
"""
    with pytest.raises(NotificationsInvalid, match="is not one email address"):
        parse_notifications(text, source="n.yaml", env={})
