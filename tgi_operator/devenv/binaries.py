"""Finding (or building once) the kube-apiserver and etcd binaries of the local control plane."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REQUIRED = ("kube-apiserver", "etcd")
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "build-testenv.sh"


class BinariesUnavailable(RuntimeError):
    """The control plane cannot start: a binary is missing and cannot be built here."""


def _holds_binaries(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in REQUIRED)


def find_binaries(build: bool = True) -> Path:
    """The folder holding both binaries.

    `KUBEBUILDER_ASSETS` (the envtest convention) wins; otherwise hack/build-testenv.sh finds the cached
    build or makes it (minutes, once).
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        if _holds_binaries(Path(assets)):
            return Path(assets)
        missing = [n for n in REQUIRED if not os.access(Path(assets) / n, os.X_OK)]
        raise BinariesUnavailable(
            f"KUBEBUILDER_ASSETS={assets} lacks executable {', '.join(missing)}; "
            "point it at a folder holding kube-apiserver and etcd, or unset it to build them with `make testenv`"
        )
    if not BUILD_SCRIPT.exists():
        raise BinariesUnavailable(
            f"{BUILD_SCRIPT} not found (installed without the source tree): set KUBEBUILDER_ASSETS "
            "to a folder holding kube-apiserver and etcd"
        )
    if not build:
        raise BinariesUnavailable("control plane binaries are not built yet: run `make testenv`")
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise BinariesUnavailable(f"building kube-apiserver and etcd failed (hack/build-testenv.sh):\n{tail}")
    folder = Path(result.stdout.strip().splitlines()[-1])
    if not _holds_binaries(folder):
        raise BinariesUnavailable(f"hack/build-testenv.sh reported {folder}, which lacks the binaries")
    return folder
