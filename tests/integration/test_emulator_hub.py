"""The emulator's Hugging Face Hub stand-in (emulator/hub.py), driven by the real huggingface_hub client: the answers
it gives for the catalogue's models, and the Hub's refusals, are what huggingface_hub expects of huggingface.co."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import requests
from emulator_fixtures import emulator  # noqa: F401
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError, HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
)

from tgi_operator.emulator.hub import git_blob_id, load_catalogue
from tgi_operator.emulator.server import Emulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
SEED = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
GATED = "meta-llama/Llama-3.1-8B-Instruct"


async def in_thread(call):  # huggingface_hub is synchronous; the emulator serves on its own loop
    return await asyncio.to_thread(call)


async def test_model_info_resolves_the_revision_and_tells_gated_parameters_and_files(emulator: Emulator) -> None:  # noqa: F811
    api = HfApi(endpoint=emulator.http_url, token=False)
    info = await in_thread(lambda: api.model_info(SEED, files_metadata=True))
    catalogued = load_catalogue()[SEED]
    assert info.id == SEED and info.sha == catalogued.sha and info.gated is False and info.private is False
    assert info.safetensors.parameters == {"I32": 879230976, "F16": 1105465344}
    assert info.safetensors.total == 1984696320
    assert info.config["quantization_config"]["quant_method"] == "awq"
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["model-00001-of-00002.safetensors"] == 4680000000 and sizes["config.json"] > 0
    pinned = await in_thread(lambda: api.model_info(SEED, revision=catalogued.sha))
    assert pinned.sha == catalogued.sha and pinned.siblings[0].size is None  # sizes only with files_metadata
    gated = await in_thread(lambda: api.model_info(GATED, revision="main"))
    assert gated.gated == "manual" and gated.safetensors.total == 8030261248  # public, even for a gated model


async def test_config_json_downloads_with_the_headers_huggingface_hub_checks(emulator: Emulator, tmp_path: Path) -> None:  # noqa: F811
    path = await in_thread(lambda: hf_hub_download(SEED, "config.json", endpoint=emulator.http_url, token=False,
                                                   cache_dir=tmp_path))
    content = Path(path).read_bytes()
    assert b'"num_key_value_heads": 8' in content
    catalogued = load_catalogue()[SEED]
    url = hf_hub_url(SEED, "config.json", endpoint=emulator.http_url)
    metadata = await in_thread(lambda: get_hf_file_metadata(url, token=False))
    assert (metadata.commit_hash, metadata.etag, metadata.size) == (catalogued.sha, git_blob_id(content), len(content))


@pytest.mark.parametrize("call, error, says", [
    (lambda api, d: api.model_info("org/no-such-model"), RepositoryNotFoundError, "Repository Not Found"),
    (lambda api, d: api.model_info(SEED, revision="v9"), RevisionNotFoundError, "Revision Not Found"),
    (lambda api, d: hf_hub_download(SEED, "nope.json", endpoint=api.endpoint, token=False, cache_dir=d),
     RemoteEntryNotFoundError, "Entry Not Found"),
    (lambda api, d: hf_hub_download(GATED, "config.json", endpoint=api.endpoint, token=False, cache_dir=d),
     GatedRepoError, "Access to model meta-llama/Llama-3.1-8B-Instruct is restricted. You must have access to it and "
                     "be authenticated to access it. Please log in."),
    (lambda api, d: HfApi(endpoint=api.endpoint, token="hf_unknown").model_info(SEED), HfHubHTTPError,
     "Invalid credentials in Authorization header"),
], ids=["unknown model", "unknown revision", "unknown file", "gated without a token", "unknown token"])
async def test_refusals_are_the_errors_huggingface_hub_raises_for_the_hub(
    emulator: Emulator, tmp_path: Path, call, error: type[Exception], says: str  # noqa: F811
) -> None:
    api = HfApi(endpoint=emulator.http_url, token=False)
    with pytest.raises(error, match=says) as refused:
        await in_thread(lambda: call(api, tmp_path))
    assert type(refused.value) is error  # not a subclass (a GatedRepoError is a RepositoryNotFoundError too)


@pytest.mark.parametrize("path, status, code, message", [
    ("/api/models/org/no-such-model", 401, "RepoNotFound", "Invalid username or password."),
    (f"/api/models/{SEED}/revision/v9", 404, "RevisionNotFound", "Invalid rev id: v9"),
    (f"/{SEED}/resolve/main/nope.json", 404, "EntryNotFound", "Entry not found"),
    (f"/{SEED}/resolve/main/model-00001-of-00002.safetensors", 501, "NotServed", "serves config.json only"),
], ids=["unknown model", "unknown revision", "unknown file", "a listed file without bytes"])
async def test_refusals_carry_the_hubs_status_and_error_headers(
    emulator: Emulator, path: str, status: int, code: str, message: str  # noqa: F811
) -> None:
    answer = await in_thread(lambda: requests.get(emulator.http_url + path, timeout=5))
    assert (answer.status_code, answer.headers.get("X-Error-Code")) == (status, code)
    assert message in answer.headers["X-Error-Message"]


def test_the_etag_is_gits_blob_id() -> None:
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # `echo hello | git hash-object --stdin`


async def test_requests_are_recorded_for_tests_and_can_be_forgotten(emulator: Emulator) -> None:  # noqa: F811
    api = HfApi(endpoint=emulator.http_url, token=False)
    await in_thread(lambda: api.model_info(SEED))
    listed = await in_thread(lambda: requests.get(f"{emulator.http_url}/emulator/v1/hub/requests", timeout=5).json())
    assert listed["requests"] == [{"method": "GET", "path": f"/api/models/{SEED}", "status": 200, "authorization": False}]
    await in_thread(lambda: requests.delete(f"{emulator.http_url}/emulator/v1/hub/requests", timeout=5))
    assert not emulator.hub.requests
