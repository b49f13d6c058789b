"""`make demo`: start the embedded Triton with the example ensemble, sweep concurrency 1..8, print the report.

The sweep is the command a user types against their own server:
    python -m loadgen -u URL -m ensemble_python_resnet50 --concurrency-range 1:8 --input-data examples/sample.jpg
"""

from __future__ import annotations

import sys
from pathlib import Path

from loadgen.cli import main
from loadgen.errors import EXIT_UNSTABLE
from loadgen.server import EmbeddedServer

HERE = Path(__file__).resolve().parent


def demo() -> int:
    print("Starting the embedded Triton server with the example model repository ...", flush=True)
    with EmbeddedServer(HERE / "model_repository") as server:
        print(f"Triton ready at {server.grpc_url} (gRPC)\n", flush=True)
        args = ["-u", server.grpc_url, "-m", "ensemble_python_resnet50", "--concurrency-range", "1:8"]
        args += ["--input-data", str(HERE / "sample.jpg"), "-p", "2000", "-s", "20"]
        args += ["--metrics-url", f"http://{server.metrics_url}/metrics", *sys.argv[1:]]  # the server's own port
        print("$ python -m loadgen " + " ".join(args), flush=True)
        status = main(args)
    print("Triton stopped.")
    if status == EXIT_UNSTABLE:
        # the demo has shown what it shows; a level that did not settle (a busy machine) is reported above
        print("(exit status 2 for a real run: a level did not reach a stable measurement)")
        return 0
    return status


if __name__ == "__main__":
    raise SystemExit(demo())
