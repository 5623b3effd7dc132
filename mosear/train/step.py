"""The optimisation step, shared by the Ray Train recipe and the plain-loop GPU benchmark.

Nothing here imports Ray: ``benchmarks/train_throughput.py --device cuda`` runs the very same
:func:`train_step` on a machine without Ray.

Schedule (``lr_lambda``), in optimizer steps ``s`` (0-based), warm-up ``W``, total ``S``, floor ``m``:

    s <  W:  lr(s) = lr * (s + 1) / W                                      (linear warm-up)
    s >= W:  lr(s) = lr * (m + (1 - m) * 0.5 * (1 + cos(pi * (s - W) / max(1, S - W))))

A step is ``grad_accum_steps`` micro-batches; the loss of each is divided by that count so the
gradient equals the mean over the whole step. Under DDP every micro-batch but the last runs inside
``no_sync()`` (one all-reduce per step). Dropout is seeded per step (``seed + step``), so a resumed
run draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

__all__ = ["lr_lambda", "build_optimizer", "StepStats", "train_step", "move_batch", "count_tokens"]


def lr_lambda(warmup_steps: int, max_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step ``s`` (see the module docstring)."""

    def fn(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / max(1, warmup_steps)
        progress = min(1.0, (s - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, warmup_steps: int, max_steps: int,
    min_lr_ratio: float,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable (adapter) parameters and the warm-up + cosine schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (is an adapter attached?)")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup_steps, max_steps, min_lr_ratio))
    return opt, sched


@dataclass
class StepStats:
    """What one optimizer step measured. Times in seconds; ``aux`` are the model's logged scalars."""

    loss: float
    lr: float
    samples: int
    tokens: int
    data_s: float
    compute_s: float
    grad_norm: float | None = None
    aux: dict[str, float] = field(default_factory=dict)


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def count_tokens(batch: dict[str, Any]) -> int:
    """Positions the LM processes in a batch (non-padding if an attention mask is present)."""
    mask = batch.get("attention_mask")
    if torch.is_tensor(mask):
        return int(mask.sum().item())
    for key in ("input_ids", "modality_ids"):
        if torch.is_tensor(batch.get(key)):
            return int(batch[key].numel())
    return 0


def _aux_scalars(aux: Any) -> dict[str, float]:
    """Flatten the model's ``.aux`` (scalars, or small tensors -> name_i entries) to floats."""
    out: dict[str, float] = {}
    for k, v in (aux or {}).items():
        if torch.is_tensor(v):
            v = v.detach().float().cpu()
            if v.numel() == 1:
                out[k] = float(v.item())
            elif v.numel() <= 64:
                for i, x in enumerate(v.flatten().tolist()):
                    out[f"{k}_{i}"] = float(x)
        elif isinstance(v, (int, float)):
            out[k] = float(v)
        elif isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in _aux_scalars(v).items()})
    return out


class _Sums:
    """Per-step sums of the loss and the model's 0-d aux tensors, kept on the device and read once."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.floats: dict[str, float] = {}

    def add(self, loss: torch.Tensor, aux: Any) -> None:
        scalars = {"loss": loss, **{k: v for k, v in (aux or {}).items() if torch.is_tensor(v) and v.numel() == 1}}
        for k, v in scalars.items():
            v = v.detach().float().reshape(())
            self.tensors[k] = v if k not in self.tensors else self.tensors[k] + v
        rest = {k: v for k, v in (aux or {}).items() if k not in scalars}
        for k, v in _aux_scalars(rest).items():
            self.floats[k] = self.floats.get(k, 0.0) + v

    def read(self) -> dict[str, float]:
        """All sums as floats: one device-to-host copy for the tensors."""
        names = list(self.tensors)
        values = torch.stack([self.tensors[k].to(self.tensors[names[0]].device) for k in names]).cpu().tolist() \
            if names else []
        return dict(zip(names, values)) | self.floats


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP / FSDP wrapper (``.module``), or the model itself."""
    return getattr(model, "module", model)


def train_step(
    model: torch.nn.Module,
    micro_batches: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    grad_accum_steps: int,
    device: torch.device,
    max_grad_norm: float | None = None,
    precision: str = "fp32",
    seed: int | None = None,
    step: int = 0,
    reliance_every: int | None = None,
) -> StepStats:
    """One optimizer step over ``grad_accum_steps`` collated micro-batches.

    ``model`` may be wrapped (DDP/FSDP); its forward takes the collated batch and returns an output
    with ``.loss`` (scalar) and optionally ``.aux`` (dict of scalars or 0-d tensors). ``micro_batches`` is
    consumed lazily so the time spent waiting for data is measured separately from compute.

    The model's adapter state changes only here, by three explicit calls on the unwrapped model when it
    has them (:class:`~mosear.model.interface.AdapterAccess`): ``measure_reliance(batch)`` on the step's
    first micro-batch when ``reliance_every`` is set and ``step % reliance_every == 0`` (the reliance
    rules' weights, before the forward), ``update_modality_weights()`` after every backward (the
    update-size rule's measurements) and ``apply_gradient_noise(seed)`` once before clipping
    (OGM-GE's noise; a no-op unless ``mose.ge_noise``). Losses and aux values are summed on the device
    and read once.
    """
    if seed is not None:
        torch.manual_seed(seed + step)  # dropout masks depend on the step only (resume-exact)
    inner = _unwrap(model)
    measure = getattr(inner, "measure_reliance", None) if reliance_every and step % reliance_every == 0 else None
    update = getattr(inner, "update_modality_weights", None)
    noise = getattr(inner, "apply_gradient_noise", None)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    it = iter(micro_batches)
    data_s = compute_s = 0.0
    samples, tokens = 0, 0
    sums = _Sums()
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if precision == "bf16" else contextlib.nullcontext()
    )
    for i in range(grad_accum_steps):
        t0 = time.perf_counter()
        batch = next(it)
        samples += int(next((v.shape[0] for v in batch.values() if torch.is_tensor(v)), 0))
        tokens += count_tokens(batch)  # before the move: the collated batch is on the host
        batch = move_batch(batch, device)
        t1 = time.perf_counter()
        if i == 0 and measure is not None:
            with autocast:
                measure(batch)
        last = i == grad_accum_steps - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast:
                out = model(**batch)
            (out.loss / grad_accum_steps).backward()
        if update is not None:
            update()
        sums.add(out.loss, getattr(out, "aux", None))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        data_s += t1 - t0
        compute_s += time.perf_counter() - t1
    t2 = time.perf_counter()
    if noise is not None:
        # OGM-GE's noise (a no-op unless mose.ge_noise) from its own generator, seeded by (seed, step):
        # every data-parallel rank draws the same noise for its all-reduced gradients
        noise(seed=(seed or 0) * 1_000_003 + step)
    grad_norm = None
    if max_grad_norm is not None:
        params = [p for p in model.parameters() if p.requires_grad]
        if hasattr(model, "clip_grad_norm_"):  # FSDP: norm over all shards
            grad_norm = float(model.clip_grad_norm_(max_grad_norm))
        else:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    lr = float(optimizer.param_groups[0]["lr"])
    optimizer.step()
    scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    compute_s += time.perf_counter() - t2
    n = grad_accum_steps
    totals = sums.read()
    loss = totals.pop("loss")
    return StepStats(
        loss=loss / n, lr=lr, samples=samples, tokens=tokens, data_s=data_s, compute_s=compute_s,
        grad_norm=grad_norm, aux={k: v / n for k, v in totals.items()},
    )
