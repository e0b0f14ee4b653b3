"""A `gristmill up` worker in a child process, for benchmarks and integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.broker import free_port


class WorkerProcess:
    """Runs `python -m streams up` with its own data dir and HTTP port; stop() signals it and waits."""

    def __init__(self, data_dir: Path, registry_dir: Path, bootstrap: str | None, namespace: str = "",
                 **env: str) -> None:
        self.data_dir = data_dir
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "GRISTMILL_DATA_DIR": str(data_dir.resolve()),
            "GRISTMILL_REGISTRY_DIR": str(registry_dir.resolve()),  # the worker runs in data_dir
            "GRISTMILL_HTTP_PORT": str(self.http_port),
            "GRISTMILL_NAMESPACE": namespace,
            "GRISTMILL_SESSION_TIMEOUT_S": "6",
            "HF_HUB_OFFLINE": "1",
            **env,
        }
        if bootstrap:
            self.env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        else:
            self.env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        self.process: subprocess.Popen[str] | None = None
        self.log_path = data_dir / "worker.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 90) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("a")
        self.process = subprocess.Popen([sys.executable, "-m", "streams", "up"], env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, text=True, cwd=self.data_dir)
        log.close()
        self.wait_for(lambda: self.get("/health"), timeout_s, "worker HTTP API")
        return self

    def get(self, path: str, **params: Any) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def post(self, path: str, body: Any, token: str | None = None) -> Any:
        """POST a JSON body (with the admin token when given); the JSON answer."""
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(), headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def wait_for(self, check: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited ({self.process.returncode}) waiting for {what}:\n{self.log()}")
            try:
                last = check()
                if last:
                    return last
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{what} not reached in {timeout_s}s (last: {last!r})\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self.process = None
        return code

