"""Throughput of the transformers audio-visual backend: eval items/s with AR off / monitor / AR on, and
the training step of MoSE vs LoRA, on a random-init thinker written to a temporary folder.

    PYTHONPATH=$PWD python3 benchmarks/av_backend.py                        # tiny Qwen2.5-Omni, CPU
    PYTHONPATH=$PWD python3 benchmarks/av_backend.py --arch qwen3_omni_moe
    PYTHONPATH=$PWD python3 benchmarks/av_backend.py --shapes 7b --device cuda --dtype bfloat16

``--shapes 7b`` is Qwen2.5-Omni-7B's thinker (text 3584 x 28 layers, vision 1280 x 32, audio 1280 x 32;
~17 GiB of bf16 weights written to --workdir). Inputs are real sample clips (8 frames, the processor's
default frame size); a row's ratio is against the baseline of the same run (AR off = the fast default
attention; LoRA for the training step). Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = {
    "tiny": None,
    "7b": {"hidden": 3584, "layers": 28, "heads": 28, "kv_heads": 4, "intermediate": 18944, "vision_hidden": 1280,
           "vision_depth": 32, "audio_d_model": 1280, "audio_layers": 32, "vocab": 152064},
}


def _clips(n: int) -> list[dict]:
    from mosear.media.decode import decode_clip

    root = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "ravdess"
    out = []
    for p in sorted(root.glob("*.mp4"))[:n]:
        c = decode_clip(p, num_frames=8, height=224, width=224)
        out.append({"key": p.stem, "frames": c.frames, "audio": c.audio.astype(np.float32) / 32768.0,
                    "sample_rate": 16000, "meta": {"transcript": "Kids are talking by the door"}})
    return out


def _timed(fn, repeat: int, sync) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="qwen2_5_omni", choices=["qwen2_5_omni", "qwen3_omni_moe"])
    ap.add_argument("--shapes", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    from mosear.model import ModelConfig, build_model, set_attention_mode
    from mosear.model.av_tiny import write_tiny_checkpoint

    work = Path(a.workdir or tempfile.mkdtemp(prefix="av-bench-"))
    folder = write_tiny_checkpoint(work / a.arch, a.arch, sizes=SHAPES[a.shapes], dtype=a.dtype)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    clips = _clips(a.batch)
    rows = []

    model = build_model(ModelConfig(preset="hf-av", model_path=str(folder), adapter="mose", dtype=a.dtype,
                                    num_frames=8)).to(dev).eval()
    batch = model.collate(clips, include_target=False)
    n_pos = int(batch["attention_mask"].sum())
    base = None
    for name, mode, kw in (("AR off (sdpa)", "sdpa", {}), ("monitor", "monitor", {}),
                           ("AR on (f=0.5, all layers)", "ar", {"fraction": 0.5})):
        set_attention_mode(model, mode, **kw)

        def item():
            with torch.inference_mode():
                model(**batch)
                model.generate(batch, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens)

        t = _timed(item, a.repeat, sync)
        base = base or t
        rows.append((f"eval: prompt forward + {a.new_tokens} tokens, {name}", a.batch / t, "items/s", base / t))
    del model

    base = None
    for adapter in ("lora", "mose"):
        model = build_model(ModelConfig(preset="hf-av", model_path=str(folder), adapter=adapter, dtype=a.dtype,
                                        num_frames=8)).to(dev).train()
        tb = model.collate([{**c, "target": "happy. The voice is bright."} for c in clips])
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        auto = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.dtype == "bfloat16")

        def step():
            opt.zero_grad(set_to_none=True)
            with auto:
                out = model(**tb)
            out.loss.backward()
            opt.step()

        t = _timed(step, a.repeat, sync)
        base = base or t
        rows.append((f"train step ({adapter}, batch {a.batch})", t, "s", t / base))
        del model, opt

    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"{a.arch}, shapes {a.shapes}, {a.device}, {a.dtype}, {n_pos} prompt positions over {a.batch} clips, "
          f"median of {a.repeat}; load average {' '.join(load)}")
    print("| measurement | value | unit | ratio vs first row of its group |")
    print("|---|---|---|---|")
    for name, v, unit, r in rows:
        print(f"| {name} | {v:.3f} | {unit} | {r:.2f}x |")


if __name__ == "__main__":
    main()
