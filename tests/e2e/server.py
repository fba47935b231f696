"""A real `cutover serve` process on a free port, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs

from gateway.auth import mint_token
from gateway.client import websocket_url

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-secret-0123456789abcdef-0123456789"
LISTENING = re.compile(r"serving on (http://[0-9.]+:[0-9]+)")


@attrs.define
class ServerProcess:
    """One node; `url` is its base URL once `start` returns."""

    workdir: Path
    args: list[str] = attrs.Factory(list)
    env: dict[str, str] = attrs.Factory(dict)
    secret: str = SECRET
    process: subprocess.Popen | None = None
    url: str = ""
    log: list[str] = attrs.Factory(list)

    @property
    def ws_url(self) -> str:
        return websocket_url(self.url)

    def token(self, user: str, **kwargs) -> str:
        return mint_token(self.secret, user, **kwargs)

    def start(self, timeout: float = 30.0) -> ServerProcess:
        store = self.workdir / "cutover.db"
        command = [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--store",
            f"sqlite:///{store}",
            "--jwt-secret",
            self.secret,
            *self.args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update(self.env)
        self.process = subprocess.Popen(
            command,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            text=True,
            cwd=self.workdir,
        )
        listening = threading.Event()

        def drain(stream) -> None:
            for line in stream:
                self.log.append(line)
                match = LISTENING.search(line)
                if match and not listening.is_set():
                    self.url = match.group(1)
                    listening.set()

        threading.Thread(target=drain, args=(self.process.stderr,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if listening.wait(0.1):
                return self
            if self.process.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(
                    f"cutover serve exited {self.process.returncode}:\n" + "".join(self.log)
                )
        self.stop()
        raise RuntimeError("cutover serve did not start in time:\n" + "".join(self.log))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def output(self) -> str:
        """Everything the process has logged so far."""
        return "".join(self.log)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
