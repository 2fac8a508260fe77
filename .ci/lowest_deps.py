"""Prove the declared lower bounds: install the oldest allowed release of every runtime
dependency in a fresh virtual environment and run a smoke set of tests there.

The test tools come at the versions this interpreter has (what is proven is the product's own
dependencies, the ones a deployment resolves, not the tools'), and the project is installed
without its dependencies so nothing newer slips in.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["tests/test_golden_run.py", "tests/gateway/test_server_ws.py", "tests/clearing/test_settlement.py",
         "tests/gateway/test_metrics.py", "tests/test_progress.py"]


def lowest_pins(requirements: list[str]) -> list[str]:
    pins = []
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.\[\]-]+)\s*>=\s*([^,;\s]+)", requirement)
        assert match, f"{requirement!r} declares no lower bound"
        pins.append(f"{match[1]}=={match[2]}")
    return pins


def current_pins(requirements: list[str]) -> list[str]:
    """The test tools at this interpreter's versions, so only the runtime side differs."""
    names = [re.match(r"^[A-Za-z0-9_.-]+", r)[0] for r in requirements]  # type: ignore[index]
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = lowest_pins(project["dependencies"])
    tools = current_pins([r for r in project["optional-dependencies"]["test"] if r.startswith(("pytest", "hypothesis", "websockets"))])
    with tempfile.TemporaryDirectory(prefix="lowest-deps-") as scratch:
        python = Path(scratch) / "bin" / "python"
        subprocess.run([sys.executable, "-m", "venv", scratch], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *runtime, *tools, "psycopg[binary]>=3.1"], check=True)
        subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
        subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], check=True)
        print("lowest runtime dependencies:", " ".join(runtime), flush=True)
        return subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", *SMOKE], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
