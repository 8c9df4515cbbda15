"""The image's inputs, checked without Docker: the lock matches pyproject's runtime dependencies, the base is
pinned by digest, the build context is the allowlist it should be, CMD is the Deployment's. The image's install
itself is run by tests/integration/test_image_install.py."""

from __future__ import annotations

import json
import re
import tomllib

import yaml
from image_context import LOCK, REPO, dockerignore, normalize, read_lock
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
ROOT = "tgi-operator (pyproject.toml)"


def runtime_requirements() -> dict[str, Requirement]:
    return {normalize(r.name): r for r in map(Requirement, PYPROJECT["project"]["dependencies"])}


def test_every_runtime_requirement_is_pinned_within_its_range() -> None:
    pins = read_lock()
    for name, requirement in runtime_requirements().items():
        assert name in pins, f"{name} is a runtime dependency but not in {LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name].version}, outside pyproject's {requirement}: run `make lock`")


def test_the_lock_holds_the_runtime_closure_and_nothing_else() -> None:
    """uv's `# via` lines say why each pin is there: the direct ones must be exactly pyproject's runtime
    dependencies (a dependency dropped from pyproject, or moved to an extra, must leave the lock), and every other
    pin must be wanted by a pinned package."""
    pins = read_lock()
    direct = {name for name, pin in pins.items() if ROOT in pin.via}
    assert direct == set(runtime_requirements()), "lock out of date: run `make lock`"
    for name, pin in pins.items():
        assert pin.via, f"{name}: no `# via` line (was the lock written by hack/lock.sh?)"
        assert all(via == ROOT or via in pins for via in pin.via), f"{name} is wanted by {pin.via}, not all locked"
    for extra_only in ("kubernetes", "openai", "pytest", "lupa"):
        assert extra_only not in pins, f"{extra_only} belongs to an extra, not to the image"


def test_every_pin_is_exact_and_hashed() -> None:
    pins = read_lock()
    assert len(pins) > 10
    text = LOCK.read_text()
    entries = re.findall(r"^[A-Za-z0-9._-]+\S*", text, flags=re.MULTILINE)
    assert len(entries) == len(pins), "every entry is a plain name==version pin"
    for name, pin in pins.items():
        assert pin.hashes, f"{name} has no --hash: pip --require-hashes would refuse the lock"


def test_dev_only_code_and_dependencies_are_optional() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    runtime = set(runtime_requirements())
    for package in ("kubernetes", "cryptography", "rich", "openai"):
        assert package not in runtime
    assert {normalize(Requirement(r).name) for r in extras["proxy"]} == {"kubernetes"}
    for extra in ("demo", "test"):  # `pip install .[test]` still brings everything the suite imports
        assert any(r.startswith("tgi-operator[") and "dev" in r for r in extras[extra])


def test_the_base_image_is_pinned_by_digest() -> None:
    bases = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert len(bases) == 1 and re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", bases[0]), bases
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert froms and all(ref == "${BASE_IMAGE}" for ref in froms), froms


def test_the_build_installs_the_lock_with_hashes_and_leaves_no_wheels_or_pip() -> None:
    assert re.search(r"install --require-hashes --only-binary=:all: --no-deps\s*\\?\s*-r /src/requirements/image.lock",
                     DOCKERFILE)
    final = DOCKERFILE[DOCKERFILE.rindex("\nFROM "):]
    assert re.findall(r"^COPY (.*)$", final, flags=re.MULTILINE) == ["--from=build /opt/tgi-operator /opt/tgi-operator"]
    assert "venv --without-pip" in DOCKERFILE and "PIP_NO_CACHE_DIR=1" in DOCKERFILE
    assert re.search(r"^USER \d+:\d+$", final, flags=re.MULTILINE), "a numeric user, as runAsNonRoot can verify"


def test_cmd_is_what_the_deployment_runs() -> None:
    deployment = yaml.safe_load((REPO / "manifests" / "base" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert json.loads(re.search(r"^ENTRYPOINT (.*)$", DOCKERFILE, flags=re.MULTILINE)[1]) == ["tgi-operator"]
    assert json.loads(re.search(r"^CMD (.*)$", DOCKERFILE, flags=re.MULTILINE)[1]) == container["args"]


def test_the_build_context_is_an_allowlist() -> None:
    ignore = dockerignore()
    for needed in ("pyproject.toml", "README.md", "requirements/image.lock", "tgi_operator/__init__.py",
                   "tgi_operator/cli.py", "tgi_operator/demo_cli.py"):
        assert not ignore.excluded(needed), needed
    for kept_out in (".venv/bin/python", ".demo/keys/sa.key", ".dev-cluster/admin.kubeconfig", ".git/HEAD",
                     "tests/conftest.py", "benchmarks/scale.py", "hack/k8s/go.mod", "hack/kstatus/kstatus",
                     "bin/etcd", "key.pem", "operator.kubeconfig", ".pytest_cache/README.md", ".hypothesis/x",
                     "tgi_operator.egg-info/PKG-INFO", "tgi_operator/__pycache__/cli.cpython-311.pyc",
                     "tgi_operator/emulator/server.py", "tgi_operator/devenv/stack.py", "tgi_operator/demo.py",
                     "requirements/dev.txt", "dist/tgi_operator-0.1.0-py3-none-any.whl"):
        assert ignore.excluded(kept_out), kept_out
    for copied in re.findall(r"^COPY (?!--from)(.*) \S+$", DOCKERFILE, flags=re.MULTILINE):
        for source in copied.split():
            assert (REPO / source).exists() and not ignore.excluded(source), f"COPY {source}: not in the context"
