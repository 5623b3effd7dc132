"""Cost of MoSE vs plain LoRA (training step) and of AR vs eager attention (inference).

    python3 benchmarks/model_overhead.py                          # tiny preset LLM shapes, CPU
    python3 benchmarks/model_overhead.py --device cuda --shapes 7b   # LLaMA-2-7B shapes, bf16, one GPU

Only torch, transformers and peft are needed (run from the repo root, or with it on PYTHONPATH; no
install). The LLM is random-init from a config (no download): ``tiny`` = the tiny preset's LLM,
``small`` = a 256-wide 4-layer LLaMA, ``7b`` = LLaMA-2-7B (4096 wide, 32 layers, 32 heads, 11008 MLP).
The prompt follows Emotion-LLaMA's token layout: ``--visual-tokens`` (default 259: 256 EVA patches +
FaceMAE/VideoMAE tokens), ``--audio-tokens`` (default 1: HuBERT), the rest text.

Training: one optimizer step (forward, backward, AdamW on the adapter) with the Emotion-LLaMA LoRA
(r=64 for 7b, 8 for the narrow shapes; alpha=16, dropout 0.05, q_proj/v_proj) vs MoSE (same rank, K=4 experts per modality, softmax gate,
balance loss, dynamic weights). Inference: prefill + ``--new-tokens`` greedy cached decoding steps with
eager attention vs AR (threshold 0.3, fraction 0.5, all heads; all layers, and the upper half of the
layers), monitor mode, and sdpa for reference.
Each row is the median of ``--repeats`` timings after warm-up; ratios are against the baseline
measured in the same run. Targets from the issue: MoSE <= 1.25x LoRA, AR <= 1.10x eager.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosear.model.attention import set_attention_mode  # noqa: E402
from mosear.model.modality import AUDIO, TEXT, VISUAL, ModalityContext  # noqa: E402
from mosear.model.mose import MoSEConfig  # noqa: E402

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=8, vocab_size=4096),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000),
}


def build_lm(shape: str, device: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, attn_implementation="eager")
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # initialise on the device: a 7B random init on CPU takes minutes
            lm = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return lm.requires_grad_(False)


def layout(batch: int, visual: int, audio: int, text: int, device: str) -> torch.Tensor:
    """Modality ids [B, L]: 8 text, visual span, 2 text, audio span, the rest text (Emotion-LLaMA style)."""
    row = [TEXT] * 8 + [VISUAL] * visual + [TEXT] * 2 + [AUDIO] * audio + [TEXT] * text
    return torch.tensor([row] * batch, device=device)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_time(lm, adapter_cfg, ctx: ModalityContext, mods, ids, labels, args) -> float:
    from peft import get_peft_model

    peft_model = get_peft_model(lm, adapter_cfg)
    if isinstance(adapter_cfg, MoSEConfig):
        ctx = peft_model.base_model.modality_context
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    tuner = peft_model.base_model

    def step():
        with ctx.use(mods):
            out = peft_model(input_ids=ids, labels=labels, use_cache=False)
        loss = out.loss
        if isinstance(adapter_cfg, MoSEConfig):
            bal = tuner.balance_loss()
            loss = loss + adapter_cfg.balance_loss_weight * bal
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = timed(step, args.device, args.warmup, args.repeats)
    del opt
    strip_adapters(lm)
    return t


def strip_adapters(lm) -> None:
    """Put the plain layers back (what ``unload()`` does; written out so any peft version works)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(lm.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            setattr(lm.get_submodule(parent_name) if parent_name else lm, child, module.get_base_layer())
    if hasattr(lm, "peft_config"):
        del lm.peft_config


def infer_time(lm, ctx: ModalityContext, mods, ids, mode: str, args, layers: list[int] | None = None) -> float:
    lm.eval()
    set_attention_mode(lm, mode, threshold=0.3, fraction=0.5, layers=layers, context=ctx)

    @torch.no_grad()
    def run():
        with ctx.use(mods):
            lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                        min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

    t = timed(run, args.device, args.warmup, args.repeats)
    set_attention_mode(lm, "eager", context=ctx)
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shapes", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--batch-size", type=int, default=None, help="default: 4 (7b), 8 otherwise")
    ap.add_argument("--visual-tokens", type=int, default=259)
    ap.add_argument("--audio-tokens", type=int, default=1)
    ap.add_argument("--text-tokens", type=int, default=60)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--rank", type=int, default=None, help="adapter rank; default 64 (7b, as Emotion-LLaMA), 8 otherwise")
    ap.add_argument("--threads", type=int, default=1, help="CPU torch threads (1 avoids oversubscription)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rank = args.rank or (64 if args.shapes == "7b" else 8)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    bs = args.batch_size or (4 if args.shapes == "7b" else 8)
    card = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    t0 = time.time()
    torch.manual_seed(0)
    lm = build_lm(args.shapes, args.device, dtype)
    mods = layout(bs, args.visual_tokens, args.audio_tokens, args.text_tokens, args.device)
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(3, lm.config.vocab_size, tuple(mods.shape), generator=g).to(args.device)
    labels = ids.clone()
    labels[mods != TEXT] = -100
    ctx = ModalityContext()
    print(f"device: {card}; shapes {args.shapes} ({sum(p.numel() for p in lm.parameters()) / 1e9:.2f} B params, "
          f"{dtype}); batch {bs} x {mods.shape[1]} tokens ({args.visual_tokens} visual, {args.audio_tokens} audio); "
          f"built in {time.time() - t0:.1f}s", flush=True)

    from peft import LoraConfig

    lora = LoraConfig(r=rank, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"])
    mose = MoSEConfig(r=rank, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                      num_experts=args.experts)
    rows = []
    t_lora = train_step_time(lm, lora, ctx, mods, ids, labels, args)
    rows.append(("train step", f"LoRA r={rank} (baseline)", t_lora, 1.0))
    t_mose = train_step_time(lm, mose, ctx, mods, ids, labels, args)
    rows.append(("train step", f"MoSE r={rank}, K={args.experts} x 3 modalities", t_mose, t_mose / t_lora))
    t_eager = infer_time(lm, ctx, mods, ids, "eager", args)
    rows.append((f"prefill + {args.new_tokens} tokens", "eager attention (baseline)", t_eager, 1.0))
    t_ar = infer_time(lm, ctx, mods, ids, "ar", args)
    rows.append((f"prefill + {args.new_tokens} tokens", "AR (all layers, f=0.5)", t_ar, t_ar / t_eager))
    n_layers = lm.config.num_hidden_layers
    upper = list(range(n_layers // 2, n_layers))
    t_ar_half = infer_time(lm, ctx, mods, ids, "ar", args, layers=upper)
    rows.append((f"prefill + {args.new_tokens} tokens", f"AR (layers {upper[0]}-{upper[-1]}, f=0.5)", t_ar_half,
                 t_ar_half / t_eager))
    t_mon = infer_time(lm, ctx, mods, ids, "monitor", args)
    rows.append((f"prefill + {args.new_tokens} tokens", "monitor (all layers)", t_mon, t_mon / t_eager))
    t_sdpa = infer_time(lm, ctx, mods, ids, "sdpa", args)
    rows.append((f"prefill + {args.new_tokens} tokens", "sdpa (reference)", t_sdpa, t_sdpa / t_eager))

    print(f"\n| {'what':<22} | {'variant':<34} | {'median s':>9} | {'ratio':>6} |")
    print(f"|{'-' * 24}|{'-' * 36}|{'-' * 11}|{'-' * 8}|")
    for what, variant, t, r in rows:
        print(f"| {what:<22} | {variant:<34} | {t:>9.4f} | {r:>5.2f}x |")
    print(f"\ndevice: {card}; total {time.time() - t0:.0f}s. Targets: MoSE <= 1.25x LoRA, AR <= 1.10x eager.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
