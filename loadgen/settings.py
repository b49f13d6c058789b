"""The settings of one profiling run, shared by the command line and the library.

Each option is one field of a group that follows the run's stages (model, connection, load, data, measurement,
outputs, server, shards), declared once with `option(...)`: its default, flags, help with units and checks. `Settings`
is every group at once, so the library keeps its flat keywords (`Settings(concurrency_range=4)`) and flat reads
(`settings.url`); `settings.group(Connection)` is one group alone. The command lines and the README's option table are
generated from the declarations (`loadgen.options`).
"""

from __future__ import annotations

import argparse
import keyword
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from loadgen.errors import OptionError
from loadgen.options import (
    NOT_NEGATIVE,
    Check,
    above,
    at_least,
    between,
    check,
    check_fields,
    declared,
    flag,
    meta,
    option,
)
from loadgen.values import (
    ALL_INPUTS,
    COMPRESSION_ALGORITHMS,
    CONFIDENCE,
    DEFAULT_URLS,
    DISTRIBUTIONS,
    KEY_TYPES,
    MAX_CONCURRENCY,
    MAX_INTERVAL_MS,
    MAX_RESPONSE_BYTES,
    MEASUREMENT_MODES,
    OUTPUT_SHARED_MEMORY_SIZE,
    PROTOCOLS,
    SEQUENCE_LENGTH,
    SHARED_MEMORY,
    STRING_LENGTH,
    TENSOR_FORMATS,
    TRACE_LEVELS,
    TRANSPORTS,
    WORKERS_PER_CORE,
    Mode,
    as_annotated,
    as_bounds,
    as_extra_inputs,
    as_headers,
    as_levels,
    as_parameters,
    as_rates,
    as_shapes,
    as_strings,
    check_confidence,
    claimant,
    format_mix,
    is_closed_loop,
    is_host_port,
    is_open_range,
    parse_goodput,
    parse_header,
    parse_input_range,
    parse_latency_budgets,
    parse_model_mix,
    parse_periodic_range,
    parse_range,
    parse_rate_range,
    parse_request_parameter,
    parse_shape,
    parse_shard,
    split_url,
    worker_count,
)

REDACTED = "<redacted>"


def _workers(text: str) -> int:
    """`--workers N|auto` on the command line."""
    try:
        return worker_count(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None


def _lower(value: str) -> str:
    return value.strip().lower()


def _interval(note: str = "") -> Check:
    """A period in ms that a histogram holds."""
    return check(lambda ms: 1 <= ms <= MAX_INTERVAL_MS, f"must be between 1 ms and {MAX_INTERVAL_MS} ms{note}")


def _per_core() -> Check:
    cores = os.cpu_count() or 1
    return check(
        lambda n: n <= WORKERS_PER_CORE * cores,
        f"at most {WORKERS_PER_CORE} per core ({cores} cores here); more processes only compete for the CPU",
    )


def _sources(value: object) -> str | tuple[str, ...]:
    sources = as_strings("input_data", value)
    return sources[0] if len(sources) == 1 else sources


@dataclass(frozen=True)
class Model:
    """What to profile: one model, or several at once."""

    model_name: str | None = option(
        help="model to profile (default: the server's only ensemble or model)",
        short=("-m", "--model"),
        pa_required=True,
        pa_help="model to profile",
    )
    model_version: str = option("", "model version (default: the server's choice)", short=("-x",))
    # several models at once: each model's share of an open loop's requests, or its concurrency in a closed loop
    model_mix: Mapping[str, float] | None = option(
        help="several models at once: each one's share of --request-rate-range's requests, or (closed loop) its "
        "concurrency; give a model its own data, shapes or BLS models as MODEL=... in --input-data, --shape and "
        "--bls-composing-models",
        metavar="A:N,B:N",
        perf_analyzer=False,
    )
    solo_baseline: bool = option(
        False,
        "with --model-mix: first measure each model alone at its load, to see what the mix costs it",
        perf_analyzer=False,
    )
    bls_composing_models: Sequence[str] = option(
        (),
        "models a BLS model calls: their statistics join the breakdown and the bottleneck analysis",
        metavar="A[:VERSION],B",
        repeat=True,
        cli_default=[],
        convert=lambda value: tuple(
            name.strip()
            for text in as_strings("bls_composing_models", value)
            for name in text.split(",")
            if name.strip()
        ),  # each text is a comma-separated list (Model Analyzer passes --bls-composing-models=A,B), repeatable
    )


@dataclass(frozen=True)
class Connection:
    """How to reach the server: URL, protocol, transport, TLS, headers, wire formats and limits."""

    url: str = option(
        "",
        f"Triton endpoint (default {DEFAULT_URLS['grpc']} for gRPC, {DEFAULT_URLS['http']} for HTTP; https://HOST:PORT "
        "for HTTPS)",
        short=("-u",),
        metavar="HOST:PORT",
    )
    protocol: str = option(
        "grpc",
        "talk to Triton over grpc or http (default grpc)",
        short=("-i",),
        parse=str.lower,
        choices=PROTOCOLS,
        pa_default="http",
        pa_help="talk to Triton over grpc or http (default http)",
    )
    transport: str = option(
        "raw",
        "inference calls over loadgen's own HTTP/1.1 and HTTP/2 (raw, default) or over grpcio / aiohttp (library)",
        choices=TRANSPORTS,
        perf_analyzer=False,
    )
    grpc_compression_algorithm: str = option(
        "none", "gRPC: compress requests (none, gzip, deflate)", choices=COMPRESSION_ALGORITHMS, convert=_lower
    )
    input_tensor_format: str = option(
        "binary",
        "HTTP: inputs as binary data (default) or JSON",
        parse=str.lower,
        choices=TENSOR_FORMATS,
        convert=_lower,
    )
    output_tensor_format: str = option(
        "binary",
        "HTTP: outputs asked for as binary data (default) or JSON",
        parse=str.lower,
        choices=TENSOR_FORMATS,
        convert=_lower,
    )
    request_timeout: float | None = option(
        help="a request without an answer by then counts as a timeout (default: 10 x --measurement-interval, "
        "half the longest a count window waits, and at least 60 s, checked coarsely)",
        metavar="MS",
        checks=(above(0, " ms"),),
        perf_analyzer=False,
    )
    max_response_bytes: int | None = option(
        help="an inference response larger than this fails, before it is all read (default: where every output of "
        "the model has a fixed shape and datatype, their size (JSON outputs: 32 bytes an element) times the batch "
        f"size and 64 KiB for the rest of the message; else {MAX_RESPONSE_BYTES}, gRPC's limit); grpcio's "
        "transport keeps its own limit",
        metavar="N",
        checks=(between(1, MAX_RESPONSE_BYTES),),
        perf_analyzer=False,
    )
    ssl_grpc_use_ssl: bool = option(False, "TLS for the gRPC connection")
    ssl_grpc_root_certifications_file: str | None = option(help="CA certificates (PEM)", metavar="FILE")
    ssl_grpc_private_key_file: str | None = option(help="client private key (PEM)", metavar="FILE")
    ssl_grpc_certificate_chain_file: str | None = option(help="client certificate chain (PEM)", metavar="FILE")
    ssl_https_verify_peer: int = option(
        1, "HTTPS: check the server's certificate", choices=(0, 1), checks=(check(lambda v: v in (0, 1), "0 or 1"),)
    )
    ssl_https_verify_host: int = option(
        2,
        "HTTPS: check that the certificate names the host (0: no; 1, 2: yes)",
        choices=(0, 1, 2),
        checks=(check(lambda v: v in (0, 1, 2), "0, 1 or 2"),),
    )
    ssl_https_ca_certificates_file: str | None = option(help="HTTPS: CA certificates", metavar="FILE")
    ssl_https_client_certificate_file: str | None = option(help="HTTPS: client certificate", metavar="FILE")
    ssl_https_client_certificate_type: str = option("PEM", "PEM (default) or DER", choices=KEY_TYPES)
    ssl_https_private_key_file: str | None = option(help="HTTPS: client private key", metavar="FILE")
    ssl_https_private_key_type: str = option("PEM", "PEM (default) or DER", choices=KEY_TYPES)
    header: Mapping[str, str] = option(
        {},
        "gRPC metadata or HTTP header sent with every call (repeatable); values never appear in outputs",
        short=("-H",),
        metavar="'NAME: VALUE'",
        repeat=True,
        cli_default=[],
        convert=as_headers,
    )

    @property
    def https_files(self) -> list[str]:
        """The --ssl-https-* file fields that are set."""
        names = ("ssl_https_ca_certificates_file", "ssl_https_client_certificate_file", "ssl_https_private_key_file")
        return [name for name in names if getattr(self, name) is not None]

    @property
    def address(self) -> str:
        """HOST:PORT of the server (-u without its scheme)."""
        return split_url(self.url)[1]


@dataclass(frozen=True)
class Load:
    """The load: its mode and levels, its schedule, the calls, the processes, and its limits."""

    concurrency_range: str | int | Sequence[int] | None = option(
        help="closed loop: requests kept in flight, one level per step (the default mode, at 1); END 0: on until -l",
        short=("--concurrency",),
        metavar="START[:END[:STEP]]",
    )
    request_rate_range: str | float | Sequence[float] | None = option(
        help="open loop: requests per second, sent on schedule whether or not earlier ones returned; END 0: on "
        "until -l",
        short=("--request-rate",),
        metavar="START[:END[:STEP]]",
    )
    request_distribution: str = option("constant", "gaps of the rate schedule", choices=DISTRIBUTIONS)
    request_intervals: str | None = option(help="open loop: one gap in microseconds per line, looped", metavar="FILE")
    periodic_concurrency_range: str | None = option(
        help="streams: START requests in flight, STEP more each time every one has --request-period responses, up "
        "to END (needs --streaming and --profile-export-file)",
        metavar="START:END[:STEP]",
    )
    request_period: int = option(10, "responses per request between steps (default 10)", checks=(at_least(1),))
    fixed_schedule: bool = option(
        False,
        'send each entry of the --input-data JSON once, at its "timestamp" (ms after the start)',
        perf_analyzer=False,
    )
    streaming: bool = option(
        False, "send over gRPC streams (decoupled models): latency to the first and the last response"
    )
    max_in_flight: int = option(
        1024, "open loop safety limit on requests in flight (default 1024)", checks=(at_least(1),), perf_analyzer=False
    )
    # perf_analyzer's -a (loadgen's calls are always asynchronous; see perf_analyzer_rules)
    asynchronous: bool = option(
        False,
        "asynchronous calls (loadgen's only kind: every slot is a coroutine; accepted for perf_analyzer)",
        short=("-a", "--async"),
        exclusive="calls",
    )
    sync: bool = option(
        False,
        "open loop: at most --max-threads requests in flight, as perf_analyzer's synchronous threads (late "
        "requests wait and count as delayed); a closed loop is unchanged (each slot already waits for its answer)",
        exclusive="calls",
    )
    max_threads: int | None = option(
        help="perf_analyzer's thread count: here the open loop's in-flight cap with --sync (default 4); otherwise "
        "no effect (loadgen's slots are coroutines, not threads)",
        metavar="N",
        checks=(at_least(1),),
    )
    workers: int = option(
        1,
        "processes that generate the load, each with its own event loop (default 1; auto: one per core)",
        metavar="N|auto",
        parse=_workers,
        checks=(at_least(1), _per_core()),
        perf_analyzer=False,
    )
    binary_search: bool = option(False, "bisect the range for the highest load under --latency-threshold")
    max_error_rate: float = option(
        0.1,
        "stop the sweep when a window's share of failed requests exceeds this (default 0.1)",
        metavar="SHARE",
        checks=(between(0, 1),),
        perf_analyzer=False,
    )

    @property
    def mode(self) -> Mode:
        """Which load field is set: concurrency (the default), request_rate, request_intervals,
        periodic_concurrency or fixed_schedule."""
        if self.request_rate_range is not None:
            return "request_rate"
        if self.request_intervals is not None:
            return "request_intervals"
        if self.periodic_concurrency_range is not None:
            return "periodic_concurrency"
        if self.fixed_schedule:
            return "fixed_schedule"
        return "concurrency"


@dataclass(frozen=True)
class Data:
    """What every request carries: inputs, shapes, strings, outputs, parameters, sequences, shared memory."""

    input_data: str | Sequence[str] = option(
        "random",
        "'random' (default), 'zero', a file sent as raw bytes, a directory of files, or perf_analyzer's JSON "
        "format (repeatable for several JSON files)",
        repeat=True,
        cli_default=None,
        convert=_sources,
        checks=(Check(bool, lambda shown, value: "--input-data: give at least one source"),),
    )
    shape: Mapping[str, Sequence[int]] = option(
        {}, "shape of an input (repeatable)", metavar="NAME:D1[,D2...]", repeat=True, cli_default=[], convert=as_shapes
    )
    input_range: Mapping[str, Sequence[float]] = option(
        {},
        "bounds of random numbers for one input, or every numeric input (e.g. indices into an embedding table)",
        metavar="[NAME:]MIN:MAX",
        repeat=True,
        cli_default=[],
        convert=as_bounds,
        perf_analyzer=False,
    )
    string_data: str | None = option(help="the string every generated BYTES element holds")
    string_length: int = option(STRING_LENGTH, "length of random strings (default 128)", checks=(at_least(1),))
    output: Sequence[str] = option(
        (),
        "request only this output (repeatable)",
        metavar="NAME",
        repeat=True,
        cli_default=[],
        convert=lambda value: as_strings("output", value),
        perf_analyzer=False,
    )
    request_parameter: Mapping[str, str | int | bool] = option(
        {},
        "a parameter sent with every request, TYPE bool, int or string (repeatable)",
        metavar="NAME:VALUE:TYPE",
        repeat=True,
        cli_default=[],
        convert=as_parameters,
    )
    batch_size: int = option(1, "batch size of each request (default 1)", short=("-b",), checks=(at_least(1),))
    shared_memory: str = option(
        "none",
        "system: inputs and outputs go through shared-memory regions registered with a local server",
        choices=SHARED_MEMORY,
        checks=(
            Check(
                lambda kind: kind != "cuda",
                lambda shown, value: (
                    "--shared-memory cuda: loadgen has no CUDA path (it runs on CPU hosts); use system or none"
                ),
            ),
        ),
    )
    output_shared_memory_size: int = option(
        OUTPUT_SHARED_MEMORY_SIZE,
        "region size per output and request of the batch, for outputs whose size the metadata does not fix "
        "(times --batch-size; default 102400)",
        metavar="BYTES",
        checks=(at_least(1, " byte"),),
    )
    sequence_length: int | None = option(  # None: the whole stream of JSON data, else SEQUENCE_LENGTH
        help="requests per sequence, varied (default: each JSON stream whole, from its first step; other data 20)",
        checks=(at_least(1),),
    )
    sequence_length_variation: float = option(
        20.0, "sequence lengths vary at random by up to this (default 20)", metavar="PERCENT", checks=(between(0, 100),)
    )
    sequence_id_range: str | None = option(
        help="correlation IDs to use (default from 1, no end)", metavar="START[:END]"
    )
    num_of_sequences: int = option(4, "open loop: sequences in flight at once (default 4)", checks=(at_least(1),))

    @property
    def input_sources(self) -> tuple[str, ...]:
        """The --input-data sources (several only for JSON files)."""
        return (self.input_data,) if isinstance(self.input_data, str) else tuple(self.input_data)


OPENAI_ENDPOINTS = ("chat", "completions", "embeddings", "template")  # over HTTP to any server, not Triton
ENDPOINT_TYPES = ("kserve", "generate", *OPENAI_ENDPOINTS)
LLM_BACKENDS = ("tensorrtllm", "vllm")


@dataclass(frozen=True)
class Tokens:
    """Generative models: the endpoint, the prompts (synthetic or from a file), how tokens are counted, goodput."""

    endpoint_type: str | None = option(
        help="measure token streams over this endpoint: kserve (Triton's gRPC; --streaming for a stream; the default "
        "with any token option), generate (Triton's HTTP generate extension, -i http; generate_stream with "
        "--streaming), chat, completions, embeddings (an OpenAI-compatible server over HTTP; streamed with "
        "--streaming), template (any JSON endpoint: --endpoint, --payload-template)",
        choices=ENDPOINT_TYPES,
        perf_analyzer=False,
    )
    backend: str | None = option(
        help="the Triton LLM backend whose input tensors to send (default: read from the model's inputs)",
        choices=LLM_BACKENDS,
        perf_analyzer=False,
    )
    isl: int | None = option(
        help="synthetic prompts: mean input length in tokens (default 550)",
        metavar="TOKENS",
        checks=(at_least(1),),
        perf_analyzer=False,
    )
    isl_stddev: float = option(
        0.0,
        "synthetic prompts: input length's standard deviation (default 0)",
        metavar="TOKENS",
        checks=(NOT_NEGATIVE,),
        perf_analyzer=False,
    )
    osl: int | None = option(
        help="output length asked for (max_tokens; the pipeline's minimum too where it has one) (default: the "
        "server's, 128 for a Triton model that needs it)",
        metavar="TOKENS",
        checks=(at_least(1),),
        perf_analyzer=False,
    )
    osl_stddev: float = option(
        0.0,
        "output length's standard deviation (default 0)",
        metavar="TOKENS",
        checks=(NOT_NEGATIVE,),
        perf_analyzer=False,
    )
    num_prompts: int = option(
        100, "distinct synthetic prompts (default 100)", checks=(at_least(1),), perf_analyzer=False
    )
    input_file: str | None = option(
        help='prompts from a JSONL file: {"text": ...} lines (optional "output_length"), or a mooncake trace',
        metavar="FILE",
        checks=(Check(os.path.isfile, lambda shown, value: f"{shown} {value}: no such file"),),
        perf_analyzer=False,
    )
    tokenizer: str | None = option(
        help="a tokenizer.json (or a folder holding one) to build prompts and count tokens (default: loadgen's "
        "own; nothing is ever downloaded)",
        metavar="PATH",
        checks=(
            Check(
                lambda path: os.path.isfile(path) or os.path.isfile(os.path.join(path, "tokenizer.json")),
                lambda shown, value: (
                    f"{shown} {value}: no tokenizer.json there; loadgen never downloads a tokenizer: give a local "
                    "tokenizer.json or a folder holding one"
                ),
            ),
        ),
        perf_analyzer=False,
    )
    goodput: Sequence[str] = option(
        (),
        "objectives a good request meets, in ms (repeatable): time_to_first_token:MS, inter_token_latency:MS, "
        "request_latency:MS",
        metavar="METRIC:MS",
        repeat=True,
        cli_default=[],
        convert=lambda value: as_strings("goodput", value),
        checks=(
            Check(lambda specs: not specs or parse_goodput(specs) is not None, lambda shown, value: "--goodput: empty"),
        ),
        perf_analyzer=False,
    )
    endpoint: str | None = option(
        help="the path requests go to, when not the endpoint type's own (e.g. v1/chat/completions)",
        metavar="PATH",
    )
    api_key: str | None = option(
        help="sent as 'Authorization: Bearer KEY' to an OpenAI-compatible server", metavar="KEY", perf_analyzer=False
    )
    extra_inputs: Mapping[str, object] = option(
        {},
        "merged into every request's body (repeatable): NAME:VALUE (VALUE read as JSON when it is) or a JSON object",
        metavar="NAME:VALUE",
        repeat=True,
        cli_default=[],
        convert=as_extra_inputs,
        perf_analyzer=False,
    )
    payload_template: str | None = option(
        help="--endpoint-type template: the JSON body, with {{text}}, {{max_tokens}} and {{model}} placeholders",
        metavar="JSON",
        perf_analyzer=False,
    )
    response_field: str | None = option(
        help="--endpoint-type template: where an answer (or an event) holds the text, e.g. choices.0.text",
        metavar="PATH",
        perf_analyzer=False,
    )
    random_seed: int = option(
        0, "seed of the synthetic prompts' lengths and text (default 0)", checks=(NOT_NEGATIVE,), perf_analyzer=False
    )
    prefix_prompt_pool_size: int = option(
        0,
        "synthetic prompts: this many shared prefixes, each prompt starting with one of them (a KV cache's reuse) "
        "(default 0: none)",
        short=("--num-prefix-prompts",),
        checks=(NOT_NEGATIVE,),
        perf_analyzer=False,
    )
    prefix_prompt_length: int = option(
        100,
        "tokens of each shared prefix, counted in the prompt's --isl (default 100)",
        metavar="TOKENS",
        checks=(at_least(1),),
        perf_analyzer=False,
    )
    conversation_turn_mean: float = option(
        1.0,
        "multi-turn sessions: mean turns per session; each turn resends the history and a new prompt, in order on "
        "one slot of a closed loop (default 1: single requests)",
        short=("--session-turns-mean",),
        metavar="TURNS",
        checks=(at_least(1),),
        perf_analyzer=False,
    )
    conversation_turn_stddev: float = option(
        0.0,
        "turns per session: standard deviation (default 0)",
        short=("--session-turns-stddev",),
        metavar="TURNS",
        checks=(NOT_NEGATIVE,),
        perf_analyzer=False,
    )
    conversation_turn_delay_mean: float = option(
        0.0,
        "think time between a session's turns: mean, in ms (default 0)",
        short=("--session-turn-delay-mean",),
        metavar="MS",
        checks=(NOT_NEGATIVE,),
        perf_analyzer=False,
    )
    conversation_turn_delay_stddev: float = option(
        0.0,
        "think time between turns: standard deviation, in ms (default 0)",
        short=("--session-turn-delay-stddev",),
        metavar="MS",
        checks=(NOT_NEGATIVE,),
        perf_analyzer=False,
    )
    conversation_num: int = option(
        10,
        "multi-turn sessions: distinct sessions, taken by the slots in turn (default 10)",
        short=("--num-sessions",),
        checks=(at_least(1),),
        perf_analyzer=False,
    )
    request_cancellation_rate: float = option(
        0.0,
        "percent of requests cancelled after --request-cancellation-delay (a gRPC stream's call cancelled, an HTTP "
        "connection closed); counted apart, in no latency (default 0)",
        metavar="PERCENT",
        checks=(between(0, 100),),
        perf_analyzer=False,
    )
    request_cancellation_delay: float = option(
        0.0,
        "seconds from a cancelled request's send to its cancellation (default 0)",
        metavar="SECONDS",
        checks=(NOT_NEGATIVE,),
        perf_analyzer=False,
    )

    @property
    def token_run(self) -> bool:
        """Whether the run measures token streams: any of this group's options given."""
        return any(
            value for value in (self.endpoint_type, self.isl, self.osl, self.input_file, self.tokenizer, self.goodput)
        ) or bool(self.prefix_prompt_pool_size or self.sessions)

    @property
    def sessions(self) -> bool:
        """Whether requests are turns of multi-turn sessions."""
        return self.conversation_turn_mean > 1 or self.conversation_turn_stddev > 0

    @property
    def openai(self) -> bool:
        """Whether the server is an OpenAI-compatible one (no Triton behind the run's figures)."""
        return self.endpoint_type in OPENAI_ENDPOINTS


@dataclass(frozen=True)
class Measurement:
    """How each level is measured: windows, stability, percentiles, counts, confidence, thresholds."""

    measurement_interval: int = option(
        5000, "window length (default 5000)", short=("-p",), metavar="MS", checks=(_interval(" (one hour)"),)
    )
    stability_percentage: float = option(
        10.0, "allowed spread of 3 windows (default 10)", short=("-s",), checks=(above(0),)
    )
    max_trials: int = option(
        10,
        "windows per level at most (default 10)",
        short=("-r",),
        checks=(at_least(3, " (stability needs 3 windows)"),),
    )
    measurement_mode: str = option(
        "time_windows",
        "time_windows (default), or count_windows: at least --measurement-request-count requests and at least "
        "a second per window",
        choices=MEASUREMENT_MODES,
    )
    measurement_request_count: int = option(
        50, "requests per window in count_windows (default 50)", checks=(at_least(1),)
    )
    request_count: int = option(
        0, "measure one window of exactly N requests, no stability check", checks=(NOT_NEGATIVE,)
    )
    warmup_request_count: int = option(0, "requests sent and discarded before measuring", checks=(NOT_NEGATIVE,))
    percentile: int | None = option(
        help="stabilise on (and report) the P-th percentile latency", metavar="P", checks=(between(1, 99),)
    )
    confidence: float = option(  # of each level's bounds: its throughput interval, its percentiles' bounds
        CONFIDENCE,
        "of each level's bounds: an interval on throughput from the windows, an upper bound on each percentile "
        f"from its sample count, or how many samples it lacks (default {CONFIDENCE})",
        metavar="C",
        convert=check_confidence,
        perf_analyzer=False,
    )
    latency_threshold: float | None = option(
        help="stop the sweep at the first level over it (0: no limit)",
        short=("-l",),
        metavar="MS",
        convert=lambda ms: None if ms == 0 else ms,  # perf_analyzer's "no limit"
        checks=(check(lambda ms: ms > 0, "must not be negative (0: no limit)"),),
    )
    # measure as perf_analyzer does (`loadgen perf-analyzer`): latency from the actual send (an open loop's too),
    # time windows of 1.2 x measurement_interval, a --request-count window of whole seconds, and an asynchronous
    # run's level stable on throughput alone after its last window
    perf_analyzer_rules: bool = option(
        False,
        "measure as perf_analyzer does (`loadgen perf-analyzer` always does): latency from the actual send, not "
        "from an open loop's schedule; time windows of 1.2 x -p; a --request-count window of whole seconds; with "
        "asynchronous calls, a level whose throughput settled is stable after its last window",
        pa_default=True,
        perf_analyzer=False,
    )


@dataclass(frozen=True)
class Outputs:
    """What a run keeps beyond its result: every request, and the CSV's columns."""

    # keep each request's timestamps (and outputs) for a profile export, up to this many
    record_requests: int = option(
        0,
        "requests recorded for --profile-export-file at most (default 1000000 with it); each costs its "
        "timestamps and outputs in memory",
        metavar="N",
        checks=(NOT_NEGATIVE,),
        perf_analyzer=False,
    )
    verbose_csv: bool = option(False, "-f adds perf_analyzer's verbose columns and the GPU metrics")


@dataclass(frozen=True)
class Server:
    """What loadgen reads and sets on the server: its Prometheus metrics, and its trace settings for the run."""

    collect_metrics: bool = option(
        True,
        "scrape the server's metrics during every window: host CPU and memory, GPUs, pending requests "
        "(default: on when the endpoint answers; --no-collect-metrics turns it off)",
        negatable=True,
        pa_default=False,
        pa_help="scrape the server's metrics during every window: host CPU and memory, GPUs, pending requests "
        "(default off, as in perf_analyzer)",
    )
    metrics_url: str | None = option(help="default: the server's host, port 8002, /metrics", metavar="URL")
    metrics_interval: int = option(1000, "between scrapes (default 1000)", metavar="MS", checks=(_interval(),))
    trace_level: Sequence[str] = option(  # the server's trace settings for the run (restored after it)
        (),
        "OFF, TIMESTAMPS or TENSORS (repeatable)",
        parse=str.upper,
        choices=TRACE_LEVELS,
        repeat=True,
        cli_default=[],
        convert=lambda value: tuple(level.upper() for level in as_strings("trace_level", value)),
        checks=(
            Check(
                lambda levels: all(level in TRACE_LEVELS for level in levels),
                lambda shown, levels: f"--trace-level {','.join(levels)}: choose OFF, TIMESTAMPS or TENSORS",
            ),
        ),
    )
    trace_rate: int | None = option(help="trace one request in N", metavar="N", checks=(at_least(1),))
    trace_count: int | None = option(
        help="requests traced at most (-1: no limit)",
        metavar="N",
        checks=(check(lambda n: n >= -1, "must be -1 (no limit) or more"),),
    )
    log_frequency: int | None = option(help="write the trace file every N traces", metavar="N", checks=(NOT_NEGATIVE,))


@dataclass(frozen=True)
class Shards:
    """One load split over processes or machines, merged later by `loadgen merge`."""

    shard: str | None = option(
        help="run part i of a load split K ways (needs --hdr-log)", metavar="i/K", perf_analyzer=False
    )
    start_at: float | None = option(
        help="start at this UNIX time (align shards)", metavar="UNIX_TS", perf_analyzer=False
    )
    hdr_log: str | None = option(
        help="log every window to DIR for `loadgen merge DIR/*`", metavar="DIR", perf_analyzer=False
    )


# The groups in the order of a run's stages, with the titles of the command line's help.
GROUPS: tuple[tuple[str, type], ...] = (
    ("model", Model),
    ("connection (URL, protocol, transport, TLS, headers)", Connection),
    ("load (one mode; schedule, calls, workers, limits)", Load),
    ("data (inputs, shapes, strings, sequences)", Data),
    ("generative models (token streams: endpoint, prompts, tokens, goodput)", Tokens),
    ("measurement (windows, stability, percentiles, counts)", Measurement),
    ("outputs (files, verbosity)", Outputs),
    ("server (metrics, trace: set for the run, restored after it)", Server),
    ("shards (one load over several processes or machines)", Shards),
)
G = TypeVar("G")


@dataclass(frozen=True)
class Rule:
    """A rule over several fields, named: `holds(settings)`, else the user reads `message(settings)`."""

    name: str
    holds: Callable[[Any], bool]
    message: str | Callable[[Any], str]  # the message, or how to write it from the settings


def _needs_ssl(option: str) -> Rule:
    """A --ssl-grpc-* file needs --ssl-grpc-use-ssl."""
    name = f"ssl_grpc_{option}_file"
    return Rule(
        f"{name} needs ssl_grpc_use_ssl",
        lambda s: getattr(s, name) is None or s.ssl_grpc_use_ssl,
        lambda s: f"{flag(name)} needs --ssl-grpc-use-ssl",
    )


def _url_message(s: Any) -> str:
    scheme = ", or http:// or https:// before it" if s.protocol == "http" else " without a scheme (gRPC)"
    return f"-u {s.url}: give HOST:PORT{scheme}"


def _https_message(s: Any) -> str:
    return f"{flag(s.https_files[0])} needs an HTTPS URL: -i http -u https://HOST:PORT"


# Rules within one group, each group's own.
GROUP_RULES: dict[type, tuple[Rule, ...]] = {
    Model: (
        Rule(
            "solo baseline of a mix",
            lambda s: s.model_mix is not None or not s.solo_baseline,
            "--solo-baseline needs --model-mix",
        ),
    ),
    Connection: (
        Rule(
            "TLS is gRPC's",
            lambda s: not s.ssl_grpc_use_ssl or s.protocol == "grpc",
            "--ssl-grpc-use-ssl applies to -i grpc (for HTTPS: -i http -u https://HOST:PORT)",
        ),
        Rule(
            "URL scheme",
            lambda s: split_url(s.url)[0] in (("", "http", "https") if s.protocol == "http" else ("",)),
            _url_message,
        ),
        Rule(
            "URL address",
            lambda s: is_host_port(split_url(s.url)[1]),
            lambda s: f"-u {s.url}: expected HOST:PORT, with the port a number from 1 to 65535",
        ),
        Rule(
            "compression is gRPC's",
            lambda s: s.grpc_compression_algorithm == "none" or s.protocol == "grpc",
            "--grpc-compression-algorithm applies to -i grpc",
        ),
        Rule(
            "tensor formats are HTTP's",
            lambda s: s.protocol == "http" or (s.input_tensor_format, s.output_tensor_format) == ("binary",) * 2,
            "--input-tensor-format and --output-tensor-format apply to -i http (gRPC tensors are always binary)",
        ),
        Rule(
            "HTTPS files need an HTTPS URL",
            lambda s: not s.https_files or split_url(s.url)[0] == "https",
            _https_message,
        ),
        Rule(
            "HTTPS client identity",
            lambda s: (s.ssl_https_client_certificate_file is None) == (s.ssl_https_private_key_file is None),
            "--ssl-https-client-certificate-file and --ssl-https-private-key-file go together (the client identity)",
        ),
        *(_needs_ssl(option) for option in ("root_certifications", "private_key", "certificate_chain")),
        Rule(
            "gRPC client identity",
            lambda s: (s.ssl_grpc_private_key_file is None) == (s.ssl_grpc_certificate_chain_file is None),
            "--ssl-grpc-private-key-file and --ssl-grpc-certificate-chain-file go together (the client identity)",
        ),
    ),
    Load: (
        Rule(
            "no synchronous streams",
            lambda s: not s.sync or not s.streaming,
            "--sync cannot be used with --streaming: a stream is asynchronous (perf_analyzer: can not "
            "use streaming with synchronous API)",
        ),
        Rule(
            "periodic concurrency streams",
            lambda s: s.mode != "periodic_concurrency" or s.streaming,
            "--periodic-concurrency-range needs --streaming (it counts each stream's responses)",
        ),
        Rule(
            "binary search needs an end",
            lambda s: (
                not s.binary_search or not (is_open_range(s.concurrency_range) or is_open_range(s.request_rate_range))
            ),
            "--binary-search needs a range with an END (not 0)",
        ),
    ),
    Shards: (
        Rule(
            "shards log",
            lambda s: parse_shard(s.shard)[1] == 1 or s.hdr_log is not None,
            "--shard needs --hdr-log DIR: each shard logs its windows there for `loadgen merge`",
        ),
    ),
}

# Rules across groups, in one place.
CROSS_RULES: tuple[Rule, ...] = (
    Rule(
        "shared prefixes of synthetic prompts",
        lambda s: not s.prefix_prompt_pool_size or s.input_file is None,
        "--prefix-prompt-pool-size shares prefixes among synthetic prompts: not with --input-file (a trace's "
        "hash_ids share its prefixes)",
    ),
    Rule(
        "sessions in a closed loop",
        lambda s: not s.sessions or s.mode == "concurrency",
        "multi-turn sessions (--conversation-turn-mean) run on the slots of a closed loop: give --concurrency-range",
    ),
    Rule(
        "cancellation of token streams",
        lambda s: not s.request_cancellation_rate or s.token_run,
        "--request-cancellation-rate cancels generative requests: give their prompts (--isl, --input-file) or "
        "--endpoint-type",
    ),
    Rule(
        "cancellation delay needs a rate",
        lambda s: not s.request_cancellation_delay or s.request_cancellation_rate,
        "--request-cancellation-delay needs --request-cancellation-rate (the share of requests to cancel)",
    ),
    Rule(
        "generate over HTTP",
        lambda s: s.endpoint_type != "generate" or s.protocol == "http",
        "--endpoint-type generate is Triton's HTTP generate extension: give -i http and the HTTP port",
    ),
    Rule(
        "streams are gRPC's",
        lambda s: not s.streaming or s.protocol == "grpc" or s.endpoint_type in ("generate", *OPENAI_ENDPOINTS),
        "--streaming needs -i grpc: Triton streams responses over gRPC only (or its generate_stream: "
        "--endpoint-type generate)",
    ),
    Rule(
        "shared memory holds binary inputs",
        lambda s: s.shared_memory == "none" or s.input_tensor_format == "binary",
        "--input-tensor-format json cannot be used with --shared-memory (the inputs are not in the request)",
    ),
    Rule(
        "periodic concurrency is exported",
        lambda s: s.mode != "periodic_concurrency" or s.record_requests > 0,
        "--periodic-concurrency-range reports through --profile-export-file (it measures no windows)",
    ),
    Rule(
        "fixed schedule sends each entry once",
        lambda s: not s.fixed_schedule or s.request_count == 0,
        "--fixed-schedule sends each entry of the --input-data JSON once: not with --request-count",
    ),
    Rule(
        "fixed schedule of one JSON file",
        lambda s: (
            not s.fixed_schedule
            or s.input_file is not None
            or (len(s.input_sources) == 1 and s.input_sources[0].lower().endswith(".json"))
        ),
        lambda s: (
            '--fixed-schedule sends the entries of one --input-data JSON file, each at its "timestamp": give '
            "one (not random, zero, a directory or several files)"
        ),
    ),
    Rule(
        "requests recorded in one process",
        lambda s: s.record_requests == 0 or s.workers == 1,
        "--profile-export-file records every request in this process: not with --workers (drop --workers)",
    ),
    Rule(
        "binary search under a threshold",
        lambda s: not s.binary_search or s.latency_threshold is not None,
        "--binary-search needs --latency-threshold (the search finds the highest load under it)",
    ),
    Rule(
        "binary search over a range",
        lambda s: not s.binary_search or s.mode != "request_intervals",
        "--binary-search searches a --concurrency-range or --request-rate-range",
    ),
    Rule(
        "window logs of a fixed sweep",
        lambda s: (
            s.hdr_log is None or (s.measurement_mode == "time_windows" and not s.request_count and not s.binary_search)
        ),
        "--hdr-log logs time windows of a fixed sweep: not with count windows, --request-count or --binary-search",
    ),
    Rule(
        "shards or workers",
        lambda s: parse_shard(s.shard)[1] == 1 or s.workers == 1,
        "--shard and --workers cannot be combined",
    ),
    Rule(
        "a mix in one process",
        lambda s: s.model_mix is None or s.workers == 1,
        "--model-mix runs its models in one process: not with --workers (split it with --shard i/K)",
    ),
    Rule(
        "a mix is not exported",
        lambda s: s.model_mix is None or not s.record_requests,
        "--model-mix: the profile export records one model's requests; profile the models one at a time",
    ),
)


def check_rules(target: object, rules: Sequence[Rule]) -> None:
    """Raise the first rule that does not hold, with its message."""
    for rule in rules:
        if not rule.holds(target):
            raise OptionError(rule.message if isinstance(rule.message, str) else rule.message(target))


def validate(target: object, group: type) -> None:
    """One group's own validation, on the group or the whole settings: its fields' checks, then its rules."""
    check_fields(target, group)
    check_rules(target, GROUP_RULES.get(group, ()))


LOAD_FIELDS = {  # the fields that choose a load mode, each with its off value and its flag
    "concurrency_range": (None, "--concurrency-range"),
    "request_rate_range": (None, "--request-rate-range"),
    "request_intervals": (None, "--request-intervals"),
    "periodic_concurrency_range": (None, "--periodic-concurrency-range"),
    "fixed_schedule": (False, "--fixed-schedule"),
}


@dataclass(frozen=True)
class Settings(Shards, Server, Outputs, Measurement, Tokens, Data, Load, Connection, Model):  # fields: Model's first
    """What to profile and how: every group's fields at once; every field is a CLI flag (long name in snake case)."""

    def __post_init__(self) -> None:
        if isinstance(self.workers, str) and self.workers.strip().lower() == "auto":
            object.__setattr__(self, "workers", worker_count("auto"))
        for item in fields(self):
            assert isinstance(item.type, str)  # annotations are strings (from __future__ import annotations)
            value = as_annotated(item.name, item.type, getattr(self, item.name))
            convert = meta(item).convert
            object.__setattr__(self, item.name, value if convert is None or value is None else convert(value))
        self._connection()
        self._load()
        for _, group in GROUPS:
            validate(self, group)
        check_rules(self, CROSS_RULES)

    def group(self, kind: type[G]) -> G:
        """One group of these settings, e.g. `settings.group(Connection)`."""
        return kind(**{item.name: getattr(self, item.name) for item in fields(kind)})  # type: ignore[arg-type]

    def _connection(self) -> None:
        """The protocol checked, and the URL its default port when none is given."""
        object.__setattr__(self, "protocol", _lower(self.protocol))
        if self.endpoint_type in OPENAI_ENDPOINTS:  # OpenAI-compatible servers speak HTTP alone
            object.__setattr__(self, "protocol", "http")
        if self.protocol not in PROTOCOLS:
            raise OptionError(f"-i {self.protocol!r}: choose grpc or http")
        object.__setattr__(self, "url", self.url or DEFAULT_URLS[self.protocol])

    def _load(self) -> None:
        """One load mode, its levels in their normal form (an open range stays text), and a mix's shares."""
        given = [option for name, (off, option) in LOAD_FIELDS.items() if getattr(self, name) != off]
        if len(given) > 1:
            raise OptionError(f"{' and '.join(given)} cannot be combined: choose one load mode")
        open_end = is_open_range(self.concurrency_range) or is_open_range(self.request_rate_range)
        if open_end and self.latency_threshold is None:
            raise OptionError(
                "a range END of 0 steps on until a level goes over --latency-threshold: give -l (in ms) too"
            )
        # an open range stays text (its levels are many, and only the sweep finds its end); the others become levels
        if open_end:  # checked here; text either way
            if isinstance(self.concurrency_range, str):
                parse_range(self.concurrency_range)
            else:
                parse_rate_range(str(self.request_rate_range))
        elif self.request_rate_range is not None:
            object.__setattr__(self, "request_rate_range", as_rates(self.request_rate_range))
        elif not given:
            object.__setattr__(self, "concurrency_range", as_levels(1))
        elif self.concurrency_range is not None:
            object.__setattr__(self, "concurrency_range", as_levels(self.concurrency_range))
        if self.periodic_concurrency_range is not None:
            parse_periodic_range(self.periodic_concurrency_range)
        if self.model_mix is not None:
            self._mix(given)

    def _mix(self, given: list[str]) -> None:
        """Check the mix and put it in its normal form: an open loop's shares sum to 1; a closed loop's are each
        model's concurrency, and the level's concurrency is their sum."""
        mix = parse_model_mix(self.model_mix)
        if self.model_name is not None:
            raise OptionError("--model-mix names the models: not with -m/--model-name")
        if is_closed_loop(self.mode):
            total = int(sum(mix.values()))
            if given and tuple(as_levels(self.concurrency_range)) != (total,):  # (a normal form's own total is fine)
                raise OptionError(
                    "--model-mix in a closed loop gives each model's concurrency (A:8,B:2): not with "
                    "--concurrency-range (for shares of a request rate, give --request-rate-range)"
                )
            if any(value != int(value) for value in mix.values()):
                raise OptionError(
                    f"--model-mix {format_mix(mix)}: a closed loop takes each model's concurrency, in whole numbers "
                    "(shares need --request-rate-range)"
                )
            object.__setattr__(self, "concurrency_range", (total,))
        elif self.mode in ("periodic_concurrency", "fixed_schedule"):
            raise OptionError(f"--model-mix cannot be combined with {given[0]}")
        else:
            whole = sum(mix.values())
            mix = {name: value / whole for name, value in mix.items()}
        object.__setattr__(self, "model_mix", mix)

    def for_model(self, name: str) -> Settings:
        """One model's settings in a mix: its name, its load, and its inputs, shapes and BLS models (the
        `MODEL=` forms of --input-data, --shape and --bls-composing-models; the others are shared)."""
        assert self.model_mix is not None
        mix, prefix = self.model_mix, f"{name}="
        share = mix[name]

        def own(texts: Sequence[str]) -> list[str]:
            """The texts for this model: its `MODEL=` forms, else the ones no model claims."""
            mine = [text.removeprefix(prefix) for text in texts if text.startswith(prefix)]
            return mine or [text for text in texts if claimant(text, mix) is None]

        shapes = {key: dims for key, dims in self.shape.items() if claimant(key, mix) is None}
        shapes |= {key.removeprefix(prefix): dims for key, dims in self.shape.items() if key.startswith(prefix)}
        loads: dict[str, Any] = {"concurrency_range": (int(share),)}
        if self.mode == "request_rate":
            rates = self.request_rate_range
            levels = parse_rate_range(rates) if isinstance(rates, str) else tuple(rates)  # type: ignore[arg-type]
            loads = {"concurrency_range": None, "request_rate_range": tuple(rate * share for rate in levels)}
        elif self.mode == "request_intervals":
            raise OptionError("--model-mix with --request-intervals: give the mix's rate with --request-rate-range")
        return replace(
            self,
            model_name=name,
            model_mix=None,
            solo_baseline=False,
            input_data=own(self.input_sources) or "random",
            shape=shapes,
            bls_composing_models=tuple(own(self.bls_composing_models)),
            **loads,
        )

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> Settings:
        """The settings a result or window log recorded (`to_dict`); header values stay redacted."""
        return cls(**{name: value for name, value in recorded.items() if name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, object]:
        """The settings as recorded in a result."""
        recorded = {name: getattr(self, name) for name in self.__dataclass_fields__}
        recorded["shape"] = {k: list(v) for k, v in self.shape.items()}
        recorded["input_range"] = {k: list(v) for k, v in self.input_range.items()}
        for name, value in recorded.items():
            if isinstance(value, tuple):  # as JSON reads them back
                recorded[name] = list(value)
        recorded["header"] = {name: REDACTED for name in self.header}  # values are often credentials
        recorded["api_key"] = REDACTED if self.api_key else None
        return recorded


def _aliases() -> dict[str, str]:
    """The library's short names of fields, from their declared long aliases (`--concurrency`: `concurrency`)."""
    return {
        alias[2:].replace("-", "_"): item.name
        for _, item in declared([group for _, group in GROUPS])
        for alias in meta(item).short
        if alias.startswith("--") and not keyword.iskeyword(alias[2:])
    }


# Short names the library and the command line accept for these fields (`--concurrency` is `--concurrency-range`).
ALIASES = _aliases()


def make_settings(base: Settings | None = None, **options: Any) -> Settings:
    """Settings from keyword options (field names or their `ALIASES`), over `base` when given.

    Naming one load mode replaces the base's: `make_settings(base, request_rate=10)` sweeps rates.
    """
    given: dict[str, Any] = {}
    for key, value in options.items():
        name = ALIASES.get(key, key)
        if name not in Settings.__dataclass_fields__:
            raise OptionError(f"unknown option {key!r}; options are the fields of loadgen.Settings")
        if name in given:
            raise OptionError(f"{key!r} and {name!r} are the same option: give one")
        given[name] = value
    if base is None:
        return Settings(**given)
    if "protocol" in given and "url" not in given and base.url == DEFAULT_URLS[base.protocol]:
        given["url"] = ""  # the new protocol's default port
    if any(name in given for name in LOAD_FIELDS):
        given = {name: off for name, (off, _) in LOAD_FIELDS.items()} | given
    return replace(base, **given)


__all__ = [  # with the value parsers the rest of loadgen reads from here
    "ALIASES",
    "ALL_INPUTS",
    "CROSS_RULES",
    "GROUPS",
    "GROUP_RULES",
    "MAX_CONCURRENCY",
    "MAX_RESPONSE_BYTES",
    "SEQUENCE_LENGTH",
    "Connection",
    "Data",
    "Load",
    "Measurement",
    "Mode",
    "Model",
    "Outputs",
    "Rule",
    "Server",
    "Settings",
    "Shards",
    "flag",
    "format_mix",
    "is_closed_loop",
    "make_settings",
    "parse_header",
    "parse_input_range",
    "parse_latency_budgets",
    "parse_periodic_range",
    "parse_range",
    "parse_rate_range",
    "parse_request_parameter",
    "parse_shape",
    "parse_shard",
    "split_url",
    "validate",
]
