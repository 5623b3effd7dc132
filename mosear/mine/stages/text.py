"""Text evidence from the transcript, when there is one: VADER sentiment and NRC emotion-lexicon shares."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from mosear.mine.stage import MiningStage

NRC_EMOTIONS = ("fear", "anger", "anticipation", "trust", "surprise", "positive", "negative",
                "sadness", "disgust", "joy")
# Layout: VADER (neg, neu, pos, compound) then NRC shares in NRC_EMOTIONS order, then matched-word count.
TEXT_DIM = 4 + len(NRC_EMOTIONS) + 1
_WORD = re.compile(r"[a-z']+")


class LexiconTextEvidence(MiningStage):
    """Adds ``text_feats`` (float32[15], NaN when no transcript) and ``text_desc`` (dict for captions)."""

    name = "text_lexicon"
    version = "vader-3.3+nrc-4.1"
    adds = ("text_feats", "text_desc")
    features = {"text_feats": "text"}

    def __init__(self) -> None:
        self._vader = None
        self._nrc = None

    def setup(self) -> None:
        from nrclex import NRCLex
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._vader = SentimentIntensityAnalyzer()
        self._nrc = NRCLex()

    def process(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self._vader is None:
            self.setup()
        text = (sample.get("meta", {}).get("transcript") or "").strip()
        if not text:
            sample["text_feats"] = np.full(TEXT_DIM, np.nan, np.float32)
            sample["text_desc"] = {"transcript": None}
            return sample
        v = self._vader.polarity_scores(text)
        # Tokenise ourselves: NRCLex's raw-text path needs TextBlob corpora (a download).
        self._nrc.load_token_list(_WORD.findall(text.lower()))
        freqs = self._nrc.affect_frequencies
        feats = [v["neg"], v["neu"], v["pos"], v["compound"]] + [freqs.get(e, 0.0) for e in NRC_EMOTIONS]
        feats.append(float(len(self._nrc.affect_list)))
        top = [e for e, s in sorted(freqs.items(), key=lambda kv: -kv[1]) if s > 0][:2]
        sample["text_feats"] = np.asarray(feats, np.float32)
        sample["text_desc"] = {"transcript": text, "compound": v["compound"], "nrc_top": top}
        return sample
