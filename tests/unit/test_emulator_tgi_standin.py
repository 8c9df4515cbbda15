"""The pure part of the TGI stand-in: launcher config, /info, validation, deterministic replies."""

from __future__ import annotations

import pytest

from tgi_operator.emulator.tgi_standin import (
    DEFAULT_MAX_TOTAL_TOKENS,
    DEFAULT_MODEL_ID,
    LauncherConfig,
    LauncherConfigError,
    ValidationError,
    chat_chunks,
    chat_completion,
    chat_prompt,
    check_launcher_config,
    completion,
    count_tokens,
    generate,
    generate_document,
    generate_request,
    generate_stream_events,
    info_document,
    launcher_settings,
    metrics_text,
    parse_launcher_config,
    reply_words,
)

SEED_ARGS = [
    "--model-id", "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
    "--quantize", "awq",
    "--max-concurrent-requests", "64",
    "--max-input-tokens", "4096",
    "--max-total-tokens", "8192",
    "--max-batch-prefill-tokens", "4096",
]  # fmt: skip


@pytest.mark.parametrize(
    "args, env, expected",
    [
        ([], {}, {}),
        (["--model-id", "a/b"], {}, {"MODEL_ID": "a/b"}),
        (["--model-id=a/b"], {}, {"MODEL_ID": "a/b"}),
        (["--trust-remote-code", "--model-id", "a/b"], {}, {"TRUST_REMOTE_CODE": "true", "MODEL_ID": "a/b"}),
        (["--model-id", "a/b"], {"MODEL_ID": "env/m", "DTYPE": "bfloat16"}, {"MODEL_ID": "a/b", "DTYPE": "bfloat16"}),
        (["text-generation-launcher", "--port", "8080"], {}, {"PORT": "8080"}),
    ],
)
def test_launcher_settings_args_win_over_env(args, env, expected) -> None:
    assert launcher_settings(args, env) == {**env, **expected}


def test_seed_example_config() -> None:
    config = parse_launcher_config(SEED_ARGS, {"PORT": "8080"})
    assert config == LauncherConfig(
        model_id="hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
        quantize="awq",
        max_concurrent_requests=64,
        max_input_tokens=4096,
        max_total_tokens=8192,
        max_batch_prefill_tokens=4096,
    )


@pytest.mark.parametrize(
    "args, env, field, expected",
    [
        ([], {}, "model_id", DEFAULT_MODEL_ID),
        ([], {}, "max_total_tokens", DEFAULT_MAX_TOTAL_TOKENS),
        ([], {}, "max_input_tokens", DEFAULT_MAX_TOTAL_TOKENS - 1),
        (["--max-total-tokens", "100"], {}, "max_input_tokens", 99),
        (["--max-input-length", "50"], {}, "max_input_tokens", 50),
        ([], {"MAX_INPUT_TOKENS": "30", "MAX_TOTAL_TOKENS": "60"}, "max_input_tokens", 30),
        ([], {"MAX_CONCURRENT_REQUESTS": "3"}, "max_concurrent_requests", 3),
        (["--max-concurrent-requests", "5"], {"MAX_CONCURRENT_REQUESTS": "3"}, "max_concurrent_requests", 5),
        (["--revision", "abc"], {}, "revision", "abc"),
        ([], {"DTYPE": "bfloat16"}, "dtype", "bfloat16"),
        ([], {"TGI_EMULATOR_LATENCY_MS": "250"}, "latency_s", 0.25),
        (["--max-input-tokens", "10"], {}, "max_batch_prefill_tokens", 60),
    ],
)
def test_parse_launcher_config(args, env, field, expected) -> None:
    assert getattr(parse_launcher_config(args, env), field) == expected


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--max-input-tokens", "8192", "--max-total-tokens", "8192"], {}, "must be < `max_total_tokens`"),
        (["--max-input-tokens", "10", "--max-input-length", "10"], {}, "Both `max_input_tokens`"),
        (["--max-total-tokens", "lots"], {}, "invalid value 'lots'"),
        (["--max-input-tokens", "100", "--max-batch-prefill-tokens", "50"], {}, "max_batch_prefill_tokens"),
        ([], {"MAX_CONCURRENT_REQUESTS": "0"}, "max_concurrent_requests"),
    ],
)
def test_launcher_refuses(args, env, message) -> None:
    with pytest.raises(LauncherConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_launcher_config(args, env)
    assert message in (check_launcher_config(args, env) or "")


def test_check_launcher_config_accepts_seed() -> None:
    assert check_launcher_config(SEED_ARGS, {}) is None


def test_info_document_reports_the_launcher_settings() -> None:
    info = info_document(parse_launcher_config(SEED_ARGS, {}))
    assert info["model_id"] == "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
    assert (info["max_concurrent_requests"], info["max_input_tokens"], info["max_total_tokens"]) == (64, 4096, 8192)
    assert info["router"] == "text-generation-router" and info["model_device_type"] == "cuda"
    assert info["version"] == "3.3.4" and info["docker_label"].startswith("sha-")
    assert len(info["model_sha"]) == 40
    assert info_document(LauncherConfig(dtype="bfloat16"))["model_dtype"] == "torch.bfloat16"


@pytest.mark.parametrize("text, count", [("", 0), ("hello", 1), ("Hello, world!", 4), ("a  b\nc", 3)])
def test_count_tokens(text: str, count: int) -> None:
    assert count_tokens(text) == count


def test_reply_is_a_pure_function_of_model_and_prompt() -> None:
    assert reply_words("m/a", "hi") == reply_words("m/a", "hi")
    assert reply_words("m/a", "hi") != reply_words("m/a", "hello")
    assert reply_words("m/a", "hi") != reply_words("m/b", "hi")
    assert "m/a" in reply_words("m/a", "hi")


CONFIG = LauncherConfig(model_id="m/a", max_input_tokens=20, max_total_tokens=30, max_stop_sequences=2)


@pytest.mark.parametrize(
    "max_new_tokens, pieces, finish_reason",
    [
        (None, len(reply_words("m/a", "say hi")), "eos_token"),
        (3, 3, "length"),
        (1, 1, "length"),
    ],
)
def test_generate_respects_max_new_tokens(max_new_tokens, pieces, finish_reason) -> None:
    generation = generate(CONFIG, "say hi", max_new_tokens)
    assert len(generation.pieces) == pieces
    assert generation.finish_reason == finish_reason
    assert generation.text == " ".join(reply_words("m/a", "say hi")[:pieces])
    assert generation.input_tokens == 2


def test_generate_stops_at_a_stop_sequence() -> None:
    generation = generate(CONFIG, "say hi", None, stop=["from"])
    assert generation.text == "Emulated reply from"
    assert generation.finish_reason == "stop_sequence"


@pytest.mark.parametrize(
    "prompt, max_new_tokens, stop, message",
    [
        ("", None, [], "cannot be empty"),
        ("word " * 21, None, [], "`inputs` must have less than 20 tokens. Given: 21"),
        ("word " * 5, 26, [], "`inputs` tokens + `max_new_tokens` must be <= 30. Given: 5 `inputs` tokens and 26"),
        ("hi", 0, [], "must be strictly positive"),
        ("hi", None, ["a", "b", "c"], "up to 2 stop sequences"),
    ],
)
def test_generate_validation(prompt, max_new_tokens, stop, message) -> None:
    with pytest.raises(ValidationError) as caught:
        generate(CONFIG, prompt, max_new_tokens, stop)
    assert message in str(caught.value)
    assert str(caught.value).startswith("Input validation error: ")


def test_chat_completion_is_openai_shaped() -> None:
    body = {"model": "tgi", "messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 4}
    generation, document = chat_completion(CONFIG, body, created=7)
    assert document["object"] == "chat.completion" and document["created"] == 7 and document["model"] == "m/a"
    (choice,) = document["choices"]
    assert choice["message"] == {"role": "assistant", "content": generation.text}
    assert choice["finish_reason"] == "length"
    prompt_tokens = count_tokens(chat_prompt(body["messages"]))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 4, "total_tokens": prompt_tokens + 4}
    assert document["usage"] == usage


def test_chat_accepts_content_parts_and_max_completion_tokens() -> None:
    content = [{"type": "text", "text": "Hi there"}]
    parts = {"messages": [{"role": "user", "content": content}], "max_completion_tokens": 2}
    plain = {"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 2}
    assert chat_completion(CONFIG, parts, 0)[1]["choices"] == chat_completion(CONFIG, plain, 0)[1]["choices"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "missing field `messages`"),
        ({"messages": []}, "`messages` cannot be empty"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "`n` > 1"),
        ({"messages": [{"role": "user", "content": "word " * 30}]}, "must have less than 20 tokens"),
    ],
)
def test_chat_validation(body, message) -> None:
    with pytest.raises(ValidationError, match=message):
        chat_completion(CONFIG, body, 0)


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_chunks_add_up_to_the_message(include_usage: bool) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    generation, document = chat_completion(CONFIG, body, 0)
    chunks = chat_chunks(CONFIG, generation, 0, include_usage)
    content_chunks = [chunk for chunk in chunks if chunk["choices"]]
    assert "".join(chunk["choices"][0]["delta"]["content"] for chunk in content_chunks) == generation.text
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert [c["choices"][0]["finish_reason"] for c in content_chunks][-2:] == [None, "stop"]
    assert (chunks[-1]["usage"] == document["usage"]) is include_usage


def test_generate_request_and_document() -> None:
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 3, "details": True, "seed": 5}}
    generation, prompt, parameters = generate_request(CONFIG, body)
    document = generate_document(generation, prompt, parameters)
    assert document["generated_text"] == generation.text
    assert document["details"]["finish_reason"] == "length"
    assert document["details"]["generated_tokens"] == 3 and document["details"]["seed"] == 5
    assert [t["text"] for t in document["details"]["tokens"]] == generation.pieces
    full = generate_document(generation, prompt, {"return_full_text": True})
    assert full == {"generated_text": "Hello" + generation.text}


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "missing field `inputs`"),
        ({"inputs": "x", "parameters": {"best_of": 3}}, "`best_of` must be <= 2"),
    ],
)
def test_generate_request_validation(body, message) -> None:
    with pytest.raises(ValidationError, match=message):
        generate_request(CONFIG, body)


def test_generate_stream_events_end_with_the_text() -> None:
    generation = generate(CONFIG, "Hello", 5)
    events = generate_stream_events(generation, {})
    assert [event["index"] for event in events] == [1, 2, 3, 4, 5]
    assert all(event["generated_text"] is None for event in events[:-1])
    assert events[-1]["generated_text"] == generation.text
    assert events[-1]["details"]["finish_reason"] == "length"


def test_completion_legacy_shape() -> None:
    document = completion(CONFIG, {"prompt": "Hello", "max_tokens": 2}, 0)
    assert document["object"] == "text_completion"
    assert document["choices"][0]["text"] == generate(CONFIG, "Hello", 2).text


def test_metrics_text() -> None:
    text = metrics_text(CONFIG, {"tgi_request_count": 3, "tgi_request_success": 2}, in_flight=1)
    assert "tgi_request_count 3\n" in text and "tgi_request_success 2\n" in text
    assert "tgi_request_failure 0\n" in text and "tgi_batch_current_size 1\n" in text
