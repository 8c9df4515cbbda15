"""Pure: the GPU memory TGI needs to serve a model, and whether a GPU type holds it.

It follows what TGI itself does (text-generation-inference v2.4.0, the version of the default image):
- launcher/src/main.rs: unset token limits default to maxTotalTokens = min(max_position_embeddings, 4096),
  maxInputTokens = that - 1 and maxBatchPrefillTokens = maxInputTokens + 50;
- server/text_generation_server/models/flash_causal_lm.py `warmup`: once the weights are loaded, a prefill of
  maxBatchPrefillTokens runs (PyTorch's allocator keeps its activations reserved), then the KV cache gets 90 % of the
  memory still free (TGI_WIGGLE_ROOM = 0.90, models/globals.py); one token's K and V take
  2 x layers x kv_heads x head_dim x 2 bytes (a 16-bit cache);
- backends/v3/src/lib.rs: TGI refuses to start when that cache holds fewer than maxTotalTokens tokens ("Not enough
  memory to handle `max_total_tokens=N`"); requests beyond what it holds wait in TGI's queue, they do not fail.
Assumptions, each erring towards "does not fit":
- a GPU's memory is NVIDIA's figure in decimal GB (L4: 24 GB = 22.4 GiB; nvidia-smi shows 22.5 GiB);
- 1 GiB for the CUDA context, kernel workspaces and CUDA graphs (TGI publishes no figure; a CUDA context alone takes
  some hundreds of MiB);
- prefill activations: (3 x intermediate_size + 4 x hidden_size) x 2 bytes per token (the MLP's gate and up
  projections and its activation dominate);
- weights: the safetensors tensors as the Hub counts them, float types at 16 bits (TGI serves in 16 bits; a float32
  checkpoint is cast down), packed integer types as stored; when TGI quantizes at load (fp8, eetq, bitsandbytes:
  8 bits; bitsandbytes-nf4/-fp4: 4 bits) the linear layers shrink and the embeddings stay 16-bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tgi_operator.gpus import GIB, GpuType
from tgi_operator.models import ModelSpec

GB = 10**9
CUDA_OVERHEAD_BYTES = GIB
KV_SHARE_PERCENT = 90  # TGI_WIGGLE_ROOM
DEFAULT_TOKENS = 4096  # TGI's cap on the default maxTotalTokens
PREFILL_MARGIN = 50  # TGI's default maxBatchPrefillTokens = maxInputTokens + 50
ACTIVATION_BYTES = 2

DTYPE_BYTES = {  # safetensors dtype names, as the Hub's `safetensors.parameters` uses them
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
UNKNOWN_DTYPE_BYTES = 4  # a dtype not in the table counts as 4 bytes (the stricter answer)
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
SERVED_FLOAT_BYTES = 2
LOAD_TIME_BITS = {"fp8": 8, "eetq": 8, "bitsandbytes": 8, "bitsandbytes-nf4": 4, "bitsandbytes-fp4": 4}


def _int(config: Mapping[str, Any], *keys: str) -> int | None:
    """The first of `keys` that holds a positive integer (config.json is written by many tools)."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class ModelShape:
    """What the estimate reads from a model's config.json."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    context: int | None  # max_position_embeddings, as TGI's launcher reads it
    quant_method: str | None  # quantization_config.quant_method of a checkpoint quantized already

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape | None:
        """None when config.json does not describe a decoder the estimate understands."""
        hidden, heads = _int(config, "hidden_size", "n_embd"), _int(config, "num_attention_heads", "n_head")
        layers = _int(config, "num_hidden_layers", "n_layer")
        if not (hidden and heads and layers):
            return None
        quantization = config.get("quantization_config")
        return cls(
            layers=layers,
            kv_heads=_int(config, "num_key_value_heads") or heads,
            head_dim=_int(config, "head_dim") or hidden // heads,
            hidden_size=hidden,
            intermediate_size=_int(config, "intermediate_size", "n_inner") or 4 * hidden,
            vocab_size=_int(config, "vocab_size") or 0,
            tied_embeddings=config.get("tie_word_embeddings") is True,
            context=_int(config, "max_position_embeddings", "max_seq_len", "n_positions"),
            quant_method=quantization.get("quant_method") if isinstance(quantization, Mapping) else None,
        )

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    def prefill_activation_bytes(self, tokens: int) -> int:
        return tokens * (3 * self.intermediate_size + 4 * self.hidden_size) * ACTIVATION_BYTES


@dataclass(frozen=True)
class TokenLimits:
    max_total: int
    max_input: int
    max_prefill: int


def token_limits(model: ModelSpec, context: int | None) -> TokenLimits:
    """The token limits TGI runs with: the spec's, else TGI's defaults (launcher/src/main.rs)."""
    default = min(context, DEFAULT_TOKENS) if context else DEFAULT_TOKENS
    max_total = model.max_total_tokens or default
    max_input = model.max_input_tokens or min(default, max_total) - 1
    return TokenLimits(max_total, max_input, model.max_batch_prefill_tokens or max_input + PREFILL_MARGIN)


def weights_bytes(parameters: Mapping[str, int], quantize: str | None, shape: ModelShape | None) -> int:
    """GPU memory of the weights as TGI holds them, from the tensor counts per dtype."""
    served = sum(count * (SERVED_FLOAT_BYTES if dtype in FLOAT_DTYPES else DTYPE_BYTES.get(dtype, UNKNOWN_DTYPE_BYTES))
                 for dtype, count in parameters.items())
    bits = LOAD_TIME_BITS.get(quantize or "")
    if bits is None or shape is None or shape.quant_method is not None:
        return served  # served as stored: no load-time quantization, or a checkpoint quantized already
    floats = sum(count for dtype, count in parameters.items() if dtype in FLOAT_DTYPES)
    linear = max(floats - shape.embedding_parameters, 0)
    return served - linear * SERVED_FLOAT_BYTES + linear * bits // 8


@dataclass(frozen=True)
class MemoryEstimate:
    gpu: GpuType
    weights: int
    overhead: int  # CUDA context and workspaces, plus the prefill's activations
    limits: TokenLimits
    kv_bytes_per_token: int | None  # None: config.json unknown, only the weights were checked
    kv_tokens: int | None  # tokens TGI's KV cache would hold

    @property
    def gpu_bytes(self) -> int:
        return self.gpu.vram_gib * GB

    @property
    def needed_tokens(self) -> int:
        """TGI needs room for one request of maxTotalTokens, and for its warm-up prefill."""
        return max(self.limits.max_total, self.limits.max_prefill)

    @property
    def kv_bytes(self) -> int:
        """KV cache memory (plus TGI's 10 % headroom) for one request of maxTotalTokens."""
        if self.kv_bytes_per_token is None:
            return 0
        return -(-self.needed_tokens * self.kv_bytes_per_token * 100 // KV_SHARE_PERCENT)

    @property
    def required(self) -> int:
        return self.weights + self.overhead + self.kv_bytes

    @property
    def fits(self) -> bool:
        if self.weights + self.overhead >= self.gpu_bytes:
            return False
        return self.kv_tokens is None or self.kv_tokens >= self.needed_tokens

    @property
    def full_length_requests(self) -> int | None:
        return None if self.kv_tokens is None else self.kv_tokens // self.limits.max_total


def estimate(weights: int, shape: ModelShape | None, limits: TokenLimits, gpu: GpuType) -> MemoryEstimate:
    activations = shape.prefill_activation_bytes(limits.max_prefill) if shape else 0
    overhead = CUDA_OVERHEAD_BYTES + activations
    if shape is None:
        return MemoryEstimate(gpu, weights, overhead, limits, None, None)
    free = max(gpu.vram_gib * GB - weights - overhead, 0)
    kv_tokens = free * KV_SHARE_PERCENT // 100 // shape.kv_bytes_per_token
    return MemoryEstimate(gpu, weights, overhead, limits, shape.kv_bytes_per_token, kv_tokens)


def in_gib(size: int) -> str:
    """Bytes as GiB with one decimal: 7.3."""
    return f"{size / GIB:.1f}"
