"""What the notification tests share: a local HTTP server standing in for a channel's far
side (see :mod:`tests.notify.far_side`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notify.far_side import FarSide, far_side_running


@pytest.fixture
def far_side() -> Iterator[FarSide]:
    with far_side_running() as running:
        yield running
