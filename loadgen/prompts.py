"""Inputs of generative models: prompts drawn to set lengths from a corpus or read from a JSONL file, measured in
the run's tokenizer, and the tensors a Triton LLM pipeline takes for each (TensorRT-LLM's or vLLM's names).

Nothing is ever downloaded: the tokenizer is a local `tokenizer.json` (loadgen ships one, trained on Python's own
documentation, which is also the synthetic prompts' corpus) or the user's.
"""

from __future__ import annotations

import itertools
import json
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.errors import OptionError
from loadgen.settings import Settings
from loadgen.transport import ModelInfo, Sample, Tensor, TensorSpec
from loadgen.transport.tokens import ID_SIZES, Prompt, TokenOutputs

DEFAULT_ISL = 550  # AIPerf's default mean input length
DEFAULT_MAX_TOKENS = 128  # asked of a Triton pipeline that needs max_tokens when --osl is not given
MAX_PROMPT_FILE_BYTES = 1 << 30
MAX_PROMPTS = 1_000_000
TEXT_INPUT = "text_input"
TEXT_OUTPUT = "text_output"
ID_OUTPUTS = ("output_ids", "token_ids")  # a pipeline's token ids: the server's own count
TRACE_BLOCK_TOKENS = 512  # a mooncake trace's hash_ids each stand for this many tokens of shared prefix


@dataclass(frozen=True)
class PromptSet:
    """The run's prompts, and each one's time from the start when they come from a trace (else None)."""

    prompts: tuple[Prompt, ...]
    timestamps_ms: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Session:
    """A multi-turn session: each turn's new prompt, in order, and the think time before each turn after the
    first."""

    prompts: tuple[Prompt, ...]
    delays_s: tuple[float, ...]


@dataclass(frozen=True)
class SessionPlan:
    """A run's sessions (slots take them in turn) and the model their turns are encoded for as they go."""

    sessions: tuple[Session, ...]
    model: ModelInfo


def sessions_of(prompt_set: PromptSet, settings: Settings) -> tuple[Session, ...]:
    """--conversation-num sessions of Normal(--conversation-turn-mean, -stddev) turns (at least one), each turn a
    prompt of the set in turn, with think times Normal(--conversation-turn-delay-mean, -stddev) ms (at least 0)."""
    if any(prompt.body is not None for prompt in prompt_set.prompts):
        raise OptionError("multi-turn sessions build each turn's body: not with request bodies sent as they are")
    rng = random.Random(settings.random_seed)
    prompts = itertools.cycle(prompt_set.prompts)
    mean, stddev = settings.conversation_turn_delay_mean, settings.conversation_turn_delay_stddev
    sessions = []
    for _ in range(settings.conversation_num):
        turns = _length(rng, settings.conversation_turn_mean, settings.conversation_turn_stddev)
        delays = tuple(max(rng.gauss(mean, stddev) if stddev else mean, 0.0) / 1000 for _ in range(turns - 1))
        sessions.append(Session(tuple(itertools.islice(prompts, turns)), delays))
    return tuple(sessions)


def load_tokenizer(path: str | None) -> Any:
    """The `tokenizers` Tokenizer at `path` (a tokenizer.json, or a folder holding one), else loadgen's own."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise OptionError("token streams need the tokenizers library: pip install 'loadgen[llm]'") from None
    if path is None:
        file = Path(str(resources.files("loadgen") / "data" / "tokenizer.json"))
        where = "loadgen's own tokenizer"
    else:
        file = Path(path)
        file = file / "tokenizer.json" if file.is_dir() else file
        where = f"--tokenizer {path}"
        if not file.is_file():
            raise OptionError(
                f"{where}: no tokenizer.json there; loadgen never downloads a tokenizer: give a local tokenizer.json "
                "or a folder holding one (a Hugging Face model folder has it)"
            )
    try:
        return Tokenizer.from_file(str(file))
    except Exception as error:  # the library raises its own kinds for a file that is not a tokenizer
        raise OptionError(f"{where}: not a tokenizer.json ({str(error).splitlines()[0][:200]})") from None


def count_tokens(tokenizer: Any, text: str) -> int:
    """The tokens of a text in the run's tokenizer (no special tokens: the prompt's own)."""
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def _corpus_ids(tokenizer: Any) -> list[int]:
    """The synthetic prompts' corpus in tokens: Python's own documentation (it ships with every Python)."""
    from pydoc_data.topics import topics

    return list(tokenizer.encode("\n".join(topics[key] for key in sorted(topics)), add_special_tokens=False).ids)


def _length(rng: random.Random, mean: float, stddev: float) -> int:
    return max(1, round(rng.gauss(mean, stddev) if stddev else mean))


def _stretch(rng: random.Random, corpus: list[int], tokenizer: Any, length: int) -> str:
    """`length` tokens of the corpus from a random place, as text."""
    length = min(length, len(corpus))
    start = rng.randrange(len(corpus) - length + 1)
    return str(tokenizer.decode(corpus[start : start + length]))


def synthetic(settings: Settings, tokenizer: Any) -> PromptSet:
    """`--num-prompts` prompts of Normal(--isl, --isl-stddev) tokens, each a stretch of the corpus
    at a random place, with output lengths Normal(--osl, --osl-stddev) when --osl is given. With
    --prefix-prompt-pool-size N, N prefixes of --prefix-prompt-length tokens are drawn first and each prompt
    starts with one of them at random: the prefix is part of its length (at least one token of its own follows)."""
    rng = random.Random(settings.random_seed)
    corpus = _corpus_ids(tokenizer)
    mean = settings.isl or DEFAULT_ISL
    prefix_length = settings.prefix_prompt_length
    prefixes = [_stretch(rng, corpus, tokenizer, prefix_length) for _ in range(settings.prefix_prompt_pool_size)]
    prompts = []
    for _ in range(settings.num_prompts):
        length = _length(rng, mean, settings.isl_stddev)
        if prefixes:
            prefix = rng.choice(prefixes)
            text = prefix + _stretch(rng, corpus, tokenizer, max(length - prefix_length, 1))
        else:
            text = _stretch(rng, corpus, tokenizer, length)
        output = _length(rng, settings.osl, settings.osl_stddev) if settings.osl else None
        prompts.append(Prompt(text, count_tokens(tokenizer, text), output))
    return PromptSet(tuple(prompts))


def read_prompts(path: str, settings: Settings, tokenizer: Any) -> PromptSet:
    """Prompts from a JSONL file: `{"text": ...}` (or `"texts"`: joined) with an optional `"output_length"`, or a
    mooncake trace (`timestamp` ms, `input_length`, `output_length`, `hash_ids`: shared prefix blocks)."""
    where = f"--input-file {path}"
    try:
        size = Path(path).stat().st_size
        if size > MAX_PROMPT_FILE_BYTES:
            raise OptionError(f"{where}: {size / 2**30:.1f} GiB, over loadgen's 1 GiB limit for a prompt file")
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise OptionError(f"{where}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise OptionError(f"{where}: not UTF-8 text (byte {error.start})") from None
    rng = random.Random(settings.random_seed)
    corpus: list[int] | None = None
    prompts: list[Prompt] = []
    times: list[int] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        at = f"{where} line {number}"
        if len(prompts) >= MAX_PROMPTS:
            raise OptionError(f"{where}: more than {MAX_PROMPTS} prompts")
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as error:
            raise OptionError(f"{at}: not JSON ({getattr(error, 'msg', 'nested too deeply')})") from None
        if not isinstance(entry, dict):
            raise OptionError(f'{at}: expected an object such as {{"text": "..."}}')
        output = _whole(entry.get("output_length"), f"{at}: output_length", allow_none=True)
        if output is None and settings.osl:
            output = _length(rng, settings.osl, settings.osl_stddev)
        if "input_length" in entry:
            if corpus is None:
                corpus = _corpus_ids(tokenizer)
            text = _traced_text(entry, corpus, tokenizer, at)
            if "timestamp" in entry:
                times.append(_whole(entry["timestamp"], f"{at}: timestamp"))
        else:
            text = _text(entry, at)
        prompts.append(Prompt(text, count_tokens(tokenizer, text), output))
    if not prompts:
        raise OptionError(f"{where}: no prompts in it")
    if times and len(times) != len(prompts):
        raise OptionError(f"{where}: some entries have a timestamp and some not: give every entry one, or none")
    if times and any(later < earlier for earlier, later in itertools.pairwise(times)):
        raise OptionError(f"{where}: timestamps must not decrease")
    return PromptSet(tuple(prompts), tuple(times) if times else None)


def _whole(value: object, where: str, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise OptionError(f"{where}: expected a whole number of at least 0")
    return int(value)


def _text(entry: dict[str, Any], at: str) -> str:
    text = entry.get("text", entry.get("texts"))
    if isinstance(text, list) and all(isinstance(part, str) for part in text):
        text = " ".join(text)
    if not isinstance(text, str) or not text:
        raise OptionError(f'{at}: expected "text" (a non-empty string) or "input_length" (a trace entry)')
    try:
        text.encode()
    except UnicodeEncodeError:
        raise OptionError(f"{at}: the text holds a lone surrogate, which cannot be sent as UTF-8") from None
    return text


def _traced_text(entry: dict[str, Any], corpus: list[int], tokenizer: Any, at: str) -> str:
    """A trace entry's prompt: its hash_ids' blocks (the same id: the same text, so prefixes are shared), then
    fresh corpus tokens up to its input_length."""
    length = _whole(entry["input_length"], f"{at}: input_length")
    if not 1 <= length <= len(corpus):
        raise OptionError(f"{at}: input_length {length}: give 1 to {len(corpus)} tokens")
    hash_ids = entry.get("hash_ids", [])
    if not isinstance(hash_ids, list):
        raise OptionError(f"{at}: hash_ids: expected a list of whole numbers")
    ids: list[int] = []
    for hash_id in hash_ids:
        start = _whole(hash_id, f"{at}: hash_ids") * 7919 % (len(corpus) - TRACE_BLOCK_TOKENS)
        ids.extend(corpus[start : start + TRACE_BLOCK_TOKENS])
        if len(ids) >= length:
            break
    if len(ids) < length:
        start = (len(ids) * 104729 + length) % (len(corpus) - length + 1)
        ids.extend(corpus[start : start + length - len(ids)])
    return str(tokenizer.decode(ids[:length]))


def prompts_for(settings: Settings) -> tuple[PromptSet, Any]:
    """The run's prompts and its tokenizer: --input-file, perf_analyzer's JSON of request bodies (--input-data with
    an OpenAI-compatible server), else synthetic."""
    tokenizer = load_tokenizer(settings.tokenizer)
    if settings.input_file is not None:
        return read_prompts(settings.input_file, settings, tokenizer), tokenizer
    sources = settings.input_sources
    if settings.openai and len(sources) == 1 and Path(sources[0]).is_file():
        return read_payloads(sources[0], tokenizer), tokenizer
    return synthetic(settings, tokenizer), tokenizer


def read_payloads(path: str, tokenizer: Any) -> PromptSet:
    """perf_analyzer's input for its openai service kind: `{"data": [{"payload": [BODY]}, ...]}`, each BODY sent as
    it is; the prompt's text (for its token count) from its `messages` or `prompt`."""
    where = f"--input-data {path}"
    try:
        if Path(path).stat().st_size > MAX_PROMPT_FILE_BYTES:
            raise OptionError(f"{where}: over loadgen's 1 GiB limit for a prompt file")
        document = json.loads(Path(path).read_bytes())
    except OSError as error:
        raise OptionError(f"{where}: cannot read: {error.strerror}") from None
    except (ValueError, RecursionError) as error:
        raise OptionError(f"{where}: not JSON ({getattr(error, 'msg', 'nested too deeply')})") from None
    entries = document.get("data") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise OptionError(f'{where}: expected {{"data": [{{"payload": [{{...request body...}}]}}, ...]}}')
    prompts = []
    for number, entry in enumerate(entries[:MAX_PROMPTS]):
        payload = entry.get("payload") if isinstance(entry, dict) else None
        body = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(body, dict):
            raise OptionError(f'{where}: data[{number}] has no "payload": [{{...request body...}}]')
        text = _body_text(body)
        output = body.get("max_tokens", body.get("max_completion_tokens"))
        prompts.append(Prompt(text, count_tokens(tokenizer, text), output if isinstance(output, int) else None, body))
    return PromptSet(tuple(prompts))


def _body_text(body: dict[str, Any]) -> str:
    """The prompt a request body carries: its messages' contents, or its prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return "\n".join(str(message.get("content", "")) for message in messages if isinstance(message, dict))
    prompt = body.get("prompt", body.get("input", ""))
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def _bytes_tensor(values: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(value)) + value for value in values)


def triton_sample(model: ModelInfo, prompt: Prompt, settings: Settings) -> Sample:
    """A prompt as the tensors a Triton LLM pipeline takes: TensorRT-LLM's (`text_input`, `max_tokens`,
    `min_length`, `ignore_eos`, ...) or vLLM's (`sampling_parameters`), only those the model declares."""
    inputs = {spec.name: spec for spec in model.inputs}
    if TEXT_INPUT not in inputs:
        raise OptionError(
            f"model {model.name} has no {TEXT_INPUT} input (the LLM backends' name for the prompt); its inputs: "
            + ", ".join(inputs)
        )
    backend = settings.backend or ("vllm" if "sampling_parameters" in inputs else "tensorrtllm")
    wanted = prompt.output_tokens
    tokens = wanted or DEFAULT_MAX_TOKENS
    values: dict[str, object] = {TEXT_INPUT: prompt.text, "stream": settings.streaming}
    values["exclude_input_in_output"] = True
    if backend == "vllm":
        parameters: dict[str, object] = {"max_tokens": tokens}
        if wanted:
            parameters |= {"min_tokens": tokens, "ignore_eos": True}
        values["sampling_parameters"] = json.dumps(parameters)
    else:
        values["max_tokens"] = tokens
        if wanted:
            values |= {"min_length": tokens, "ignore_eos": True}
    optional = {item.name for item in model.config.input if item.optional}
    missing = [name for name in inputs if name not in values and name not in optional]
    if missing:
        raise OptionError(
            f"model {model.name} needs {', '.join(missing)}, which loadgen does not fill for the {backend} backend "
            "(--backend tensorrtllm or vllm chooses the tensors sent)"
        )
    return tuple(
        _tensor(inputs[name], value, model.max_batch_size > 0) for name, value in values.items() if name in inputs
    )


def _tensor(spec: TensorSpec, value: object, batched: bool) -> Tensor:
    """One value as a tensor of the declared datatype, every dimension 1 (plus the batch's)."""
    shape = ((1,) if batched else ()) + tuple(1 for _ in spec.shape)
    if spec.datatype == "BYTES":
        content = _bytes_tensor([str(value).encode()])
    elif spec.datatype == "BOOL":
        content = b"\x01" if value else b"\x00"
    else:
        from tritonclient.utils import triton_to_np_dtype

        dtype = triton_to_np_dtype(spec.datatype)
        if dtype is None or not np.issubdtype(dtype, np.number):
            raise OptionError(f"input {spec.name} has datatype {spec.datatype}: loadgen cannot put {value!r} in it")
        content = np.array([value], dtype=dtype).tobytes()
    return Tensor(spec.name, spec.datatype, shape, content)


def token_outputs(model: ModelInfo) -> TokenOutputs:
    """Where the model's answers hold their text (`text_output`, else its first BYTES output) and token ids."""
    texts = [spec.name for spec in model.outputs if spec.datatype == "BYTES"]
    text = TEXT_OUTPUT if TEXT_OUTPUT in texts else (texts[0] if texts else None)
    for spec in model.outputs:
        if spec.name in ID_OUTPUTS and spec.datatype in ID_SIZES:
            return TokenOutputs(text, spec.name, ID_SIZES[spec.datatype])
    return TokenOutputs(text)
