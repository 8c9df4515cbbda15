"""Pure: the model preflight's verdict, from what the Hugging Face Hub says about a model and the spec.

Before a GPU is spent (a cold start bills minutes of GPU time, up to the 30-minute start-up window, before TGI says
anything), a TGIService is stopped when its model cannot run: it does not exist, it is gated and no token is given,
`maxTotalTokens` is beyond the model's context, or it does not fit the GPU (gpu_memory.py). Each stop says what to
change. What cannot be checked (a gated model's config.json, which the operator, holding no token, cannot read) is
said, and does not stop anything. hub.py fetches the facts; model_check.py runs the step in a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tgi_operator.conditions import Problem
from tgi_operator.gpu_memory import (
    DEFAULT_TOKENS,
    LOAD_TIME_BITS,
    PREFILL_MARGIN,
    MemoryEstimate,
    ModelShape,
    TokenLimits,
    estimate,
    in_gib,
    token_limits,
    weights_bytes,
)
from tgi_operator.gpus import GPU_TYPES, GpuType
from tgi_operator.models import DEFAULT_IMAGE, PreflightStatus, TGIServiceSpec

PASSED, PARTIAL, FAILED, SKIPPED = "Passed", "Partial", "Failed", "Skipped"
# Quantizations TGI applies at load to a checkpoint that is not quantized, smallest saving first.
SUGGESTED_QUANTIZATIONS = ("fp8", "bitsandbytes-nf4")
TOKEN_STEP = 256  # suggested token limits are rounded down to this


@dataclass(frozen=True)
class ModelFacts:
    """A model at one commit, as the Hub shows it to a caller without a token."""

    model_id: str
    revision: str  # the commit the requested revision resolved to
    gated: str | None  # "auto" or "manual" when gated
    parameters: Mapping[str, int]  # safetensors tensor elements per dtype (the Hub's `safetensors.parameters`)
    weight_file_bytes: int | None  # size of the weight files, when the Hub has no safetensors summary
    config: Mapping[str, Any] | None  # config.json; None when it could not be read (a gated model)
    hub: str  # the Hub's base URL, for links


@dataclass(frozen=True)
class Verdict:
    result: str  # PASSED, PARTIAL (nothing stops it, something was not checked), FAILED or SKIPPED
    message: str
    problem: Problem | None = None  # FAILED: the Stalled reason and what to change
    wait: bool = False  # SKIPPED while preflight is required: deploy nothing yet, ask again soon
    revision: str | None = None
    estimate: MemoryEstimate | None = field(default=None, compare=False)
    recorded_as: PreflightStatus | None = field(default=None, compare=False)  # a verdict from status, kept as it is

    @property
    def note(self) -> str | None:
        """What the conditions say besides their own message, when the model was not fully checked."""
        if self.result == PARTIAL:
            return f"model preflight incomplete: {self.message}"
        if self.result == SKIPPED:
            return f"model preflight skipped: {self.message}"
        return None

    def status(self, generation: int) -> PreflightStatus:
        if self.recorded_as is not None:
            return self.recorded_as
        e = self.estimate
        return PreflightStatus(
            result=self.result, generation=generation, revision=self.revision, message=self.message,
            required_gpu_memory=f"{in_gib(e.required)}Gi" if e else None,
            gpu_memory=f"{in_gib(e.gpu_bytes)}Gi" if e else None,
            full_length_requests=e.full_length_requests if e else None,
        )

    @classmethod
    def recorded(cls, status: PreflightStatus) -> Verdict:
        """A verdict this generation already got (a resync asks the Hub nothing)."""
        return cls(status.result, status.message or "", revision=status.revision, recorded_as=status)


# -- when the Hub cannot say ---------------------------------------------------------------------------------


def model_not_found(spec: TGIServiceSpec, hub: str) -> Verdict:
    model = spec.model
    if model.hf_token_secret:  # the Hub answers the same for a private model: the runtime's token may see it
        return Verdict(SKIPPED, f"{model.id} is not visible on {hub} without a token: it is private (the runtime reads "
                       "it with spec.model.hfTokenSecret) or it does not exist; not checked")
    message = (f"spec.model.id: {model.id} does not exist on the Hugging Face Hub ({hub}), or is private: check the "
               "id; for a private model, store a token that may read it in Secret Manager and set "
               "spec.model.hfTokenSecret")
    return Verdict(FAILED, message, Problem("ModelNotFound", message))


def revision_not_found(spec: TGIServiceSpec) -> Verdict:
    message = (f"spec.model.revision: {spec.model.revision} is not a branch, tag or commit of {spec.model.id}: use "
               "one that exists, or leave it unset for the default branch")
    return Verdict(FAILED, message, Problem("ModelRevisionNotFound", message))


def hub_unreachable(detail: str, required: bool) -> Verdict:
    if required:
        message = (f"the Hugging Face Hub could not be asked ({detail}) and model preflight is required "
                   "(TGI_OPERATOR_PREFLIGHT=required): nothing is deployed until it answers; asking again shortly")
        return Verdict(SKIPPED, message, wait=True)
    return Verdict(SKIPPED, f"the Hugging Face Hub could not be asked ({detail}); deployed without checking the model")


# -- the verdict -------------------------------------------------------------------------------------------------


def judge(facts: ModelFacts, spec: TGIServiceSpec) -> Verdict:
    """What the model's facts mean for this spec."""
    model, gpu = spec.model, GPU_TYPES[spec.resources.gpu.type.value]
    at = f"{model.id} at {facts.revision[:12]}"
    if facts.gated and not model.hf_token_secret:
        return _failed(facts, "ModelGated", f"spec.model.hfTokenSecret: {model.id} is a gated model (gated: "
                       f"{facts.gated}): TGI cannot download it without a token. Ask for access at {facts.hub}/{model.id} "
                       "with the account whose token you use, store the token in Secret Manager and set "
                       "spec.model.hfTokenSecret (the runtime service account needs roles/secretmanager.secretAccessor "
                       "on it)")
    shape = ModelShape.from_config(facts.config) if facts.config else None
    if shape and shape.context and model.max_total_tokens and model.max_total_tokens > shape.context:
        return _failed(facts, "TokensBeyondContext", f"spec.model.maxTotalTokens: {model.max_total_tokens} is beyond "
                       f"the context of {model.id}, {shape.context} tokens (max_position_embeddings in its config.json): "
                       f"set it to {shape.context} or fewer")
    limits = token_limits(model, shape.context if shape else None)
    if (problem := _launcher_refusal(spec, shape.context if shape else None)) is not None:
        return _failed(facts, "TokenLimitsInvalid", problem)
    unchecked = [] if facts.config is not None else [
        f"{model.id} is gated, and the operator holds no token to read its config.json: the KV cache and the context "
        "were not checked (the runtime reads the model with spec.model.hfTokenSecret; its service account needs "
        "roles/secretmanager.secretAccessor on the secret)"]
    if facts.config is not None and shape is None:
        unchecked.append(f"the config.json of {model.id} does not give its layers and heads: the KV cache was not checked")
    weights = _weights(facts, model.quantize.value if model.quantize else None, shape)
    if weights is None:
        return Verdict(PARTIAL, "; ".join([*unchecked, f"the Hub gives no weight sizes for {at}: its fit was not "
                                           "checked"]), revision=facts.revision)
    fit = estimate(weights, shape, limits, gpu)
    if not fit.fits:
        options = _what_would_fit(facts, spec, shape, limits, weights) or [
            "no Cloud Run GPU holds it: choose a smaller model, or a quantized checkpoint of it"]
        return _failed(facts, "ModelDoesNotFit", f"{at} does not fit an {_gpu_name(gpu)}: {_figures(fit)}. What would "
                       f"fit: {'; or '.join(options)}", fit)
    figures = f"fits an {_gpu_name(gpu)}: {_figures(fit)}{_concurrency(fit, spec.scaling.concurrency)}"
    if unchecked:
        return Verdict(PARTIAL, "; ".join([*unchecked, f"{at} {figures}"]), revision=facts.revision, estimate=fit)
    return Verdict(PASSED, f"{at} {figures}", revision=facts.revision, estimate=fit)


def _failed(facts: ModelFacts, reason: str, message: str, fit: MemoryEstimate | None = None) -> Verdict:
    return Verdict(FAILED, message, Problem(reason, message), revision=facts.revision, estimate=fit)


def _launcher_refusal(spec: TGIServiceSpec, context: int | None) -> str | None:
    """TGI 2.4's launcher (the default image) defaults maxInputTokens to min(context, 4096) - 1 whatever
    maxTotalTokens says, and refuses to start when that is not below maxTotalTokens."""
    model = spec.model
    if spec.image != DEFAULT_IMAGE or context is None or model.max_total_tokens is None or model.max_input_tokens:
        return None
    default_input = min(context, DEFAULT_TOKENS) - 1
    if default_input < model.max_total_tokens:
        return None
    return (f"spec.model.maxInputTokens: unset, so TGI defaults it to {default_input}, which is not below "
            f"spec.model.maxTotalTokens {model.max_total_tokens}: TGI would refuse to start (\"max_input_tokens must be < "
            f"max_total_tokens\"). Set spec.model.maxInputTokens below {model.max_total_tokens}")


def _weights(facts: ModelFacts, quantize: str | None, shape: ModelShape | None) -> int | None:
    if facts.parameters:
        return weights_bytes(facts.parameters, quantize, shape)
    return facts.weight_file_bytes  # as stored: the files are all the Hub says


def _figures(fit: MemoryEstimate) -> str:
    parts = [f"weights {in_gib(fit.weights)} GiB", f"overhead {in_gib(fit.overhead)} GiB"]
    if fit.kv_bytes_per_token is not None:
        parts.append(f"KV cache {in_gib(fit.kv_bytes)} GiB for {fit.needed_tokens} tokens")
    return f"{' + '.join(parts)} = {in_gib(fit.required)} GiB of {in_gib(fit.gpu_bytes)} GiB"


def _concurrency(fit: MemoryEstimate, concurrency: int) -> str:
    requests = fit.full_length_requests
    if requests is None:
        return ""
    held = f"; its KV cache holds about {fit.kv_tokens:,} tokens, {requests} requests of {fit.limits.max_total} at once"
    if requests >= concurrency:
        return f"{held} (all {concurrency} of scaling.concurrency)"
    return f"{held} (scaling.concurrency {concurrency}: the others wait in TGI's queue)"


def _gpu_name(gpu: GpuType) -> str:
    return f"{gpu.name} ({gpu.vram_gib} GB)"


def _what_would_fit(facts: ModelFacts, spec: TGIServiceSpec, shape: ModelShape | None, limits: TokenLimits,
                    weights: int) -> list[str]:
    """Changes that would make it fit, the least disruptive first: fewer tokens, a quantization, the larger GPU."""
    gpu = GPU_TYPES[spec.resources.gpu.type.value]
    options = []
    if tokens := _most_tokens(weights, shape, gpu, limits.max_total):
        options.append(f"spec.model.maxTotalTokens {tokens} or fewer (maxInputTokens and maxBatchPrefillTokens below "
                       "it)")
    current = spec.model.quantize.value if spec.model.quantize else None
    quantizations = _load_time_quantizations(facts, spec, shape)
    instead = " instead of dtype" if spec.model.dtype else ""
    quantize = next((q for q in quantizations if _fits_with(facts, shape, limits, gpu, q)), None)
    if quantize:
        options.append(f"spec.model.quantize: {quantize}{instead} (TGI quantizes the weights at load)")
    for larger in sorted((g for g in GPU_TYPES.values() if g.vram_gib > gpu.vram_gib), key=lambda g: g.vram_gib):
        fitting = [q for q in (current, *quantizations) if _fits_with(facts, shape, limits, larger, q)]
        if fitting:
            also = "" if fitting[0] == current else f" with spec.model.quantize: {fitting[0]}{instead}"
            options.append(f"spec.resources.gpu.type: {_gpu_name(larger)}{also} (cpu {larger.min_cpu}, memory "
                           f"{larger.min_memory_gib}Gi; regions {', '.join(larger.regions)})")
            break
    return options


def _most_tokens(weights: int, shape: ModelShape | None, gpu: GpuType, below: int) -> int | None:
    """The largest maxTotalTokens under `below` (a multiple of TOKEN_STEP) with which the model fits, its input and
    prefill limits defaulted as TGI does; None when even TOKEN_STEP tokens do not fit."""
    if shape is None:
        return None
    low, high, best = 1, (below - 1) // TOKEN_STEP, None
    while low <= high:  # more tokens never need less memory: search
        middle = (low + high) // 2
        tokens = middle * TOKEN_STEP
        if estimate(weights, shape, TokenLimits(tokens, tokens - 1, tokens - 1 + PREFILL_MARGIN), gpu).fits:
            best, low = tokens, middle + 1
        else:
            high = middle - 1
    return best


def _fits_with(facts: ModelFacts, shape: ModelShape | None, limits: TokenLimits, gpu: GpuType,
               quantize: str | None) -> bool:
    weights = _weights(facts, quantize, shape)
    return weights is not None and estimate(weights, shape, limits, gpu).fits


def _load_time_quantizations(facts: ModelFacts, spec: TGIServiceSpec, shape: ModelShape | None) -> list[str]:
    """Quantizations worth suggesting: only for a checkpoint that is not quantized already, and smaller than now."""
    if shape is None or shape.quant_method is not None or not facts.parameters:
        return []
    now = LOAD_TIME_BITS.get(spec.model.quantize.value if spec.model.quantize else "", 16)
    return [q for q in SUGGESTED_QUANTIZATIONS if LOAD_TIME_BITS[q] < now]
