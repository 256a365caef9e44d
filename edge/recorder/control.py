"""The local control interface standing in for the buttons: JSON lines over a Unix socket.

Request:  {"cmd": "start"} | {"cmd": "stop"} | {"cmd": "mark", "label": L, "note": N}
          | {"cmd": "set", "fields": {"case": …}} | {"cmd": "status"}
Response: {"ok": true, …} or {"ok": false, "error": "what is wrong"} — one line per request.
The socket is created 0660: only the recorder's user and group (the button daemon) may press.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from edge.recorder.errors import RecorderError
from fieldproof.errors import FieldproofError

_MAX_REQUEST = 64 * 1024


class ControlServer:
    """Serves the control socket for one agent, on a thread per connection."""

    def __init__(self, agent: Any, path: Path) -> None:
        self.agent = agent
        self.path = path
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        """Bind (replacing a stale socket file) and accept in the background."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="recorder-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and remove the socket file."""
        self._closing.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                if len(line) > _MAX_REQUEST:
                    reply: dict[str, Any] = {"ok": False, "error": "request too long"}
                else:
                    reply = self.handle(line)
                f.write(json.dumps(reply, ensure_ascii=False).encode("utf-8") + b"\n")
                f.flush()

    def handle(self, line: bytes) -> dict[str, Any]:
        """Answer one request line."""
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise RecorderError('a request is a JSON object with a "cmd"')
            cmd = req["cmd"]
            if cmd == "start":
                return {"ok": True, "recording": self.agent.start_recording()}
            if cmd == "stop":
                self.agent.stop_recording()
                return {"ok": True}
            if cmd == "mark":
                return {"ok": True, **self.agent.mark(str(req.get("label", "")), str(req.get("note", "")))}
            if cmd == "set":
                fields = req.get("fields")
                if not isinstance(fields, dict) or not fields:
                    raise RecorderError('set needs "fields": {"case": …, …}')
                return {"ok": True, "context": self.agent.set_context(**fields).as_record()}
            if cmd == "status":
                return {"ok": True, **self.agent.status()}
            raise RecorderError(f"unknown command {cmd!r}; commands: start, stop, mark, set, status")
        except ValueError as exc:
            return {"ok": False, "error": f"not a JSON request: {exc}"}
        except FieldproofError as exc:
            return {"ok": False, "error": exc.diagnostics()}


def request(path: Path, payload: dict[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to a recorder's control socket and return its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise RecorderError(
            f"cannot reach the recorder at {path}: {exc.strerror or exc}; is it running?"
        ) from exc
    answer: dict[str, Any] = json.loads(data)
    return answer
