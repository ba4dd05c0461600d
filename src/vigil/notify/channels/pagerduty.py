"""The ``pagerduty`` channel: PagerDuty's Events API v2, one JSON POST per event.

``action_failed``, ``action_dead_lettered``, ``escalation_exhausted`` and ``breaker_opened``
trigger; ``episode_resolved`` resolves. Every event of one (policy, target, episode) carries
the same ``dedup_key`` (:func:`dedup_key`), so PagerDuty keeps one incident from the first
trigger to the resolve. Other events send nothing (the notifications file refuses a route that
names one for a pagerduty channel). A route's group is one call per event: the events of one
incident (one key) in order, different incidents at once (PagerDuty deduplicates by key, not
by message).

Plain ``httpx``: the Events API is one endpoint taking one JSON body, so a client library
would add a dependency and nothing else (and ``httpx`` already carries the other channels).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import quote

import httpx
import orjson

import vigil
from vigil.notify.channels.base import DeliveryFailed, Message, cut, facts, title
from vigil.notify.channels.posting import PostingChannel
from vigil.notify.config import PAGERDUTY_RESOLVES, PAGERDUTY_TRIGGERS, PagerDutySpec
from vigil.notify.store import Notification
from vigil.observability.logging import get_logger

SUMMARY_CHARS = 1024
DEDUP_KEY_CHARS = 255
SEVERITIES = {"critical": "critical", "warning": "warning", "info": "info"}
"""A notification's severity as PagerDuty's; anything else (none given) is ``error``."""
DEFAULT_SEVERITY = "error"
ACCEPTED = 202

log = get_logger(__name__)


def dedup_key(record: Notification) -> str:
    """One key per (policy, target, episode): ``vigil/<policy>/<target>/<episode>``, each
    part percent-encoded; without an episode, the action (``action-<id>``), else the
    notification itself (``notification-<id>``). A key longer than PagerDuty's 255
    characters becomes ``vigil/sha256/<hex digest of the long key>``."""
    if record.episode is not None:
        last = str(record.episode)
    elif record.action_id is not None:
        last = f"action-{record.action_id}"
    else:
        last = f"notification-{record.id}"
    parts = (record.policy_name or "-", record.target or "-")
    key = "vigil/" + "/".join(quote(p, safe="") for p in parts) + f"/{last}"
    if len(key) > DEDUP_KEY_CHARS:
        key = "vigil/sha256/" + hashlib.sha256(key.encode()).hexdigest()
    return key


def severity(record: Notification) -> str:
    return SEVERITIES.get(record.severity or "", DEFAULT_SEVERITY)


def summary(record: Notification, *, test: bool = False) -> str:
    """The incident's one line: the headline and the reason, at most 1,024 characters."""
    text = f"{'[test] ' if test else ''}{title(record)}: {record.reason}"
    return cut(" ".join(text.split()), SUMMARY_CHARS)


def trigger(
    record: Notification, links: Any, routing_key: str, *, test: bool = False
) -> dict[str, Any]:
    """The Events API body that opens (or adds to) the incident of ``record``'s key."""
    links = links or {}
    absolute = {
        name: href
        for name, href in links.items()
        if isinstance(href, str) and href.startswith(("http://", "https://"))
    }
    details: dict[str, Any] = {
        "event": record.event,
        "policy": record.policy_name,
        "target": record.target,
        "action_id": record.action_id,
        "episode": record.episode,
        "reason": record.reason,
        "details": record.details,
        "tags": record.tags or {},
        "facts": dict(facts(record)),
    }
    if not absolute:
        # No VIGIL_EXTERNAL_URL: the paths still say where to look.
        details["links"] = {k: v for k, v in links.items() if v}
    action = (record.details or {}).get("action")
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(record),
        "payload": {
            "summary": summary(record, test=test),
            "source": record.target or "vigil",
            "severity": severity(record),
            "timestamp": record.at.isoformat(),
            "component": action if isinstance(action, str) else None,
            "group": record.policy_name,
            "class": record.event,
            "custom_details": details,
        },
        "client": "Vigil",
    }
    body["payload"] = {k: v for k, v in body["payload"].items() if v is not None}
    if "action" in absolute:
        body["client_url"] = absolute["action"]
    texts = {"action": "The action in Vigil", "policy": "The policy in Vigil"}
    body["links"] = [
        {"href": absolute[name], "text": text} for name, text in texts.items() if name in absolute
    ]
    return body


def resolve(record: Notification, routing_key: str) -> dict[str, Any]:
    """The Events API body that resolves the incident of ``record``'s key."""
    return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key(record)}


class PagerDutyChannel(PostingChannel):
    type = "pagerduty"

    def __init__(
        self,
        spec: PagerDutySpec,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(spec, timeout=timeout, transport=transport)
        self.spec = spec

    def events(self, message: Message) -> list[tuple[Notification, dict[str, Any]]]:
        """The Events API bodies ``message`` sends, each with its notification. A test
        message triggers and then resolves, so it leaves no incident open."""
        key = self.spec.routing_key
        sent: list[tuple[Notification, dict[str, Any]]] = []
        for record in message.notifications:
            links = message.links.get(record.id)
            if message.test:
                sent.append((record, trigger(record, links, key, test=True)))
                sent.append((record, resolve(record, key)))
            elif record.event in PAGERDUTY_TRIGGERS:
                sent.append((record, trigger(record, links, key)))
            elif record.event == PAGERDUTY_RESOLVES and record.episode is not None:
                sent.append((record, resolve(record, key)))
            else:
                log.info(
                    "notify.not_paged",
                    channel=self.name,
                    notification=record.id,
                    notification_event=record.event,
                )
        return sent

    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        """The events of one incident (one ``dedup_key``) one after another, in notification
        id order, so a trigger reaches PagerDuty before the resolve that follows it (a
        test's trigger before its resolve); different incidents at once, so a group takes
        as long as its slowest incident, not the sum.

        When an event is refused, the later events of its incident are not sent; the
        notifications whose events all went out are named in the failure's ``taken``."""
        chains: dict[str, list[tuple[Notification, dict[str, Any]]]] = {}
        for record, event in sorted(self.events(message), key=lambda pair: pair[0].id):
            chains.setdefault(event["dedup_key"], []).append((record, event))
        results = await asyncio.gather(
            *(self._post_chain(chain) for chain in chains.values()), return_exceptions=True
        )
        done: dict[int, dict[str, Any]] = {}
        failed: DeliveryFailed | None = None
        for result in results:
            if isinstance(result, DeliveryFailed):
                failed = failed or result
                done.update(result.taken)
            elif isinstance(result, BaseException):
                raise result
            else:
                done.update(result)
        refs = {
            nid: ref if message.test else {"dedup_key": ref["dedup_key"]}
            for nid, ref in sorted(done.items())
        }
        if failed is not None:
            raise DeliveryFailed(str(failed), taken=refs)
        return refs

    async def _post_chain(
        self, chain: list[tuple[Notification, dict[str, Any]]]
    ) -> dict[int, dict[str, Any]]:
        """Post the events of one incident in order; per notification whose events all went
        out, its ``dedup_key`` and what the far side answered to its last event. Raises
        :class:`DeliveryFailed` at the first refusal, its ``taken`` naming those."""
        headers = {"Content-Type": "application/json", "User-Agent": f"vigil/{vigil.__version__}"}
        done: dict[int, dict[str, Any]] = {}
        for record, event in chain:
            try:
                answer = await self._poster.post(
                    self.spec.url,
                    orjson.dumps(event),
                    headers,
                    taken=lambda status: status == ACCEPTED,
                )
            except DeliveryFailed as exc:
                done.pop(record.id, None)  # a test's trigger went, its resolve did not
                raise DeliveryFailed(str(exc), taken=done) from None
            done[record.id] = {"dedup_key": event["dedup_key"], "answer": answer}
        return done
