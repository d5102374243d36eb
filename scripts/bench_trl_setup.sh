#!/usr/bin/env bash
# Build .venv-trl: a separate environment holding Hugging Face TRL (the speed peer for `make bench-trl`).
#
# Idempotent: a venv that already imports the pinned versions is left alone. Quiet on success,
# loud (set -e, pip's own errors) on failure. Run from anywhere; paths are relative to the repo root.
#
# Order matters: torch is installed FIRST and pinned, so pip takes the local CPU wheel; installing
# trl into an empty venv would pull torch from the index with GBs of CUDA libraries.
# rlrun itself goes in with --no-deps (editable): the bench imports only rlrun.tasks.* and
# rlrun.engines.model, which need torch/transformers/tokenizers/safetensors, not deepspeed/wandb/hydra.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RLRUN_TRL_VENV:-$ROOT/.venv-trl}"
PYTHON="${PYTHON:-python3}"

TORCH_PIN="torch==2.13.0"
# TRL 1.16.0 is the newest release and the one MEASURED.md used; it accepts transformers 5.x.
TRL_PIN="trl==1.16.0"
TRANSFORMERS_PIN="transformers==5.23.0"
TOKENIZERS_PIN="tokenizers>=0.21,<0.24"
SAFETENSORS_PIN="safetensors>=0.4,<1"

check() {
  "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as md
import torch, transformers, trl, rlrun  # noqa: F401
assert md.version("trl") == "1.16.0", md.version("trl")
assert md.version("transformers") == "5.23.0", md.version("transformers")
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert not torch.version.cuda, "CUDA torch in .venv-trl: expected the CPU wheel"
EOF
}

if [ -x "$VENV/bin/python" ] && check; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi

PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "$TORCH_PIN"
"${PIP[@]}" "$TORCH_PIN" "$TRANSFORMERS_PIN" "$TOKENIZERS_PIN" "$SAFETENSORS_PIN" "$TRL_PIN"
"${PIP[@]}" "setuptools>=68" wheel  # rlrun's build backend, used without isolation (offline-safe)
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

if ! check; then
  echo "bench_trl_setup.sh: $VENV does not import torch 2.13.0 (CPU) + transformers 5.23.0 + trl 1.16.0 + rlrun" >&2
  "$VENV/bin/python" -c "import torch, transformers, trl, rlrun" >&2 || true
  exit 1
fi
