#!/usr/bin/env bash
# GPU readiness check (under 5 minutes): bnas_d training throughput and peak memory, float32 vs AMP vs
# AMP + channels_last, on synthetic data. Needs a CUDA GPU and the project installed (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
timeout 300 python3 benchmarks/gpu_train_check.py "$@"
