"""Which label names the target of an alert, a series or a data point."""

from __future__ import annotations

import pytest

from vigil.ingest.labels import OTLP_TARGET_ATTRIBUTES, strip_port, target_of


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"target": "web-01", "host": "h", "instance": "i:9100"}, "web-01"),
        ({"host": "h", "instance": "i:9100"}, "h"),
        ({"instance": "web-01:9100", "job": "node"}, "web-01"),
        ({"pod": "api-7d9f", "service": "api", "job": "kubelet"}, "api-7d9f"),
        ({"service": "api", "job": "kubelet"}, "api"),
        ({"job": "node"}, "node"),
        ({"target": "", "job": "node"}, "node"),
        ({"alertname": "HighCPU", "severity": "critical"}, None),
    ],
)
def test_the_first_present_label_names_the_target(
    labels: dict[str, str], expected: str | None
) -> None:
    assert target_of(labels) == expected


def test_a_named_label_wins_and_nothing_else_is_read() -> None:
    labels = {"cluster": "eu-1", "instance": "web-01:9100"}
    assert target_of(labels, "cluster") == "eu-1"
    assert target_of(labels, "node") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("web-01:9100", "web-01"),
        ("10.0.0.5:9100", "10.0.0.5"),
        ("[::1]:9100", "[::1]"),
        ("web-01", "web-01"),
        ("fe80::1", "fe80::1"),
        ("web-01:http", "web-01:http"),
    ],
)
def test_only_a_port_is_taken_off_an_instance(value: str, expected: str) -> None:
    assert strip_port(value) == expected


def test_otlp_resources_name_targets_by_their_own_attributes() -> None:
    attributes = {"service.name": "checkout", "host.name": "web-01"}
    assert target_of(attributes, order=OTLP_TARGET_ATTRIBUTES) == "web-01"
    assert target_of({"service.name": "checkout"}, order=OTLP_TARGET_ATTRIBUTES) == "checkout"
