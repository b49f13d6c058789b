#!/usr/bin/env bash
# Install NVIDIA AIPerf into a virtualenv of its own in a cache directory outside
# the project's (get_python_tool.sh), and print the path of its `aiperf`
# executable on the last line of stdout.
#
# Usage:  AIPERF=$(benchmarks/get_aiperf.sh) && "$AIPERF" profile --help
#
# Environment: LOADGEN_CACHE and PYTHON as get_python_tool.sh's, and
#   AIPERF_VERSION  aiperf release (default: 0.13.0)
#
# AIPerf (about 1.2 GB with transformers, pandas, scipy ...) runs offline against
# a local server only with --tokenizer pointing at a local tokenizer folder.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/get_python_tool.sh" aiperf "${AIPERF_VERSION:-0.13.0}" aiperf "about 1.2 GB"
