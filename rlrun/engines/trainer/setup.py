"""How the DeepSpeed trainer is put together: its DeepSpeed config (ZeRO stage, precision), the
optimizer, the policy module (precision, gradient checkpointing) and the frozen reference model.

Precision (``trainer.precision``):

- ``fp32``: weights, activations, gradients and optimizer state in float32 (the CPU default).
- ``bf16``: the module in bfloat16 (forward and backward in bf16), DeepSpeed's ``bf16`` mode with
  float32 master weights and AdamW state inside its optimizer wrapper: the update is computed and
  applied in fp32, then rounded into the bf16 module (DeepSpeed's mixed-precision recipe, as verl
  and OpenRLHF train with it). Log-probs are taken in fp32 from bf16 logits (batching.token_logp).
  ``trainer=zero0`` in bf16 runs DeepSpeed's ZeRO-1 with fp32 gradient accumulation (its
  ``BF16_Optimizer``; one rank: the same step as no ZeRO; several: optimizer state sharded, the same
  math). DeepSpeed's own no-ZeRO bf16 path (``DDP_BFLOAT16``, FP16_UnfusedOptimizer) is not used:
  measured with DeepSpeed 0.19.8 on the tiny model, its first AdamW step moved the weights by
  0.744 x lr where plain torch and ZeRO-1/2/3 move them by lr (tests/engines/test_trainer_setup.py
  checks every stage used against plain-torch mixed precision).
- ``auto``: ``bf16`` when ``model.dtype`` is bfloat16, else ``fp32`` (the behaviour before the
  option existed).

Gradient checkpointing (``trainer.gradient_checkpointing``): each decoder layer's activations are
recomputed in backward instead of kept (transformers' ``activation_checkpointing_enable``, formerly
``gradient_checkpointing_enable``; non-reentrant). Transformers only checkpoints in train mode, so the module is put in train mode with
every dropout probability set to 0: the forward is the eval-mode forward, as without it.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rlrun.engines.model import ModelSpec, load_model
from rlrun.engines.trainer.optim import OptimSettings, param_groups
from rlrun.runtime import dist
from rlrun.types import UpdatesFailed

PRECISIONS = ("auto", "fp32", "bf16")


class BadUpdates(UpdatesFailed):
    """``max_bad_steps`` updates in a row had a NaN/inf loss or gradient: the run stops."""

    def __init__(self, in_a_row: int, limit: int) -> None:
        super().__init__(f"the loss or its gradients were NaN or inf in {in_a_row} updates in a row "
                         f"(trainer.max_bad_steps={limit}); each was skipped (optim/skipped_steps)")
        self.in_a_row = in_a_row


def plain(value: Any) -> Any:
    """Nested mappings and lists (e.g. OmegaConf's) as plain dicts and lists, for DeepSpeed."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if nested else value
    return out


def training_spec(spec: ModelSpec, precision: str) -> ModelSpec:
    """The model as the trainer holds it: ``precision`` resolved into the dtype it is loaded in."""
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r} is not one of {PRECISIONS}")
    if precision == "auto":
        return spec
    return dataclasses.replace(spec, dtype="bfloat16" if precision == "bf16" else "float32")


def base_config(spec: ModelSpec, micro_batch_size: int, zero_stage: int, optim: OptimSettings) -> dict[str, Any]:
    """DeepSpeed's config for the policy (``trainer.deepspeed_config`` is merged over it); bf16
    without ZeRO becomes ZeRO-1 with fp32 gradient accumulation (module docstring)."""
    bf16 = spec.dtype == "bfloat16"
    extra = {"data_types": {"grad_accum_dtype": "fp32"}} if bf16 and zero_stage <= 1 else {}
    return {
        **extra,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,  # accumulation is driven by update() itself
        "gradient_clipping": float(optim.grad_clip),
        "zero_optimization": {"stage": 1 if bf16 and zero_stage == 0 else zero_stage},
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": spec.dtype == "float16"},
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }


def policy_module(spec: ModelSpec, gradient_checkpointing: bool) -> torch.nn.Module:
    """The policy as loaded (ZeRO-3 shards it inside ``deepspeed.initialize``), in eval mode, or
    with gradient checkpointing in train mode with dropout 0 (module docstring)."""
    module = load_model(spec)
    if not gradient_checkpointing:
        return module.eval()
    if not getattr(module, "supports_gradient_checkpointing", False):
        raise ValueError(f"trainer.gradient_checkpointing=true: {type(module).__name__} does not support it "
                         "(set it to false)")
    # transformers 5.25 renamed it activation_checkpointing_enable; the vLLM venv's (<5.20) has the old name
    if hasattr(module, "activation_checkpointing_enable"):
        module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for name in dir(module.config):
        if "dropout" in name and isinstance(getattr(module.config, name, None), float):
            setattr(module.config, name, 0.0)
    module.train()
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
    return module


def optimizer(module: torch.nn.Module, optim: OptimSettings, config: Mapping[str, Any]) -> torch.optim.Optimizer:
    groups = param_groups(module, optim.weight_decay)
    kwargs = dict(lr=optim.lr, betas=optim.betas, eps=optim.eps)
    offload = config["zero_optimization"].get("offload_optimizer", {}).get("device", "none")
    if offload == "cpu":  # ZeRO-Offload steps on the CPU: DeepSpeed's vectorised Adam
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def reference_engine(spec: ModelSpec, zero_stage: int, config: Mapping[str, Any], offload: bool) -> Any:
    """A frozen copy of the initial weights (``model.path``), in the policy's dtype, built when the
    loss first needs it (KL on); sharded like the policy under ZeRO-3 (an inference-only DeepSpeed
    engine). ``offload`` (``trainer.reference_offload``): under ZeRO-3 its shards live in CPU memory
    and are fetched layer by layer (DeepSpeed's ``offload_param``); otherwise the whole model stays
    on the CPU and the trainer moves it to the device only while it scores a batch."""
    module = load_model(spec).requires_grad_(False).eval()
    if zero_stage != 3:
        return module if offload else module.to(dist.device())
    import deepspeed

    ds = {k: v for k, v in config.items() if k != "gradient_clipping"}
    zero = {k: v for k, v in config["zero_optimization"].items() if k != "offload_optimizer"}
    if offload:
        zero["offload_param"] = {"device": "cpu", "pin_memory": dist.device().type == "cuda"}
    ds["zero_optimization"] = zero  # the policy's sharding, without an optimizer
    engine, *_ = deepspeed.initialize(model=module, config=ds)
    engine.eval()  # DeepSpeedEngine.eval returns None
    return engine


def warn_unchunked(module: torch.nn.Module, chunk: int, supported: tuple[str, ...]) -> int:
    """``chunk`` if the model type supports chunked log-probs, else 0 with a warning."""
    model_type = getattr(module.config, "model_type", None)
    if chunk and model_type not in supported:
        warnings.warn(f"logprob_chunk={chunk} ignored for model_type={model_type!r}: "
                      f"chunked log-probs support {supported} only")
        return 0
    return chunk
