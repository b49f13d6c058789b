"""System shared memory: every input tensor of the run written once into a region registered with the server, and
one region per output; requests then carry only where their tensors are. Regions are unregistered and freed when
the run ends, however it ends (Python's resource tracker unlinks them even if the process is killed)."""

from __future__ import annotations

import asyncio
import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.utils import shared_memory as shm
from tritonclient.utils import triton_to_np_dtype

from loadgen.errors import LoadgenError, ServerError
from loadgen.settings import Settings
from loadgen.transport import Connection, ModelInfo, Placement, Sample, TensorSpec

ALIGNMENT = 64  # each tensor starts on a cache line


@dataclass(frozen=True)
class Placements:
    """Where the inputs of each sample (in the order of the samples) and each requested output live."""

    inputs: tuple[tuple[Placement, ...], ...]
    outputs: tuple[tuple[str, Placement], ...]


UNREGISTER_ATTEMPTS = 10
UNREGISTER_PAUSE_S = 0.3


@dataclass
class Regions:
    """The run's registered regions; `release` unregisters and frees them (safe to call more than once)."""

    connection: Connection
    handles: list[tuple[str, Any]] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)

    def create(self, name: str, size: int) -> Any:
        handle = shm.create_shared_memory_region(name, f"/{name}", size, create_only=True)
        self.handles.append((name, handle))
        return handle

    async def register(self, name: str, size: int) -> None:
        try:
            await self.connection.register_system_shared_memory(name, f"/{name}", size)
        except ServerError as error:
            raise ServerError(
                f"Triton at {self.connection.url} could not map shared memory region {name}: {error} "
                "(--shared-memory system needs the server on this machine, sharing its /dev/shm)"
            ) from None
        self.registered.append(name)

    async def release(self) -> None:
        """Unregister every region the server knows, then free them. A refusal is tried again for a while (requests
        still in flight may hold a region); a server gone or restarted holds no mapping any more."""
        registered, self.registered = self.registered, []
        for name in registered:
            for attempt in range(UNREGISTER_ATTEMPTS):
                try:
                    await self.connection.unregister_system_shared_memory(name)
                    break
                except ServerError as error:
                    if "cannot reach" in str(error) or attempt == UNREGISTER_ATTEMPTS - 1:
                        break
                    await asyncio.sleep(UNREGISTER_PAUSE_S)
        handles, self.handles = self.handles, []
        for _, handle in handles:
            shm.destroy_shared_memory_region(handle)


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def output_size(model: ModelInfo, spec: TensorSpec, settings: Settings) -> int:
    """The region an output needs for the batch: a request's exact size when the metadata fixes it, else
    --output-shared-memory-size, times --batch-size (as perf_analyzer allocates it)."""
    dims = spec.shape[1:] if model.max_batch_size > 0 else spec.shape
    batch = settings.batch_size if model.max_batch_size > 0 else 1
    if spec.datatype == "BYTES" or -1 in dims:
        return settings.output_shared_memory_size * batch
    return math.prod(dims) * batch * int(np.dtype(triton_to_np_dtype(spec.datatype)).itemsize)


async def place(
    connection: Connection, model: ModelInfo, samples: Sequence[Sample], settings: Settings
) -> tuple[Regions, Placements]:
    """Write every sample's inputs into one registered region and register a region per requested output."""
    regions = Regions(connection)
    prefix = f"loadgen_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        inputs = []
        offset = 0
        for sample in samples:
            places = []
            for tensor in sample:
                places.append(Placement(f"{prefix}_inputs", offset, len(tensor.content)))
                offset += _aligned(len(tensor.content))
            inputs.append(tuple(places))
        handle = regions.create(f"{prefix}_inputs", max(offset, 1))
        for sample, placed in zip(samples, inputs, strict=True):
            for tensor, placement in zip(sample, placed, strict=True):
                shm.set_shared_memory_region(handle, [np.frombuffer(tensor.content, np.uint8)], placement.offset)
        await regions.register(f"{prefix}_inputs", max(offset, 1))
        outputs = []
        wanted = settings.output or tuple(spec.name for spec in model.outputs)
        specs = {spec.name: spec for spec in model.outputs}
        for index, name in enumerate(wanted):
            region = f"{prefix}_output{index}"
            size = output_size(model, specs[name], settings)
            regions.create(region, size)
            await regions.register(region, size)
            outputs.append((name, Placement(region, 0, size)))
    except shm.SharedMemoryException as error:
        await regions.release()
        raise LoadgenError(f"--shared-memory system: {error}: {error.__cause__}") from None
    except BaseException:
        await regions.release()
        raise
    return regions, Placements(tuple(inputs), tuple(outputs))
