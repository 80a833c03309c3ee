"""`cta dashboard`: the dashboard and its API over an account without trading. It refuses to start without a token
(there is no default), and with one it serves the page and API v1 over the account's database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import subprocess_env

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_a_token_it_refuses_naming_the_variables(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path, CTA_SERVING__DATABASE_URL=f"sqlite:///{tmp_path / 'serving.db'}")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "dashboard"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "CTA_VIEWER_TOKEN" in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_with_a_token_it_serves_the_account(tmp_path: Path) -> None:
    port, token = free_port(), "cli-dashboard-viewer-token-0123"
    env = subprocess_env(
        tmp_path,
        CTA_SERVING__DATABASE_URL=f"sqlite:///{tmp_path / 'serving.db'}",
        CTA_SERVING__API_PORT=str(port),
        CTA_VIEWER_TOKEN=token,
        CTA_EXCHANGE__API_URL="http://127.0.0.1:1",  # no exchange: the chart says so, nothing else needs one
        CTA_TRAINING__TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dashboard"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline, overview = time.monotonic() + 90, None
        while time.monotonic() < deadline and process.poll() is None:
            request = urllib.request.Request(f"{url}/api/v1/overview", headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    overview = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.5)
        assert overview is not None, process.stdout.read() if process.poll() is not None else "no answer"
        assert not overview["ready"] and "no worker" in overview["reasons"][0]
        assert [m["market"] for m in overview["markets"]] == ["binance:BTC/USDT:1h", "binance:ETH/USDT:1h"]
        body = json.dumps({"state": "HALTED", "reason": "viewer"}).encode()
        request = urllib.request.Request(
            f"{url}/api/v1/control",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert token not in output
    assert os.environ.get("CTA_VIEWER_TOKEN") is None
