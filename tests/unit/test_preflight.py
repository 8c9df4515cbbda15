"""gpu_memory.py and preflight.py: TGI's memory arithmetic and the verdict, with real models' public figures (the
emulator's Hub catalogue, tgi_operator/emulator/hub_catalogue.yaml, says where each comes from)."""

from __future__ import annotations

from typing import Any

import pytest

from tgi_operator.emulator.hub import load_catalogue
from tgi_operator.gpu_memory import GIB, ModelShape, TokenLimits, estimate, token_limits, weights_bytes
from tgi_operator.gpus import GPU_TYPES
from tgi_operator.models import parse_spec
from tgi_operator.preflight import (
    FAILED,
    PARTIAL,
    PASSED,
    SKIPPED,
    ModelFacts,
    Verdict,
    hub_unreachable,
    judge,
    model_not_found,
    revision_not_found,
)

CATALOGUE = load_catalogue()
SEED_ID = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B_AWQ = "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
HUB = "https://huggingface.co"
L4, RTX = GPU_TYPES["nvidia-l4"], GPU_TYPES["nvidia-rtx-pro-6000"]
RTX_SHAPE = {"cpu": 20, "memory": "80Gi", "gpu": {"type": "nvidia-rtx-pro-6000"}}


def facts(catalogued: str, *, readable: bool = True, **changes: Any) -> ModelFacts:
    """A catalogue model as the Hub shows it to a caller without a token (a gated model's config.json is closed)."""
    model = CATALOGUE[catalogued]
    values = dict(model_id=catalogued, revision=model.sha, gated=model.gated or None, parameters=model.parameters,
                  weight_file_bytes=None, config=model.config if readable and not model.gated else None, hub=HUB)
    return ModelFacts(**{**values, **changes})


# meta-llama/Llama-3.1-70B-Instruct in bf16: 70,553,706,496 parameters (the model page: "70.6B params, BF16"), the
# shape of the 70B AWQ checkpoint's config.json without its quantization.
LLAMA_70B_BF16 = facts(LLAMA_70B_AWQ, parameters={"BF16": 70553706496}, model_id="meta-llama/Llama-3.1-70B-Instruct",
                       config={k: v for k, v in CATALOGUE[LLAMA_70B_AWQ].config.items() if k != "quantization_config"})


def spec(model: dict[str, Any], **rest: Any) -> Any:
    return parse_spec({"region": "us-central1", "model": model, **rest})


SEED = spec({"id": SEED_ID, "quantize": "awq"})


# -- TGI's arithmetic ---------------------------------------------------------------------------------------------


def test_kv_cache_per_token_is_k_and_v_of_every_layer_and_kv_head() -> None:
    llama_8b = ModelShape.from_config(CATALOGUE[SEED_ID].config)
    assert llama_8b is not None and llama_8b.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    llama_70b = ModelShape.from_config(CATALOGUE[LLAMA_70B_AWQ].config)
    assert llama_70b is not None and llama_70b.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    smol = ModelShape.from_config(CATALOGUE["HuggingFaceTB/SmolLM2-1.7B-Instruct"].config)
    assert smol is not None and (smol.kv_heads, smol.head_dim, smol.context, smol.tied_embeddings) == (32, 64, 8192, True)
    assert ModelShape.from_config({"model_type": "something-else"}) is None


@pytest.mark.parametrize("model, context, expected", [
    ({}, 131072, TokenLimits(4096, 4095, 4145)),  # TGI 2.4 caps its defaults at 4096
    ({}, 2048, TokenLimits(2048, 2047, 2097)),
    ({}, None, TokenLimits(4096, 4095, 4145)),  # no config.json: TGI's cap
    ({"maxInputTokens": 7000, "maxTotalTokens": 8192}, 131072, TokenLimits(8192, 7000, 7050)),
    ({"maxInputTokens": 4096, "maxTotalTokens": 8192, "maxBatchPrefillTokens": 8192}, 131072, TokenLimits(8192, 4096, 8192)),
])
def test_token_limits_are_the_specs_else_tgis_defaults(model: dict[str, Any], context: int | None,
                                                       expected: TokenLimits) -> None:
    assert token_limits(spec({"id": "a/b", **model}).model, context) == expected


def test_weights_as_tgi_holds_them() -> None:
    awq = CATALOGUE[SEED_ID]
    shape = ModelShape.from_config(awq.config)
    assert weights_bytes(awq.parameters, "awq", shape) == 879230976 * 4 + 1105465344 * 2 == 5727854592  # 5.73 GB files
    bf16 = CATALOGUE[LLAMA_8B]
    assert weights_bytes(bf16.parameters, None, None) == 16060522496
    assert weights_bytes({"F32": 1000}, None, None) == 2000  # TGI serves float32 checkpoints in 16 bits
    # Quantized at load: the linear layers shrink, the 2 x 128256 x 4096 embeddings stay 16-bit.
    llama = ModelShape.from_config({k: v for k, v in awq.config.items() if k != "quantization_config"})
    embeddings = 2 * 128256 * 4096
    linear = 8030261248 - embeddings
    assert weights_bytes(bf16.parameters, "fp8", llama) == embeddings * 2 + linear
    assert weights_bytes(bf16.parameters, "bitsandbytes-nf4", llama) == embeddings * 2 + linear // 2
    assert weights_bytes(awq.parameters, "fp8", shape) == 5727854592  # a quantized checkpoint is served as stored


def test_the_seed_fits_an_l4_with_room_for_28_full_length_requests() -> None:
    awq = CATALOGUE[SEED_ID]
    shape = ModelShape.from_config(awq.config)
    fit = estimate(weights_bytes(awq.parameters, "awq", shape), shape, TokenLimits(4096, 4095, 4145), L4)
    assert fit.fits and fit.gpu_bytes == 24 * 10**9
    assert 7.3 < fit.required / GIB < 7.5
    assert fit.full_length_requests == 28 and fit.kv_tokens == 114711  # TGI logs this as max_batch_total_tokens


def test_llama_70b_in_bf16_fits_neither_gpu_as_it_is() -> None:
    shape = ModelShape.from_config(LLAMA_70B_BF16.config)
    weights = weights_bytes(LLAMA_70B_BF16.parameters, None, shape)
    assert weights > 130 * GIB
    assert not estimate(weights, shape, TokenLimits(4096, 4095, 4145), L4).fits
    assert not estimate(weights, shape, TokenLimits(4096, 4095, 4145), RTX).fits


# -- the verdict ---------------------------------------------------------------------------------------------------


def test_the_seed_passes() -> None:
    verdict = judge(facts(SEED_ID), SEED)
    assert verdict.result == PASSED and verdict.problem is None and verdict.note is None
    assert verdict.message.startswith(f"{SEED_ID} at 679e824e119a fits an nvidia-l4 (24 GB): weights 5.3 GiB")
    assert "28 requests of 4096 at once (scaling.concurrency 64: the others wait in TGI's queue)" in verdict.message
    status = verdict.status(3)
    assert (status.result, status.generation, status.required_gpu_memory, status.gpu_memory,
            status.full_length_requests) == (PASSED, 3, "7.4Gi", "22.4Gi", 28)
    small = judge(facts(SEED_ID), spec({"id": SEED_ID}, scaling={"concurrency": 16}))
    assert "(all 16 of scaling.concurrency)" in small.message


def test_the_samples_models_pass_on_their_gpus() -> None:
    smol = spec({"id": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "dtype": "bfloat16", "maxInputTokens": 4096,
                 "maxTotalTokens": 8192, "maxBatchPrefillTokens": 4096}, resources={"cpu": 4, "memory": "16Gi"})
    assert judge(facts("HuggingFaceTB/SmolLM2-1.7B-Instruct"), smol).result == PASSED
    qwen = spec({"id": "Qwen/Qwen2.5-7B-Instruct-AWQ", "quantize": "awq"}, suspend=True)
    assert judge(facts("Qwen/Qwen2.5-7B-Instruct-AWQ"), qwen).result == PASSED


def test_a_model_too_large_for_an_l4_says_the_larger_gpu_would_fit() -> None:
    verdict = judge(facts(LLAMA_70B_AWQ), spec({"id": LLAMA_70B_AWQ}))
    assert verdict.result == FAILED and verdict.problem.reason == "ModelDoesNotFit"
    assert "does not fit an nvidia-l4 (24 GB): weights 37.0 GiB + overhead 1.9 GiB" in verdict.message
    assert verdict.message.endswith("What would fit: spec.resources.gpu.type: nvidia-rtx-pro-6000 (96 GB) (cpu 20, "
                                    "memory 80Gi; regions us-central1, europe-west4)")
    on_rtx = spec({"id": LLAMA_70B_AWQ}, resources=RTX_SHAPE)
    assert judge(facts(LLAMA_70B_AWQ), on_rtx).result == PASSED


def test_llama_70b_in_bf16_needs_a_quantization_and_the_larger_gpu() -> None:
    model = {"id": "meta-llama/Llama-3.1-70B-Instruct", "dtype": "bfloat16", "hfTokenSecret": {"secret": "hf"}}
    verdict = judge(LLAMA_70B_BF16, spec(model))
    assert verdict.problem.reason == "ModelDoesNotFit" and "weights 131.4 GiB" in verdict.message
    assert ("spec.resources.gpu.type: nvidia-rtx-pro-6000 (96 GB) with spec.model.quantize: fp8 instead of dtype"
            in verdict.message)
    assert "spec.model.maxTotalTokens" not in verdict.message  # fewer tokens cannot help: the weights alone are too big


def test_too_many_tokens_say_how_many_would_fit() -> None:
    verdict = judge(facts(SEED_ID), spec({"id": SEED_ID, "maxInputTokens": 131000, "maxTotalTokens": 131072}))
    assert verdict.problem.reason == "ModelDoesNotFit"
    assert "KV cache 17.8 GiB for 131072 tokens" in verdict.message
    assert "spec.model.maxTotalTokens 64768 or fewer" in verdict.message  # checked by the same estimate
    assert judge(facts(SEED_ID), spec({"id": SEED_ID, "maxInputTokens": 60000, "maxTotalTokens": 64768})).result == PASSED


def test_max_total_tokens_beyond_the_context() -> None:
    verdict = judge(facts(SEED_ID), spec({"id": SEED_ID, "maxInputTokens": 4096, "maxTotalTokens": 131073}))
    assert verdict.problem.reason == "TokensBeyondContext"
    assert verdict.message.startswith("spec.model.maxTotalTokens: 131073 is beyond the context")
    assert verdict.message.endswith("set it to 131072 or fewer")


def test_a_small_max_total_tokens_alone_would_stop_tgi_2_4_from_starting() -> None:
    verdict = judge(facts(SEED_ID), spec({"id": SEED_ID, "maxTotalTokens": 2048}))
    assert verdict.problem.reason == "TokenLimitsInvalid" and "defaults it to 4095" in verdict.message
    assert judge(facts(SEED_ID), spec({"id": SEED_ID, "maxInputTokens": 1024, "maxTotalTokens": 2048})).result == PASSED
    other_image = spec({"id": SEED_ID, "maxTotalTokens": 2048}, image="ghcr.io/huggingface/text-generation-inference:3.3.6")
    assert judge(facts(SEED_ID), other_image).result == PASSED  # other TGI versions default otherwise


def test_a_gated_model_without_a_token_says_what_to_add() -> None:
    verdict = judge(facts(LLAMA_8B), spec({"id": LLAMA_8B}))
    assert verdict.problem.reason == "ModelGated"
    assert verdict.message.startswith("spec.model.hfTokenSecret: meta-llama/Llama-3.1-8B-Instruct is a gated model")
    assert f"Ask for access at {HUB}/{LLAMA_8B}" in verdict.message


def test_a_gated_model_with_a_token_is_checked_as_far_as_the_operator_can() -> None:
    model = {"id": LLAMA_8B, "dtype": "bfloat16", "hfTokenSecret": {"secret": "hf-token"}}
    verdict = judge(facts(LLAMA_8B), spec(model))
    assert verdict.result == PARTIAL and verdict.problem is None
    assert "the KV cache and the context were not checked" in verdict.message
    assert "weights 15.0 GiB + overhead 1.0 GiB = 16.0 GiB of 22.4 GiB" in verdict.message
    assert verdict.note == f"model preflight incomplete: {verdict.message}"
    # The weights alone can still stop it.
    big = {"id": "meta-llama/Llama-3.1-70B-Instruct", "hfTokenSecret": {"secret": "hf-token"}}
    closed = ModelFacts(**{**LLAMA_70B_BF16.__dict__, "gated": "manual", "config": None})
    assert judge(closed, spec(big)).problem.reason == "ModelDoesNotFit"


def test_weights_the_hub_does_not_size_are_said_not_checked() -> None:
    verdict = judge(facts(SEED_ID, parameters={}), SEED)
    assert verdict.result == PARTIAL and "gives no weight sizes" in verdict.message
    sized = judge(facts(SEED_ID, parameters={}, weight_file_bytes=5730000000), SEED)  # the files, as stored
    assert sized.result == PASSED


def test_when_the_hub_cannot_say() -> None:
    missing = model_not_found(spec({"id": "org/nope"}), HUB)
    assert missing.problem.reason == "ModelNotFound" and missing.message.startswith("spec.model.id: org/nope does not exist")
    private = model_not_found(spec({"id": "org/private", "hfTokenSecret": {"secret": "hf"}}), HUB)
    assert private.result == SKIPPED and private.problem is None and "not visible" in private.message
    assert revision_not_found(spec({"id": SEED_ID, "revision": "v9"})).problem.reason == "ModelRevisionNotFound"
    best_effort = hub_unreachable("ConnectError: refused", required=False)
    assert best_effort.result == SKIPPED and not best_effort.wait and best_effort.problem is None
    assert best_effort.note == ("model preflight skipped: the Hugging Face Hub could not be asked (ConnectError: refused); "
                                "deployed without checking the model")
    required = hub_unreachable("ConnectError: refused", required=True)
    assert required.wait and required.problem is None and "nothing is deployed until it answers" in required.message


def test_a_recorded_verdict_keeps_its_status_exactly() -> None:
    status = judge(facts(SEED_ID), SEED).status(4)
    again = Verdict.recorded(status)
    assert again.status(5) is status and again.result == PASSED and again.note is None
