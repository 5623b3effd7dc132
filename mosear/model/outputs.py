"""Parsing a generated answer into a canonical label."""

from __future__ import annotations

import re

from mosear.labels import CANONICAL_LABELS, _ALIASES, canonical_label

_WORD = re.compile(r"[a-z]+")
_NEGATION = {"not", "no", "isn", "isnt", "never", "without", "nor"}
_CUE = re.compile(r"(?:emotion|label|feel(?:s|ing)?|is|answer)\s*(?:is|:|-)?\s*(?:\W{0,3})([a-z]+)")


def parse_label(text: str | None, labels: tuple[str, ...] = CANONICAL_LABELS) -> str | None:
    """The emotion label a generated answer states, as a canonical name, or ``None``.

    Order of evidence: a label right after a cue ("emotion is X", "label: X", "Answer: X"); else the first
    label word (or alias: "anger", "joy", "anxious", ...) in the text that is not negated by one of the
    two words before it ("not happy"). Only names in ``labels`` count.
    """
    if not text:
        return None
    low = text.lower()
    for m in _CUE.finditer(low):
        lab = canonical_label(m.group(1))
        if lab in labels:
            return lab
    words = _WORD.findall(low)
    for i, w in enumerate(words):
        if w in _ALIASES:
            lab = _ALIASES[w]
            if lab in labels and not (_NEGATION & set(words[max(0, i - 2): i])):
                return lab
    return None
