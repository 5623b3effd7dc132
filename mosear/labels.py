"""The canonical emotion label space (DESIGN.md §3) and mapping of dataset labels into it.

MER2023's six classes come first, in MER2023's order, followed by the classes other datasets need.
Every dataset card (``datasets/<name>/card.md``) gives its own label map into these names; the
original label is always kept next to the canonical one.
"""

from __future__ import annotations

MER2023_LABELS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")
EXTRA_LABELS: tuple[str, ...] = ("fear", "disgust", "calm", "contempt", "doubt")
CANONICAL_LABELS: tuple[str, ...] = MER2023_LABELS + EXTRA_LABELS

# Emotion-LLaMA / MERR's nine training labels (FORMATS.md), all inside the canonical space.
EMOTION_LLAMA_LABELS: tuple[str, ...] = (
    "happy", "sad", "neutral", "angry", "worried", "surprise", "fear", "contempt", "doubt",
)

# Common spellings seen in corpora and in model outputs -> canonical name.
_ALIASES: dict[str, str] = {
    "neu": "neutral", "neutral": "neutral",
    "ang": "angry", "anger": "angry", "angry": "angry", "mad": "angry",
    "hap": "happy", "happiness": "happy", "happy": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "worried": "worried", "worry": "worried", "anxiety": "worried", "anxious": "worried",
    "sur": "surprise", "surprise": "surprise", "surprised": "surprise",
    "fea": "fear", "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "dis": "disgust", "disgust": "disgust", "disgusted": "disgust",
    "calm": "calm",
    "contempt": "contempt",
    "doubt": "doubt", "doubtful": "doubt",
}


def canonical_label(label: str | None) -> str | None:
    """Map a dataset or model label to the canonical space; ``None`` when it has no canonical name."""
    if label is None:
        return None
    key = str(label).strip().lower()
    return _ALIASES.get(key)


def label_index(label: str, labels: tuple[str, ...] = CANONICAL_LABELS) -> int:
    """Position of ``label`` in ``labels``; raises ``KeyError`` naming the label and the space."""
    try:
        return labels.index(label)
    except ValueError:
        raise KeyError(f"label {label!r} is not in {list(labels)}") from None
