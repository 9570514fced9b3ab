"""Real servers for tests: a subprocess on a free loopback port, waited for, and always ended with its children."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from tests.conftest import ROOT

STARTUP_SECONDS = 120


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """`command` running in its own process group; on exit the whole group is ended (the server and its workers)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process)


def wait_until_ready(process: subprocess.Popen, log_path: Path, ready: Callable[[], bool]) -> None:
    """Poll `ready()` until it is true; it may raise httpx.TransportError while the server starts, or pytest.fail."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited with {process.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if ready():
                return
        if time.monotonic() > deadline:
            pytest.fail(f"{process.args} not ready after {STARTUP_SECONDS}s:\n{log_path.read_text()}")
        time.sleep(0.25)


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], log_path: Path, ready: Callable[[], bool]) -> Iterator[None]:
    """`started`, then waited for until `ready()`."""
    with started(command, env, log_path) as process:
        wait_until_ready(process, log_path, ready)
        yield


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group (the server and any worker it spawned), then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # a worker that outlived its server
