"""What the Dockerfile does, without Docker: the build context after .dockerignore, the project wheel built from
it, a fresh venv with requirements/image.lock installed with --require-hashes (wheels only) and the wheel with
--no-deps. Then that install runs the operator as the image would under a restricted pod: an arbitrary UID with no
passwd entry and no HOME, every capability dropped, no new privileges, a read-only root file system, and reconciles
a TGIService to Ready against the dev control plane and the emulator.

pip may download from PyPI (the user's pip cache makes reruns fast). Needs root (setpriv, unshare, mount), as CI is.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from image_context import LOCK, copy_build_context
from operator_fixtures import OPERATOR_IDENTITY, SAMPLES, condition, stack_env, wait_for

from tgi_operator.devenv import stack
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.emulator.testing import start_emulator_process

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not (shutil.which("setpriv") and shutil.which("unshare")),
                       reason="needs root with setpriv and unshare (util-linux) to run as another UID, read-only"),
]

# Dev-only packages and code that `pip install tgi-operator` and the image leave out. (cryptography and rich stay:
# google-auth and typer require them.)
DEV_ONLY = ("kubernetes", "openai", "pytest", "lupa", "hypothesis",
            "tgi_operator.emulator", "tgi_operator.devenv", "tgi_operator.demo")
# Before the split, the runtime dependencies took 235 MB of site-packages (measured the same way), `kubernetes`
# 123 MB of it; the lock's take about 134 MB (the Hub client and hf-xet, for the model preflight, 28 MB of that).
MAX_SITE_PACKAGES_MB = 150


@dataclass
class LeanInstall:
    root: Path  # world-readable, so that any UID can run from it
    venv: Path
    wheel: Path
    context: list[str]  # the files `docker build` would be sent

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return next((self.venv / "lib").glob("python3.*/site-packages"))

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "tgi-operator"), *args], capture_output=True, text=True,
                              timeout=60, cwd="/", **{"env": lean_env(), **kwargs})


def lean_env() -> dict[str, str]:
    """This process's environment without what would put another tgi_operator on the lean venv's path (a test run
    with PYTHONPATH pointing at a checkout, or an activated venv)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _pip(*args: str) -> None:
    # The test's own pip, pointed at the venv (`--python`), as the Dockerfile uses the base image's: the venv
    # gets no pip. Wheels found in the user's pip cache are still checked against the lock's hashes.
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True, timeout=600, env=lean_env())
    assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _open_to_others(path: Path) -> bool:
    """Every folder on the way searchable by others, the file itself readable or runnable by them."""
    path = path.resolve()
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in path.parents) and bool(
        path.stat().st_mode & (stat.S_IXOTH if path.is_dir() else stat.S_IROTH))


def _python_for_any_uid() -> str:
    """A CPython 3.11 (the lock's) that another UID can run: the image's is world-readable in /usr/local, while this
    test's own may live under a private home (pyenv in /root)."""
    for candidate in (getattr(sys, "_base_executable", sys.executable), "/usr/local/bin/python3.11", "/usr/bin/python3.11"):
        if not os.path.exists(candidate):
            continue
        found = subprocess.run([candidate, "-c", "import sys, sysconfig, venv; print(sys.version_info[:2] == (3, 11)); "
                                "print(sysconfig.get_path('stdlib'))"], capture_output=True, text=True, timeout=60)
        if found.returncode == 0 and found.stdout.split()[0] == "True" and _open_to_others(Path(candidate)) \
                and _open_to_others(Path(found.stdout.split()[1])):
            return candidate
    pytest.skip("no CPython 3.11 here that an unprivileged UID may run")


@pytest.fixture(scope="module")
def lean() -> Iterator[LeanInstall]:
    root = Path(tempfile.mkdtemp(prefix="tgi-image-"))
    root.chmod(0o755)
    try:
        context, wheels, venv = root / "context", root / "wheels", root / "venv"
        sent = copy_build_context(context)
        # Built in pip's isolated build env (the Dockerfile uses the base image's setuptools instead).
        _pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(context))
        subprocess.run([_python_for_any_uid(), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        python = str(venv / "bin" / "python")
        _pip("--python", python, "install", "--require-hashes", "--only-binary=:all:", "--no-deps", "-r", str(LOCK))
        (wheel,) = wheels.glob("tgi_operator-*.whl")
        _pip("--python", python, "install", "--no-deps", str(wheel))
        shutil.rmtree(context)
        yield LeanInstall(root, venv, wheel, sent)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_lock_is_complete_and_the_install_is_the_operator_alone(lean: LeanInstall) -> None:
    _pip("--python", str(lean.python), "check")  # --no-deps installs: every requirement must be in the lock
    probe = subprocess.run([str(lean.python), "-c", "import importlib.util, json, sys; "
                            "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m)]))", *DEV_ONLY],
                           capture_output=True, text=True, check=True, cwd="/", env=lean_env())
    assert json.loads(probe.stdout) == []
    # All of the package that the context holds is installed, data files too (package-data in pyproject.toml).
    lost = [f for f in lean.context if f.startswith("tgi_operator/") and not (lean.site_packages / f).is_file()]
    assert not lost, f"in the build context but not in the wheel: {lost}"
    # Every runtime module imports without the dev extras (the CLI imports most of them at start).
    imported = subprocess.run(
        [str(lean.python), "-c", "import importlib, pkgutil, tgi_operator; "
         "[importlib.import_module(m.name) for m in pkgutil.walk_packages(tgi_operator.__path__, 'tgi_operator.')]"],
        capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert imported.returncode == 0, imported.stderr[-3000:]


def test_site_packages_is_a_fraction_of_what_it_was(lean: LeanInstall) -> None:
    size = sum(f.stat().st_size for f in lean.site_packages.rglob("*") if f.is_file())
    print(f"\nlean site-packages: {size / 1e6:.1f} MB (wheel {lean.wheel.stat().st_size / 1e3:.0f} kB)")
    assert size < MAX_SITE_PACKAGES_MB * 1e6, f"site-packages holds {size / 1e6:.1f} MB"
    assert not list(lean.site_packages.glob("pip*")), "the venv has no pip (nor wheels, nor caches)"


def test_the_cli_works_and_names_the_extra_a_command_needs(lean: LeanInstall) -> None:
    shown = lean.run("--help")
    assert shown.returncode == 0, shown.stderr
    assert all(command in shown.stdout for command in ("run", "render", "crd", "proxy", "emulator", "dev-cluster"))
    assert "kind: CustomResourceDefinition" in lean.run("crd").stdout
    for args, extra in ((("dev-cluster", "up"), "dev"), (("emulator", "--grpc-port", "0"), "dev"),
                        (("demo", "--keep"), "dev"), (("proxy", "some-model", "-n", "team-a"), "proxy")):
        result = lean.run(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"pip install 'tgi-operator[{extra}]'" in result.stderr, result.stderr


def _sandbox(uid: int) -> tuple[str, ...]:
    """Root makes a private mount namespace with / remounted read-only (as the kubelet mounts a container's root
    with readOnlyRootFilesystem; /dev/shm and /proc stay their own mounts), then becomes `uid` with no groups, no
    capabilities and no_new_privs, with HOME pointing nowhere and no user name in the environment."""
    return ("unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount -o remount,bind,ro / && exec "$@"', "sandbox",
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
            "--no-new-privs", "--",
            "env", "-C", "/", "-u", "USER", "-u", "LOGNAME", "-u", "USERNAME", "-u", "PYTHONPATH", "-u", "VIRTUAL_ENV",
            "HOME=/nonexistent")


def test_runs_as_an_arbitrary_uid_on_a_read_only_root_and_reconciles(
    lean: LeanInstall, cluster: KubeCluster, namespace: str,
) -> None:
    uid = random.randint(1_000_000, 2**31 - 2)  # OpenShift-style: no passwd entry, owns nothing
    sandbox = _sandbox(uid)
    probe = subprocess.run([*sandbox, str(lean.python), "-c", """
import getpass, os, sys
assert os.getuid() == os.geteuid() == int(sys.argv[1]) and os.getgroups() == [], (os.getuid(), os.getgroups())
try:
    getpass.getuser(); sys.exit("the UID has a user name")
except (KeyError, OSError):
    pass
for folder in ("/", "/tmp", sys.prefix, os.getcwd(), os.environ["HOME"]):
    try:
        open(os.path.join(folder, ".write-probe"), "w").close(); sys.exit("wrote to " + folder)
    except OSError:
        pass
print("sandboxed")
""", str(uid)], capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "sandboxed", probe.stderr

    stack.install(cluster)
    workdir = Path(tempfile.mkdtemp(prefix="operator-", dir=lean.root))
    workdir.chmod(0o755)
    emulator = start_emulator_process(["--reconcile-seconds", "0.3", "--identity", OPERATOR_IDENTITY],
                                      log_file=workdir / "emulator.log")
    operator = None
    try:
        kubeconfig = stack.operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
        os.chown(kubeconfig, uid, uid)  # mode 0600, as a projected token is: readable by the operator's UID only
        # The Deployment's downward-API variables; no POD_ID, no user name: kopf must not need them.
        env = {**stack_env(emulator), "POD_NAME": "tgi-operator-7d4b9c-x2x8q", "POD_NAMESPACE": stack.OPERATOR_NAMESPACE}
        if not {"TGI_OPERATOR_HF_ENDPOINT", "HF_ENDPOINT"} & env.keys():
            env["TGI_OPERATOR_PREFLIGHT"] = "off"  # no local Hub to ask: never the real one from a test
        operator = stack.start_operator(kubeconfig, env, workdir / "operator.log",
                                        program=(*sandbox, str(lean.venv / "bin" / "tgi-operator")))
        cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "llama-3-1-8b-awq.yaml"))

        def ready() -> dict | None:
            obj = json.loads(cluster.kubectl("get", "tgis", "llama-3-1-8b-awq", "-n", namespace, "-o", "json").stdout)
            return obj if condition(obj, "Ready").get("status") == "True" else None

        obj = wait_for(ready, timeout=60, what="the TGIService Ready, reconciled by the lean install")
        assert obj["status"]["url"] and obj["status"]["model"]["maxConcurrentRequests"] == 64  # probed the model
        assert operator.process.poll() is None
        assert operator.stop() == 0
        log = operator.log()
        for sign in ("Traceback", "Read-only file system", "Permission denied", "PermissionError"):
            assert sign not in log, f"{sign!r} in the operator's log:\n{log[-3000:]}"
    except BaseException:
        if operator is not None:
            print(f"operator log:\n{operator.log()[-5000:]}")
        raise
    finally:
        if operator is not None:
            operator.stop()
        emulator.stop()
