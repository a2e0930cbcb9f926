"""Helpers for the service's tests: a built-in-model store made once per test session and
copied for each server, world edits with their images, a real ``editscope serve`` in a
subprocess on 127.0.0.1 (a free port, always stopped), and a small HTTP client."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import editscope

READY = re.compile(r"serving store .* on (http://127\.0\.0\.1:\d+)")
# The built-in model's ScopeMemory preset with a 16-input reference set (128 in the preset),
# so that the session's store is made in seconds; everything else as shipped.
REFERENCE_SIZE = 16


def template_store(base: Path) -> Path:
    """A store on the built-in model, made once per session under ``base`` and reused."""
    directory = base / "service-template-store"
    if (directory / "store.json").is_file():
        return directory
    from editscope.store import EditStore

    preset = base / "service-preset.yaml"
    shipped = Path(editscope.__file__).parent / "presets" / "scopememory" / "builtin.yaml"
    preset.write_text(re.sub(r"reference_size: \d+", f"reference_size: {REFERENCE_SIZE}", shipped.read_text()))
    building = base / f"service-template-{uuid.uuid4().hex[:8]}"
    EditStore.init(building, "builtin", str(preset)).close()
    building.rename(directory)
    return directory


def copy_store(template: Path, directory: Path) -> Path:
    shutil.copytree(template, directory, ignore=shutil.ignore_patterns("lock"))
    return directory


@dataclass(frozen=True)
class WorldEdit:
    prompt: str
    target: str
    image: bytes  # PNG
    base_answer: str  # the world's answer before the edit

    @property
    def image_b64(self) -> str:
        return base64.b64encode(self.image).decode()

    def body(self, **extra: Any) -> dict[str, Any]:
        return {"prompt": self.prompt, "target": self.target, "image": self.image_b64, **extra}


def world_edits(n: int, split: str = "test") -> list[WorldEdit]:
    """``n`` edits of the built-in world's ``split`` (distinct facts), images as PNG bytes."""
    from editscope import world as world_module
    from editscope.world.edits import record_images

    world = world_module.load_world()
    edits = []
    for record in world_module.make_records(world, split, n=n):
        buffer = io.BytesIO()
        record_images(world, record)[record["image"]].save(buffer, format="PNG")
        edits.append(WorldEdit(record["src"], record["alt"], buffer.getvalue(), record["pred"]))
    return edits


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def call(url: str, method: str = "GET", *, json_body: Any = None, data: bytes | None = None,
         headers: dict[str, str] | None = None, key: str | None = None, timeout: float = 120.0) -> Reply:
    """One HTTP request; the reply's JSON (or text) whatever its status."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    if json_body is not None:
        data = json.dumps(json_body).encode()
        sent.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, got, raw = error.code, dict(error.headers), error.read()
    try:
        body: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = raw
    return Reply(status, got, body)


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, content in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
                     "Content-Type: image/png\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def package_env() -> dict[str, str]:
    """The environment for a child process that imports the same editscope as this one."""
    source = str(Path(editscope.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Server:
    """``editscope serve --store DIR --port 0`` in a subprocess; ``url`` once it is ready."""

    def __init__(self, store: Path, *args: str, ready_timeout_s: float = 240.0) -> None:
        self.store = store
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "editscope.cli.main", "serve", "--store", str(store), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=package_env(),
        )
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(ready_timeout_s) or not self.url:
            self.stop()
            raise AssertionError("the server did not start:\n" + "".join(self.lines))
        reply = call(self.url + "/healthz")
        assert reply.status == 200, reply

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            found = READY.search(line)
            if found and not self.url:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()  # the process ended

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_settled(server_url: str, edit_id: int, key: str | None = None, timeout_s: float = 240.0) -> dict[str, Any]:
    """The edit once the server reports it applied or rejected (the server's long poll)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = call(f"{server_url}/v1/edits/{edit_id}?wait=30", key=key)
        assert reply.status == 200, reply
        if reply.body["status"] != "pending":
            return reply.body
    raise AssertionError(f"edit {edit_id} still pending after {timeout_s} s")
