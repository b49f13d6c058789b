"""Data files that ship with loadgen: the tokenizer (examples/train_tokenizer.py makes it)."""
