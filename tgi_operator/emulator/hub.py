"""A Hugging Face Hub stand-in on the emulator's HTTP port, for what `huggingface_hub` asks when the operator
checks a model (tgi_operator/hub.py): model info and config.json, for the models of hub_catalogue.yaml.

Shaped like the Hub (huggingface_hub reads the status, the X-Error-Code and X-Error-Message headers and, for files,
X-Repo-Commit, ETag and Content-Length):
- GET /api/models/{org}/{name}[/revision/{rev}] (query `blobs=true` adds file sizes): the model's JSON, `sha` the commit
  the revision resolves to (`main` or the commit itself; no other branch or tag), `gated` false|"auto"|"manual",
  `safetensors` {parameters, total}, `config` (the Hub's short form), `siblings` [{rfilename, size}]. Public for a gated
  model too.
- HEAD/GET /{org}/{name}/resolve/{rev}/{file}: the file (only config.json has content here; another listed file
  answers 501 NotServed, never an empty 200), with X-Repo-Commit, ETag (the git blob id, quoted) and Content-Length;
  a gated model answers 401, X-Error-Code GatedRepo, "Access to model X is restricted. ...".
- any request with an Authorization header: 401 "Invalid credentials in Authorization header", what the Hub answers an
  invalid token (the stand-in has no accounts, so it knows no token).
- an unknown model: 401 X-Error-Code RepoNotFound with "Invalid username or password." (what the Hub answers a caller
  without a token, for a missing and a private model alike); an unknown revision: 404 RevisionNotFound "Invalid rev id:
  X"; an unknown file: 404 EntryNotFound "Entry not found".
Sources (public reports of the Hub's answers): huggingface_hub's utils/_http.py `hf_raise_for_status` and
file_download.py `get_hf_file_metadata`; 401 GatedRepo in city96/ComfyUI_ExtraModels#99 and
rendeirolab/LazySlide#52, 403 "not in the authorized list" in ariG23498/gemma3-object-detection#5; 401 RepoNotFound
"Invalid username or password." in tmylla/NER_ZH#1 and 01-ai/Yi#226; 401 "Invalid credentials in Authorization
header" and huggingface_hub's own test of that text in `hf_raise_for_status`. The last requests are recorded for tests
(`requests`, admin API /emulator/v1/hub/requests).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

CATALOGUE = Path(__file__).resolve().parent / "hub_catalogue.yaml"
CONFIG_KEYS = ("architectures", "model_type", "quantization_config")  # the short `config` of GET /api/models


@dataclass(frozen=True)
class HubModel:
    id: str
    sha: str
    gated: str | bool
    parameters: dict[str, int]
    files: dict[str, int]  # name -> size, config.json excepted
    config: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    pipeline_tag: str | None = None
    library_name: str | None = None

    @property
    def config_bytes(self) -> bytes:
        return (json.dumps(self.config, indent=2) + "\n").encode()

    def file(self, name: str) -> bytes | None:
        """config.json's content; None for any other file (see `resolve`: listed ones are refused, not faked)."""
        return self.config_bytes if name == "config.json" else None

    def info(self, with_sizes: bool) -> dict[str, Any]:
        sizes = {"config.json": len(self.config_bytes), **self.files}
        siblings = [{"rfilename": name, **({"size": size} if with_sizes else {})} for name, size in sorted(sizes.items())]
        return {
            "_id": hashlib.sha1(self.id.encode()).hexdigest()[:24], "id": self.id, "modelId": self.id,
            "author": self.id.split("/")[0], "sha": self.sha, "private": False, "disabled": False, "gated": self.gated,
            "library_name": self.library_name, "pipeline_tag": self.pipeline_tag, "tags": self.tags,
            "config": {k: v for k, v in self.config.items() if k in CONFIG_KEYS},
            "siblings": siblings, "spaces": [],
            "safetensors": {"parameters": self.parameters, "total": sum(self.parameters.values())},
        }


def load_catalogue(path: Path = CATALOGUE) -> dict[str, HubModel]:
    models = yaml.safe_load(path.read_text())["models"]
    return {m["id"]: HubModel(**m) for m in models}


def git_blob_id(content: bytes) -> str:
    """The id git gives a file's content: what the Hub sends as a small file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status,
                             headers={"X-Error-Code": code, "X-Error-Message": message})


REPO_NOT_FOUND = "Invalid username or password."
INVALID_TOKEN = "Invalid credentials in Authorization header"
KEPT_REQUESTS = 10_000


class HubStandIn:
    def __init__(self, models: dict[str, HubModel] | None = None) -> None:
        self.models = load_catalogue() if models is None else models
        self.requests: deque[dict[str, Any]] = deque(maxlen=KEPT_REQUESTS)

    def _model(self, request: web.Request) -> tuple[HubModel | None, web.Response | None]:
        """The model and the commit its revision names, or the Hub's refusal."""
        if "authorization" in request.headers:  # no accounts here: every token is unknown
            return None, web.json_response({"error": INVALID_TOKEN}, status=401, headers={"X-Error-Message": INVALID_TOKEN})
        m = request.match_info
        model = self.models.get(f"{m['org']}/{m['name']}")
        if model is None:
            return None, _error(401, "RepoNotFound", REPO_NOT_FOUND)
        revision = m.get("revision") or "main"
        if revision not in ("main", model.sha):
            return None, _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return model, None

    def _record(self, request: web.Request, response: web.Response) -> web.Response:
        self.requests.append({"method": request.method, "path": request.path, "status": response.status,
                              "authorization": "authorization" in request.headers})
        return response

    async def model_info(self, request: web.Request) -> web.Response:
        model, refusal = self._model(request)
        if refusal is not None:
            return self._record(request, refusal)
        return self._record(request, web.json_response(model.info(request.query.get("blobs") == "true")))

    async def resolve(self, request: web.Request) -> web.Response:
        model, refusal = self._model(request)
        if refusal is not None:
            return self._record(request, refusal)
        filename = request.match_info["file"]
        if model.gated:
            return self._record(request, _error(401, "GatedRepo", f"Access to model {model.id} is restricted. You must "
                                                "have access to it and be authenticated to access it. Please log in."))
        content = model.file(filename)
        if content is None and filename in model.files:  # listed, but the stand-in has no bytes for it: say so
            return self._record(request, _error(501, "NotServed", f"the emulator's Hub serves config.json only, not "
                                                 f"{filename}"))
        if content is None:
            response = _error(404, "EntryNotFound", "Entry not found")
            response.headers["X-Repo-Commit"] = model.sha
            return self._record(request, response)
        headers = {"X-Repo-Commit": model.sha, "ETag": f'"{git_blob_id(content)}"', "Accept-Ranges": "bytes",
                   "Content-Type": "text/plain; charset=utf-8"}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(content))
            return self._record(request, web.Response(status=200, headers=headers))
        return self._record(request, web.Response(status=200, body=content, headers=headers))


def add_hub_routes(app: web.Application, hub: HubStandIn, admin_prefix: str = "/emulator/v1") -> None:
    """The Hub's routes, and the admin API's view of the requests they answered (GET lists, DELETE forgets)."""

    async def requests(request: web.Request) -> web.Response:
        if request.method == "DELETE":
            hub.requests.clear()
        return web.json_response({"requests": list(hub.requests)})

    app.router.add_get(admin_prefix + "/hub/requests", requests)
    app.router.add_delete(admin_prefix + "/hub/requests", requests)
    app.router.add_get("/api/models/{org}/{name}", hub.model_info)
    app.router.add_get("/api/models/{org}/{name}/revision/{revision}", hub.model_info)
    app.router.add_route("HEAD", "/{org}/{name}/resolve/{revision}/{file:.+}", hub.resolve)
    app.router.add_get("/{org}/{name}/resolve/{revision}/{file:.+}", hub.resolve, allow_head=False)
