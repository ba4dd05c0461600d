"""The notifications file: where each event goes, and how the channels are reached.

A YAML file with two top-level lists (``VIGIL_NOTIFICATIONS_FILE``; checked by ``vigil
notifications validate FILE``)::

    channels:
      - name: chat                  # what routes call it
        type: slack                 # slack, pagerduty, teams, email or webhook
        token: ${SLACK_BOT_TOKEN}   # a secret: only ever an ${ENV} reference
        channel: "#ops"
    routes:
      - event: [approval_waiting]   # match keys; a route without one matches everything
        channels: [chat]
        continue: false             # first match wins unless a matched route says continue
        group_wait: 30s             # hold the first event of a group this long, send as one
        group_interval: 5m          # then send newer events of the group at most this often
        repeat_interval: 4h         # do not resend one (event, policy, target) within this

Secrets (``token``, ``signing_secret``, ``routing_key``, ``password``, ``secret``) are read from
the environment when the file is loaded: a literal is refused, and so is a reference to a
variable that is not set or whose value holds a line break or other control character.
Header values of a webhook channel may hold references too; a header that carries a
credential (:func:`secret_header`) must.

``VIGIL_NOTIFY_WEBHOOK_URLS`` adds a ``webhook`` channel per URL, reached by every event
recorded, whatever the routes say.

Every event of :data:`~vigil.notify.events.ALWAYS_RECORDED` is recorded; the others only when
some route names them in its ``event`` list (:meth:`Notifications.wants`). A route without an
``event`` list matches every recorded event.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from vigil.durations import PositiveDuration
from vigil.errors import InvalidInput
from vigil.notify.events import ALWAYS_RECORDED, NotificationEvent
from vigil.notify.templates import TemplateFailed, check, environment
from vigil.strict import UNKNOWN_FIELD, StrictModel, field_path, unknown_field

SLACK_API_URL = "https://slack.com/api/"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_TRIGGERS = frozenset(
    {
        NotificationEvent.ACTION_FAILED,
        NotificationEvent.ACTION_DEAD_LETTERED,
        NotificationEvent.ESCALATION_EXHAUSTED,
        NotificationEvent.BREAKER_OPENED,
    }
)
"""The events a ``pagerduty`` channel opens (or adds to) an incident for."""
PAGERDUTY_RESOLVES = NotificationEvent.EPISODE_RESOLVED
"""The event a ``pagerduty`` channel resolves its episode's incident on."""
PAGERDUTY_EVENTS = PAGERDUTY_TRIGGERS | {PAGERDUTY_RESOLVES}
ENV_WEBHOOK_PREFIX = "webhook-"
"""The channel names given to ``VIGIL_NOTIFY_WEBHOOK_URLS``: ``webhook-1``, ``webhook-2``, …"""

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class NotificationsInvalid(InvalidInput):
    """A notifications file does not validate; the message names where and why."""


# -- secrets --------------------------------------------------------------------------------


def _secret_reference(value: str) -> str:
    if not _WHOLE_REFERENCE.fullmatch(value):
        raise ValueError(
            "a secret must be an environment reference such as ${SLACK_BOT_TOKEN}, never"
            " the secret itself (the value is not shown)"
        )
    return value


SecretReference = Annotated[str, AfterValidator(_secret_reference)]
"""A setting that holds a secret: written ``${ENV_NAME}``, resolved when the file is loaded."""


class _EveryVariable(Mapping[str, str]):
    """An environment in which every variable is set, to its own reference."""

    def __getitem__(self, name: str) -> str:
        return f"${{{name}}}"

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


EVERY_VARIABLE: Mapping[str, str] = _EveryVariable()
"""The ``env`` that checks a file's shape only: every ``${ENV}`` reference counts as set
(``vigil notifications validate --no-env``; a process that never sends, such as a worker,
needs the routes but not the secrets)."""


def resolve(value: str, env: Mapping[str, str], *, where: str) -> str:
    """``value`` with each ``${NAME}`` replaced by the environment's value.

    Raises :class:`NotificationsInvalid` naming ``where`` and the variable when one is unset.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise NotificationsInvalid(
                f"{where}: environment variable {name} is not set (referenced as ${{{name}}})"
            )
        return env[name]

    return _REFERENCE.sub(replace, value)


# -- the file's schema ----------------------------------------------------------------------


class _Strict(StrictModel):
    # strict: YAML's `port: "587"` or `continue: "yes"` is a mistake to report, not to coerce.
    model_config = ConfigDict(strict=True, frozen=True)


ChannelName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
HttpUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=2048, pattern=r"^https?://[^\s/?#]+\S*$")
]
Glob = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class _Channel(_Strict):
    name: ChannelName


class SlackSpec(_Channel):
    type: Literal["slack"]
    token: SecretReference = Field(repr=False)
    channel: ShortText
    signing_secret: SecretReference | None = Field(default=None, repr=False)
    approvers: list[ShortText] = Field(default_factory=list)
    approver_groups: list[ShortText] = Field(default_factory=list)
    api_url: HttpUrl = SLACK_API_URL


class PagerDutySpec(_Channel):
    type: Literal["pagerduty"]
    routing_key: SecretReference = Field(repr=False)
    url: HttpUrl = PAGERDUTY_EVENTS_URL


class TeamsSpec(_Channel):
    type: Literal["teams"]
    url: HttpUrl


class EmailSpec(_Channel):
    type: Literal["email"]
    host: ShortText
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: ShortText | None = None
    password: SecretReference | None = Field(default=None, repr=False)
    from_: ShortText = Field(alias="from")
    to: list[ShortText] = Field(min_length=1)

    @field_validator("from_")
    @classmethod
    def _from_address(cls, value: str) -> str:
        return _address(value)

    @field_validator("to")
    @classmethod
    def _to_addresses(cls, value: list[str]) -> list[str]:
        return [_address(v) for v in value]

    @model_validator(mode="after")
    def _login_pair(self) -> EmailSpec:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        return self


class WebhookSpec(_Channel):
    type: Literal["webhook"]
    url: HttpUrl
    headers: dict[ShortText, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict, repr=False
    )
    body_template: Annotated[str, StringConstraints(min_length=1, max_length=65536)] | None = None
    secret: SecretReference | None = Field(default=None, repr=False)

    @field_validator("body_template")
    @classmethod
    def _body_template(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check(environment(), value)
            except TemplateFailed as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("headers")
    @classmethod
    def _header_templates(cls, value: dict[str, str]) -> dict[str, str]:
        env = environment()
        for key, text in value.items():
            if secret_header(key) and not _REFERENCE.search(text):
                raise ValueError(
                    f"header {key}: a header carrying a credential must take it from an"
                    " environment reference such as 'Bearer ${HOOK_TOKEN}', never the secret"
                    " itself (the value is not shown)"
                )
            if not text.isprintable():
                raise ValueError(
                    f"header {key}: a line break or other control character in the value"
                    " (the value is not shown)"
                )
            try:
                check(env, text)
            except TemplateFailed as exc:
                raise ValueError(f"header {key}: {exc}") from None
        return value


_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})
_SECRET_HEADER_WORDS = ("token", "key", "secret", "password")


def secret_header(name: str) -> bool:
    """Whether a webhook header named ``name`` carries a credential, so its value must come
    from the environment: ``Authorization``, ``Proxy-Authorization``, or a name holding
    ``token``, ``key``, ``secret`` or ``password`` (any case)."""
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(word in lowered for word in _SECRET_HEADER_WORDS)


_ADDR = r"[^\s@<>,;:\"\\()\[\]]+@[^\s@<>,;:\"\\()\[\]]+"
_ADDRESS = re.compile(rf"{_ADDR}|[^<>,;:\"\\()\[\]\r\n]*<{_ADDR}>")


def _address(value: str) -> str:
    """One email address, ``name@host`` or ``Name <name@host>``: no list, no line break."""
    if not _ADDRESS.fullmatch(value):
        raise ValueError(
            f"{value!r} is not one email address such as oncall@example.com"
            " or 'On call <oncall@example.com>'"
        )
    return value


ChannelSpec = Annotated[
    SlackSpec | PagerDutySpec | TeamsSpec | EmailSpec | WebhookSpec,
    Field(discriminator="type"),
]
CHANNEL_TYPES = ("slack", "pagerduty", "teams", "email", "webhook")


class RouteSpec(_Strict):
    event: list[Annotated[NotificationEvent, Field(strict=False)]] | None = Field(
        default=None, min_length=1
    )
    severity: Literal["info", "warning", "critical"] | None = None
    policy: Glob | None = None
    target: Glob | None = None
    tags: dict[ShortText, Annotated[str, StringConstraints(max_length=1024)]] | None = None
    channels: list[ChannelName] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")
    group_wait: PositiveDuration | None = None
    group_interval: PositiveDuration | None = None
    repeat_interval: PositiveDuration | None = None


class _FileSpec(_Strict):
    channels: list[ChannelSpec] = Field(default_factory=list)
    routes: list[RouteSpec] = Field(default_factory=list)


# -- what the rest of Vigil uses ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    """What a route matches on: one notification's event and what it is about."""

    event: str
    severity: str | None = None
    policy: str | None = None
    target: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    """One route: what it matches, where it sends, how it groups and repeats.

    ``key`` names it in the sender's group and repeat records: a digest of the route as
    written, so routes added or moved around it keep their marks.
    """

    key: str
    channels: tuple[str, ...]
    events: frozenset[str] | None = None
    severity: str | None = None
    policy: str | None = None
    target: str | None = None
    tags: Mapping[str, str] | None = None
    continue_: bool = False
    group_wait: float | None = None
    group_interval: float | None = None
    repeat_interval: float | None = None
    always: bool = False
    """Reached by every event whatever came before it (``VIGIL_NOTIFY_WEBHOOK_URLS``)."""

    @property
    def grouped(self) -> bool:
        return self.group_wait is not None or self.group_interval is not None

    def matches(self, subject: Subject) -> bool:
        """Whether ``subject`` matches every match key this route sets."""
        if self.events is not None and subject.event not in self.events:
            return False
        if self.severity is not None and subject.severity != self.severity:
            return False
        if self.policy is not None and not fnmatchcase(subject.policy or "", self.policy):
            return False
        if self.target is not None and not fnmatchcase(subject.target or "", self.target):
            return False
        return self.tags is None or all(
            subject.tags.get(key) == value for key, value in self.tags.items()
        )


@dataclass(frozen=True, slots=True)
class Notifications:
    """The loaded configuration: channels by name (secrets resolved) and routes in order."""

    channels: Mapping[str, SlackSpec | PagerDutySpec | TeamsSpec | EmailSpec | WebhookSpec]
    routes: tuple[Route, ...]
    source: str | None = None

    def routed(self, subject: Subject) -> list[tuple[Route, str]]:
        """Where ``subject`` goes: each (route, channel name), in route order, a channel
        once (the first route that sends to it decides its grouping and repeats).

        Routes are tried in order; the first that matches ends the search unless it says
        ``continue``. Routes marked ``always`` are reached whatever came before."""
        sent: dict[str, Route] = {}
        searching = True
        for route in self.routes:
            if not (searching or route.always) or not route.matches(subject):
                continue
            for channel in route.channels:
                sent.setdefault(channel, route)
            if not route.always and not route.continue_:
                searching = False
        return [(route, channel) for channel, route in sent.items()]

    def wants(self, event: NotificationEvent) -> bool:
        """Whether ``event`` is recorded at all: it is always recorded (it needs a person, or
        tells of the pause), or a route names it."""
        return event in ALWAYS_RECORDED or any(
            route.events is not None and event.value in route.events for route in self.routes
        )

    @property
    def recorded(self) -> frozenset[NotificationEvent]:
        """Every event :meth:`wants`: what the places that record notifications are given."""
        return frozenset(event for event in NotificationEvent if self.wants(event))


def _describe(error: Any) -> str:
    """One pydantic error as ``where: problem``. A channel's location leaves out the type
    tag pydantic adds (``channels[0].slack.token`` reads ``channels[0].token``)."""
    loc = [p for p in error["loc"] if p not in CHANNEL_TYPES]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "union_tag_invalid":  # a channel's type that is none of them
        tag = str(error["ctx"]["tag"])
        unknown = unknown_field(tag, CHANNEL_TYPES, kind="channel type")
        return f"{field_path([*loc, 'type'])}: {unknown}"
    if error["type"] == "union_tag_not_found":
        return f"{field_path([*loc, 'type'])}: Field required (one of {', '.join(CHANNEL_TYPES)})"
    if error["type"] == UNKNOWN_FIELD:
        parent = field_path(loc[:-1])
        return f"{parent}: {message}" if parent else message
    where = field_path(loc)
    return f"{where}: {message}" if where else message


def parse_notifications(
    text: str,
    *,
    source: str,
    env: Mapping[str, str] | None = None,
    webhook_urls: Sequence[str] = (),
) -> Notifications:
    """Validate a notifications file's text; secrets are resolved from ``env`` (default: the
    process environment). ``webhook_urls`` (``VIGIL_NOTIFY_WEBHOOK_URLS``) add a webhook
    channel each that every event reaches.

    Raises :class:`NotificationsInvalid` naming ``source`` and each problem.
    """
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise NotificationsInvalid(f"{source}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise NotificationsInvalid(f"{source}: expected a mapping with 'channels:' and 'routes:'")
    try:
        spec = _FileSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors(include_url=False))
        raise NotificationsInvalid(f"{source}: {problems}") from None
    return _build(spec, source=source, env=os.environ if env is None else env, urls=webhook_urls)


def _build(
    spec: _FileSpec, *, source: str, env: Mapping[str, str], urls: Sequence[str]
) -> Notifications:
    problems: list[str] = []
    channels: dict[str, SlackSpec | PagerDutySpec | TeamsSpec | EmailSpec | WebhookSpec] = {}
    for index, channel in enumerate(spec.channels):
        where = f"channels[{index}] ({channel.name})"
        if channel.name in channels:
            problems.append(f"{where}: a second channel named {channel.name!r}")
            continue
        try:
            channels[channel.name] = _resolved(channel, env, where=where)
        except NotificationsInvalid as exc:
            problems.append(str(exc))
    routes: list[Route] = []
    for index, route in enumerate(spec.routes):
        where = f"routes[{index}]"
        for name in route.channels:
            if not any(c.name == name for c in spec.channels):
                unknown = unknown_field(name, [c.name for c in spec.channels], kind="channel")
                problems.append(f"{where}.channels: {unknown}")
        problems.extend(_pages_only(route, spec.channels, where=where))
        if route.group_interval is not None and route.group_wait is None:
            problems.append(f"{where}: group_interval needs group_wait")
        routes.append(
            Route(
                key=_route_key(route),
                channels=tuple(dict.fromkeys(route.channels)),
                events=None if route.event is None else frozenset(e.value for e in route.event),
                severity=route.severity,
                policy=route.policy,
                target=route.target,
                tags=route.tags,
                continue_=route.continue_,
                group_wait=route.group_wait,
                group_interval=route.group_interval,
                repeat_interval=route.repeat_interval,
            )
        )
    if problems:
        raise NotificationsInvalid(f"{source}: {'; '.join(problems)}")
    for number, url in enumerate(dict.fromkeys(urls), start=1):
        name = f"{ENV_WEBHOOK_PREFIX}{number}"
        channels[name] = WebhookSpec(name=name, type="webhook", url=url)
        routes.append(Route(key=name, channels=(name,), always=True))
    return Notifications(channels=channels, routes=tuple(routes), source=source)


def _pages_only(
    route: RouteSpec,
    specs: Sequence[SlackSpec | PagerDutySpec | TeamsSpec | EmailSpec | WebhookSpec],
    *,
    where: str,
) -> list[str]:
    """A route that names an event a ``pagerduty`` channel would drop, sent to one: refused
    (routes without an ``event`` list are not checked: they reach what they match)."""
    if route.event is None:
        return []
    dropped = [e.value for e in route.event if e not in PAGERDUTY_EVENTS]
    pagers = [c.name for c in specs if isinstance(c, PagerDutySpec) and c.name in route.channels]
    if not dropped or not pagers:
        return []
    pages = ", ".join(sorted(e.value for e in PAGERDUTY_TRIGGERS))
    return [
        f"{where}: channel {pagers[0]!r} is a pagerduty channel, which triggers only on"
        f" {pages} and resolves on {PAGERDUTY_RESOLVES.value}; {', '.join(dropped)} would"
        " never reach it: send them to other channels in a route of their own"
    ]


def _route_key(route: RouteSpec) -> str:
    """A route's name in the sender's group and repeat marks: a digest of what it is, so
    moving it in the file keeps its marks and changing it starts afresh."""
    what = route.model_dump(mode="json", by_alias=True)
    if what.get("event") is not None:
        what["event"] = sorted(what["event"])
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return f"route-{digest}"


_SECRET_FIELDS = ("token", "signing_secret", "routing_key", "password", "secret")


def _resolved(
    channel: SlackSpec | PagerDutySpec | TeamsSpec | EmailSpec | WebhookSpec,
    env: Mapping[str, str],
    *,
    where: str,
) -> SlackSpec | PagerDutySpec | TeamsSpec | EmailSpec | WebhookSpec:
    """``channel`` with its secrets (and a webhook's header values) read from ``env``.

    A variable whose value holds a line break or another character that is not printable is
    refused, naming the setting and the variable but never the value: it cannot be sent in a
    header (nor is it a credential), and the HTTP library's error would quote it."""
    updates: dict[str, Any] = {}
    for name in _SECRET_FIELDS:
        value = getattr(channel, name, None)
        if isinstance(value, str):
            updates[name] = _resolved_text(value, env, where=f"{where}.{name}")
    if isinstance(channel, WebhookSpec) and channel.headers:
        updates["headers"] = {
            key: _resolved_text(value, env, where=f"{where}.headers.{key}")
            for key, value in channel.headers.items()
        }
    return channel.model_copy(update=updates)


def _resolved_text(value: str, env: Mapping[str, str], *, where: str) -> str:
    resolved = resolve(value, env, where=where)
    for match in _REFERENCE.finditer(value):
        name = match.group(1)
        if not env[name].isprintable():
            raise NotificationsInvalid(
                f"{where}: environment variable {name} holds a line break or other control"
                " character (the value is not shown; a secret read from a file often ends"
                " in a newline: remove it)"
            )
    return resolved


def load_notifications(
    path: Path | None, *, webhook_urls: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Notifications:
    """The notifications file at ``path`` (none: only ``webhook_urls``' channels)."""
    if path is None:
        return _build(
            _FileSpec(),
            source="VIGIL_NOTIFY_WEBHOOK_URLS",
            env={} if env is None else env,
            urls=webhook_urls,
        )
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise NotificationsInvalid(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    return parse_notifications(text, source=str(path), env=env, webhook_urls=webhook_urls)
