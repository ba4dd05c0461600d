"""The ``email`` channel: one mail per message through an SMTP server, with ``aiosmtplib``.

``security``: ``starttls`` (connect in the clear, then require STARTTLS: port 587),
``tls`` (TLS from the first byte: port 465) or ``none`` (no encryption: a local relay). The
server's certificate is checked against the system's CAs (``SSL_CERT_FILE`` names another
bundle). With ``username`` and ``password`` the channel logs in. The mail has a plain-text
and an HTML part; its subject is the event's headline (a group: ``N Vigil events: …``).
A mail about an action already mailed on this channel answers the earlier one
(``In-Reply-To``), so mail clients thread them.

Every failure is a :class:`~vigil.notify.channels.base.DeliveryFailed`: a refusal names the
server's reply code and the first 200 characters of its message (``answered 550: …``).
"""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

import aiosmtplib

import vigil
from vigil.notify.channels.base import (
    Channel,
    DeliveryFailed,
    Message,
    cut,
    facts,
    http_failure,
    title,
)
from vigil.notify.config import EmailSpec
from vigil.notify.store import Notification
from vigil.observability.logging import get_logger

SUBJECT_CHARS = 200

log = get_logger(__name__)


def _line(text: str) -> str:
    """``text`` as one header line (no line breaks: they would start a new header)."""
    return " ".join(text.split())


def subject(message: Message) -> str:
    records = message.notifications
    if message.grouped:
        heads = ", ".join(dict.fromkeys(title(r) for r in records))
        text = f"{len(records)} Vigil events: {heads}"
    else:
        text = title(records[0])
    return cut(_line(("[test] " if message.test else "") + text), SUBJECT_CHARS)


def _link_lines(links: Any) -> list[tuple[str, str]]:
    links = links or {}
    names = (("action", "Action"), ("policy", "Policy"), ("notifications", "Notifications"))
    return [(label, links[name]) for name, label in names if links.get(name)]


def plain(message: Message) -> str:
    """The plain-text part."""
    out: list[str] = []
    if message.test:
        out += ["Test message from Vigil (vigil notifications test).", ""]
    if message.grouped:
        out += [f"{len(message.notifications)} Vigil events", ""]
    for record in message.notifications:
        out += _plain_event(record, message.links.get(record.id))
    return "\n".join(out)


def _plain_event(record: Notification, links: Any) -> list[str]:
    head = title(record)
    lines = [head, "=" * min(len(head), 72), "", record.reason, ""]
    lines += [f"{label}: {value}" for label, value in facts(record)]
    lines += [f"{label}: {href}" for label, href in _link_lines(links)]
    return [*lines, "", ""]


def _href(href: str) -> bool:
    return href.startswith(("http://", "https://"))


def rich(message: Message) -> str:
    """The HTML part: every value escaped; links clickable when absolute."""
    e = html.escape
    parts = ['<!DOCTYPE html><html><body style="font-family:sans-serif">']
    if message.test:
        parts.append("<p><em>Test message from Vigil (vigil notifications test).</em></p>")
    if message.grouped:
        parts.append(f"<h1>{len(message.notifications)} Vigil events</h1>")
    for record in message.notifications:
        parts.append(f"<h2>{e(title(record))}</h2>")
        parts.append(f'<p style="white-space:pre-wrap">{e(record.reason)}</p>')
        rows = "".join(
            f'<tr><th align="left">{e(label)}</th><td>{e(value)}</td></tr>'
            for label, value in facts(record)
        )
        parts.append(f"<table>{rows}</table>")
        links = _link_lines(message.links.get(record.id))
        if links:
            items = "".join(
                f'<li><a href="{e(href)}">{e(label)}</a></li>'
                if _href(href)
                else f"<li>{e(label)}: {e(href)}</li>"
                for label, href in links
            )
            parts.append(f"<ul>{items}</ul>")
    parts.append("</body></html>")
    return "".join(parts)


class EmailChannel(Channel):
    type = "email"

    def __init__(self, spec: EmailSpec, *, timeout: float) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self._timeout = timeout

    @property
    def shown(self) -> str:
        return f"smtp://{self.spec.host}:{self.spec.port}"

    def compose(self, message: Message) -> EmailMessage:
        """The mail telling about ``message``."""
        spec = self.spec
        mail = EmailMessage()
        mail["Subject"] = subject(message)
        mail["From"] = spec.from_
        mail["To"] = ", ".join(spec.to)
        mail["Date"] = formatdate(localtime=False)
        domain = parseaddr(spec.from_)[1].rpartition("@")[2] or None
        mail["Message-ID"] = make_msgid("vigil", domain=domain)
        mail["X-Mailer"] = f"vigil/{vigil.__version__}"
        mail["X-Vigil-Event"] = message.notifications[0].event
        earlier = [
            str(thread.ref["message_id"])
            for record in message.notifications
            if (thread := message.threads.get(record.id)) is not None
            and thread.ref.get("message_id")
        ]
        if earlier:
            mail["In-Reply-To"] = earlier[0]
            mail["References"] = " ".join(dict.fromkeys(earlier))
        mail.set_content(plain(message))
        mail.add_alternative(rich(message), subtype="html")
        return mail

    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        spec = self.spec
        mail = self.compose(message)
        client = aiosmtplib.SMTP(
            hostname=spec.host,
            port=spec.port,
            use_tls=spec.security == "tls",
            start_tls=spec.security == "starttls",
            username=spec.username,
            password=spec.password,
            timeout=self._timeout,
        )
        try:
            async with client:
                refused, _ = await client.send_message(mail)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            raise http_failure(first.code, first.message) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise http_failure(exc.code, exc.message) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise DeliveryFailed(f"{type(exc).__name__}: {cut(reason, 200)}") from None
        if refused:
            log.warning(
                "notify.recipients_refused",
                channel=self.name,
                refused={address: str(answer) for address, answer in refused.items()},
            )
        ref = {"message_id": mail["Message-ID"]}
        return {record.id: dict(ref) for record in message.notifications}
