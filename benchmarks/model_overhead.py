"""Cost of MoSE vs plain LoRA (training step) and of AR vs eager attention (inference).

    python3 benchmarks/model_overhead.py                          # tiny preset LLM shapes, CPU
    python3 benchmarks/model_overhead.py --shapes host             # 7B depth, narrow: host work, CPU
    python3 benchmarks/model_overhead.py --device cuda --shapes 7b   # LLaMA-2-7B shapes, bf16, one GPU

Only torch, transformers and peft are needed (run from the repo root, or with it on PYTHONPATH; no
install). The LLM is random-init from a config (no download): ``tiny`` = the tiny preset's LLM,
``small`` = a 256-wide 4-layer LLaMA, ``7b`` = LLaMA-2-7B (4096 wide, 32 layers, 32 heads, 11008 MLP),
``host`` = 7b's 32 layers at width 128 with 4 heads: the same number of ops per step as 7b (the op
count does not depend on widths or head count) with little compute, so its CPU time approximates the
host side (Python, dispatch) that bounds a 7B step on a GPU.
Every row also reports the aten ops dispatched per step (one profiled run; ``--no-count`` skips it).
The prompt follows Emotion-LLaMA's token layout: ``--visual-tokens`` (default 259: 256 EVA patches +
FaceMAE/VideoMAE tokens), ``--audio-tokens`` (default 1: HuBERT), the rest text.

Training: one optimizer step (forward, backward, AdamW on the adapter) with the Emotion-LLaMA LoRA
(r=64 for 7b; 8 for the narrow shapes, where r=64 would make the adapter the main compute; alpha=16,
dropout 0.05, q_proj/v_proj) vs MoSE (same rank, K=4 experts per modality, softmax gate, balance loss,
dynamic weights); ``--autocast`` runs both under bf16 autocast, as the trainer's ``precision: bf16``
(cluster/configs/train-7b.yaml) does. Inference: prefill + ``--new-tokens`` greedy cached decoding
steps with eager attention vs AR (threshold 0.3, fraction 0.5, all heads; all layers, and the upper
half of the layers), monitor mode, and sdpa for reference.
Variants are timed in interleaved rounds (baseline, variant, baseline, ...) so that load drift hits
all alike; each row is the median of ``--repeats`` rounds after warm-up, and the ratio is the median
over rounds of variant / baseline in the same round. Targets from the issue: MoSE <= 1.25x LoRA, AR <= 1.10x eager.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosear.model.ar import set_attention_mode  # noqa: E402
from mosear.model.modality import AUDIO, TEXT, VISUAL, ModalityContext  # noqa: E402
from mosear.model.mose import MoSEConfig  # noqa: E402

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=8, vocab_size=4096),
    # 7b's depth at a width where compute is small: the host work (Python, dispatch, kernel launches)
    # of a 7B step, measurable on a CPU
    "host": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=32, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=4096),
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


def interleaved(fns: list, device: str, warmup: int, repeats: int) -> list[list[float]]:
    """Time each of ``fns`` once per round, ``repeats`` rounds: load drift hits every variant alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[i].append(time.perf_counter() - t0)
    return times


# aten ops that only make a view or alias (no kernel)
_VIEWS = {"aten::view", "aten::t", "aten::reshape", "aten::unsqueeze", "aten::squeeze", "aten::expand",
          "aten::select", "aten::slice", "aten::transpose", "aten::permute", "aten::detach", "aten::alias",
          "aten::as_strided", "aten::_unsafe_view", "aten::split", "aten::unbind", "aten::narrow",
          "aten::_reshape_alias", "aten::lift_fresh", "aten::split_with_sizes", "aten::chunk"}


def count_ops(fn) -> tuple[int, int, int | None]:
    """Run ``fn`` once under torch.profiler: (aten ops that compute, aten view ops, CUDA kernel launches).

    Counts the ops the Python side dispatches (an aten op called from inside another aten op is not
    counted again): on a GPU each costs host time, which is what bounds a step at these sizes.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    compute = views = launches = 0
    for e in prof.events():
        if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")):
            if e.name in _VIEWS:
                views += 1
            else:
                compute += 1
        elif "LaunchKernel" in e.name:
            launches += 1
    return compute, views, (launches if cuda else None)


def train_step_fn(lm, adapter_cfg, mods, ids, labels, autocast: bool = False):
    """A closure running one optimizer step of ``lm`` wrapped with ``adapter_cfg`` (``.model``: the peft model)."""
    from peft import get_peft_model

    peft_model = get_peft_model(lm, adapter_cfg)
    peft_model.train()
    # foreach: one multi-tensor update for all adapter tensors (the CUDA default; CPU defaults to a loop)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    tuner = peft_model.base_model
    is_mose = isinstance(adapter_cfg, MoSEConfig)
    ctx = tuner.modality_context if is_mose else ModalityContext()

    def step():
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast), ctx.use(mods):
            out = peft_model(input_ids=ids, labels=labels, use_cache=False)
            loss = out.loss + adapter_cfg.balance_loss_weight * tuner.balance_loss() if is_mose else out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if is_mose:
            tuner.update_modality_weights()  # as the train step does after each backward
        opt.step()

    step.model = peft_model
    return step


def reliance_fn(step_lm, mods, ids):
    """A closure: the OGM reliance measurement (two no-gradient forwards with one modality masked, the
    weights, set on every layer), which the lab runs every ``reliance_every`` steps."""
    from mosear.model.mose.reliance import ogm_weights, unimodal_scores

    peft_model = step_lm
    tuner = peft_model.base_model
    emb = peft_model.get_input_embeddings()(ids).detach()
    B, L = ids.shape
    pos = torch.arange(L, device=ids.device).expand(B, -1)
    last = torch.full((B,), L - 1, device=ids.device)

    def run():
        s = unimodal_scores(peft_model, tuner.modality_context, emb, torch.ones_like(ids), mods, pos, last, ids[:, -1])
        tuner.set_modality_weights(ogm_weights(s, 0.5))

    return run


def infer_fn(lm, ctx: ModalityContext, mods, ids, mode: str, args, layers: list[int] | None = None,
             **options):
    """A closure: switch ``lm`` to ``mode``, prefill + ``--new-tokens`` greedy cached steps."""

    @torch.no_grad()
    def run():
        tau = 0.5 if options.get("direction") == "both" else 0.3
        set_attention_mode(lm, mode, threshold=tau, fraction=0.5, layers=layers, context=ctx, **options)
        with ctx.use(mods):
            lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                        min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

    return run


def strip_adapters(lm) -> None:
    """Put the plain layers back (what ``unload()`` does; written out so any peft version works)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(lm.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            setattr(lm.get_submodule(parent_name) if parent_name else lm, child, module.get_base_layer())
    if hasattr(lm, "peft_config"):
        del lm.peft_config


def ratios(times: list[list[float]]) -> list[float]:
    """Median over rounds of each variant's time / the baseline's (index 0) in the same round."""
    return [statistics.median(t / b for t, b in zip(ts, times[0])) for ts in times]


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
    ap.add_argument("--reliance-every", type=int, default=16, help="k of the reliance measurement (MoSESettings default)")
    ap.add_argument("--rank", type=int, default=None, help="adapter rank; default 64 (7b, as Emotion-LLaMA), 8 otherwise")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="auto: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU torch threads (1 avoids oversubscription)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per row (default: 5 on cuda, 15 on cpu)")
    ap.add_argument("--no-count", action="store_true", help="skip the profiled run that counts ops per row")
    ap.add_argument("--counts-only", action="store_true", help="one timed round after the warm-up (when only the op counts matter)")
    ap.add_argument("--autocast", action="store_true",
                    help="train steps under bf16 autocast (the trainer's precision=bf16): adapter matmuls in bf16")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (5 if args.device == "cuda" else 15)
    rank = args.rank or (64 if args.shapes == "7b" else 8)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        args.dtype, torch.bfloat16 if args.device == "cuda" else torch.float32)
    bs = args.batch_size or (4 if args.shapes in ("7b", "host") else 8)
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
    # the bias lab's components: centred expert start, OGM reliance weights (gradient only; no per-row EMA)
    mose_rel = MoSEConfig(r=rank, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                          num_experts=args.experts, expert_init_std=0.02, weight_rule="ogm")
    rows = []
    # training: two copies of the same random LLM (same seed), one per adapter, steps interleaved
    torch.manual_seed(0)
    lm_b = build_lm(args.shapes, args.device, dtype)
    torch.manual_seed(0)
    lm_c = build_lm(args.shapes, args.device, dtype)
    steps = [train_step_fn(lm, lora, mods, ids, labels, args.autocast),
             train_step_fn(lm_b, mose, mods, ids, labels, args.autocast),
             train_step_fn(lm_c, mose_rel, mods, ids, labels, args.autocast)]
    measure = reliance_fn(steps[2].model, mods, ids)
    every = args.reliance_every

    def amortised(i=[0]):  # noqa: B006 (a step counter): the lab's step with its measurement every k steps
        if i[0] % every == 0:
            measure()
        i[0] += 1
        steps[2]()

    fns = steps + [amortised]
    times = interleaved(fns, args.device, args.warmup, 1 if args.counts_only else args.repeats)
    counts = [None if args.no_count else count_ops(fn) for fn in steps]
    if counts[2] is not None:
        m = count_ops(measure)  # amortised count: a step plus 1/k of a measurement
        counts.append((counts[2][0] + round(m[0] / every), counts[2][1] + round(m[1] / every),
                       None if m[2] is None else counts[2][2] + round(m[2] / every)))
    else:
        counts.append(None)
    amp = " +bf16 autocast" if args.autocast else ""
    names = [f"LoRA r={rank}{amp} (baseline)", f"MoSE r={rank}, K={args.experts} x 3{amp}",
             f"MoSE ogm + expert init{amp}", f"  + measurement every {every} steps"]
    for name, ts, r, c in zip(names, times, ratios(times), counts):
        rows.append(("train step", name, statistics.median(ts), r, c))
    del steps, fns, lm_b, lm_c
    strip_adapters(lm)
    if args.device == "cuda":
        torch.cuda.empty_cache()
    # inference: one model, attention switched between variants each round
    lm.eval()
    n_layers = lm.config.num_hidden_layers
    upper = list(range(n_layers // 2, n_layers))
    variants = [("eager attention (baseline)", "eager", None), ("AR (all layers, f=0.5)", "ar", None),
                (f"AR (layers {upper[0]}-{upper[-1]}, f=0.5)", "ar", upper), ("monitor (all layers)", "monitor", None),
                ("sdpa (reference)", "sdpa", None)]
    options = [{}] * len(variants)
    variants.append(("AR token share (all layers)", "ar", None))
    options.append(dict(share="token"))
    variants.append(("AR token share, both directions", "ar", None))
    options.append(dict(share="token", direction="both"))
    fns = [infer_fn(lm, ctx, mods, ids, mode, args, layers, **o) for (_, mode, layers), o in zip(variants, options)]
    times = interleaved(fns, args.device, args.warmup, 1 if args.counts_only else args.repeats)
    counts = [None if args.no_count else count_ops(fn) for fn in fns]
    for (name, _, _), ts, r, c in zip(variants, times, ratios(times), counts):
        rows.append((f"prefill + {args.new_tokens} tokens", name, statistics.median(ts), r, c))

    print(f"\n| {'what':<22} | {'variant':<34} | {'median s':>9} | {'ratio':>6} | {'aten ops (+views)':>17} "
          f"| {'ops ratio':>9} | {'launches':>8} |")
    print(f"|{'-' * 24}|{'-' * 36}|{'-' * 11}|{'-' * 8}|{'-' * 19}|{'-' * 11}|{'-' * 10}|")
    base_ops = {}
    for what, variant, t, r, c in rows:
        base_ops.setdefault(what, c)
        ops = f"{c[0]} (+{c[1]})" if c else "-"
        ops_ratio = f"{c[0] / base_ops[what][0]:.2f}x" if c else "-"
        launches = str(c[2]) if c and c[2] is not None else "-"
        print(f"| {what:<22} | {variant:<34} | {t:>9.4f} | {r:>5.2f}x | {ops:>17} | {ops_ratio:>9} | {launches:>8} |")
    print(f"\ndevice: {card}; total {time.time() - t0:.0f}s. Targets: MoSE <= 1.25x LoRA, AR <= 1.10x eager.\n"
          "aten ops: dispatched per step / per generate call (views in brackets); each costs host time, which bounds "
          "a 7B step on a GPU.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
