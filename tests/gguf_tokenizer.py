"""A transformers tokenizer built offline from a GGUF file's tokenizer and chat template (the embedded
SmolLM2's), with `gguf` and `tokenizers` alone: transformers' own GGUF loader needs torch, and nothing
here may download. SmolLM2's tokenizer is GPT-2-style byte-level BPE (`tokenizer.ggml.model = gpt2`)."""

from __future__ import annotations

from pathlib import Path


def _strings(field) -> list[str]:
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def _scalar(field):
    return field.parts[field.data[0]][0]


def tokenizer_from_gguf(path: Path):
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fields = gguf.GGUFReader(str(path)).fields
    if bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() != "gpt2":
        raise ValueError(f"{path}: only byte-level BPE (gpt2) tokenizers are built here")
    tokens = _strings(fields["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in _strings(fields["tokenizer.ggml.merges"])]
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False,
                                   byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    token_types = list(fields["tokenizer.ggml.token_type"].parts[-1])
    special = [t for t, kind in zip(tokens, token_types) if kind == 3]   # 3: control tokens
    bos, eos = (tokens[int(_scalar(fields[f"tokenizer.ggml.{k}_token_id"]))] for k in ("bos", "eos"))
    chat_template = bytes(fields["tokenizer.chat_template"].parts[-1]).decode("utf-8")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=eos,
                                   additional_special_tokens=special, chat_template=chat_template)
