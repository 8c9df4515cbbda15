from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tgi_operator.naming import invoker_account_id, is_owned_by, legacy_service_id, owner_labels, service_id

CLOUD_RUN_ID = re.compile(r"^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$")
SA_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
DNS_LABEL = st.from_regex(r"^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$", fullmatch=True)
DNS_NAME = st.from_regex(r"^[a-z0-9]([a-z0-9.-]{0,60}[a-z0-9])?$", fullmatch=True)


@pytest.mark.parametrize(
    ("namespace", "name", "readable"),
    [
        ("team-a", "llama-8b", "team-a-llama-8b-"),  # readable, then the hash
        ("ml", "mistral", "ml-mistral-"),
    ],
)
def test_ids_are_readable_and_hashed(namespace: str, name: str, readable: str) -> None:
    result = service_id(namespace, name)
    assert result.startswith(readable) and len(result) == len(readable) + 16  # 80 bits of base32
    assert CLOUD_RUN_ID.match(result)


def test_namespace_and_name_boundaries_do_not_collide() -> None:
    assert service_id("team-a", "llama") != service_id("team", "a-llama")


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("1team", "llama"),  # must start with a letter
        ("team", "llama.v2"),  # dots are not allowed
        ("a-very-long-namespace-name-for-the-ml-team", "meta-llama-3-1-8b-instruct-awq"),
    ],
)
def test_changed_ids_get_a_hash_and_follow_cloud_run_rules(namespace: str, name: str) -> None:
    result = service_id(namespace, name)
    assert CLOUD_RUN_ID.match(result), result


@given(DNS_LABEL, DNS_NAME)
def test_every_id_is_valid_and_deterministic(namespace: str, name: str) -> None:
    result = service_id(namespace, name)
    assert CLOUD_RUN_ID.match(result), result
    assert result == service_id(namespace, name)


@pytest.mark.parametrize(("namespace", "name"), [("team-a", "llama-8b"), ("a-very-long-namespace-name-for-the-ml-team", "m")])
def test_the_id_carries_80_bits_of_hash_so_another_tenant_cannot_search_for_it(namespace: str, name: str) -> None:
    """The first version's 24 bits fell to a brute-force search in seconds; 80 bits of SHA-256 cannot be searched."""
    suffix = service_id(namespace, name).rsplit("-", 1)[1]
    assert len(suffix) == 16 and re.fullmatch("[a-z2-7]{16}", suffix)  # base32: 5 bits a character
    assert service_id(namespace, name) != legacy_service_id(namespace, name)
    assert re.fullmatch(r".*-[0-9a-f]{6}", legacy_service_id(namespace, name))  # what existing services are named


def test_different_objects_that_clean_to_the_same_text_get_different_ids() -> None:
    assert service_id("team", "llama.v2") != service_id("team", "llama-v2")


@given(DNS_LABEL, DNS_NAME)
def test_invoker_account_ids_follow_iam_rules(namespace: str, name: str) -> None:
    assert SA_ID.match(invoker_account_id(namespace, name))


def test_ownership_needs_every_owner_label() -> None:
    labels = owner_labels("team-a", "llama.v2")
    assert is_owned_by(labels, "team-a", "llama.v2")
    assert not is_owned_by(labels, "team-b", "llama.v2")
    assert not is_owned_by({k: v for k, v in labels.items() if k != "managed-by"}, "team-a", "llama.v2")
    assert labels["tgi-operator-name"] == "llama_v2"
    # Two clusters sharing a project: each operator owns only its own cluster's services.
    assert not is_owned_by(labels, "team-a", "llama.v2", cluster="prod")
    assert is_owned_by(owner_labels("team-a", "llama.v2", "prod"), "team-a", "llama.v2", cluster="prod")
