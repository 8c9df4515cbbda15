"""Property: for any spec, the pydantic model and the API server (CRD schema + CEL) agree on accept or reject.

Specs are drawn near the rules' edges: every field from a mix of valid values, boundary values and
near misses, plus short random strings over the characters the formats care about.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes.client as k8s
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from tgi_operator import API_GROUP, API_VERSION, KIND, PLURAL
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.gpus import GPU_TYPES
from tgi_operator.models import RESERVED_ENV_NAMES, TGIServiceSpec

pytestmark = pytest.mark.integration

ALL_REGIONS = sorted({r for gpu in GPU_TYPES.values() for r in gpu.regions})


def texts(alphabet: str, max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=0, max_size=max_size)


def mostly(valid: st.SearchStrategy[Any], edge: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid seven times in eight: most specs then break no rule or one, which is where the two
    implementations could disagree (a spec breaking five rules is refused by both for some reason)."""
    # (Not one_of(valid, ..., edge): Hypothesis does not pick its branches evenly.)
    return st.sampled_from([True] * 7 + [False]).flatmap(lambda keep_valid: valid if keep_valid else edge)


model_ids = mostly(
    st.sampled_from(["hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "a/b", "org/x.y_z-1", "Qwen/Qwen2.5-7B"]),
    st.one_of(
        st.sampled_from(["llama", "org/", "/name", "org/-name", "org/name-", "org--x/name", "org/na..me",
                         "org/na me", "a/b/c", "org/" + "n" * 92, "org/" + "n" * 93]),
        texts("aZ09-_./ ", 10),
    ),
)
token_counts = st.one_of(st.integers(min_value=-1, max_value=8), st.sampled_from([4095, 4096, 8192, 2**31 - 1, 2**31]))


@st.composite
def token_limits(draw: st.DrawFn) -> dict[str, int]:
    """maxInputTokens < maxTotalTokens <= maxBatchPrefillTokens mostly; any three numbers sometimes."""
    names = draw(st.sets(st.sampled_from(["maxInputTokens", "maxTotalTokens", "maxBatchPrefillTokens"])))
    if draw(st.integers(0, 3)) == 0:
        values = {name: draw(token_counts) for name in names}
    else:
        base = draw(st.integers(min_value=1, max_value=8192))
        values = {"maxInputTokens": base, "maxTotalTokens": base + draw(st.integers(1, 8192)),
                  "maxBatchPrefillTokens": base + draw(st.integers(0, 8192))}
    return {name: values[name] for name in names}


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    model = draw(st.fixed_dictionaries(
        {"id": model_ids},
        optional={
            "revision": mostly(st.sampled_from(["main", "v1.0", "refs/pr/1"]), st.sampled_from(["-x", "", "a b"])),
            "hfTokenSecret": st.fixed_dictionaries(
                {"secret": mostly(st.sampled_from(["hf-token", "HF_TOKEN", "projects/p-1/secrets/hf"]),
                                  st.sampled_from(["hf.token", "", "a/b"]))},
                optional={"version": mostly(st.sampled_from(["latest", "1", "12"]),
                                            st.sampled_from(["0", "v1", "Latest"]))},
            ),
        },
    ))
    precision = draw(st.sampled_from(["none", "quantize", "dtype", "both"]))
    if precision in ("quantize", "both"):
        model["quantize"] = draw(mostly(st.sampled_from(["awq", "gptq", "bitsandbytes-nf4", "compressed-tensors"]),
                                        st.sampled_from(["int4", "AWQ"])))
    if precision in ("dtype", "both"):
        model["dtype"] = draw(mostly(st.sampled_from(["float16", "bfloat16"]), st.just("float32")))
    return {**model, **draw(token_limits())}


quantities_cpu = mostly(
    # How Kubernetes users write CPU: "8000m", "6.0", "8.", "+8", "1e1" mean whole vCPUs too.
    st.sampled_from([4, 6, 8, "4", "6", "8", "8000m", "6000m", "6.0", "8.0", "4.000", "+8", "8.", "0.8e1", "1e1"]),
    st.one_of(st.integers(min_value=-1, max_value=50),
              st.sampled_from(["4500m", "5", "7", "20", "44", "45", "eight", "2e1", ".", "0.5", "16Gi", "", "8 ",
                               "1K", "9", "6.5", "8001m"])),
)
quantities_memory = mostly(
    st.sampled_from(["16Gi", "24Gi", "32Gi", "34359738368", 34359738368, 17179869184, "16384Mi", "17G", "0.03125Ti"]),
    st.one_of(st.sampled_from(["15Gi", "25Gi", "33Gi", "80Gi", "176Gi", "177Gi", "32G", "32GB", "1Ti", "", "-32Gi"]),
              st.integers(min_value=0, max_value=10)),
)
gpus = st.fixed_dictionaries(
    {},
    optional={
        "type": mostly(st.just("nvidia-l4"), st.sampled_from([*GPU_TYPES, "nvidia-a100"])),
        "count": mostly(st.just(1), st.sampled_from([0, 2])),
        "zonalRedundancy": st.booleans(),
    },
)
resources = st.fixed_dictionaries({}, optional={"cpu": quantities_cpu, "memory": quantities_memory, "gpu": gpus})


@st.composite
def scaling(draw: st.DrawFn) -> dict[str, Any]:
    values = draw(st.fixed_dictionaries(
        {}, optional={"concurrency": mostly(st.sampled_from([1, 64, 1000]), st.sampled_from([-1, 0, 1001]))}
    ))
    low, high = sorted(draw(st.lists(st.integers(min_value=0, max_value=4), min_size=2, max_size=2)))
    if draw(st.integers(0, 3)) == 0:
        low, high = draw(st.integers(-1, 4)), draw(st.integers(0, 4))
    for key, value in (("minInstances", low), ("maxInstances", high)):
        if draw(st.booleans()):
            values[key] = value
    return values


members = mostly(
    st.sampled_from(["user:alice@example.com", "group:ml@example.com", "domain:example.com",
                     "serviceAccount:app@my-project.iam.gserviceaccount.com", "group:ml@ex-ample.co.uk"]),
    st.sampled_from(["allUsers", "allAuthenticatedUsers", "alice@example.com", "user:alice", "domain:example",
                     "User:alice@example.com"]),
)
access = st.fixed_dictionaries(
    {},
    optional={
        "public": st.booleans(),
        "invokers": st.lists(members, max_size=3),
        "createInvokerServiceAccount": st.booleans(),
    },
)
env_names = mostly(
    st.sampled_from(["LOG_LEVEL", "_X", "a1", "NUM_SHARD"]),
    st.one_of(st.sampled_from(["1X", "A-B", "", "PORT", *sorted(RESERVED_ENV_NAMES)]), texts("AZ_09-", 5)),
)
secret_refs = st.fixed_dictionaries(
    {"secret": mostly(st.sampled_from(["api-key", "projects/p-1/secrets/k"]), st.sampled_from(["a.b", "", "a/b"]))},
    optional={"version": mostly(st.sampled_from(["latest", "3"]), st.sampled_from(["0", "v1"]))},
)
# value, valueFrom, both or neither: exactly one is the rule, so all four must be drawn.
envs = st.lists(st.fixed_dictionaries({"name": env_names},
                                      optional={"value": texts("ab =", 5), "valueFrom": secret_refs}), max_size=3)
specs = st.fixed_dictionaries(
    {
        "model": models(),
        "region": mostly(st.sampled_from(["us-central1", "europe-west4", "asia-southeast1"]),
                         st.sampled_from([*ALL_REGIONS, "us-west1", "US-central1", "uscentral1", ""])),
    },
    optional={
        "project": mostly(
            st.sampled_from(["my-project", "my-project-123456789012345678", "abcdef"]),
            st.one_of(st.sampled_from(["my-project-1234567890123456789", "abcde", "my-project-", "My-Project",
                                       "1project", "no-google", "a-ssl-b"]),
                      texts("az09-G", 8)),
        ),
        "image": mostly(
            st.sampled_from([
                "us-docker.pkg.dev/deeplearning-platform-release/gcr.io/huggingface-text-generation-inference-cu124.2-4.ubuntu2204.py311",
                "ghcr.io/huggingface/text-generation-inference:3.3.5", "localhost:5000/tgi", "tgi@sha256:" + "a" * 64,
                "Docker.io/library/ubuntu",
            ]),
            st.sampled_from(["docker.io/Library/ubuntu", "ubuntu:", "ubuntu:-x", "a b", "", "tgi@sha256:abc"]),
        ),
        "resources": resources,
        "scaling": scaling(),
        "access": access,
        "serviceAccount": mostly(
            st.sampled_from(["runtime@my-project.iam.gserviceaccount.com", "123-compute@developer.gserviceaccount.com",
                             "my-project@appspot.gserviceaccount.com"]),
            st.sampled_from(["alice@gmail.com", "runtime@p.iam.gserviceaccount.com",
                             "Runtime@my-project.iam.gserviceaccount.com"]),
        ),
        "env": envs,
        "suspend": st.booleans(),
        "deletionPolicy": mostly(st.sampled_from(["Delete", "Retain"]), st.sampled_from(["Orphan", "delete"])),
    },
)


def api_server_accepts(api: k8s.CustomObjectsApi, namespace: str, spec: dict[str, Any]) -> tuple[bool, str]:
    body = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": "probe"}, "spec": spec}
    try:
        api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, body, dry_run="All",
                                            field_validation="Strict")
    except ApiException as exc:
        if exc.status != 422:
            raise
        return False, json.loads(exc.body)["message"]
    return True, ""


def pydantic_accepts(spec: dict[str, Any]) -> tuple[bool, str]:
    try:
        TGIServiceSpec.model_validate(spec)
    except ValidationError as exc:
        return False, str(exc)
    return True, ""


def test_pydantic_and_api_server_agree(cluster: KubeCluster, crd_installed: str, namespace: str) -> None:
    api = k8s.CustomObjectsApi(cluster.api_client())
    verdicts: list[bool] = []

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(spec=specs)
    def agree(spec: dict[str, Any]) -> None:
        server, server_says = api_server_accepts(api, namespace, spec)
        model, model_says = pydantic_accepts(spec)
        assert server == model, (f"API server {'accepts' if server else 'refuses'} ({server_says}); "
                                 f"pydantic {'accepts' if model else 'refuses'} ({model_says}): {spec}")
        verdicts.append(server)

    agree()
    # The property means something only if both verdicts came up often.
    assert verdicts.count(True) >= 60 and verdicts.count(False) >= 60, (verdicts.count(True), verdicts.count(False))
