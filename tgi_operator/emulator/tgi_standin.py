"""A small deterministic stand-in for Hugging Face TGI behind each emulated Cloud Run URL.

Pure part: the launcher configuration (container args win over env, like TGI's clap `env` fallback),
TGI's `/info` document, input validation with TGI's messages, and a reply that is a pure function of
(model id, prompt). Server part: `TGIStandIn` adds TGI's routes to an aiohttp app:

  GET  /health /info /metrics /v1/models
  POST /generate /generate_stream /  (TGI's compat route: `stream` picks one of the two)
  POST /v1/chat/completions /v1/completions   (OpenAI-shaped; `stream: true` answers SSE)

"Tokens" are the stand-in's own: a prompt counts `\\w+` runs and punctuation marks; a reply is a list of
words, one token each. Test hooks (the model is fake, so latency is a knob): `latency_s` (also from the
container env `TGI_EMULATOR_LATENCY_MS`) delays every generation, and `hold()`/`release()` park
generations on an event so a test can fill a service's concurrency without sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TGI_VERSION = "3.3.4"
TGI_SHA = "9f38d9305168f4b47c8c46b573f5b2c07881281d"
DEFAULT_MODEL_ID = "bigscience/bloom-560m"  # TGI's own default when no model is given
DEFAULT_MAX_TOTAL_TOKENS = 4096  # the stand-in's "max_position_embeddings"
LATENCY_ENV = "TGI_EMULATOR_LATENCY_MS"

_INT_SETTINGS = {
    "MAX_CONCURRENT_REQUESTS": 128,
    "MAX_BEST_OF": 2,
    "MAX_STOP_SEQUENCES": 4,
    "MAX_TOP_N_TOKENS": 5,
    "VALIDATION_WORKERS": 2,
    "MAX_CLIENT_BATCH_SIZE": 4,
}
_VOCABULARY = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor",
    "iris", "juniper", "kelp", "lagoon", "meadow", "nimbus", "orchid", "prairie",
)  # fmt: skip
_TOKEN = re.compile(r"\w+|[^\w\s]")


class LauncherConfigError(ValueError):
    """The arguments would make TGI's launcher exit: the container never listens, the revision fails."""


class ValidationError(ValueError):
    """A request TGI refuses with 422 and `error_type: validation`."""


@dataclass(frozen=True)
class LauncherConfig:
    model_id: str = DEFAULT_MODEL_ID
    revision: str | None = None
    quantize: str | None = None
    dtype: str | None = None
    max_concurrent_requests: int = 128
    max_best_of: int = 2
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_input_tokens: int = DEFAULT_MAX_TOTAL_TOKENS - 1
    max_total_tokens: int = DEFAULT_MAX_TOTAL_TOKENS
    max_batch_prefill_tokens: int = DEFAULT_MAX_TOTAL_TOKENS + 49
    validation_workers: int = 2
    max_client_batch_size: int = 4
    latency_s: float = 0.0


def launcher_settings(args: Sequence[str], env: Mapping[str, str]) -> dict[str, str]:
    """Merge env and args into `{ENV_NAME: value}`; `--max-input-tokens 5` and `--x=5` both work; args win."""
    settings = {key: value for key, value in env.items()}
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("--"):
            continue  # a positional (e.g. the entrypoint) carries no setting
        name, has_value, value = arg[2:].partition("=")
        if not has_value:
            if index < len(args) and not args[index].startswith("--"):
                value = args[index]
                index += 1
            else:
                value = "true"  # a boolean flag such as --trust-remote-code
        settings[name.upper().replace("-", "_")] = value
    return settings


def _int_setting(settings: Mapping[str, str], name: str) -> int | None:
    raw = settings.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        flag = "--" + name.lower().replace("_", "-")
        raise LauncherConfigError(f"error: invalid value '{raw}' for '{flag} <{name}>': invalid digit found in string")
    if value < 0:
        raise LauncherConfigError(f"error: invalid value '{raw}' for '--{name.lower().replace('_', '-')}'")
    return value


def parse_launcher_config(args: Sequence[str], env: Mapping[str, str]) -> LauncherConfig:
    """The settings TGI's launcher would run with, or LauncherConfigError with its complaint."""
    settings = launcher_settings(args, env)
    ints = {name: _int_setting(settings, name) for name in (*_INT_SETTINGS, "MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH")}
    if ints["MAX_INPUT_TOKENS"] is not None and ints["MAX_INPUT_LENGTH"] is not None:
        raise LauncherConfigError(
            "Both `max_input_tokens` and `max_input_length` are set. Please define only `max_input_tokens` "
            "as `max_input_length is deprecated for naming consistency."
        )
    max_input = ints["MAX_INPUT_TOKENS"] if ints["MAX_INPUT_TOKENS"] is not None else ints["MAX_INPUT_LENGTH"]
    max_total = _int_setting(settings, "MAX_TOTAL_TOKENS") or DEFAULT_MAX_TOTAL_TOKENS
    if max_input is None:
        max_input = max_total - 1
    if max_input >= max_total:
        raise LauncherConfigError(f"`max_input_tokens`({max_input}) must be < `max_total_tokens`({max_total})")
    prefill = _int_setting(settings, "MAX_BATCH_PREFILL_TOKENS") or max_input + 50
    if prefill < max_input:
        raise LauncherConfigError(
            f"`max_batch_prefill_tokens` must be >= `max_input_tokens`. Given: {prefill} and {max_input}"
        )
    concurrency = ints["MAX_CONCURRENT_REQUESTS"]
    if concurrency == 0:
        raise LauncherConfigError("`max_concurrent_requests` must be > 0")
    latency_ms = _int_setting(settings, LATENCY_ENV) or 0
    return LauncherConfig(
        model_id=settings.get("MODEL_ID") or DEFAULT_MODEL_ID,
        revision=settings.get("REVISION") or None,
        quantize=settings.get("QUANTIZE") or None,
        dtype=settings.get("DTYPE") or None,
        max_input_tokens=max_input,
        max_total_tokens=max_total,
        max_batch_prefill_tokens=prefill,
        latency_s=latency_ms / 1000,
        **{name.lower(): value if value is not None else _INT_SETTINGS[name] for name, value in ints.items()
           if name in _INT_SETTINGS},
    )  # fmt: skip


def check_launcher_config(args: Sequence[str], env: Mapping[str, str]) -> str | None:
    """None when TGI would start with these args/env, else the launcher's error (for revision readiness)."""
    try:
        parse_launcher_config(args, env)
    except LauncherConfigError as error:
        return str(error)
    return None


def _model_dtype(config: LauncherConfig) -> str:
    if config.dtype == "bfloat16":
        return "torch.bfloat16"
    return "torch.float16"  # TGI's default on CUDA, and what the quantized kernels compute in


def info_document(config: LauncherConfig) -> dict[str, Any]:
    """TGI's GET /info for this configuration."""
    revision = config.revision or "main"
    return {
        "model_id": config.model_id,
        "model_sha": hashlib.sha1(f"{config.model_id}@{revision}".encode()).hexdigest(),
        "model_dtype": _model_dtype(config),
        "model_device_type": "cuda",
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": config.max_concurrent_requests,
        "max_best_of": config.max_best_of,
        "max_stop_sequences": config.max_stop_sequences,
        "max_input_tokens": config.max_input_tokens,
        "max_total_tokens": config.max_total_tokens,
        "validation_workers": config.validation_workers,
        "max_client_batch_size": config.max_client_batch_size,
        "router": "text-generation-router",
        "version": TGI_VERSION,
        "sha": TGI_SHA,
        "docker_label": f"sha-{TGI_SHA[:7]}",
    }


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def token_id(piece: str) -> int:
    return zlib.crc32(piece.encode()) % 128_000


def reply_words(model_id: str, prompt: str) -> list[str]:
    """The model's full answer to `prompt`: a pure function of (model id, prompt)."""
    digest = hashlib.sha256(f"{model_id}\0{prompt}".encode()).digest()
    words = ["Emulated", "reply", "from", model_id, "to", "prompt", digest[:6].hex()]
    words += [_VOCABULARY[byte % len(_VOCABULARY)] for byte in digest[6:14]]
    words[-1] += "."
    return words


@dataclass(frozen=True)
class Generation:
    pieces: list[str]  # one per generated token, with its leading space
    finish_reason: str  # TGI's: "eos_token" | "length" | "stop_sequence"
    input_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def generate(
    config: LauncherConfig, prompt: str, max_new_tokens: int | None, stop: Sequence[str] = ()
) -> Generation:
    """Validate like TGI's router, then produce the deterministic reply (ValidationError on refusal)."""
    input_tokens = count_tokens(prompt)
    if input_tokens == 0:
        raise ValidationError("Input validation error: `inputs` cannot be empty")
    if len(stop) > config.max_stop_sequences:
        raise ValidationError(
            f"Input validation error: `stop` supports up to {config.max_stop_sequences} stop sequences. "
            f"Given: {len(stop)}"
        )
    if input_tokens > config.max_input_tokens:
        raise ValidationError(
            f"Input validation error: `inputs` must have less than {config.max_input_tokens} tokens. "
            f"Given: {input_tokens}"
        )
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise ValidationError("Input validation error: `max_new_tokens` must be strictly positive")
    budget = config.max_total_tokens - input_tokens
    if max_new_tokens is None:
        max_new_tokens = budget
    elif input_tokens + max_new_tokens > config.max_total_tokens:
        raise ValidationError(
            f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {config.max_total_tokens}. "
            f"Given: {input_tokens} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    words = reply_words(config.model_id, prompt)
    pieces: list[str] = []
    finish_reason = "eos_token"
    for index, word in enumerate(words):
        if len(pieces) == max_new_tokens:
            finish_reason = "length"
            break
        pieces.append(word if index == 0 else " " + word)
        text = "".join(pieces)
        if any(sequence and sequence in text for sequence in stop):
            finish_reason = "stop_sequence"
            break
    return Generation(pieces=pieces, finish_reason=finish_reason, input_tokens=input_tokens)


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def chat_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """The stand-in's chat template: one `role: text` line per message, then the assistant's turn."""
    if not messages:
        raise ValidationError("Input validation error: `messages` cannot be empty")
    lines = [f"{message.get('role', 'user')}: {_message_text(message.get('content'))}" for message in messages]
    return "\n".join(lines) + "\nassistant:"


def chat_finish_reason(tgi_reason: str) -> str:
    return "length" if tgi_reason == "length" else "stop"


def _stop_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def _usage(generation: Generation) -> dict[str, int]:
    completion = len(generation.pieces)
    return {
        "prompt_tokens": generation.input_tokens,
        "completion_tokens": completion,
        "total_tokens": generation.input_tokens + completion,
    }


def _openai_document(kind: str, config: LauncherConfig, created: int, choice: dict, usage: dict | None) -> dict:
    """The envelope TGI puts around every OpenAI-shaped answer (one choice: TGI refuses n > 1)."""
    return {
        "object": kind,
        "id": "",
        "created": created,
        "model": config.model_id,
        "system_fingerprint": f"{TGI_VERSION}-sha-{TGI_SHA[:7]}",
        "choices": [{"index": 0, "logprobs": None, **choice}],
        "usage": usage,
    }


def chat_completion(config: LauncherConfig, body: Mapping[str, Any], created: int) -> tuple[Generation, dict]:
    """The OpenAI-shaped (TGI flavoured) chat completion for a request body."""
    generation = _chat_generation(config, body)
    choice = {"message": {"role": "assistant", "content": generation.text},
              "finish_reason": chat_finish_reason(generation.finish_reason)}
    return generation, _openai_document("chat.completion", config, created, choice, _usage(generation))


def _chat_generation(config: LauncherConfig, body: Mapping[str, Any]) -> Generation:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ValidationError("Failed to deserialize the JSON body into the target type: missing field `messages`")
    if (body.get("n") or 1) > 1:
        raise ValidationError("Input validation error: `n` > 1 is not supported")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return generate(config, chat_prompt(messages), max_tokens, _stop_list(body.get("stop")))


def chat_chunks(config: LauncherConfig, generation: Generation, created: int, include_usage: bool) -> list[dict]:
    """The `chat.completion.chunk` events of a streamed chat completion (without the final [DONE])."""
    chunks = []
    last = len(generation.pieces) - 1
    for index, piece in enumerate(generation.pieces):
        choice = {"delta": {"role": "assistant", "content": piece},
                  "finish_reason": chat_finish_reason(generation.finish_reason) if index == last else None}
        chunks.append(_openai_document("chat.completion.chunk", config, created, choice, None))
    if include_usage:
        chunks.append({**chunks[-1], "choices": [], "usage": _usage(generation)})
    return chunks


def completion(config: LauncherConfig, body: Mapping[str, Any], created: int) -> dict:
    """OpenAI's legacy /v1/completions, which TGI also serves."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    if not isinstance(prompt, str):
        raise ValidationError("Failed to deserialize the JSON body into the target type: missing field `prompt`")
    generation = generate(config, prompt, body.get("max_tokens"), _stop_list(body.get("stop")))
    choice = {"text": generation.text, "finish_reason": chat_finish_reason(generation.finish_reason)}
    return _openai_document("text_completion", config, created, choice, _usage(generation))


def generate_request(config: LauncherConfig, body: Mapping[str, Any]) -> tuple[Generation, str, Mapping[str, Any]]:
    """Validate TGI's {inputs, parameters} body; returns the generation, the prompt and the parameters."""
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        raise ValidationError("Failed to deserialize the JSON body into the target type: missing field `inputs`")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ValidationError("Failed to deserialize the JSON body into the target type: `parameters`")
    best_of = parameters.get("best_of") or 1
    if best_of > config.max_best_of:
        raise ValidationError(f"Input validation error: `best_of` must be <= {config.max_best_of}. Given: {best_of}")
    generation = generate(config, inputs, parameters.get("max_new_tokens"), _stop_list(parameters.get("stop")))
    return generation, inputs, parameters


def _token_entries(pieces: Sequence[str]) -> list[dict]:
    return [{"id": token_id(piece), "text": piece, "logprob": -0.125, "special": False} for piece in pieces]


def generate_document(generation: Generation, prompt: str, parameters: Mapping[str, Any]) -> dict:
    """TGI's /generate answer; `details` only when asked for, like TGI."""
    text = (prompt + generation.text) if parameters.get("return_full_text") else generation.text
    document: dict[str, Any] = {"generated_text": text}
    if parameters.get("details"):
        document["details"] = {
            "finish_reason": generation.finish_reason,
            "generated_tokens": len(generation.pieces),
            "seed": parameters.get("seed"),
            "prefill": [],
            "tokens": _token_entries(generation.pieces),
        }
    return document


def generate_stream_events(generation: Generation, parameters: Mapping[str, Any]) -> list[dict]:
    """TGI's /generate_stream events: one per token; the last carries generated_text and details."""
    events = []
    entries = _token_entries(generation.pieces)
    for index, entry in enumerate(entries):
        final = index == len(entries) - 1
        events.append(
            {
                "index": index + 1,
                "token": entry,
                "top_tokens": None,
                "generated_text": generation.text if final else None,
                "details": {
                    "finish_reason": generation.finish_reason,
                    "generated_tokens": len(entries),
                    "seed": parameters.get("seed"),
                    "input_length": generation.input_tokens,
                }
                if final
                else None,
            }
        )
    return events


def metrics_text(config: LauncherConfig, counters: Mapping[str, int], in_flight: int) -> str:
    """A few of TGI's Prometheus series (TGI's metrics have no `_total` suffix)."""
    lines = []
    for name in ("tgi_request_count", "tgi_request_success", "tgi_request_failure"):
        lines += [f"# TYPE {name} counter", f"{name} {counters.get(name, 0)}"]
    lines += ["# TYPE tgi_batch_current_size gauge", f"tgi_batch_current_size {in_flight}"]
    lines += ["# TYPE tgi_queue_size gauge", "tgi_queue_size 0"]
    lines += ["# TYPE tgi_request_max_concurrent gauge", f"tgi_request_max_concurrent {config.max_concurrent_requests}"]
    return "\n".join(lines) + "\n"


def _error(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


@dataclass
class TGIStandIn:
    """TGI's HTTP surface for one service; `config` may be replaced in place when the revision changes."""

    config: LauncherConfig
    latency_override_s: float | None = None
    generations_in_flight: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    _open: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._open.set()

    def hold(self) -> None:
        """Park every generation (after admission) until `release()`; for concurrency tests."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def reconfigure(self, config: LauncherConfig) -> None:
        self.config = config

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/health", self._health)
        app.router.add_get("/info", self._info)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/generate", self._generate)
        app.router.add_post("/generate_stream", self._generate_stream)
        app.router.add_post("/", self._compat_generate)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(info_document(self.config))

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=metrics_text(self.config, self.counters, self.generations_in_flight))

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": self.config.model_id, "object": "model", "created": 0, "owned_by": self.config.model_id}
        return web.json_response({"object": "list", "data": [model]})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, stream_default=False)

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, stream_default=True)

    async def _compat_generate(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, stream_default=None)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, stream_default=None, kind="chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, stream_default=None, kind="completion")

    async def _serve(
        self, request: web.Request, stream_default: bool | None, kind: str = "generate"
    ) -> web.StreamResponse:
        """Admission (TGI's own max_concurrent_requests), validation, the test delay, then the answer."""
        self._count("tgi_request_count")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._count("tgi_request_failure")
            return _error(422, "Failed to parse the request body as JSON", "validation")
        if not isinstance(body, dict):
            self._count("tgi_request_failure")
            return _error(422, "Failed to deserialize the JSON body into the target type", "validation")
        if self.generations_in_flight >= self.config.max_concurrent_requests:
            self._count("tgi_request_failure")
            return _error(429, "Model is overloaded", "overloaded")
        config = self.config
        created = int(time.time())
        stream = bool(body.get("stream")) if stream_default is None else stream_default
        try:
            if kind == "chat":
                generation, document = chat_completion(config, body, created)
            elif kind == "completion":
                document = completion(config, body, created)
                stream = False  # the stand-in answers legacy completions in one piece
            else:
                generation, prompt, parameters = generate_request(config, body)
                document = generate_document(generation, prompt, parameters)
        except ValidationError as error:
            self._count("tgi_request_failure")
            return _error(422, str(error), "validation")
        self.generations_in_flight += 1
        try:
            await self._delay()
            if not stream:
                self._count("tgi_request_success")
                return web.json_response(document)
            if kind == "chat":
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                events = chat_chunks(config, generation, created, include_usage)
            else:
                events = generate_stream_events(generation, parameters)
            response = await _send_events(request, events, done=kind == "chat")
            self._count("tgi_request_success")
            return response
        finally:
            self.generations_in_flight -= 1

    async def _delay(self) -> None:
        latency = self.latency_override_s if self.latency_override_s is not None else self.config.latency_s
        if latency > 0:
            await asyncio.sleep(latency)
        await self._open.wait()


async def _send_events(request: web.Request, events: list[dict], done: bool) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for event in events:
        await response.write(f"data:{json.dumps(event, separators=(',', ':'))}\n\n".encode())
    if done:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response

