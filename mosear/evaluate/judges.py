"""Judges for open-vocabulary scoring: emotion-word extraction and reasoning ratings.

A judge has two methods:

- ``emotions(text) -> set[str]``: the emotion words in ``text``, each replaced by its synonym group
  (so "furious" and "angry" are one element). Used by the CA-MER open-vocabulary set metric.
- ``rate_reasoning(prediction, reference) -> {"clue_overlap": s, "label_overlap": s}`` with scores on
  EMER's 1–10 scale.

:class:`LexiconJudge` (default) is offline and deterministic: words are matched against the shipped
synonym table (``synonyms.tsv``); a word preceded within two tokens by a negation ("not happy",
"never angry") is not counted, nor is any word of a sentence that calls a cue misleading ("The voice
sounds fearful, but that cue is misleading."; it names the emotion the answer rejects) or of quoted
speech ('The speaker says: "I would like a new alarm clock."': what was said, not the emotion judged),
so a mined item's own training caption scores precision = recall = 1 against its label. :class:`ChatJudge` asks any OpenAI-compatible chat-completions endpoint
(``{base_url}/chat/completions``) and groups the words it returns with the same table; it retries
connection failures, timeouts, HTTP 429 and 5xx with doubling delays and then raises
:class:`JudgeUnavailable` naming the URL and the last error. Its answers are kept in memory and,
given a ``cache_dir`` (``mosear eval``: ``{output}/judge_cache/``), on disk, one file per endpoint,
model and prompt, so the same reference is asked once across units and reruns. A reply that does not
hold what was asked (no JSON list of words, no scores) raises :class:`JudgeReplyError`: the item is
counted under ``judge_errors`` and left unscored, never scored as an empty set; such a reply is not
cached, so a rerun asks again.

**The reference set** of the CA-MER set metric (:func:`reference_set`) is the synonym group of the
item's label plus those of its optional open-vocabulary labels; only an item with neither (a
reasoning-only benchmark such as EMER) falls back to the emotion words of its reference text. Reasoning
text is never the reference when a label exists: a CA-MER-style reasoning names the misleading cue
("the voice sounds fearful, but ..."), and a set built from it would credit an answer that follows that
cue.

Our reconstruction (the lexicon judge's EMER ratings; marked so in docs/evaluation.md):
label_overlap = 1 + 9·F1(emotion groups of prediction, of reference);
clue_overlap  = 1 + 9·F1(content words of prediction, of reference), content words being lower-case
alphabetic tokens minus English stop words. Both are 1 when the prediction is empty.
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Protocol

from mosear.evaluate.chat import post_chat
from mosear.evaluate.config import JudgeConfig

__all__ = [
    "Judge",
    "JudgeUnavailable",
    "JudgeReplyError",
    "SynonymTable",
    "LexiconJudge",
    "ChatJudge",
    "make_judge",
    "set_precision_recall",
    "reference_set",
    "SCORING_VERSION",
]

log = logging.getLogger(__name__)

# Enters every unit's id (mosear/evaluate/units.py): bump it when how an item is judged changes, so
# prediction files judged the old way are not reused. 2: reference set from the label, judge errors.
# 3: the lexicon judge skips sentences calling a cue misleading; splices scored for preference.
SCORING_VERSION = 3

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")
# A sentence that calls a cue misleading names the emotion the answer rejects (mined captions end with one:
# mosear.mine.captions.build_reasoning's misleading_cue); its emotion words are not the answer's.
_DISCOUNTED = frozenset({"misleading", "misleads", "mislead", "deceptive", "deceiving"})
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”')  # quoted speech (a transcript) is what was said, not the judged emotion
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_NEGATIONS = frozenset({"not", "no", "never", "without", "nor", "hardly", "isn't", "wasn't", "doesn't",
                        "don't", "didn't", "aren't", "weren't", "isnt", "dont", "didnt"})


class JudgeUnavailable(RuntimeError):
    """The judge endpoint could not be reached or answered errors after all retries."""


class JudgeReplyError(ValueError):
    """The judge answered, but not in the form asked for (counted as a judge error, not scored)."""


class Judge(Protocol):
    name: str
    table: "SynonymTable"

    def emotions(self, text: str | None) -> set[str]: ...

    def rate_reasoning(self, prediction: str | None, reference: str | None) -> dict[str, float]: ...


class SynonymTable:
    """word → synonym group, read from a TSV (``group<TAB>word,word,...``; ``#`` comments)."""

    def __init__(self, groups: dict[str, str]):
        self.group_of = groups

    @classmethod
    def load(cls, path: str | Path | None = None) -> "SynonymTable":
        if path is None:
            text = resources.files("mosear.evaluate").joinpath("synonyms.tsv").read_text(encoding="utf-8")
            where = "mosear/evaluate/synonyms.tsv"
        else:
            text = Path(path).read_text(encoding="utf-8")
            where = str(path)
        groups: dict[str, str] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" not in line:
                raise ValueError(f"{where}:{lineno}: expected group<TAB>words, got {line!r}")
            group, words = line.split("\t", 1)
            group = group.strip().lower()
            for w in [group, *words.split(",")]:
                w = w.strip().lower()
                if not w:
                    continue
                if groups.get(w, group) != group:
                    raise ValueError(f"{where}:{lineno}: {w!r} is in both {groups[w]!r} and {group!r}")
                groups[w] = group
        return cls(groups)

    def group(self, word: str) -> str:
        """The group of ``word``; a word not in the table is its own group (lower-cased)."""
        w = word.strip().lower()
        return self.group_of.get(w, w)


def reference_set(table: SynonymTable, label: str | None, ov_labels: tuple[str, ...] | list[str] = (),
                  text: str | None = None, judge: "Judge | None" = None) -> tuple[set[str], str]:
    """``(G, source)``: the reference emotion groups of one item and where they came from.

    ``label`` and ``ov_labels`` (open-vocabulary labels), each mapped to its synonym group: source
    ``"label"``. Only when both are empty, the emotion words ``judge`` finds in ``text``: source
    ``"text"``; ``(set(), "none")`` when there is nothing to build it from.
    """
    words = [w for w in (label, *ov_labels) if isinstance(w, str) and w.strip()]
    if words:
        return {table.group(w) for w in words}, "label"
    if text and judge is not None:
        return judge.emotions(text), "text"
    return set(), "none"


def set_precision_recall(pred: set[str], ref: set[str]) -> tuple[float, float]:
    """CA-MER set metric for one item: (|G∩P|/|P|, |G∩P|/|G|); an empty P scores (0, 0)."""
    if not pred:
        return 0.0, 0.0
    hit = len(pred & ref)
    return hit / len(pred), (hit / len(ref) if ref else 0.0)


def _f1(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    hit = len(a & b)
    return 0.0 if hit == 0 else 2 * hit / (len(a) + len(b))


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


class LexiconJudge:
    """Offline judge: emotion words from the synonym table, negation-aware. Deterministic."""

    name = "lexicon"

    def __init__(self, table: SynonymTable | None = None):
        self.table = table or SynonymTable.load()

    def emotions(self, text: str | None) -> set[str]:
        if not text:
            return set()
        out: set[str] = set()
        for sentence in _SENTENCE.split(_QUOTED.sub(" ", text.lower())):
            tokens = _TOKEN.findall(sentence)
            if _DISCOUNTED & set(tokens):  # "the voice sounds fearful, but that cue is misleading": not the answer
                continue
            for i, tok in enumerate(tokens):
                group = self.table.group_of.get(tok)
                if group is None:
                    continue
                if any(t in _NEGATIONS for t in tokens[max(0, i - 2): i]):
                    continue
                out.add(group)
        return out

    def rate_reasoning(self, prediction: str | None, reference: str | None) -> dict[str, float]:
        stop = _stop_words()

        def content(t: str | None) -> set[str]:
            return {w for w in _TOKEN.findall((t or "").lower()) if w not in stop and len(w) > 2}

        return {
            "clue_overlap": 1.0 + 9.0 * _f1(content(prediction), content(reference)),
            "label_overlap": 1.0 + 9.0 * _f1(self.emotions(prediction), self.emotions(reference)),
        }


_EXTRACT_PROMPT = (
    "List every emotion word that the following text attributes to the person. Answer with a JSON "
    "array of lower-case English words only, [] if there is none.\n\nText: {text}"
)
_RATE_PROMPT = (
    "Compare a predicted explanation of a person's emotion with the reference explanation. Rate on a "
    "1-10 scale (10 = same) how far the predicted emotional clues overlap the reference clues, and how "
    "far the predicted emotion labels overlap the reference labels. Answer only with JSON "
    '{{"clue_overlap": <1-10>, "label_overlap": <1-10>}}.\n\nReference: {reference}\n\nPrediction: {prediction}'
)


class ChatJudge:
    """Judge backed by an OpenAI-compatible ``/chat/completions`` endpoint (temperature 0)."""

    name = "openai"

    def __init__(self, cfg: JudgeConfig, table: SynonymTable | None = None, cache_dir: str | Path | None = None):
        import httpx

        self.cfg = cfg
        # answers on disk, one file per (endpoint, model, prompt): units and reruns share them
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.table = table or SynonymTable.load(cfg.synonyms)
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        from mosear.secrets import api_key

        key = api_key(cfg.api_key_env, self.url, "judge.api_key_env")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=cfg.timeout_s, headers=headers)
        self._cache: dict[str, str] = {}

    def close(self) -> None:
        self._client.close()

    def _ask(self, prompt: str) -> str:
        """One chat completion; the reply's text. Retries, then :class:`JudgeUnavailable`."""
        if prompt in self._cache:
            return self._cache[prompt]
        disk = None
        if self.cache_dir is not None:
            import hashlib

            digest = hashlib.sha256(json.dumps([self.url, self.cfg.model, prompt]).encode()).hexdigest()[:32]
            disk = self.cache_dir / f"{digest}.json"
            if disk.is_file():
                self._cache[prompt] = json.loads(disk.read_text())["reply"]
                return self._cache[prompt]
        body = {"model": self.cfg.model, "temperature": 0,
                "messages": [{"role": "user", "content": prompt}]}
        text = post_chat(self._client, self.url, body, retries=self.cfg.retries, backoff_s=self.cfg.backoff_s,
                         what="judge endpoint", rejected=JudgeUnavailable, failed=JudgeUnavailable)
        self._cache[prompt] = text
        if disk is not None:
            from mosear.atomic import atomic_write_json

            atomic_write_json(disk, {"model": self.cfg.model, "prompt": prompt, "reply": text}, indent=None)
        return text

    @staticmethod
    def _json(text: str, want: type):
        """First JSON value of type ``want`` in a reply (models wrap JSON in prose or code fences)."""
        for m in re.finditer(r"[\[{]", text):
            try:
                val, _ = json.JSONDecoder().raw_decode(text[m.start():])
            except ValueError:
                continue
            if isinstance(val, want):
                return val
        return None

    def _reject(self, prompt: str, reply: str, wanted: str) -> JudgeReplyError:
        """Forget an unusable reply (memory and disk) so a rerun asks again; the error to raise."""
        self._cache.pop(prompt, None)
        if self.cache_dir is not None:
            import hashlib

            digest = hashlib.sha256(json.dumps([self.url, self.cfg.model, prompt]).encode()).hexdigest()[:32]
            (self.cache_dir / f"{digest}.json").unlink(missing_ok=True)
        return JudgeReplyError(f"judge {self.cfg.model} at {self.url} answered without {wanted}: {reply[:200]!r}")

    def emotions(self, text: str | None) -> set[str]:
        if not text:
            return set()
        prompt = _EXTRACT_PROMPT.format(text=text)
        reply = self._ask(prompt)
        words = self._json(reply, list)
        if words is None:
            raise self._reject(prompt, reply, "a JSON list of emotion words")
        return {self.table.group(str(w)) for w in words if str(w).strip()}

    def rate_reasoning(self, prediction: str | None, reference: str | None) -> dict[str, float]:
        if not prediction:
            return {"clue_overlap": 1.0, "label_overlap": 1.0}
        prompt = _RATE_PROMPT.format(reference=reference or "", prediction=prediction)
        reply = self._ask(prompt)
        got = self._json(reply, dict) or {}
        try:
            return {k: min(10.0, max(1.0, float(got[k]))) for k in ("clue_overlap", "label_overlap")}
        except (KeyError, TypeError, ValueError):
            raise self._reject(prompt, reply, "clue_overlap and label_overlap scores") from None


def make_judge(cfg: JudgeConfig, cache_dir: str | Path | None = None) -> Judge:
    """The judge ``cfg`` names; an endpoint judge keeps its answers in ``cache_dir`` when given."""
    table = SynonymTable.load(cfg.synonyms)
    if cfg.kind == "lexicon":
        return LexiconJudge(table)
    return ChatJudge(cfg, table, cache_dir)
