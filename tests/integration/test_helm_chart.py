"""The Helm chart (charts/tgi-operator), run with the real helm CLI (built by hack/build-helm.sh, or TGI_HELM_BIN):
it lints, its schema refuses bad values, the API server accepts what it renders, it carries the API exactly as
crds/ and manifests/crd hold it, and it installs what the kustomize manifests install (the two must not drift)."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tgi_operator.devenv import stack
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.settings import ENV_PREFIX, Settings, startup_problem

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tgi-operator"
EXAMPLE_VALUES = CHART / "ci" / "example-values.yaml"
MANIFESTS = ROOT / "manifests"
RELEASE = "tgi-operator"  # its full name is the chart's name, so object names match manifests/base
Doc = dict[str, Any]


@dataclass(frozen=True)
class Helm:
    binary: str
    home: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Its own cache/config/data folders: no repositories or plugins of the machine's user leak in.
        homes = {f"HELM_{kind}_HOME": str(self.home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}
        env = {**os.environ, **homes}
        done = subprocess.run([self.binary, *args], capture_output=True, text=True, env=env, timeout=120)
        assert not check or done.returncode == 0, f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done

    def template(self, *args: str, release: str = RELEASE, namespace: str = stack.OPERATOR_NAMESPACE) -> list[Doc]:
        out = self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The helm binary: TGI_HELM_BIN, or built once from hack/helm (needs Go); fails loudly when a build fails."""
    if not os.environ.get("TGI_HELM_BIN") and shutil.which("go") is None:
        pytest.skip("helm: TGI_HELM_BIN is unset and Go is not on PATH to build it (bash hack/build-helm.sh)")
    done = subprocess.run(["bash", str(ROOT / "hack" / "build-helm.sh")], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"hack/build-helm.sh failed:\n{done.stderr}"
    return Helm(binary=done.stdout.strip().splitlines()[-1], home=tmp_path_factory.mktemp("helm-home"))


def kustomize(path: Path) -> list[Doc]:
    done = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=True)
    return list(yaml.safe_load_all(done.stdout))


def one(docs: list[Doc], kind: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def container(docs: list[Doc]) -> Doc:
    [operator] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator


def literal_env(docs: list[Doc]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(docs)["env"] if "value" in e}


def values_file(tmp_path: Path, values: Doc) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_chart_versions_follow_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (chart["version"], chart["appVersion"]) == (package, package)


@pytest.mark.parametrize("extra", [
    [],
    ["--set", "leaderElection.enabled=false,replicas=1"],
    ["--set", "metrics.serviceMonitor.enabled=true,operator.namespaceSelector=tgi-operator.dev/shard=a"],
    ["--set", "networkPolicy.enabled=false,podDisruptionBudget.enabled=false,metrics.service.enabled=false"],
])
def test_helm_lint_strict_passes(helm: Helm, extra: list[str]) -> None:
    out = helm.run("lint", "--strict", str(CHART), "-f", str(EXAMPLE_VALUES), *extra).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_lint_without_the_required_values_names_them(helm: Helm) -> None:
    done = helm.run("lint", "--strict", str(CHART), check=False)
    assert done.returncode != 0
    assert "missing properties 'defaultProject', 'clusterName'" in done.stdout + done.stderr


EXAMPLE = yaml.safe_load(EXAMPLE_VALUES.read_text())
WITHOUT_CLUSTER_NAME = copy.deepcopy(EXAMPLE)
del WITHOUT_CLUSTER_NAME["operator"]["clusterName"]


BAD_VALUES = [
    (EXAMPLE, ["--set", "replicas=two"], "at '/replicas': got string, want integer"),
    (WITHOUT_CLUSTER_NAME, [], "at '/operator': missing property 'clusterName'"),
    (EXAMPLE, ["--set", "operator.defaultProject=PROJECT_ID"],
     "at '/operator/defaultProject': 'PROJECT_ID' does not match"),
    (EXAMPLE, ["--set", "operator.clusterName=GKE Prod"], "at '/operator/clusterName': 'GKE Prod' does not match"),
    (EXAMPLE, ["--set-json", 'operator.allowedProjects=["a-project,b-project"]'], "at '/operator/allowedProjects/0'"),
    (EXAMPLE, ["--set", "operator.maxConcurrentPasses=0"], "at '/operator/maxConcurrentPasses'"),
    (EXAMPLE, ["--set", "replica=3"], "additional properties 'replica' not allowed"),  # a typo is not ignored
    (EXAMPLE, ["--set", "operator.allowPublicServices=yes"],
     "at '/operator/allowPublicServices': got string, want boolean"),
    (EXAMPLE, ["--set", "image.digest=latest"], "at '/image/digest'"),
    # Cross-field rules, from the templates.
    (EXAMPLE, ["--set", "leaderElection.enabled=false"], "replicas=2 with leaderElection.enabled=false"),
    (EXAMPLE, ["--set-json", 'extraEnv=[{"name": "TGI_OPERATOR_CLUSTER_NAME", "value": "x"}]'],
     "extraEnv sets TGI_OPERATOR_CLUSTER_NAME, which the chart sets already"),
    (EXAMPLE, ["--set", "metrics.service.enabled=false,metrics.serviceMonitor.enabled=true"],
     "metrics.serviceMonitor.enabled scrapes the metrics Service"),
]


@pytest.mark.parametrize(("values", "args", "message"), BAD_VALUES,
                         ids=[args[-1] if args else "clusterName-missing" for _, args, _ in BAD_VALUES])
def test_bad_values_are_refused_with_a_clear_message(helm: Helm, tmp_path: Path, values: Doc, args: list[str],
                                                     message: str) -> None:
    done = helm.run("template", RELEASE, str(CHART), "-f", values_file(tmp_path, values), *args, check=False)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert done.stdout == ""


def field_pattern(name: str) -> str:
    [pattern] = [m.pattern for m in Settings.model_fields[name].metadata if getattr(m, "pattern", None)]
    return pattern


def test_the_schema_holds_the_operators_own_rules() -> None:
    """What the schema refuses is what the operator would refuse at start (settings.py), not a guess."""
    operator = yaml.safe_load((CHART / "values.schema.json").read_text())["properties"]["operator"]["properties"]
    assert operator["clusterName"]["pattern"] == field_pattern("cluster_name")
    assert operator["leaseName"]["pattern"] == "^$|" + field_pattern("lease_name")  # empty: the release's name
    bounds = {type(m).__name__: m for m in Settings.model_fields["max_concurrent_passes"].metadata}
    passes = operator["maxConcurrentPasses"]
    assert (passes["minimum"], passes["maximum"]) == (bounds["Ge"].ge, bounds["Le"].le)
    names = {"defaultProject", "clusterName", "allowedProjects", "allowedRegions", "allowPublicServices",
             "allowedImagePrefixes", "allowedServiceAccounts", "resyncSeconds", "maxConcurrentPasses",
             "namespaceSelector", "leaseName"}
    assert names <= operator.keys()


def test_the_chart_carries_the_api_as_crds_and_manifests_crd_hold_it(helm: Helm) -> None:
    """Helm's crds/ folder holds the generated API file (CRD + the admission policy with its CEL rules + binding)
    and the delete protection, byte for byte (`make crd` refreshes them); the templates hold none of it."""
    held = {path.name: path.read_bytes() for path in (CHART / "crds").iterdir()}
    api_file = "tgiservices.tgi-operator.dev.yaml"
    assert held == {api_file: (ROOT / "crds" / api_file).read_bytes(),
                    "delete-protection.yaml": (MANIFESTS / "crd" / "delete-protection.yaml").read_bytes()}
    values = ["-f", str(EXAMPLE_VALUES)]
    with_crds = helm.template(*values, "--include-crds")
    templates = helm.template(*values)
    api = sorted((d["kind"], d["metadata"]["name"]) for d in with_crds if d not in templates)
    assert api == sorted((d["kind"], d["metadata"]["name"]) for d in kustomize(MANIFESTS / "crd"))
    assert not {"CustomResourceDefinition", "ValidatingAdmissionPolicy"} & {d["kind"] for d in templates}


# Labels that only say which tool and release made an object; compared through the selectors that use them.
GENERIC_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                  "app.kubernetes.io/managed-by", "helm.sh/chart"}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def essentials(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    """Each object by (kind, name), with every field kept except generic labels; each selector is checked to pick
    this installation's pods (or the metrics Service) and then dropped, as its labels differ by tool."""
    docs = copy.deepcopy([d for d in docs if d["kind"] != "Namespace"])  # Helm installs into --namespace
    pod = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")["metadata"]["labels"]
    owners = {"Deployment": "selector", "Service": "selector", "NetworkPolicy": "podSelector",
              "PodDisruptionBudget": "selector", "ServiceMonitor": "selector"}
    out = {}
    for doc in docs:
        if doc["kind"] in owners:
            selector = doc["spec"].pop(owners[doc["kind"]])
            if doc["kind"] != "Service":  # a LabelSelector: matchLabels only, nothing else narrows it
                assert selector.keys() == {"matchLabels"}, (doc["kind"], selector)
                selector = selector["matchLabels"]
            target = service if doc["kind"] == "ServiceMonitor" else pod
            assert selects(selector, target), (doc["kind"], selector, target)
        for meta in (doc["metadata"], doc.get("spec", {}).get("template", {}).get("metadata", {})):
            labels = {k: v for k, v in meta.pop("labels", {}).items() if k not in GENERIC_LABELS}
            meta.update({"labels": labels} if labels else {})
        if doc["kind"] == "Deployment":
            [operator] = doc["spec"]["template"]["spec"]["containers"]
            operator.setdefault("imagePullPolicy", "IfNotPresent")  # what the API server defaults a tagged image to
            operator["env"] = {e.pop("name"): e for e in operator["env"]}
        out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def test_helm_and_kustomize_install_the_same_operator(helm: Helm, tmp_path: Path) -> None:
    """The example overlay + the ServiceMonitor component vs the chart with the equivalent values
    (ci/example-values.yaml): RBAC, the Deployment (args, env, probes, ports, security, resources, replicas and
    strategy, service account), the metrics Service and ServiceMonitor, the NetworkPolicy, the PDB, the Lease Role."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS / "overlays" / "example", overlay)],
        "components": [os.path.relpath(MANIFESTS / "components" / "servicemonitor", overlay)]}))
    kustomized = kustomize(overlay)
    charted = helm.template("-f", str(EXAMPLE_VALUES), "--set", "metrics.serviceMonitor.enabled=true")
    assert [d["metadata"]["name"] for d in kustomized if d["kind"] == "Namespace"] == [stack.OPERATOR_NAMESPACE]
    ours, theirs = essentials(charted), essentials(kustomized)
    # The chart names two settings the kustomize base leaves at the operator's defaults: the same values.
    env = ours[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env.pop(f"{ENV_PREFIX}LEASE_NAME") == {"value": Settings.model_fields["lease_name"].default}
    passes = Settings.model_fields["max_concurrent_passes"].default
    assert env.pop(f"{ENV_PREFIX}MAX_CONCURRENT_PASSES") == {"value": str(passes)}
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key] == theirs[key], key


def test_the_rendered_env_is_what_the_operator_reads(helm: Helm) -> None:
    docs = helm.template("-f", str(EXAMPLE_VALUES), "--set", "operator.namespaceSelector=tgi-operator.dev/shard=a")
    env = literal_env(docs)
    ours = {name for name in env if name.startswith(ENV_PREFIX)}
    assert {name.removeprefix(ENV_PREFIX).lower() for name in ours} <= Settings.model_fields.keys(), ours
    assert env[f"{ENV_PREFIX}NAMESPACE_SELECTOR"] == "tgi-operator.dev/shard=a"
    assert startup_problem(env) is None
    assert container(docs)["image"] == "europe-docker.pkg.dev/acme-ml-prod/tools/tgi-operator:0.1.0"


@pytest.mark.parametrize("readme", [ROOT / "README.md", CHART / "README.md"], ids=["README", "chart-README"])
def test_the_readme_install_command_works(helm: Helm, readme: Path) -> None:
    """The `helm install` the README shows, as `helm template`: it renders, with the Workload Identity annotation,
    into settings the operator starts with."""
    text = readme.read_text().replace("\\\n", " ")
    [command] = [line for line in text.splitlines() if line.startswith("helm install tgi-operator ")]
    args = shlex.split(command)
    assert args[:4] == ["helm", "install", RELEASE, "charts/tgi-operator"]
    docs = [d for d in yaml.safe_load_all(helm.run("template", RELEASE, str(CHART), *args[4:]).stdout) if d]
    assert one(docs, "Deployment")["metadata"]["namespace"] == stack.OPERATOR_NAMESPACE
    annotations = one(docs, "ServiceAccount")["metadata"]["annotations"]
    assert annotations == {"iam.gke.io/gcp-service-account": "tgi-operator@my-project.iam.gserviceaccount.com"}
    assert startup_problem(literal_env(docs)) is None


def test_image_defaults_to_the_app_version_and_a_digest_pins_it(helm: Helm) -> None:
    required = ["--set", "operator.defaultProject=acme-ml-prod,operator.clusterName=prod"]
    assert container(helm.template(*required))["image"] == "ghcr.io/tgi-operator/tgi-operator:0.1.0"
    digest = "sha256:" + "ab" * 32
    pinned = container(helm.template(*required, "--set", f"image.digest={digest}"))
    assert pinned["image"] == f"ghcr.io/tgi-operator/tgi-operator@{digest}"
    # Without allowedProjects, only the default project: never "any project" by omission.
    assert literal_env(helm.template(*required))[f"{ENV_PREFIX}ALLOWED_PROJECTS"] == "acme-ml-prod"


def test_without_leader_election_one_replica_runs_without_a_lease(helm: Helm) -> None:
    docs = helm.template("-f", str(EXAMPLE_VALUES), "--set", "leaderElection.enabled=false,replicas=1")
    deployment = one(docs, "Deployment")["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in container(docs)["args"]
    assert not {"Role", "RoleBinding"} & {d["kind"] for d in docs}


def test_shards_are_separate_releases_that_never_collide(helm: Helm) -> None:
    """Two shards in one namespace: each its own names, pods, Lease and namespaces; the tenant roles once."""
    a = helm.template("-f", str(EXAMPLE_VALUES), "--set", "operator.namespaceSelector=tgi-operator.dev/shard=a",
                      release="tgi-operator-shard-a")
    b = helm.template("-f", str(EXAMPLE_VALUES), "--set", "operator.namespaceSelector=tgi-operator.dev/shard=b",
                      "--set", "tenantRoles.create=false", release="tgi-operator-shard-b")
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in a + b]
    assert len(names) == len(set(names)), names
    assert literal_env(a)[f"{ENV_PREFIX}LEASE_NAME"] == "tgi-operator-shard-a"
    assert literal_env(b)[f"{ENV_PREFIX}LEASE_NAME"] == "tgi-operator-shard-b"
    for mine, other in ((a, b), (b, a)):
        selector = one(mine, "Deployment")["spec"]["selector"]["matchLabels"]
        assert not selects(selector, one(other, "Deployment")["spec"]["template"]["metadata"]["labels"])
        assert startup_problem(literal_env(mine)) is None
    assert [d["metadata"]["name"] for d in b if d["kind"] == "ClusterRole"] == ["tgi-operator-shard-b"]


def applied(docs: list[Doc], out: str) -> None:
    """Every object is in kubectl's server-side dry-run report."""
    for doc in docs:
        group = doc["apiVersion"].rpartition("/")[0]
        resource = doc["kind"].lower() + (f".{group}" if group else "")
        assert f"{resource}/{doc['metadata']['name']} serverside-applied (server dry run)" in out, (resource, out)


@pytest.mark.parametrize("extra", [[], ["--set", "leaderElection.enabled=false,replicas=1"]])
def test_the_api_server_accepts_the_rendered_chart(helm: Helm, cluster: KubeCluster, namespace: str,
                                                   extra: list[str]) -> None:
    # The API for real (as `helm install` creates crds/), and its admission rules enforced. Forced: an earlier test
    # may have left another manager's value on a field (the copy is byte-identical to crds/, so nothing changes).
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tgi-operator-helm-tests",
                    "-f", str(CHART / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/tgiservices.tgi-operator.dev")
    stack.wait_for_admission_rules(cluster)
    # The operator as a server-side dry run, in a namespace of its own (it must exist for that).
    docs = helm.template("-f", str(EXAMPLE_VALUES), *extra, namespace=namespace)
    out = cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tgi-operator-helm-tests",
                          "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs)).stdout
    applied(docs, out)
    assert out.count("serverside-applied (server dry run)") == len(docs)
