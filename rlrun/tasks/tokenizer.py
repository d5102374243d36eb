"""The character tokenizer of the tiny arithmetic model.

One token per printable ASCII character (32..126) and newline, plus four specials:
``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3 (vocabulary 100). Encoding with
``add_special_tokens=True`` prepends ``<bos>`` and never appends ``<eos>``, so the sequence a policy
sees is ``ids(prompt, True) + ids(response, False) + [eos]``; since every character is its own
token, ``ids(prompt + response) == ids(prompt) + ids(response)`` (concatenation-safe).

Save it in a directory of its own, never next to the model's qwen2 ``config.json``: transformers
5.x would then load a Qwen2 tokenizer that drops spaces (MEASURED.md, "Traps").
"""
from __future__ import annotations

from pathlib import Path

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARS = tuple(chr(code) for code in range(32, 127)) + ("\n",)


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` over :data:`SPECIALS` + :data:`CHARS`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # join characters with nothing between them
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(directory: str | Path) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` to ``directory``."""
    directory = Path(directory)
    if (directory / "config.json").exists():
        raise ValueError(
            f"{directory} holds a config.json: keep the tokenizer in its own directory"
        )
    build_tokenizer().save_pretrained(str(directory))
    return directory
