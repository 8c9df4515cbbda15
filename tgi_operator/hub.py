"""The Hugging Face Hub, as the model preflight asks it: the only module that imports huggingface_hub.

Two requests per model and commit, with the real client (so HF_ENDPOINT, proxies and its error mapping apply):
- `HfApi.model_info(id, revision=..., files_metadata=True)`: GET /api/models/{id}[/revision/{rev}], which resolves
  the revision to a commit (`sha`) and says whether the model is gated, how many tensor elements of each dtype its
  safetensors hold (`safetensors.parameters`) and its files' sizes (`siblings`). Public for gated models too.
- config.json at that commit: GET /{id}/resolve/{sha}/config.json (the URL `hf_hub_url` builds), read into memory:
  the operator writes nothing to disk (its root filesystem is read-only). A gated model answers 401 GatedRepo.
The operator holds no Hugging Face token (`token=False`: neither HF_TOKEN nor a saved login is sent). What a commit
holds never changes, so facts are kept per (endpoint, model, commit); a revision that is not a commit (a branch,
"main") is resolved again once `resolve_seconds` (60 s) have passed, and lookups of the same model and revision at
once share one request: a thousand new objects of one model ask the Hub once, not a thousand times. The Hub answers
a missing and a private model alike (401 RepoNotFound).
Blocking calls run in a thread, each bounded by the timeout; after a failure to reach the Hub, lookups fail at once
for a while instead of each waiting for its own timeout.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError, \
    RevisionNotFoundError
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from tgi_operator import __version__
from tgi_operator.preflight import ModelFacts

COMMIT = re.compile(r"^[0-9a-f]{40}$")
CREDENTIALS_IN_URL = re.compile(r"://[^/\s]+@")  # up to the last @ before the path: a password may hold one
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
USER_AGENT = {"library_name": "tgi-operator", "library_version": __version__}


class HubError(Exception):
    """The Hub could not give the facts; the message says why, without secrets."""


class ModelNotFound(HubError):
    """The Hub knows no such model, or it is private (it answers the same)."""


class RevisionNotFound(HubError):
    """The model exists; the revision does not."""


class HubUnreachable(HubError):
    """No answer, or an answer that says nothing about the model (5xx, 429, offline mode)."""


class ModelNotDescribed(HubUnreachable):
    """The Hub answered, but would not describe this model (a mirror that keeps a gated model's card to itself):
    the preflight cannot judge it, as when the Hub cannot be reached, but the Hub is not down for other models."""


class ModelHub:
    """Looks models up on the Hub, remembering each commit's facts (bounded) and, for `quiet_seconds`, that the Hub
    could not be reached."""

    def __init__(self, max_models: int = 256, quiet_seconds: float = 30.0, resolve_seconds: float = 60.0) -> None:
        self._facts: OrderedDict[tuple[str, str, str], ModelFacts] = OrderedDict()
        self._max_models = max_models
        self._quiet_seconds = quiet_seconds
        self._resolve_seconds = resolve_seconds
        self._down: dict[str, tuple[float, str]] = {}  # endpoint -> (until, why)
        self._resolved: OrderedDict[tuple[str, str, str], tuple[float, ModelFacts]] = OrderedDict()  # -> (until, facts)
        self._asking: dict[tuple[str, str, str], asyncio.Future[ModelFacts]] = {}

    async def facts(self, model_id: str, revision: str | None, *, endpoint: str | None, timeout: float) -> ModelFacts:
        base = base_url(endpoint)
        if revision and COMMIT.match(revision) and (known := self._facts.get((base, model_id, revision))):
            return known
        key = (base, model_id, revision or "")
        if (resolved := self._resolved.get(key)) and time.monotonic() < resolved[0]:
            return resolved[1]
        if (asking := self._asking.get(key)) is None:
            asking = self._asking[key] = asyncio.ensure_future(self._ask(base, model_id, revision, timeout))
            asking.add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(asking)  # a caller that gives up does not cancel the others' request

    async def _ask(self, base: str, model_id: str, revision: str | None, timeout: float) -> ModelFacts:
        until, why = self._down.get(base, (0.0, ""))
        if time.monotonic() < until:
            raise HubUnreachable(why)
        api = HfApi(endpoint=base, token=False, **USER_AGENT)
        try:
            facts = await asyncio.wait_for(asyncio.to_thread(self._lookup, api, base, model_id, revision, timeout),
                                           timeout * 3)  # model_info, then config.json: each bounded by `timeout`
        except ModelNotDescribed:
            raise
        except (asyncio.TimeoutError, HubUnreachable) as exc:
            why = str(exc) if isinstance(exc, HubUnreachable) else f"{shown(base)} did not answer within {timeout * 3:g} s"
            self._down[base] = (time.monotonic() + self._quiet_seconds, why)
            raise HubUnreachable(why) from None
        self._down.pop(base, None)
        if COMMIT.match(facts.revision):  # what a commit holds never changes
            _remember(self._facts, (base, model_id, facts.revision), facts, self._max_models)
        _remember(self._resolved, (base, model_id, revision or ""), (time.monotonic() + self._resolve_seconds, facts),
                  self._max_models)
        return facts

    # -- blocking, in a thread --------------------------------------------------------------------------------

    def _lookup(self, api: HfApi, base: str, model_id: str, revision: str | None, timeout: float) -> ModelFacts:
        info = _asked(lambda: api.model_info(model_id, revision=revision, files_metadata=True, timeout=timeout))
        sha = info.sha or revision or "main"  # the Hub always says; a mirror might not
        if known := self._facts.get((base, model_id, sha)):
            return known  # the same commit under another name (a branch): its files are known
        return ModelFacts(
            model_id=model_id, revision=sha, gated=info.gated or None,
            parameters=dict(info.safetensors.parameters) if info.safetensors else {},
            weight_file_bytes=_weight_file_bytes(info.siblings or []),
            config=_asked(lambda: _config(api, model_id, sha, timeout)), hub=shown(base),
        )


def base_url(endpoint: str | None) -> str:
    """The Hub the client talks to: `endpoint`, else HF_ENDPOINT, else https://huggingface.co."""
    return (endpoint or constants.ENDPOINT).rstrip("/")


def shown(url: str) -> str:
    """`url` without a user and password (a mirror's URL may carry them): what messages, events and the status say."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else url


def _config(api: HfApi, model_id: str, sha: str, timeout: float) -> dict[str, Any] | None:
    """config.json at `sha`, in memory; None for a gated model (the operator has no token), {} when there is none."""
    url = hf_hub_url(model_id, "config.json", revision=sha, endpoint=api.endpoint)
    response = get_session().get(url, headers=build_hf_headers(token=False, **USER_AGENT), timeout=timeout)
    try:
        hf_raise_for_status(response)
    except GatedRepoError:
        return None
    except RemoteEntryNotFoundError:
        return {}
    try:
        config = response.json()
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def _asked(call: Any) -> Any:
    """Run one Hub call, its errors as the preflight tells them apart (messages keep to their first line)."""
    try:
        return call()
    except RevisionNotFoundError as exc:
        raise RevisionNotFound(_first_line(exc)) from None
    except GatedRepoError as exc:  # the Hub describes gated models; only a mirror might not (config.json: _config)
        raise ModelNotDescribed(f"the Hub would not describe the model (gated): {_first_line(exc)}") from None
    except RepositoryNotFoundError as exc:
        raise ModelNotFound(_first_line(exc)) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "no status"
        raise HubUnreachable(f"the Hub answered {status}: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - connection refused, DNS, TLS, timeouts, offline mode: the Hub said nothing
        raise HubUnreachable(f"{type(exc).__name__}: {_first_line(exc)}") from None


def _weight_file_bytes(siblings: list[Any]) -> int | None:
    sizes = [s.size for s in siblings if s.rfilename.endswith(WEIGHT_SUFFIXES) and s.size]
    safetensors = [s.size for s in siblings if s.rfilename.endswith(".safetensors") and s.size]
    return sum(safetensors or sizes) or None


def _first_line(exc: BaseException) -> str:
    text = CREDENTIALS_IN_URL.sub("://", str(exc))  # huggingface_hub's messages end with the URL it asked
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("(Request ID")]
    return " ".join(lines[:2])[:300] or type(exc).__name__


def _remember(table: OrderedDict[Any, Any], key: Any, value: Any, most: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > most:
        table.popitem(last=False)
