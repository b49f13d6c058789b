"""The tokens the example "LLM" streams: each decodes alone to a space and ASCII letters (" the", " value") and
encodes back to itself alone, so a stream of them, decoded token by token and joined, re-encodes to exactly as
many tokens as were streamed (the byte-level pre-tokenizer splits the text at each space)."""

from __future__ import annotations

import re

from tokenizers import Tokenizer

WORD = re.compile(r" [A-Za-z]+")


def streamable_ids(tokenizer: Tokenizer) -> list[int]:
    """The ids of the tokenizer's vocabulary that round-trip alone as one space-led word, in id order."""
    ids = []
    for token_id in range(tokenizer.get_vocab_size()):
        text = tokenizer.decode([token_id])
        if WORD.fullmatch(text) and tokenizer.encode(text).ids == [token_id]:
            ids.append(token_id)
    return ids
