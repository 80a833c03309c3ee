"""Issue 19, item 12: the single-node Ray that trains PPO listens on loopback only.

The project's real PPO training (the tiny budget of tests/training) runs while a thread records every listening
socket of this process and its children (Ray's GCS, raylet, agents and workers are started by `ray.init`)."""

from __future__ import annotations

import ipaddress
import threading
import time

import psutil
import pytest

from cta.config import TrainingSettings
from cta.costs import CostModel
from tests.factories import training_data
from training.models.ppo import fit_ppo

pytestmark = pytest.mark.slow


def listening() -> dict[tuple[str, int], str]:
    """(address, port) -> process name, for every listening inet socket of this process and its descendants."""
    me = psutil.Process()
    out: dict[tuple[str, int], str] = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    out[(connection.laddr.ip, connection.laddr.port)] = process.name()
        except psutil.Error:  # a worker that exited between listing and asking
            continue
    return out


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_ppo_training_keeps_every_ray_process_on_loopback(tmp_path_factory: pytest.TempPathFactory) -> None:
    ray_dir = tmp_path_factory.mktemp("ray")  # short: Ray's socket paths must fit in 107 bytes
    settings = TrainingSettings(ppo_iterations=1, ppo_window=8, seed=7, ray_dir=ray_dir)
    before = set(listening())
    seen: dict[tuple[str, int], str] = {}
    names: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for key, name in listening().items():
                if key not in before:
                    seen[key] = name
                    names.add(name)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        fit_ppo(training_data(rows=3000), settings, CostModel(taker_fee_rate=0.001, slippage_bps=3.0))
    finally:
        done.set()
        watcher.join(timeout=10)
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), names  # Ray was seen
    exposed = {f"{address}:{port} ({name})" for (address, port), name in seen.items() if not is_loopback(address)}
    assert not exposed, f"Ray listened beyond loopback: {sorted(exposed)}"
