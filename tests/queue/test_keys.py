"""Every Redis key of a queue derives from its prefix."""

from __future__ import annotations

import pytest

from vigil.queue.keys import QueueKeys


def test_every_key_is_under_the_prefix_and_distinct() -> None:
    keys = QueueKeys("acme")
    assert all(key.startswith("acme:") for key in keys.all())
    assert len(set(keys.all())) == len(keys.all())
    assert keys.group.startswith("acme:")
    assert keys.group not in keys.all()  # a group name, not a key
    assert keys.pattern == "acme:*"


def test_default_prefix_and_separation() -> None:
    assert QueueKeys().stream == "vigil:queue:tasks"
    assert set(QueueKeys("a").all()).isdisjoint(QueueKeys("b").all())


def test_empty_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        QueueKeys("")
