"""Train the tokenizer loadgen ships (``loadgen/data/tokenizer.json``): a byte-level BPE, no download.

Usage: python examples/train_tokenizer.py [OUT]   (OUT defaults to loadgen/data/tokenizer.json)

It learns 4,096 tokens from text that ships with every Python: the long documentation strings of
``pydoc_data.topics`` (help() on keywords and topics, about 460 KB of English prose and code). The corpus is read
in a fixed order and the trainer breaks ties the same way each time, so the same file comes out on every run with
the same ``tokenizers`` version. The example LLM pipeline (examples/llm_repository) tokenizes with it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from pydoc_data.topics import topics

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 4096
END_OF_TEXT = "<|endoftext|>"  # id 0, the only special token
OUT = Path(__file__).resolve().parent.parent / "loadgen" / "data" / "tokenizer.json"


def train(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE (GPT-2's pre-tokenization and decoder) trained on pydoc's topics."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte has a token: any text encodes
        show_progress=False,
    )
    tokenizer.train_from_iterator((topics[name] for name in sorted(topics)), trainer)
    return tokenizer


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    tokenizer = train()
    tokenizer.save(str(out))
    print(f"{out}: {tokenizer.get_vocab_size()} tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
