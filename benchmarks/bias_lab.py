"""The bias lab: does MoSE (training) and AR (inference) close the audio shortcut on conflicts that have a
right answer? LoRA, LoRA+AR, MoSE, MoSE+AR on a synthetic audio-visual task, with ablations and 95 % intervals.

    PYTHONPATH=$PWD python3 benchmarks/bias_lab.py --quick            # a few cells, 5 seeds (<= 10 min, 2 cores)
    PYTHONPATH=$PWD python3 benchmarks/bias_lab.py                    # the full grid, 10 seeds per cell (~16 min quiet, 2 cores)
    PYTHONPATH=$PWD python3 benchmarks/bias_lab.py --generator-seed 7 # the same study on another task instance

Writes ``benchmarks/out/bias_lab.json`` (schema in docs/model.md), ``bias_lab.png`` and prints the tables.

**The task** (generator v1, constants in :data:`TASK`). Four emotion classes. The frozen encoder towers
are skipped: a clip is its tower features, ``N_v`` visual and ``N_a`` audio tokens of width ``D`` (the
tiny towers' width), fed to the model's projectors and LM exactly as tower outputs are. Class ``c`` has
a visual pattern ``u_c`` and an audio pattern ``w_c`` (random unit vectors drawn by ``--generator-seed``).

- visual cue (the face: hard to learn): a random ``FACE_SHARE`` of the visual tokens (new positions in
  every clip) carry ``s_v·√D·ρ_v·u_c + noise``; the others are noise (unit-variance Gaussian per
  entry). ``s_v`` is the visual contrast per token at ``REF_VISUAL_TOKENS`` tokens; with more tokens it
  is scaled by ``√(face tokens at ref / face tokens)``, so a clip's total visual evidence does not depend
  on the token count;
- audio cue (the voice: easy to learn): every audio token carries ``s_a·√D·ρ_a·w_c + noise`` (``s_a``: audio
  SNR per token at ``REF_AUDIO_TOKENS`` tokens, scaled the same way);
- ``ρ`` is the cue's strength in the clip: uniform in ``[1 - STRENGTH_JITTER, 1 + STRENGTH_JITTER]`` for a
  clear cue; in a **conflict** the misleading cue shows another class at ``MISLEADING_STRENGTH`` of its
  usual strength (masked: a calm voice over a grieving face) while the true cue is clear.

So the truth rule is "follow the clear cue": an oracle that knows the patterns (:func:`oracle_predict`)
gets conflicts right (tested, and reported per cell), and so does a model trained on the visual cue
alone for video-aligned items. Subsets (CA-MER): *consistent* (both cues clear and equal to the label),
*video_aligned* (the visual cue is the clear, true one), *audio_aligned* (the audio cue is). Training
mixes a share ``p`` of conflicts (half of each kind) into consistent clips; validation and test hold
``--val-size`` / ``--test-size`` items per subset. The gap is ``acc(audio_aligned) - acc(video_aligned)``,
the conflict-mean ``(acc(video_aligned) + acc(audio_aligned)) / 2``.

**Generator history.** v1 (this file): constants fixed from the oracle and the visual-only control alone,
before any method was compared; any later change bumps :data:`GENERATOR_VERSION` with its reason here.
(benchmarks/bias_experiment.py, which this replaces, had no conflicts in training and no right answer
on its conflicts.)

**Methods** (tiny preset, same steps, batch, learning rate and rank; each seed shares data and backbone
across methods): ``lora``; ``lora+ar``: the LoRA model with AR chosen on validation exactly as for
``mose+ar`` (the comparator that isolates MoSE's own contribution); ``mose`` (the configuration under test:
:data:`MOSE_DEFAULT`); ``mose+ar``: that model with AR whose options, threshold and fraction are chosen on
validation by :func:`mosear.model.calibrate.choose_setting`; ablations switch one component off
(:data:`ABLATIONS`); AR ablations calibrate restricted option sets on the same trained model.
The criterion (stated in docs/model.md before the first run) is checked by :func:`criterion`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosear.atomic import atomic_write, atomic_write_json  # noqa: E402
from mosear.evaluate.intervals import seed_interval  # noqa: E402
from mosear.model.ar import set_attention_mode  # noqa: E402
from mosear.model.calibrate import accuracy_se, choose_setting  # noqa: E402
from mosear.model.modality import AUDIO, TEXT, VISUAL  # noqa: E402

GENERATOR_VERSION = 1
CLASSES = ("happy", "sad", "angry", "neutral")
SUBSETS = ("consistent", "video_aligned", "audio_aligned")
METRICS = ("consistent", "video_aligned", "audio_aligned", "gap", "conflict_mean")
INSTRUCTION = "Please determine which emotion label in the video represents: happy, sad, angry, neutral."


@dataclass(frozen=True)
class TaskConstants:
    """Every constant of the generator (version :data:`GENERATOR_VERSION`); see the module docstring."""

    face_share: float = 0.25  # share of visual tokens that carry the face
    ref_visual_tokens: int = 16  # token count at which visual_contrast is the per-token contrast
    ref_audio_tokens: int = 4
    strength_jitter: float = 0.2  # clear cue strength ~ U[1 - j, 1 + j]
    misleading_strength: float = 0.3  # the masked, misleading cue of a conflict
    visual_contrast: float = 0.6  # default cue strengths (the p-sweep's setting)
    audio_snr: float = 1.5


TASK = TaskConstants()
# cue-strength settings (visual contrast, audio SNR) of the strength sweep; the first is TASK's default
STRENGTHS = ((TASK.visual_contrast, TASK.audio_snr), (0.4, 1.5), (0.9, 1.0))
P_GRID = (0.0, 0.05, 0.1, 0.25)
TOKENS = ((16, 4), (259, 1))


@dataclass(frozen=True)
class Cell:
    p: float
    visual_contrast: float
    audio_snr: float
    visual_tokens: int
    audio_tokens: int

    @property
    def name(self) -> str:
        return (f"p={self.p:g} v={self.visual_contrast:g} a={self.audio_snr:g} "
                f"tok={self.visual_tokens}:{self.audio_tokens}")


class Generator:
    """Draws clips as tower features (``[n, N_v, D]``, ``[n, N_a, D]``) with labels; the class patterns
    are fixed by ``seed`` (the generator seed), the clips by the ``rng`` passed to :meth:`split`."""

    def __init__(self, seed: int, dim: int, task: TaskConstants = TASK) -> None:
        g = np.random.default_rng([GENERATOR_VERSION, seed])
        self.task, self.dim, self.seed = task, dim, seed
        pv = g.standard_normal((len(CLASSES), dim))
        pa = g.standard_normal((len(CLASSES), dim))
        self.visual = (pv / np.linalg.norm(pv, axis=1, keepdims=True)).astype(np.float32)
        self.audio = (pa / np.linalg.norm(pa, axis=1, keepdims=True)).astype(np.float32)

    def amplitudes(self, cell: Cell) -> tuple[float, float, int]:
        """Per-token cue amplitudes (visual, audio) and face tokens per clip for ``cell``."""
        t = self.task
        n_face = max(1, round(t.face_share * cell.visual_tokens))
        n_face_ref = max(1, round(t.face_share * t.ref_visual_tokens))
        av = cell.visual_contrast * math.sqrt(self.dim) * math.sqrt(n_face_ref / n_face)
        aa = cell.audio_snr * math.sqrt(self.dim) * math.sqrt(t.ref_audio_tokens / cell.audio_tokens)
        return av, aa, n_face

    def split(self, cell: Cell, kinds: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Clips of the given kinds (0 consistent, 1 video-aligned, 2 audio-aligned): features and labels."""
        n, C, t = len(kinds), len(CLASSES), self.task
        label = rng.integers(C, size=n)
        other = (label + rng.integers(1, C, size=n)) % C
        v_cls = np.where(kinds == 2, other, label)
        a_cls = np.where(kinds == 1, other, label)
        jit = lambda: rng.uniform(1 - t.strength_jitter, 1 + t.strength_jitter, size=n)  # noqa: E731
        v_str = np.where(kinds == 2, t.misleading_strength, jit())
        a_str = np.where(kinds == 1, t.misleading_strength, jit())
        av, aa, n_face = self.amplitudes(cell)
        vis = rng.standard_normal((n, cell.visual_tokens, self.dim), dtype=np.float32)
        aud = rng.standard_normal((n, cell.audio_tokens, self.dim), dtype=np.float32)
        face = np.argsort(rng.random((n, cell.visual_tokens)), axis=1)[:, :n_face]  # random positions
        vis[np.arange(n)[:, None], face] += (av * v_str)[:, None, None] * self.visual[v_cls][:, None, :]
        aud += (aa * a_str)[:, None, None] * self.audio[a_cls][:, None, :]
        return {"visual": vis, "audio": aud, "label": label, "kind": kinds}


def oracle_predict(gen: Generator, cell: Cell, data: dict[str, np.ndarray]) -> np.ndarray:
    """The truth rule with the patterns known: each cue's class and strength from its projections, then
    the class of the cue that is clearer relative to its usual strength."""
    av, aa, n_face = gen.amplitudes(cell)
    zv = np.einsum("ntd,cd->nc", data["visual"], gen.visual) / (av * n_face)  # ≈ strength on the cue's class
    za = np.einsum("ntd,cd->nc", data["audio"], gen.audio) / (aa * cell.audio_tokens)
    return np.where(zv.max(1) > za.max(1), zv.argmax(1), za.argmax(1))


def kinds_for(n: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` training kinds with ``round(p·n)`` conflicts, half video-aligned, half audio-aligned."""
    n_conf = int(round(p * n))
    k = np.zeros(n, dtype=np.int64)
    k[:n_conf] = 1
    k[: n_conf // 2] = 2
    return rng.permutation(k)


# --------------------------------------------------------------------------------------------------- methods
# the MoSE configuration under test (components: symmetry breaking, reliance weights on experts + projectors)
MOSE_DEFAULT = dict(num_experts=2, balance_loss_weight=0.01, dynamic_weights=True, weight_rule="ogm",
                    reliance_alpha=0.5, reliance_every=4, scale_projectors=True, expert_init_std=0.02,
                    gate_init_std=0.0)
ABLATIONS = {
    "mose -symmetry": dict(expert_init_std=0.0),
    "mose -reliance": dict(dynamic_weights=False),
    "mose -projector": dict(scale_projectors=False),
    "mose rule=attention": dict(weight_rule="attention"),
    "mose (main: update rule, B=0)": dict(weight_rule="update", expert_init_std=0.0),
    "mose +GE": dict(ge_noise=True),  # added after the first full grid (docs/model.md): OGM's GE term
}
# AR calibration: options x thresholds x fractions (f = 0, no AR, is always a candidate)
AR_OPTIONS = [dict(share=s, direction=d) for s in ("mass", "token") for d in ("audio", "both")]
AR_ABLATIONS = {"mose+ar (mass, audio only)": [dict(share="mass", direction="audio")],
                "mose+ar (token share)": [dict(share="token", direction="audio")],
                "mose+ar (both directions)": [dict(share="mass", direction="both")]}
THRESHOLDS = (0.5, 0.7, 0.9)
FRACTIONS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Settings:
    steps: int = 60  # a step's cost is op dispatch, nearly independent of the batch: few large steps
    batch_size: int = 32
    lr: float = 1e-2
    rank: int = 8
    train_size: int = 1024
    val_size: int = 64
    test_size: int = 128


class LabModel:
    """A tiny MoSEAR model driven from tower features: projectors -> prompt embeddings -> LM (with its
    adapters, AR and the modality context), scored on the classes' first tokens at the last position."""

    def __init__(self, adapter: str, mose: dict, cell: Cell, seed: int, rank: int) -> None:
        from mosear.config import load_config
        from mosear.model import ModelConfig, build_model

        cfg = load_config(ModelConfig, overrides={
            "adapter": adapter, "seed": seed, "visual_tokens": cell.visual_tokens, "audio_tokens": cell.audio_tokens,
            "instruction": INSTRUCTION, "lora": {"r": rank, "alpha": 2.0 * rank, "dropout": 0.0},
            "mose": mose if adapter == "mose" else {},
        })
        self.cfg = cfg
        torch.manual_seed(seed)  # adapter init (peft draws from the global generator)
        self.model = build_model(cfg)
        m = self.model
        # a short prompt (the lab's cost is ~ its length): <s> Video: V×N_v Audio: A×N_a Emotion:
        tok = m.prompts
        pieces = [(TEXT, [m.tokenizer.bos_token_id]), (TEXT, tok._ids("Video:")), (VISUAL, [tok.pad_id] * cell.visual_tokens),
                  (TEXT, tok._ids(" Audio:")), (AUDIO, [tok.pad_id] * cell.audio_tokens), (TEXT, tok._ids(" Emotion:"))]
        ids = [i for _, t in pieces for i in t]
        mods = [mod for mod, t in pieces for _ in t]
        self.ids = torch.tensor(ids)
        self.mods = torch.tensor(mods)
        self.class_ids = torch.tensor([m.prompts._ids(" " + c)[0] for c in CLASSES])
        with torch.no_grad():
            self.text_emb = m.base_lm.get_input_embeddings()(self.ids)  # [L, H]
        self.v_slice = torch.nonzero(self.mods == VISUAL).squeeze(1)
        self.a_slice = torch.nonzero(self.mods == AUDIO).squeeze(1)
        tuner = getattr(m.lm, "base_model", None)
        self.tuner = tuner if adapter == "mose" else None

    def embed(self, vis: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        from mosear.model.mose.reliance import scale_projector_gradient

        m = self.model
        pv, pa = m.visual.projector(vis), m.audio.projector(aud)
        if self.tuner is not None and self.cfg.mose.scale_projectors:
            pv = scale_projector_gradient(pv, self.tuner, VISUAL)
            pa = scale_projector_gradient(pa, self.tuner, AUDIO)
        emb = self.text_emb.unsqueeze(0).expand(vis.shape[0], -1, -1).clone()
        emb[:, self.v_slice] = pv
        emb[:, self.a_slice] = pa
        return emb

    def lm_call(self, emb: torch.Tensor, keep_last: bool = True) -> torch.Tensor:
        m = self.model
        B, L = emb.shape[:2]
        mods = self.mods.unsqueeze(0).expand(B, -1)
        kw = {"logits_to_keep": 1} if keep_last else {}
        with m.modality_context.use(mods):
            out = m.base_lm(inputs_embeds=emb, attention_mask=torch.ones(B, L, dtype=torch.long),
                            position_ids=torch.arange(L).unsqueeze(0).expand(B, -1), use_cache=False, **kw)
        return out.logits

    def class_logits(self, vis: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        return self.lm_call(self.embed(vis, aud))[:, -1].index_select(1, self.class_ids)  # [B, C]

    @torch.no_grad()
    def predict(self, data: dict[str, torch.Tensor], chunk: int = 192) -> np.ndarray:
        self.model.eval()
        out = [self.class_logits(data["visual"][i: i + chunk], data["audio"][i: i + chunk]).argmax(-1)
               for i in range(0, len(data["label"]), chunk)]
        return torch.cat(out).numpy()

    def measure_reliance(self, vis: torch.Tensor, aud: torch.Tensor, label: torch.Tensor) -> None:
        """Set the reliance weights from this batch (no gradient; formulas in mosear.model.mose.reliance)."""
        from mosear.model.mose import reliance

        m, mo = self.model, self.cfg.mose
        with torch.no_grad():
            emb = self.embed(vis, aud)
            B, L = emb.shape[:2]
            mods = self.mods.unsqueeze(0).expand(B, -1)
            if mo.weight_rule == "ogm":
                s = reliance.unimodal_scores(
                    m.base_lm, m.modality_context, emb, torch.ones(B, L, dtype=torch.long), mods,
                    torch.arange(L).unsqueeze(0).expand(B, -1), torch.full((B,), L - 1), label, self.class_ids)
                w = reliance.ogm_weights(s, mo.reliance_alpha)
            else:
                ctl = set_attention_mode(m, "monitor")
                self.lm_call(emb)
                share = ctl.shares(on_device=True).mean(0)
                counts = torch.tensor([0.0, len(self.v_slice), len(self.a_slice)])
                w = reliance.attention_weights(share, counts, mo.reliance_alpha)
                set_attention_mode(m, "sdpa")
        self.tuner.set_modality_weights(w)

    def train(self, data: dict[str, torch.Tensor], st: Settings, seed: int) -> dict[str, float]:
        m = self.model
        g = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator().manual_seed(seed + 1)  # its own stream: the batches stay the methods'
        opt = torch.optim.AdamW(list(m.adapter_parameters()), lr=st.lr, weight_decay=0.0)
        reliance = self.tuner is not None and self.tuner.uses_reliance_weights()
        every = self.cfg.mose.reliance_every
        n = len(data["label"])
        for step in range(st.steps):
            idx = torch.randint(n, (st.batch_size,), generator=g)
            vis, aud, lab = data["visual"][idx], data["audio"][idx], data["label"][idx]
            if reliance and step % every == 0:
                self.measure_reliance(vis, aud, lab)
            m.train()
            logits = self.class_logits(vis, aud)
            loss = torch.nn.functional.cross_entropy(logits, lab)
            if self.tuner is not None:
                bal = self.tuner.balance_loss()
                if bal is not None:
                    loss = loss + self.cfg.mose.balance_loss_weight * bal
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.tuner is not None:
                self.tuner.update_modality_weights()  # the update-size rule's measurements (explicit)
                m.apply_gradient_noise(generator=noise_gen)  # OGM-GE's noise; a no-op unless mose.ge_noise
            opt.step()
        m.eval()
        return {"train_loss": float(loss.detach())}


# ------------------------------------------------------------------------------------------------- one run
def to_torch(d: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in d.items()}


def subset_metrics(pred: np.ndarray, data: dict[str, np.ndarray]) -> dict[str, float]:
    hit = pred == data["label"]
    acc = {s: float(hit[data["kind"] == i].mean()) for i, s in enumerate(SUBSETS)}
    acc["gap"] = acc["audio_aligned"] - acc["video_aligned"]
    acc["conflict_mean"] = (acc["audio_aligned"] + acc["video_aligned"]) / 2
    return acc


def balanced_kinds(n_per: int) -> np.ndarray:
    return np.repeat(np.arange(3), n_per)


def calibrate(lab: LabModel, val: dict[str, torch.Tensor], val_np: dict[str, np.ndarray]) -> list[dict]:
    """Validation accuracies of every AR setting (row 0: no AR), each row tagged with its options."""
    pred0 = lab.predict(val)
    rows = [{"threshold": 1.0, "fraction": 0.0, "share": "mass", "direction": "audio",
             **subset_metrics(pred0, val_np)}]
    for opt in AR_OPTIONS:
        for tau in THRESHOLDS:
            for f in FRACTIONS:
                set_attention_mode(lab.model, "ar", threshold=tau, fraction=f, **opt)
                rows.append({"threshold": tau, "fraction": f, **opt, **subset_metrics(lab.predict(val), val_np)})
    set_attention_mode(lab.model, "sdpa")
    hits = (pred0 == val_np["label"])[val_np["kind"] == 0]
    rows[0]["consistent_se"] = accuracy_se([int(h) for h in hits])  # the protocol's bootstrap SE
    return rows


def choose(rows: list[dict], options: list[dict] | None) -> dict:
    """:func:`choose_setting` over the rows whose options are in ``options`` (None: all)."""
    keep = [rows[0]] + [r for r in rows[1:] if options is None or
                        {"share": r["share"], "direction": r["direction"]} in options]
    return choose_setting(keep, rows[0]["consistent_se"])


def run_task(cell: Cell, seed: int, gen_seed: int, st: Settings, ablations: bool, control: bool) -> list[dict]:
    """All methods for one (cell, seed): the same data and backbone for each. Returns one row per method."""
    torch.set_num_threads(1)
    t_task = time.time()
    probe = LabModel("lora", {}, cell, seed, st.rank)
    dim = probe.model.visual.projector[0].in_features
    gen = Generator(gen_seed, dim)
    rng = np.random.default_rng([gen_seed, seed, 17])
    train_np = gen.split(cell, kinds_for(st.train_size, cell.p, rng), rng)
    val_np = gen.split(cell, balanced_kinds(st.val_size), rng)
    test_np = gen.split(cell, balanced_kinds(st.test_size), rng)
    train, val, test = to_torch(train_np), to_torch(val_np), to_torch(test_np)
    base = {"cell": asdict(cell), "cell_name": cell.name, "seed": seed, "generator_seed": gen_seed,
            "generator_version": GENERATOR_VERSION}
    rows = [{**base, "method": "oracle (truth rule)", **subset_metrics(oracle_predict(gen, cell, test_np), test_np),
             "elapsed_s": 0.0}]
    methods: list[tuple[str, str, dict]] = [("lora", "lora", {}), ("mose", "mose", MOSE_DEFAULT)]
    if ablations:
        methods += [(name, "mose", {**MOSE_DEFAULT, **over}) for name, over in ABLATIONS.items()]
    if control:
        methods.append(("control: lora, visual cue only", "lora", {}))
    for name, adapter, mose in methods:
        t0 = time.time()
        lab = probe if name == "lora" else LabModel(adapter, mose, cell, seed, st.rank)
        data = train
        if name.startswith("control"):  # the audio cue carries no label: is the visual cue learnable?
            ctrl = dict(train_np)
            ctrl["audio"] = gen.split(cell, np.zeros(st.train_size, dtype=np.int64), rng)["audio"]
            data = to_torch(ctrl)
        snap = lab.tuner.expert_snapshot() if lab.tuner is not None else None
        info = lab.train(data, st, seed)
        if lab.tuner is not None:
            info["expert_divergence"] = lab.tuner.expert_divergence(snap)
            w = lab.tuner.modality_weights().tolist()
            info["w_visual"], info["w_audio"] = w[VISUAL], w[AUDIO]
        train_s = time.time() - t0
        rows.append({**base, "method": name, **subset_metrics(lab.predict(test), test_np), **info,
                     "elapsed_s": train_s})
        if name in ("lora", "mose"):  # AR calibrated on validation exactly alike for both trained methods
            t1 = time.time()
            cal = calibrate(lab, val, val_np)
            variants = ({"lora+ar": None} if name == "lora"
                        else {"mose+ar": None, **(AR_ABLATIONS if ablations else {})})
            for vname, opts in variants.items():
                best = choose(cal, opts)
                set_attention_mode(lab.model, "ar", threshold=best["threshold"], fraction=best["fraction"],
                                   share=best["share"], direction=best["direction"])
                rows.append({**base, "method": vname, **subset_metrics(lab.predict(test), test_np),
                             "ar": {k: best[k] for k in ("threshold", "fraction", "share", "direction")},
                             "val_conflict_mean": best["conflict_mean"], "elapsed_s": train_s + time.time() - t1})
                set_attention_mode(lab.model, "sdpa")
    for r in rows:
        r["task_s"] = time.time() - t_task
    return rows


# ------------------------------------------------------------------------------------------------ the grid
def grid(quick: bool) -> tuple[list[Cell], Cell]:
    """Cells of the study and the cell that also runs the ablations (fixed before the first run)."""
    (sv, sa), (nv, na) = STRENGTHS[0], TOKENS[0]
    main = Cell(0.1, sv, sa, nv, na)
    if quick:
        return [main, Cell(0.0, sv, sa, nv, na), Cell(0.1, sv, sa, *TOKENS[1])], main
    # the order the cells run in (a run cut short has the first ones whole): the shared cell, the p sweep,
    # the token ratio, the strength sweep
    cells = [main] + [Cell(p, sv, sa, nv, na) for p in P_GRID if p != main.p]
    cells += [Cell(0.1, sv, sa, v, a) for v, a in TOKENS[1:]]
    cells += [Cell(0.1, v, a, nv, na) for v, a in STRENGTHS[1:]]
    return cells, main


def aggregate(runs: list[dict]) -> list[dict]:
    """One record per (cell, method): mean and 95 % t-interval over seeds of each metric."""
    groups: dict[tuple, list[dict]] = {}
    seen = set()
    for r in runs:  # a (cell, method, seed) met twice (merged logs of overlapping runs) counts once
        key = (r["cell_name"], r["method"], r["seed"])
        if key not in seen:
            seen.add(key)
            groups.setdefault((r["cell_name"], r["method"]), []).append(r)
    out = []
    for (cell_name, method), rs in groups.items():
        rec = {"cell": rs[0]["cell"], "cell_name": cell_name, "method": method, "n_seeds": len(rs),
               "seeds": sorted(r["seed"] for r in rs), "generator_version": rs[0]["generator_version"],
               "generator_seed": rs[0]["generator_seed"], "elapsed_s": float(sum(r["elapsed_s"] for r in rs)),
               "metrics": {}}
        for m in METRICS:
            iv = seed_interval([r[m] for r in rs])
            rec["metrics"][m] = {"mean": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "n": iv.n}
        extra = {}
        for key in ("w_visual", "w_audio"):
            if key in rs[0]:
                iv = seed_interval([r[key] for r in rs])
                extra[key] = {"mean": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high}
        if rs[0].get("expert_divergence"):
            for mod in ("visual", "audio"):
                iv = seed_interval([r["expert_divergence"][mod] for r in rs])
                extra[f"expert_divergence_{mod}"] = {"mean": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high}
        if "ar" in rs[0]:
            extra["ar_settings"] = [r["ar"] for r in sorted(rs, key=lambda r: r["seed"])]
        if extra:
            rec["extra"] = extra
        out.append(rec)
    return out


def paired(runs: list[dict], cell_name: str, a: str, b: str, metric: str) -> dict[str, float]:
    """Mean and 95 % t-interval over seeds of ``metric(a) - metric(b)``, paired by seed (the two methods of a
    seed share data and backbone); ``n`` = seeds both methods ran."""
    by = {(r["method"], r["seed"]): r[metric] for r in runs if r["cell_name"] == cell_name}
    seeds = sorted({s for m, s in by if m == a} & {s for m, s in by if m == b})
    iv = seed_interval([by[(a, s)] - by[(b, s)] for s in seeds])
    return {"mean": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "n": len(seeds)}


def criterion(records: list[dict], runs: list[dict] | None = None) -> list[dict]:
    """The stated criterion per cell (docs/model.md). Eligible: LoRA's gap >= 0.5 (a bias to remove).

    *AR's effect on MoSE* (the criterion as first stated, kept for comparison): MoSE+AR's gap <= half of
    LoRA's with the seed intervals apart, conflict-mean higher with the intervals apart, consistent accuracy
    at most 1 point below LoRA's (``gap_halved``, ``conflict_mean_up``, ``consistent_kept``, ``met_vs_lora``).

    *MoSE's own contribution* (``met``; the comparator that does not credit MoSE with AR's effect): against
    LoRA+AR, AR calibrated on validation alike, paired by seed: the conflict-mean difference MoSE+AR - LoRA+AR
    has its 95 % interval above 0 and the consistent difference's mean is >= -0.01 (``vs_lora_ar``: the paired
    differences of gap, conflict-mean and consistent, each with its interval; needs ``runs``).
    """
    by = {(r["cell_name"], r["method"]): r["metrics"] for r in records}
    out = []
    for (cell_name, method), lora in by.items():
        ar = by.get((cell_name, "mose+ar"))
        if method != "lora" or ar is None:
            continue
        row = {"cell_name": cell_name, "lora_gap": lora["gap"]["mean"], "ar_gap": ar["gap"]["mean"],
               "eligible": lora["gap"]["mean"] >= 0.5}
        row["gap_halved"] = ar["gap"]["mean"] <= 0.5 * lora["gap"]["mean"] and ar["gap"]["ci_high"] < lora["gap"]["ci_low"]
        row["conflict_mean_up"] = ar["conflict_mean"]["ci_low"] > lora["conflict_mean"]["ci_high"]
        row["consistent_kept"] = ar["consistent"]["mean"] >= lora["consistent"]["mean"] - 0.01
        row["met_vs_lora"] = row["eligible"] and row["gap_halved"] and row["conflict_mean_up"] and row["consistent_kept"]
        row["met"] = False
        if runs is not None and (cell_name, "lora+ar") in by:
            d = {m: paired(runs, cell_name, "mose+ar", "lora+ar", m) for m in ("gap", "conflict_mean", "consistent")}
            row["vs_lora_ar"] = d
            row["lora_ar_gap"] = by[(cell_name, "lora+ar")]["gap"]["mean"]
            row["met"] = bool(row["eligible"] and d["conflict_mean"]["ci_low"] > 0
                              and d["consistent"]["mean"] >= -0.01)
        out.append(row)
    return out


def criterion_table(crit: list[dict]) -> str:
    """The criterion per cell as a markdown table: MoSE+AR against LoRA (AR's effect) and against LoRA+AR
    (MoSE's own: paired differences over seeds with 95 % intervals)."""
    lines = ["| cell | LoRA gap | LoRA+AR gap | MoSE+AR gap | met vs LoRA | MoSE+AR - LoRA+AR: gap | conflict-mean "
             "| consistent | met vs LoRA+AR |", "|---|---|---|---|---|---|---|---|---|"]
    for c in crit:
        d = c.get("vs_lora_ar") or {}
        cells = [fmt(d[m]) if m in d else "n/a" for m in ("gap", "conflict_mean", "consistent")]
        lines.append(f"| {c['cell_name']} | {c['lora_gap']:.3f} | {c.get('lora_ar_gap', float('nan')):.3f} | "
                     f"{c['ar_gap']:.3f} | {'MET' if c['met_vs_lora'] else 'not met'} | " + " | ".join(cells)
                     + f" | {'MET' if c['met'] else 'not met'} |")
    return "\n".join(lines)


def fmt(m: dict) -> str:
    if m["ci_low"] != m["ci_low"]:  # NaN: one seed
        return f"{m['mean']:.3f}"
    return f"{m['mean']:.3f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"


def table(records: list[dict], markdown: bool = True) -> str:
    cols = ("consistent", "video_aligned", "audio_aligned", "gap", "conflict_mean")
    lines = ["| cell | method | n | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for r in sorted(records, key=lambda r: (r["cell_name"], r["method"])):
        lines.append(f"| {r['cell_name']} | {r['method']} | {r['n_seeds']} | "
                     + " | ".join(fmt(r["metrics"][c]) for c in cols) + " |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({r["cell_name"] for r in records})
    methods = ["lora", "lora+ar", "mose", "mose+ar"]
    by = {(r["cell_name"], r["method"]): r["metrics"] for r in records}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("gap", "conflict_mean")):
        for i, meth in enumerate(methods):
            xs, ys, lo, hi = [], [], [], []
            for j, c in enumerate(cells):
                m = by.get((c, meth))
                if m is None:
                    continue
                xs.append(j + 0.2 * (i - 1.5))
                ys.append(m[metric]["mean"])
                lo.append(m[metric]["mean"] - np.nan_to_num(m[metric]["ci_low"], nan=m[metric]["mean"]))
                hi.append(np.nan_to_num(m[metric]["ci_high"], nan=m[metric]["mean"]) - m[metric]["mean"])
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=meth)
        ax.set_xticks(range(len(cells)), [c.replace(" ", "\n") for c in cells], fontsize=7)
        ax.set_ylabel(metric + " (95 % CI over seeds)")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    fig.suptitle(f"bias lab (generator v{GENERATOR_VERSION}): audio-aligned minus video-aligned accuracy; conflict-mean")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 cells, 5 seeds (<= 10 min on 2 cores)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 10; --quick 5)")
    ap.add_argument("--generator-seed", type=int, default=0, help="draws the task's class patterns")
    ap.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--workers", type=int, default=2, help="Ray tasks at a time")
    ap.add_argument("--steps", type=int, default=Settings.steps)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    ap.add_argument("--name", default="bias_lab", help="output file stem")
    ap.add_argument("--cells", default=None,
                    help="comma-separated indices into the grid's cell list (run order) to run only those")
    ap.add_argument("--from-runs", type=Path, nargs="+", default=None,
                    help="aggregate existing runs logs (<name>.runs.jsonl) instead of running")
    args = ap.parse_args(argv)
    import json

    st = replace(Settings(), steps=args.steps)
    seeds = args.seeds or (5 if args.quick else 10)
    cells, main_cell = grid(args.quick)
    if args.cells:
        cells = [cells[int(i)] for i in args.cells.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / f"{args.name}.runs.jsonl"
    t0 = time.time()
    if args.from_runs:
        runs = [json.loads(line) for f in args.from_runs for line in f.read_text().splitlines() if line.strip()]
    else:
        from tqdm import tqdm

        from mosear.ray_utils import init_ray

        ray = init_ray(num_cpus=args.workers)
        task = ray.remote(num_cpus=1)(run_task)
        jobs = [task.remote(c, s, args.generator_seed, st, c == main_cell, c == main_cell or args.quick)
                for c in cells for s in range(args.first_seed, args.first_seed + seeds)]  # cell by cell: a cut-short run has whole cells
        runs = []
        log_path.unlink(missing_ok=True)
        with tqdm(total=len(jobs), desc="bias lab (cell x seed)", file=sys.stderr) as bar, \
                open(log_path, "a") as log:  # a progress log; the result is the JSON written at the end
            pending = list(jobs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                rows = ray.get(done[0])
                runs += rows
                log.write("".join(json.dumps(r) + "\n" for r in rows))
                log.flush()
                bar.update(1)
    records = aggregate(runs)
    crit = criterion(records, runs)
    elapsed = time.time() - t0
    for r in records:
        r["study_elapsed_s"] = elapsed
    result = {"schema": "mosear.bias_lab/1", "generator_version": GENERATOR_VERSION,
              "generator_seed": args.generator_seed, "task": asdict(TASK), "settings": asdict(st),
              "mose_default": MOSE_DEFAULT, "quick": args.quick, "seeds_per_cell": seeds,
              "command": " ".join(["benchmarks/bias_lab.py", *(argv if argv is not None else sys.argv[1:])]),
              "elapsed_s": elapsed, "load_avg": list(os.getloadavg()), "cpus": os.cpu_count(),
              "records": records, "criterion": crit, "runs": runs}
    atomic_write_json(args.out / f"{args.name}.json", result, indent=1)
    plot(records, args.out / f"{args.name}.png")
    print(table(records))
    print()
    print(criterion_table(crit))
    print(f"\n{len(runs)} rows, {elapsed:.0f}s; wrote {args.out / (args.name + '.json')} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
