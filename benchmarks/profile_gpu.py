"""Where the time of MoSE training steps and AR generation goes: torch.profiler at LLaMA-2-7B shapes.

    PYTHONPATH=$PWD python3 benchmarks/profile_gpu.py                 # one GPU (bf16, 7b shapes)
    PYTHONPATH=$PWD python3 benchmarks/profile_gpu.py --shapes tiny --device cpu   # smoke test

Same models, prompts and closures as ``benchmarks/model_overhead.py`` (random init, batch 4 x 330
tokens: 259 visual, 1 audio). For each of LoRA / MoSE training steps and eager / AR / monitor
generation (prefill + 16 cached tokens) it prints:

- wall seconds per call, and the *host* seconds (time until the call returns without a device
  synchronisation, measured on a second run after a sync): host ~ wall means the GPU waits for Python
  and kernel launches (launch bound), host << wall means the GPU is busy;
- the number of kernel launches and of ``cudaStreamSynchronize`` / ``cudaMemcpy*`` /
  ``cudaDeviceSynchronize`` calls per call (host-device synchronisations);
- the top CUDA kernels by self device time and the top CPU ops by self host time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_overhead import build_lm, infer_fn, layout, strip_adapters, sync, train_step_fn  # noqa: E402

from mosear.model.modality import TEXT, ModalityContext  # noqa: E402
from mosear.model.mose import MoSEConfig  # noqa: E402

SYNC_NAMES = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "cudaMemcpy", "cudaEventSynchronize")


def timed(fn, device: str, n: int) -> tuple[float, float]:
    """(wall s, host s) per call, medians of ``n``."""
    walls, hosts = [], []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        fn()
        hosts.append(time.perf_counter() - t0)
        sync(device)
        walls.append(time.perf_counter() - t0)
    return sorted(walls)[n // 2], sorted(hosts)[n // 2]


def report(name: str, fn, device: str, calls: int, top: int) -> None:
    wall, host = timed(fn, device, 3)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(calls):
            fn()
        sync(device)
    events = prof.key_averages()
    counts = Counter()
    for e in events:
        if e.key in SYNC_NAMES or e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel"):
            counts[e.key] += e.count
    n_kernels = sum(v for k, v in counts.items() if "Launch" in k) / calls
    syncs = {k: v / calls for k, v in counts.items() if k in SYNC_NAMES}
    print(f"\n=== {name}: wall {wall:.4f} s, host {host:.4f} s per call; {n_kernels:.0f} kernel launches, "
          f"syncs/copies per call {syncs}", flush=True)
    if device == "cuda":
        print(events.table(sort_by="self_device_time_total", row_limit=top, max_name_column_width=70))
    print(events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=70), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--shapes", default="7b")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--calls", type=int, default=2, help="profiled calls per variant")
    ap.add_argument("--top", type=int, default=18)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--only", default="train,infer")
    args = ap.parse_args(argv)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    rank = 64 if args.shapes == "7b" else 8
    torch.manual_seed(0)
    lm = build_lm(args.shapes, args.device, dtype)
    mods = layout(args.batch_size, 259, 1, 60, args.device)
    ids = torch.randint(3, lm.config.vocab_size, tuple(mods.shape),
                        generator=torch.Generator().manual_seed(0)).to(args.device)
    labels = ids.clone()
    labels[mods != TEXT] = -100
    from peft import LoraConfig

    if "train" in args.only:
        common = dict(r=rank, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"])
        for name, cfg in (("LoRA train step", LoraConfig(**common)),
                          ("MoSE train step", MoSEConfig(**common, num_experts=4)),
                          ("MoSE train step, no dynamic weights", MoSEConfig(**common, num_experts=4,
                                                                             dynamic_weights=False))):
            step = train_step_fn(lm, cfg, mods, ids, labels)
            for _ in range(2):
                step()
            report(name, step, args.device, args.calls, args.top)
            del step
            strip_adapters(lm)
    if "infer" in args.only:
        lm.eval()
        ctx = ModalityContext()
        ns = argparse.Namespace(new_tokens=args.new_tokens)
        for name, mode in (("eager generate", "eager"), ("AR generate (all layers)", "ar"),
                           ("monitor generate", "monitor")):
            fn = infer_fn(lm, ctx, mods, ids, mode, ns)
            fn()
            report(name, fn, args.device, 1, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
