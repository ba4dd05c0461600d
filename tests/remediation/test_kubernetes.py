"""The kubernetes plugin against a fake Kubernetes API server that records every request.

A real API server cannot run here, so the fake is a real HTTP server speaking the few
endpoints the plugin uses; the tests pin the exact requests the plugin sends.
"""

from __future__ import annotations

import importlib
import json
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import vigil.remediation.plugins as plugins
from vigil.clock import FakeClock
from vigil.remediation.plugins.base import PluginCall, PluginConfigError, PluginFailed
from vigil.remediation.plugins.kubernetes import INSTALL_HINT, KubernetesPlugin

TOKEN = "fake-token"
APPS = "/apis/apps/v1/namespaces"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


@dataclass
class Received:
    method: str
    path: str  # with the query string
    content_type: str | None
    authorization: str | None
    body: Any  # decoded JSON, None when empty


@dataclass
class FakeApi:
    """Scale subresources by path, deployments and pods that exist, and what was asked."""

    url: str
    replicas: dict[str, int] = field(default_factory=dict)
    objects: set[str] = field(default_factory=set)
    failures: dict[tuple[str, str], tuple[int, str, bytes]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    hang: bool = False

    def fail(self, method: str, path: str, code: int, *, json_status: bool = True) -> None:
        if json_status:
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"fake failure {code}",
                "reason": "Fake",
                "code": code,
            }
            self.failures[method, path] = (code, "application/json", json.dumps(status).encode())
        else:
            self.failures[method, path] = (code, "text/plain", b"upstream gone")

    @property
    def writes(self) -> list[Received]:
        return [r for r in self.received if r.method != "GET"]


def _scale(path: str, replicas: int) -> dict[str, Any]:
    parts = path.split("/")
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": parts[-2], "namespace": parts[5], "resourceVersion": "41"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": "app=web"},
    }


def _workload(path: str) -> dict[str, Any]:
    parts = path.split("/")
    kind = {"deployments": "Deployment", "statefulsets": "StatefulSet"}[parts[6]]
    labels = {"app": parts[7]}
    spec: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = parts[7]
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": parts[7], "namespace": parts[5], "resourceVersion": "42"},
        "spec": spec,
    }


def _not_found(path: str) -> tuple[int, str, bytes]:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"{path.split('/')[-1]} not found",
        "reason": "NotFound",
        "code": 404,
    }
    return 404, "application/json", json.dumps(status).encode()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    holder: list[FakeApi] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            state = holder[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            state.received.append(
                Received(
                    method=self.command,
                    path=self.path,
                    content_type=self.headers.get("Content-Type"),
                    authorization=self.headers.get("Authorization"),
                    body=json.loads(raw) if raw else None,
                )
            )
            if state.hang:
                state.release.wait()
                return
            path = self.path.partition("?")[0]
            self._reply(*self._answer(state, path, raw))

        def _answer(self, state: FakeApi, path: str, raw: bytes) -> tuple[int, str, bytes]:
            failure = state.failures.get((self.command, path))
            if failure:
                return failure
            if path in state.replicas:
                if self.command == "PATCH":
                    state.replicas[path] = json.loads(raw)["spec"]["replicas"]
                body = _scale(path, state.replicas[path])
            elif path in state.objects:
                body = _workload(path) if path.startswith("/apis/") else {"kind": "Pod"}
            else:
                return _not_found(path)
            return 200, "application/json", json.dumps(body).encode()

        def _reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PATCH = do_PUT = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(FakeApi(url=f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield holder[0]
    finally:
        holder[0].release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def write_kubeconfig(path: Path, server: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "vigil", "user": {"token": TOKEN}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "vigil"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return str(path)


@pytest.fixture
def kubeconfig(api: FakeApi, tmp_path: Path) -> str:
    return write_kubeconfig(tmp_path / "kubeconfig", api.url)


def call(options: dict[str, Any], *, timeout: float = 5.0) -> PluginCall:
    return PluginCall(
        action_id=3,
        attempt=1,
        action="scale-up",
        target="web",
        params={},
        options=options,
        timeout=timeout,
    )


async def test_scale_by_delta_patches_the_scale_subresource(api: FakeApi, kubeconfig: str) -> None:
    path = f"{APPS}/default/deployments/web/scale"
    api.replicas[path] = 3
    options = {
        "operation": "scale",
        "kind": "deployment",
        "name": "web",
        "delta": "+2",
        "kubeconfig": kubeconfig,
    }

    result = await KubernetesPlugin().run(call(options))

    assert [(r.method, r.path, r.content_type, r.body) for r in api.received] == [
        ("GET", path, None, None),
        (
            "PATCH",
            f"{path}?fieldManager=vigil",
            MERGE,
            {"spec": {"replicas": 5}, "metadata": {"resourceVersion": "41"}},
        ),
    ]
    assert {r.authorization for r in api.received} == {f"Bearer {TOKEN}"}
    assert result.details == {
        "kind": "deployment",
        "name": "web",
        "namespace": "default",
        "from": 3,
        "to": 5,
        "clamped": False,
    }
    assert api.replicas[path] == 5


async def test_scale_to_a_count_is_clamped_by_max(api: FakeApi, kubeconfig: str) -> None:
    path = f"{APPS}/shop/statefulsets/db/scale"
    api.replicas[path] = 2
    options = {
        "operation": "scale",
        "kind": "statefulset",
        "name": "db",
        "namespace": "shop",
        "replicas": "10",
        "min": 1,
        "max": "6",
        "kubeconfig": kubeconfig,
    }

    result = await KubernetesPlugin().run(call(options))

    [patch] = api.writes
    assert (patch.method, patch.path, patch.content_type) == (
        "PATCH",
        f"{path}?fieldManager=vigil",
        MERGE,
    )
    assert patch.body == {"spec": {"replicas": 6}, "metadata": {"resourceVersion": "41"}}
    assert result.details == {
        "kind": "statefulset",
        "name": "db",
        "namespace": "shop",
        "from": 2,
        "to": 6,
        "clamped": True,
    }


async def test_scale_down_is_clamped_by_min(api: FakeApi, kubeconfig: str) -> None:
    path = f"{APPS}/default/deployments/web/scale"
    api.replicas[path] = 4
    options = {"operation": "scale", "kind": "deployment", "name": "web", "delta": -5}

    result = await KubernetesPlugin().run(call({**options, "min": 2, "kubeconfig": kubeconfig}))

    assert [r.body for r in api.writes] == [
        {"spec": {"replicas": 2}, "metadata": {"resourceVersion": "41"}}
    ]
    assert (result.details["to"], result.details["clamped"]) == (2, True)


@pytest.mark.parametrize(
    ("current", "scale_options", "clamped"),
    [
        (3, {"replicas": 3}, False),
        (3, {"delta": 0}, False),
        (2, {"delta": -1, "min": 2}, True),
        (5, {"delta": 1, "max": 5}, True),
        # Above max already: a step up must not become a step down.
        (8, {"delta": 1, "max": 5}, True),
    ],
)
async def test_nothing_to_do_writes_nothing(
    api: FakeApi, kubeconfig: str, current: int, scale_options: dict[str, int], clamped: bool
) -> None:
    path = f"{APPS}/default/deployments/web/scale"
    api.replicas[path] = current
    options = {"operation": "scale", "kind": "deployment", "name": "web", **scale_options}

    result = await KubernetesPlugin().run(call({**options, "kubeconfig": kubeconfig}))

    assert [(r.method, r.path) for r in api.received] == [("GET", path)]
    assert result.message.startswith("nothing to do")
    assert (result.details["from"], result.details["to"]) == (current, current)
    assert result.details["clamped"] is clamped


async def test_rollout_restart_sets_the_restarted_at_annotation(
    api: FakeApi, kubeconfig: str
) -> None:
    path = f"{APPS}/default/deployments/web"
    api.objects.add(path)
    clock = FakeClock(datetime(2026, 1, 19, 12, 30, 5, 123456, tzinfo=UTC))
    options = {"operation": "restart", "kind": "deployment", "name": "web"}

    result = await KubernetesPlugin(clock).run(call({**options, "kubeconfig": kubeconfig}))

    [patch] = api.received
    assert (patch.method, patch.path, patch.content_type) == (
        "PATCH",
        f"{path}?fieldManager=vigil",
        STRATEGIC,
    )
    annotations = {"kubectl.kubernetes.io/restartedAt": "2026-01-19T12:30:05Z"}
    assert patch.body == {"spec": {"template": {"metadata": {"annotations": annotations}}}}
    assert result.details == {
        "kind": "deployment",
        "name": "web",
        "namespace": "default",
        "restarted_at": "2026-01-19T12:30:05Z",
    }


async def test_rollout_restart_of_a_statefulset(api: FakeApi, kubeconfig: str) -> None:
    path = f"{APPS}/data/statefulsets/db"
    api.objects.add(path)
    options = {"operation": "restart", "kind": "statefulset", "name": "db", "namespace": "data"}

    await KubernetesPlugin(FakeClock()).run(call({**options, "kubeconfig": kubeconfig}))

    [patch] = api.received
    assert (patch.method, patch.path) == ("PATCH", f"{path}?fieldManager=vigil")
    assert patch.body["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "2026-01-19T12:00:00Z"
    }


async def test_delete_pod(api: FakeApi, kubeconfig: str) -> None:
    path = "/api/v1/namespaces/default/pods/web-7d9f-x2k4q"
    api.objects.add(path)
    options = {"operation": "delete-pod", "name": "web-7d9f-x2k4q", "kubeconfig": kubeconfig}

    result = await KubernetesPlugin().run(call(options))

    assert [(r.method, r.path, r.body) for r in api.received] == [("DELETE", path, None)]
    assert result.details == {"kind": "pod", "name": "web-7d9f-x2k4q", "namespace": "default"}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"operation": "scale", "kind": "deployment", "delta": 1}, "deployment default/web"),
        ({"operation": "restart", "kind": "statefulset"}, "statefulset default/web"),
        ({"operation": "delete-pod"}, "pod default/web"),
    ],
)
async def test_not_found_is_permanent_and_names_the_object(
    api: FakeApi, kubeconfig: str, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(PluginFailed) as failed:
        await KubernetesPlugin().run(call({**options, "name": "web", "kubeconfig": kubeconfig}))

    assert failed.value.retryable is False
    assert f"{named}: not found" in failed.value.message
    assert failed.value.details["status_code"] == 404
    assert len(api.received) == 1  # nothing written after the failed read


@pytest.mark.parametrize(
    ("method", "code", "json_status", "retryable"),
    [
        ("GET", 401, True, False),
        ("GET", 403, True, False),
        ("PATCH", 403, True, False),
        ("PATCH", 422, True, False),
        ("PATCH", 409, True, True),
        ("PATCH", 429, True, True),
        ("GET", 500, True, True),
        ("PATCH", 503, False, True),  # a proxy's plain-text answer, not a Status
    ],
)
async def test_api_errors_are_classified(
    api: FakeApi, kubeconfig: str, method: str, code: int, json_status: bool, retryable: bool
) -> None:
    path = f"{APPS}/default/deployments/web/scale"
    api.replicas[path] = 1
    api.fail(method, path, code, json_status=json_status)
    options = {"operation": "scale", "kind": "deployment", "name": "web", "replicas": 2}

    with pytest.raises(PluginFailed) as failed:
        await KubernetesPlugin().run(call({**options, "kubeconfig": kubeconfig}))

    assert failed.value.retryable is retryable
    assert failed.value.details["status_code"] == code
    assert "deployment default/web" in failed.value.message
    assert TOKEN not in failed.value.message


async def test_unreachable_api_server_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    options = {"operation": "delete-pod", "name": "web-1", "kubeconfig": kubeconfig}

    with pytest.raises(PluginFailed) as failed:
        await KubernetesPlugin().run(call(options))

    assert failed.value.retryable is True
    assert "unreachable" in failed.value.message


async def test_timeout_is_retryable(api: FakeApi, kubeconfig: str) -> None:
    api.hang = True
    options = {"operation": "delete-pod", "name": "web-1", "kubeconfig": kubeconfig}

    with pytest.raises(PluginFailed) as failed:
        await KubernetesPlugin().run(call(options, timeout=0.2))

    assert failed.value.retryable is True
    assert "timed out after 0.2s" in failed.value.message


@pytest.mark.parametrize("content", [None, "clusters: [", "{}"])
async def test_a_kubeconfig_that_does_not_load_is_permanent(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    options = {"operation": "delete-pod", "name": "web-1", "kubeconfig": str(path)}

    with pytest.raises(PluginFailed) as failed:
        await KubernetesPlugin().run(call(options))

    assert failed.value.retryable is False
    assert "cannot load the cluster configuration" in failed.value.message


@pytest.mark.parametrize(
    "rendered",
    [
        {"name": "../../secrets/x"},
        {"name": "Web_1"},
        {"namespace": "kube-system/pods"},
        {"delta": "two"},
        {"delta": "1.5"},
    ],
)
async def test_invalid_rendered_options_fail_permanently_without_a_request(
    api: FakeApi, kubeconfig: str, rendered: dict[str, str]
) -> None:
    options = {"operation": "scale", "kind": "deployment", "name": "web", "delta": 1}

    with pytest.raises(PluginFailed) as failed:
        await KubernetesPlugin().run(call({**options, **rendered, "kubeconfig": kubeconfig}))

    assert failed.value.retryable is False
    assert failed.value.message.startswith("kubernetes: ")
    assert api.received == []


SCALE = {"operation": "scale", "kind": "deployment", "name": "{target}"}


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"kind": "deployment", "name": "web"}, "`operation` must be one of"),
        ({"operation": "rollback", "kind": "deployment", "name": "web"}, "`operation`"),
        ({"operation": "restart", "name": "web"}, "restart needs `kind`"),
        ({"operation": "restart", "kind": "daemonset", "name": "web"}, "`kind` must be"),
        ({"operation": "delete-pod", "kind": "deployment", "name": "web"}, "takes no `kind`"),
        ({"operation": "restart", "kind": "deployment"}, "`name` is required"),
        ({"operation": "restart", "kind": "deployment", "name": "Web"}, "not a valid object"),
        ({**SCALE, "namespace": "a.b"}, "`namespace`"),
        (SCALE, "exactly one of `delta` or `replicas`"),
        ({**SCALE, "delta": 1, "replicas": 2}, "exactly one of `delta` or `replicas`"),
        ({**SCALE, "replicas": -1}, "`replicas` must be a whole number"),
        ({**SCALE, "replicas": "-1"}, "`replicas` must be a whole number"),
        ({**SCALE, "replicas": 2.5}, "`replicas` must be a whole number"),
        ({**SCALE, "replicas": True}, "`replicas` must be a whole number"),
        ({**SCALE, "delta": "1e3"}, "`delta` must be an integer"),
        ({**SCALE, "delta": 1, "min": -1}, "`min` must be a whole number"),
        ({**SCALE, "delta": 1, "min": 5, "max": 2}, "`max` (2) is below `min` (5)"),
        ({"operation": "restart", "kind": "deployment", "name": "w", "delta": 1}, "only apply"),
        ({**SCALE, "delta": 1, "kubeconfig": 3}, "`kubeconfig`"),
        (
            {**SCALE, "delta": 1, "replica": 2},
            "unknown option 'replica' (did you mean 'replicas'?)",
        ),
    ],
)
def test_check_refuses_bad_options(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(PluginConfigError, match=r"^kubernetes: ") as refused:
        KubernetesPlugin().check(options)

    assert problem in str(refused.value)


@pytest.mark.parametrize(
    "options",
    [
        {**SCALE, "delta": "{params.step}", "min": "{params.min}", "max": 10},
        {**SCALE, "replicas": "{params.replicas}", "namespace": "{params.namespace}"},
        {**SCALE, "delta": -2, "min": 0, "kubeconfig": "/etc/vigil/kubeconfig"},
        {"operation": "restart", "kind": "{params.kind}", "name": "api-{target}"},
        {"operation": "delete-pod", "name": "{target}", "namespace": "web"},
        {"operation": "{params.op}", "kind": "deployment", "name": "{target}"},
    ],
)
def test_check_accepts_valid_options_and_placeholders(options: dict[str, Any]) -> None:
    KubernetesPlugin().check(options)


async def test_without_lightkube_the_plugin_loads_and_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "lightkube" or m.startswith("lightkube.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lightkube", None)  # makes `import lightkube` fail
    monkeypatch.delitem(sys.modules, "vigil.remediation.plugins.kubernetes")
    monkeypatch.setattr(plugins, "kubernetes", plugins.kubernetes)  # restored afterwards

    module = importlib.import_module("vigil.remediation.plugins.kubernetes")
    plugin = module.KubernetesPlugin()

    with pytest.raises(PluginConfigError, match="pip install vigil\\[kubernetes\\]"):
        plugin.check({**SCALE, "delta": 1})
    with pytest.raises(PluginFailed) as failed:
        await plugin.run(call({**SCALE, "name": "web", "delta": 1}))
    assert failed.value.retryable is False
    assert failed.value.message == INSTALL_HINT
