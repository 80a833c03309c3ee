"""compose.yaml + deploy/compose.host.yaml as one file that docker-compose v1 can start on a host-network-only machine.

Compose merges an override's `ports:` into the base file's and cannot remove them (Compose v2 has `!reset`, which
v1's YAML loader refuses), while Docker refuses published ports on `network_mode: host` ("host network_mode is
incompatible with port_bindings"). So: `docker-compose config` of the two files (validated, interpolated, paths made
absolute), minus the `ports` of host-network services (meaningless there: each service binds its port on the
host itself), written to one file.

    python -m deploy.compose_host OUT.yaml [--env-file FILE]    # then: docker-compose -f OUT.yaml up -d
"""

# ruff: noqa: S603  (docker-compose with fixed arguments)

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
FILES = (REPO_ROOT / "compose.yaml", REPO_ROOT / "deploy" / "compose.host.yaml")


def merged_config(env_file: Path | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`docker-compose config` of compose.yaml + the host override, as a dict."""
    cmd = ["docker-compose", "--project-directory", str(REPO_ROOT)]
    cmd += ["--env-file", str(env_file)] if env_file else []
    for path in FILES:
        cmd += ["-f", str(path)]
    result = subprocess.run(
        [*cmd, "config"],
        # the calling shell's variables would win over the env file: only what docker-compose itself needs
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd="/",  # never a stray .env of the current directory
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker-compose config failed:\n{result.stderr}")
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def render(out: Path, env_file: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Write the merged configuration, without the published ports of host-network services, to `out`."""
    config = merged_config(env_file, env)
    for service in config["services"].values():
        if service.get("network_mode") == "host":
            service.pop("ports", None)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.compose_host", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--env-file", type=Path)
    args = parser.parse_args(argv)
    print(render(args.out, args.env_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
