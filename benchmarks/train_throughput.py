"""Training throughput: Ray Train scaling on CPU, and tokens/s + MFU of the 7B-class shapes on one GPU.

    python3 benchmarks/train_throughput.py                               # CPU, tiny preset, Ray Train
    python3 benchmarks/train_throughput.py --device cuda --shapes 7b     # one GPU, no Ray needed

**CPU mode** (the tiny preset on real shards of the sample corpus, built first with the shard stage
unless ``--shards`` is given): the same optimisation step (:func:`mosear.train.step.train_step`) and
the same sample streams as the recipe, run (a) in a plain loop in this process, the baseline, and
(b) through the Ray Train recipe (``run_train``) with 1 and with 2 workers (one torch thread each,
gloo DDP). Reported per row: samples/s and tokens/s after ``--warm`` warm-up steps, the share of
wall time rank 0 spent waiting for data (read + decode + collate: the loader must not starve the
trainer), the ratio to the plain loop, and the scaling efficiency ``sps(2) / (2 * sps(1))``.

**GPU mode** (``--device cuda --shapes 7b``): imports neither Ray nor the shard reader. A MoSEAR model
with LLaMA-2-7B shapes (4096 wide, 32 layers, 32 heads, 11008 MLP, 32000 vocab; random init, bf16),
CLIP ViT-L/14 and HuBERT-large shaped encoders (frozen), and either the Emotion-LLaMA LoRA (r=64,
alpha=16, q_proj/v_proj) or MoSE (same rank, K=4 experts per modality), trained with the recipe's
``train_step`` (bf16 autocast, AdamW, clipping) on batches collated by the model's prompt builder from
random reader-form samples (frames, 16 kHz audio, a label target). Reported: tokens/s (non-padding LM
positions), samples/s, and model FLOPs utilisation,

    MFU = (4 * N_lm + 6 * N_trainable + 12 * n_layers * d * s) * tokens/s / peak_bf16

with ``N_lm`` the LLM's non-embedding weights (frozen: forward + activation gradient = 4 FLOPs per weight
and token), ``N_trainable`` the adapter and projectors (forward + both gradients), ``s`` the mean
sequence length and ``d`` the width (attention scores and values, forward and backward). The frozen
encoders' forward passes are not counted, so the figure is a lower bound. Peak dense bf16: 989 TFLOP/s
for H100 SXM / H200, 756 for H100 PCIe, 312 for A100 (``--peak-tflops`` overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mosear.train.step import build_optimizer, count_tokens, train_step  # noqa: E402


# ------------------------------------------------------------------------------------------ CPU --
def build_shards(dst: Path) -> Path:
    from mosear.config import load_config
    from mosear.shards import run_shard
    from mosear.shards.config import ShardConfig

    cfg = load_config(ShardConfig, overrides={
        "corpus": str(REPO / "datasets" / "samples" / "corpus.yaml"), "output": str(dst), "num_frames": 4,
        "height": 32, "width": 32, "samples_per_shard": 6, "progress": False,
    })
    run_shard(cfg)
    return dst


def plain_loop(shards: Path, steps: int, warm: int, batch: int, accum: int) -> dict[str, float]:
    """The baseline: the recipe's stream + step in one process, no Ray, one torch thread."""
    from mosear.model import ModelConfig, build_model
    from mosear.shards.reader import list_shards
    from mosear.train.data import StreamSpec, TrainSampleStream, make_loader

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny", adapter="mose"))
    opt, sched = build_optimizer(model, 1e-3, 0.0, 2, steps, 0.1)
    spec = StreamSpec(tuple(str(p) for p in list_shards(shards)), 0, 1, 1, seed=0, shuffle_buffer=16)
    batches = (b for b, _ in make_loader(TrainSampleStream(spec), batch, model.collate, 0))
    samples = tokens = 0
    data_s = wall = 0.0
    for step in range(steps):
        t0 = time.perf_counter()
        st = train_step(model, batches, opt, sched, grad_accum_steps=accum, device=torch.device("cpu"),
                        max_grad_norm=1.0, seed=0, step=step)
        if step >= warm:
            wall += time.perf_counter() - t0
            samples += st.samples
            tokens += st.tokens
            data_s += st.data_s
    return {"samples_per_s": samples / wall, "tokens_per_s": tokens / wall, "data_share": data_s / wall}


def ray_run(shards: Path, out: Path, workers: int, steps: int, warm: int, batch: int, accum: int) -> dict[str, float]:
    """The recipe (``run_train``) with ``workers`` Ray Train workers; rates from its metrics.jsonl."""
    from mosear.config import load_config
    from mosear.train import TrainConfig, run_train

    cfg = load_config(TrainConfig, overrides={
        "shards": [str(shards)], "output": str(out), "name": f"bench-{workers}", "num_workers": workers,
        "batch_size": batch, "grad_accum_steps": accum, "max_steps": steps, "warmup_steps": 2,
        "checkpoint_every": steps, "report_every": steps, "log_every": 1, "torch_threads": 1,
        "shuffle_buffer": 16, "progress": False, "max_failures": 0,
    })
    run_train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][warm:]
    # Each row covers one step: time = samples / (samples/s); rank 0's data wait is data_share * time.
    prev = {r["step"]: r["samples_seen"] for r in [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]}
    n = [r["samples_seen"] - prev.get(r["step"] - 1, 0) for r in rows]
    t = [ni / r["samples_per_s"] for ni, r in zip(n, rows)]
    tok = [r["tokens_per_s"] * ti for r, ti in zip(rows, t)]
    return {"samples_per_s": sum(n) / sum(t), "tokens_per_s": sum(tok) / sum(t),
            "data_share": sum(r["data_share"] * ti for r, ti in zip(rows, t)) / sum(t)}


def cpu_main(args: argparse.Namespace) -> None:
    from mosear.ray_utils import init_ray

    work = Path(tempfile.mkdtemp(prefix="mosear-train-bench-"))
    init_ray(num_cpus=os.cpu_count())
    shards = Path(args.shards) if args.shards else build_shards(work / "shards")
    total = args.steps + args.warm
    rows = [("plain loop (no Ray)", 1, plain_loop(shards, total, args.warm, args.batch_size, args.accum))]
    for w in (1, 2):
        rows.append(("Ray Train, gloo DDP", w, ray_run(shards, work / f"ray{w}", w, total, args.warm,
                                                       args.batch_size, args.accum)))
    base = rows[0][2]["samples_per_s"]
    one = rows[1][2]["samples_per_s"]
    print(f"\ntiny preset, MoSE, CPU ({os.cpu_count()} cores), batch {args.batch_size} x accum {args.accum} per "
          f"worker, {args.steps} timed steps after {args.warm} warm-up steps; one torch thread per worker")
    print("| mode | workers | samples/s | tokens/s | data-wait share | vs plain loop | scaling efficiency |")
    print("|---|---|---|---|---|---|---|")
    for name, w, r in rows:
        eff = f"{r['samples_per_s'] / (w * one):.2f}" if name.startswith("Ray") else "-"
        print(f"| {name} | {w} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['data_share']:.1%} | "
              f"{r['samples_per_s'] / base:.2f}x | {eff} |")


# ------------------------------------------------------------------------------------------ GPU --
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
PEAK_BF16 = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12))


def build_7b(adapter: str, device: torch.device, visual_tokens: int, audio_tokens: int, frames: int):
    """A MoSEARModel with 7B-class shapes, random init, bf16, assembled like ``build_model``'s tiny path."""
    from peft import get_peft_model
    from transformers import CLIPVisionConfig, CLIPVisionModel, HubertConfig, HubertModel, LlamaConfig, LlamaForCausalLM

    from mosear.model import ModelConfig
    from mosear.model.mosear_model import MoSEARModel, apply_attention_settings
    from mosear.model.encoders import CLIP_MEAN, CLIP_STD, AudioEncoder, VisualEncoder
    from mosear.model.tokenizer import build_tiny_tokenizer

    cfg = ModelConfig(preset="tiny", adapter=adapter, visual_tokens=visual_tokens, audio_tokens=audio_tokens,
                      num_frames=frames, tiny_image_size=224, dtype="bfloat16")
    tok = build_tiny_tokenizer()
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):  # initialise on the GPU: a 7B random init on CPU takes minutes
            torch.manual_seed(0)
            lm = LlamaForCausalLM(LlamaConfig(**LLAMA2_7B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                              pad_token_id=tok.pad_token_id, tie_word_embeddings=False))
            vis = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                   num_attention_heads=16, image_size=224, patch_size=14))
            aud = HubertModel(HubertConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                           num_attention_heads=16, mask_time_prob=0.0))
    finally:
        torch.set_default_dtype(prev)
    lm.requires_grad_(False)
    with torch.device(device):
        visual = VisualEncoder(vis, cfg.visual_tokens, lm.config.hidden_size)
        audio = AudioEncoder(aud, cfg.audio_tokens, lm.config.hidden_size)
        lm = get_peft_model(lm, cfg.peft_config())
    model = MoSEARModel(cfg, tok, lm, visual, audio, 224, CLIP_MEAN, CLIP_STD).to(device)
    apply_attention_settings(model, cfg.ar)
    return model


def random_samples(n: int, seed: int) -> list[dict]:
    """Reader-form samples with realistic shapes (16 frames 224x224, 3 s of 16 kHz audio, a label target)."""
    import numpy as np

    from mosear.labels import MER2023_LABELS

    rng = np.random.default_rng(seed)
    return [{"key": f"bench__{i}", "frames": rng.integers(0, 256, (16, 224, 224, 3), dtype=np.uint8),
             "audio": (rng.standard_normal(48000) * 0.1).astype(np.float32), "sample_rate": 16000,
             "meta": {"label": MER2023_LABELS[i % 6], "transcript": "I can't believe you did that again."},
             "target": f"{MER2023_LABELS[i % 6]}: the face and the voice both show it."} for i in range(n)]


def gpu_main(args: argparse.Namespace) -> None:
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((p for k, p in PEAK_BF16 if k in name), None)
    print(f"card: {name}; torch {torch.__version__}; peak bf16 {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s")
    results = []
    for adapter in ("lora", "mose"):
        t0 = time.perf_counter()
        model = build_7b(adapter, device, args.visual_tokens, args.audio_tokens, args.frames)
        build_s = time.perf_counter() - t0
        n_lm = sum(p.numel() for n, p in model.base_lm.named_parameters()
                   if "embed_tokens" not in n and not p.requires_grad)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        opt, sched = build_optimizer(model, 2e-4, 0.0, 2, args.steps + args.warm, 0.1)
        batches = [model.collate(random_samples(args.batch_size, s)) for s in range(4)]
        seq = statistics.mean(float(b["attention_mask"].sum(1).float().mean()) for b in batches)
        feed = (batches[i % len(batches)] for i in range(10**9))
        times, tokens, samples = [], 0, 0
        for step in range(args.warm + args.steps):
            torch.cuda.synchronize()
            t = time.perf_counter()
            st = train_step(model, feed, opt, sched, grad_accum_steps=1, device=device, max_grad_norm=1.0,
                            precision="bf16", seed=0, step=step)
            if step >= args.warm:
                times.append(time.perf_counter() - t)
                tokens += st.tokens
                samples += st.samples
        wall = sum(times)
        tps = tokens / wall
        d, L = LLAMA2_7B["hidden_size"], LLAMA2_7B["num_hidden_layers"]
        flops_per_token = 4 * n_lm + 6 * n_train + 12 * L * d * seq
        mfu = flops_per_token * tps / peak if peak else float("nan")
        mem = torch.cuda.max_memory_allocated(device) / 2**30
        results.append((adapter, tps, samples / wall, statistics.median(times), mfu, seq, n_train, mem, build_s, st.loss))
        del model, opt, sched, batches, feed
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    print(f"\nLLaMA-2-7B shapes + ViT-L/14 + HuBERT-large shapes, bf16 autocast, batch {args.batch_size}, "
          f"{args.frames} frames, {args.visual_tokens} visual + {args.audio_tokens} audio tokens, "
          f"{args.steps} timed steps after {args.warm}")
    print("| adapter | tokens/s | samples/s | step (median) | MFU (LLM) | mean seq | trainable params | peak mem | "
          "vs LoRA | build |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = results[0][1]
    for a, tps, sps, step_s, mfu, seq, n_train, mem, build_s, loss in results:
        print(f"| {a} | {tps:.0f} | {sps:.2f} | {step_s * 1000:.0f} ms | {mfu:.1%} | {seq:.0f} | {n_train / 1e6:.1f} M | "
              f"{mem:.1f} GiB | {tps / base:.2f}x | {build_s:.0f} s |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--shapes", choices=["tiny", "7b"], default=None, help="default: tiny on cpu, 7b on cuda")
    ap.add_argument("--shards", default=None, help="CPU mode: a shard folder (default: build from datasets/samples)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 16 CPU, 8 GPU)")
    ap.add_argument("--warm", type=int, default=None, help="warm-up steps not timed (default 3 CPU, 2 GPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="per worker (default 2 CPU, 4 GPU)")
    ap.add_argument("--accum", type=int, default=2, help="CPU mode: micro-batches per step")
    ap.add_argument("--visual-tokens", type=int, default=256, help="GPU mode (Emotion-LLaMA: 256 EVA patches)")
    ap.add_argument("--audio-tokens", type=int, default=4, help="GPU mode")
    ap.add_argument("--frames", type=int, default=1, help="GPU mode: frames through the ViT per sample")
    ap.add_argument("--peak-tflops", type=float, default=None, help="GPU mode: peak dense bf16 of the card")
    args = ap.parse_args(argv)
    gpu = args.device == "cuda"
    shapes = args.shapes or ("7b" if gpu else "tiny")
    if gpu != (shapes == "7b"):
        ap.error("the 7b shapes run on --device cuda, the tiny preset on cpu")
    args.steps = args.steps or (8 if gpu else 16)
    args.warm = args.warm if args.warm is not None else (2 if gpu else 3)
    args.batch_size = args.batch_size or (4 if gpu else 2)
    if gpu:
        if not torch.cuda.is_available():
            ap.error("--device cuda but no CUDA device is visible")
        gpu_main(args)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        cpu_main(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
