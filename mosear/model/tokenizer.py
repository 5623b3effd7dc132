"""The tiny preset's tokenizer: a byte-level BPE trained in-process on a fixed text (deterministic).

No model hub is reachable, so the tiny preset cannot download a tokenizer. Byte-level BPE covers any
text (unknown words fall back to bytes); the merges come from the prompt template, the label names
and common reasoning words below, so labels and the instruction are a few tokens each.
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mosear.labels import CANONICAL_LABELS

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]

_CORPUS = [
    "[INST] <Video> <Audio> The person in the video says: {transcript}.",
    "Please determine which emotion label in the video represents: happy, sad, neutral, angry, worried, "
    "surprise, fear, contempt, doubt. [/INST]",
    "The emotion is happy. The emotion is sad. The emotion is neutral. The emotion is angry. ",
    "The voice sounds tense and loud, the face shows a frown. The facial expression and the tone of voice "
    "suggest that the person feels this emotion. The speaker smiles, the eyebrows are raised, the mouth is open.",
    "Kids are talking by the door. Dogs are sitting by the door. I think I have a doctor's appointment.",
    "It's eleven o'clock. That is exactly what happened. I'm on my way to the meeting. I wonder what this is about.",
    " ".join(CANONICAL_LABELS) + " calm disgust contempt doubt worried surprise fear",
]


@lru_cache(maxsize=1)
def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` (byte-level BPE, ``vocab_size`` at most) with <s>, </s>, <pad>.

    Cached: every tiny model of a process shares one tokenizer (it is deterministic and not mutated).
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
