"""A FAKE Triton gRPC server, for the faults a real server cannot produce on demand.

It serves one model, `fake`, and fails every `fail_every`-th inference with INTERNAL and leaves every
`hang_every`-th one unanswered for `hang_s`. Everything else about loadgen is tested against the real server.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

MODEL = "fake"


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, fail_every: int = 0, hang_every: int = 0, hang_s: float = 5.0) -> None:
        self.fail_every = fail_every
        self.hang_every = hang_every
        self.hang_s = hang_s
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    def ServerLive(self, request: object, context: object) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: object, context: object) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request: object, context: object) -> service_pb2.ModelReadyResponse:
        return service_pb2.ModelReadyResponse(ready=True)

    def RepositoryIndex(self, request: object, context: object) -> service_pb2.RepositoryIndexResponse:
        return service_pb2.RepositoryIndexResponse(
            models=[service_pb2.RepositoryIndexResponse.ModelIndex(name=MODEL, version="1", state="READY")]
        )

    def ModelMetadata(self, request: object, context: object) -> service_pb2.ModelMetadataResponse:
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata(name="INPUT0", datatype="UINT8", shape=[4])
        output = service_pb2.ModelMetadataResponse.TensorMetadata(name="OUTPUT0", datatype="UINT8", shape=[4])
        return service_pb2.ModelMetadataResponse(
            name=MODEL, versions=["1"], platform="python", inputs=[tensor], outputs=[output]
        )

    def ModelConfig(self, request: object, context: object) -> service_pb2.ModelConfigResponse:
        return service_pb2.ModelConfigResponse(config=model_config_pb2.ModelConfig(name=MODEL, max_batch_size=0))

    def ModelStatistics(self, request: object, context: object) -> service_pb2.ModelStatisticsResponse:
        return service_pb2.ModelStatisticsResponse()

    def ModelInfer(
        self, request: service_pb2.ModelInferRequest, context: grpc.ServicerContext
    ) -> service_pb2.ModelInferResponse:
        with self.lock:
            number = next(self.counter)
        if self.hang_every and number % self.hang_every == 0:
            ended = threading.Event()  # a call the client cancels frees its thread, as Triton's would
            if context.add_callback(ended.set):
                ended.wait(self.hang_s)
        if self.fail_every and number % self.fail_every == 0:
            context.abort(grpc.StatusCode.INTERNAL, "injected failure")
        return service_pb2.ModelInferResponse(model_name=MODEL)


@contextmanager
def fake_triton(fail_every: int = 0, hang_every: int = 0, hang_s: float = 5.0) -> Iterator[str]:
    """Serve the fake on a free local port from a thread pool; yields its URL."""
    server = grpc.server(ThreadPoolExecutor(max_workers=32))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeTriton(fail_every, hang_every, hang_s), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
