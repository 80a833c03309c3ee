"""The deployed stack's timings: image builds and sizes, `docker-compose up` -> healthy, the flow runs on the Prefect
worker, the trader's first paper order. Measured by tests/deploy/test_stack.py (which builds the images and brings the
stack up for real), written to benchmarks/results/stack.json.

    python -m benchmarks.stack      # runs that test, then prints the JSON
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULT = RESULTS_DIR / "stack.json"
REPO = Path(__file__).resolve().parent.parent


def write(result: dict[str, Any]) -> Path:
    """Write the stack test's measurements (with machine facts) to benchmarks/results/stack.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "stack",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        **result,
    }
    RESULT.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return RESULT


def main() -> int:
    test = REPO / "tests" / "deploy" / "test_stack.py"
    code = subprocess.call([sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider"], cwd=REPO)
    if RESULT.exists():
        print(RESULT.read_text())
    return code


if __name__ == "__main__":
    sys.exit(main())
