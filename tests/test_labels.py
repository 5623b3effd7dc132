from mosear.labels import CANONICAL_LABELS, EMOTION_LLAMA_LABELS, MER2023_LABELS, canonical_label


def test_space_layout():
    assert CANONICAL_LABELS[:6] == MER2023_LABELS
    assert len(set(CANONICAL_LABELS)) == len(CANONICAL_LABELS) == 11
    assert set(EMOTION_LLAMA_LABELS) <= set(CANONICAL_LABELS)


def test_aliases():
    assert canonical_label("ANG") == "angry"
    assert canonical_label(" Fearful ") == "fear"
    assert canonical_label("surprised") == "surprise"
    assert canonical_label("bored") is None and canonical_label(None) is None
