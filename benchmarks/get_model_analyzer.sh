#!/usr/bin/env bash
# Install Triton Model Analyzer into a virtualenv of its own in a cache directory
# outside the project's (get_python_tool.sh), and print the path of its
# `model-analyzer` executable on the last line of stdout.
#
# Usage:  MA=$(benchmarks/get_model_analyzer.sh) && "$MA" profile -f config.yaml
#
# Environment: LOADGEN_CACHE and PYTHON as get_python_tool.sh's, and
#   MA_VERSION     triton-model-analyzer release (default: 1.58.0, the one whose
#                  perf_analyzer calls loadgen's perf-analyzer follows)
#
# Model Analyzer pulls tritonclient[all], grpcio and protobuf releases of its own;
# it only ever runs perf_analyzer as a program, so loadgen's `perf-analyzer`
# console script is all it needs from this project.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/get_python_tool.sh" triton-model-analyzer "${MA_VERSION:-1.58.0}" \
    model-analyzer "about 600 MB"
