"""Benchmark: what the operator process is made of before any object, by what it imports.

Each module below is imported alone in a fresh interpreter, and the growth of its RssAnon (the process's own memory)
and RssFile (mapped pages of shared libraries and extension modules) is read from /proc/self/status; last, the
whole operator as `tgi-operator run` imports it. Modules share what they import (ssl, asyncio, protobuf), so the
rows overlap and do not add up to the last one.

Run with the image's packages, as `make bench` does:
`python benchmarks/import_cost.py --python "$(PYTHON=.venv/bin/python bash hack/build-runtime-venv.sh)"`.
RssFile depends on the page cache (fault-around maps neighbouring cached pages), so it moves between runs; RssAnon
does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = (
    "aiohttp", "grpc", "google.cloud.run_v2", "google.cloud.iam_admin_v1", "google.auth.transport.requests",
    "kopf", "pydantic", "prometheus_client", "huggingface_hub", "yaml", "typer",
)
OPERATOR = "tgi_operator.run_cli,tgi_operator.lifecycle,tgi_operator.handlers,tgi_operator.cli"
PROBE = """
import importlib, json, sys
def memory():
    values = {}
    for line in open("/proc/self/status"):
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) / 1024
    return values
before = memory()
for name in sys.argv[1].split(","):
    importlib.import_module(name)
after = memory()
print(json.dumps({key: round(after[key] - before[key], 1) for key in after} | {"modules": len(sys.modules)}))
"""


def cost(python: str, modules: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([python, "-c", PROBE, modules], capture_output=True, text=True, env=env, timeout=120,
                            check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose packages are measured")
    args = parser.parse_args()
    rows = [(name, cost(args.python, name)) for name in MODULES]
    rows.append(("the operator (tgi-operator run)", cost(args.python, OPERATOR)))
    print(f"| imported alone ({Path(args.python).parent.parent.name}) | RssAnon MiB | RssFile MiB | modules |")
    print("|---|---:|---:|---:|")
    for name, figures in rows:
        print(f"| `{name}` | {figures['RssAnon']:.1f} | {figures['RssFile']:.1f} | {figures['modules']} |")


if __name__ == "__main__":
    main()
