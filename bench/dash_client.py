"""A Dash client that sends what the browser's renderer sends (the page callback of Dash Pages,
then the callbacks a layout fires on load), over HTTP or a Flask test client: the load test's
users and the reliability tests' probes.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Transport:
    """``get(path) -> (status, body)`` and ``post(path, obj) -> (status, body)``; body is bytes."""

    def get(self, path: str) -> tuple[int, bytes]:
        raise NotImplementedError

    def post(self, path: str, obj: Any) -> tuple[int, bytes]:
        raise NotImplementedError


class HttpTransport(Transport):
    """One keep-alive HTTP/1.1 connection (reopened after a failure)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0, headers: dict[str, str] | None = None):
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = headers or {}
        self._con: http.client.HTTPConnection | None = None

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self._con is None:
                self._con = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._con.request(method, path, body=body, headers={**self.headers, **headers})
                resp = self._con.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as e:  # the connection is unusable now
                self._con.close()
                self._con = None
                retry = isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if attempt or not retry:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[int, bytes]:
        return self._request("GET", path, None, {})

    def post(self, path: str, obj: Any) -> tuple[int, bytes]:
        return self._request("POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json"})


class FlaskTransport(Transport):
    """A Flask test client (tests: no socket, same request handling)."""

    def __init__(self, client: Any, headers: dict[str, str] | None = None) -> None:
        self.client, self.headers = client, headers or {}

    def get(self, path: str) -> tuple[int, bytes]:
        r = self.client.get(path, headers=self.headers)
        return r.status_code, r.data

    def post(self, path: str, obj: Any) -> tuple[int, bytes]:
        r = self.client.post(path, json=obj, headers=self.headers)
        return r.status_code, r.data


def _outputs(output: str) -> list[dict[str, str]]:
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    return [dict(zip(("id", "property"), p.rsplit(".", 1), strict=True)) for p in parts]


@dataclass
class DashClient:
    """Calls a Dash app's callbacks as its renderer would. ``timer(kind, seconds, ok, note)`` sees
    every request."""

    transport: Transport
    timer: Callable[[str, float, bool, str], None] = lambda *_: None
    deps: list[dict[str, Any]] = field(default_factory=list)

    def request(self, kind: str, method: str, path: str, obj: Any = None) -> tuple[int, bytes]:
        start = time.perf_counter()
        try:
            status, body = self.transport.get(path) if method == "GET" else self.transport.post(path, obj)
        except (OSError, http.client.HTTPException) as e:
            self.timer(kind, time.perf_counter() - start, False, f"{type(e).__name__}: {e}")
            raise
        ok = status in (200, 204)
        self.timer(kind, time.perf_counter() - start, ok, "" if ok else f"HTTP {status} {path}")
        return status, body

    def load_dependencies(self) -> None:
        status, body = self.request("dependencies", "GET", "/_dash-dependencies")
        if status != 200:
            raise RuntimeError(f"/_dash-dependencies answered {status}")
        self.deps = json.loads(body)

    def dep(self, output_prefix: str) -> dict[str, Any]:
        """The server callback whose output string starts with ``output_prefix`` (after '..')."""
        for d in self.deps:
            if d["output"].lstrip(".").startswith(output_prefix) and not d.get("clientside_function"):
                return d
        raise KeyError(f"no callback with output {output_prefix!r}")

    def call(
        self, kind: str, dep: dict[str, Any], inputs: dict[str, Any], state: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any] | None]:
        """Fire ``dep`` with ``inputs`` / ``state`` given as {"id.prop": value} (absent: not sent)."""

        def items(specs: list[dict[str, str]], values: dict[str, Any]) -> list[dict[str, Any]]:
            out = []
            for s in specs:
                key = f"{s['id']}.{s['property']}"
                out.append({**s, "value": values[key]} if key in values else dict(s))
            return out

        payload = {
            "output": dep["output"],
            "outputs": outs if len(outs := _outputs(dep["output"])) > 1 else outs[0],
            "inputs": items(dep["inputs"], inputs),
            "changedPropIds": [
                k for k in inputs if any(f"{s['id']}.{s['property']}" == k for s in dep["inputs"])
            ],
            "state": items(dep.get("state", []), state or {}),
        }
        status, body = self.request(kind, "POST", "/_dash-update-component", payload)
        return status, (json.loads(body) if status == 200 and body else None)

    def page(self, kind: str, pathname: str, search: str = "") -> dict[str, Any] | None:
        """The layout of a page (the Dash Pages callback), or None when it failed."""
        dep = self.dep("_pages_content.children")
        status, resp = self.call(
            kind, dep, {"_pages_location.pathname": pathname, "_pages_location.search": search}
        )
        return resp["response"]["_pages_content"]["children"] if resp else None

    def initial_callbacks(self, kind: str, layout: Any) -> list[dict[str, Any]]:
        """Fire every server callback whose inputs all live in ``layout`` (one round, as on load)."""
        props = component_props(layout)
        answers = []
        for d in self.deps:
            if d.get("clientside_function") or d.get("prevent_initial_call"):
                continue
            ids = [s["id"] for s in d["inputs"] + d.get("state", [])]
            if any(i.startswith("{") or i not in props for i in ids):
                continue

            def values(specs: list[dict[str, str]]) -> dict[str, Any]:
                return {
                    f"{s['id']}.{s['property']}": props[s["id"]][s["property"]]
                    for s in specs
                    if s["property"] in props[s["id"]]
                }

            name = f"{kind}>{_outputs(d['output'])[0]['id']}"
            status, resp = self.call(name, d, values(d["inputs"]), values(d.get("state", [])))
            if resp is not None:
                answers.append(resp)
        return answers


def component_props(layout: Any) -> dict[str, dict[str, Any]]:
    """Props of every component with a string id in a serialised Dash layout."""
    found: dict[str, dict[str, Any]] = {}
    stack = [layout]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            props = node.get("props")
            if isinstance(props, dict) and "type" in node:
                if isinstance(props.get("id"), str):
                    found[props["id"]] = props
                stack.extend(v for v in props.values() if isinstance(v, (list, dict)))
    return found


def texts(layout: Any) -> list[str]:
    """Every string child in a serialised layout (what a user reads)."""
    out, stack = [], [layout]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            props = node.get("props", {})
            if isinstance(props, dict):
                stack.append(props.get("children"))
    return out
