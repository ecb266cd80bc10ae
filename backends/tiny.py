"""Tiny tokenizers and language models built on the spot, offline, for tests and examples.

Nothing here downloads anything: tokenizers are trained in about a second on local text (a small
built-in corpus of harmless sentences by default) and models are random-weight
``LlamaForCausalLM``\\ s built from a config. Weight initialisation is seeded without touching the
caller's global torch RNG.

* :func:`train_tokenizer` -- a byte-level BPE tokenizer with ``<pad>``, ``<s>`` (prepended to every
  encoded text) and ``</s>``; decoding with ``skip_special_tokens=True`` round-trips any text that
  contains no special-token string exactly.
* :func:`word_tokenizer` -- a closed-vocabulary tokenizer, one token per whitespace-separated word:
  with ``max_new_tokens=1`` a policy over it has a completion space small enough to enumerate.
* :func:`tiny_llama` -- a random ~100k-parameter Llama sized to a tokenizer.

Examples:
    >>> tok = train_tokenizer(vocab_size=300)
    >>> text = "Tea, please: 2 cups!"
    >>> tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    True
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from gpo_core._validate import check_positive, check_positive_int, short

__all__ = ["HARMLESS_SENTENCES", "train_tokenizer", "word_tokenizer", "tiny_llama"]

#: A small corpus of harmless sentences to train tokenizers on.
HARMLESS_SENTENCES: tuple[str, ...] = (
    "The cat sat on the warm windowsill and watched the rain.",
    "Please write a short poem about a cup of green tea.",
    "How do I bake a loaf of bread without a bread machine?",
    "A quiet river runs past the old stone mill.",
    "Explain why the sky looks blue on a clear afternoon.",
    "What is a good name for a friendly golden retriever?",
    "The library opens at nine o'clock on Saturday mornings.",
    "Summarise the plot of a story about a lost kite.",
    "Could you suggest three vegetables that grow well in spring?",
    "She planted tulips along the garden path in October.",
    "Write a polite email asking to move our meeting to Tuesday.",
    "The train to the coast leaves every hour from platform two.",
    "Why do leaves change colour in the autumn?",
    "List five fun things to do on a rainy day indoors.",
    "My grandmother's soup recipe uses carrots, leeks and barley.",
    "How many planets are there in our solar system?",
    "Tell me a gentle bedtime story about a sleepy owl.",
    "The museum has a new exhibit on ancient maps and compasses.",
    "Give me tips for learning to play the piano as an adult.",
    "We walked along the beach and collected smooth grey pebbles.",
    "What is the difference between weather and climate?",
    "Translate 'good morning' into French, Spanish and German.",
    "The bakery on the corner sells warm cinnamon rolls.",
    "Describe a sunrise over the mountains in two sentences.",
    "How should I care for a small cactus on my desk?",
    "The children built a snowman with a carrot nose and a red scarf.",
    "Recommend a board game that a family of four can enjoy.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Can you help me plan a picnic for a sunny Sunday?",
    "The orchestra tuned their instruments before the concert began.",
    "What are some healthy snacks for a long hike?",
    "I would like to learn how to fold a paper crane.",
    "Bees visit flowers to collect nectar and pollen.",
    "Write a haiku about the first snow of winter.",
    "The kettle whistled, and he poured the tea into two mugs.",
    "Which birds can be seen in a city park in May?",
    "Thank you for the lovely dinner; the pie was delicious!",
    "Numbers like 3.14, 42 and 1,000 appear in many puzzles.",
    "Questions? Answers; lists: (one) [two] {three} - done.",
    "Caf\u00e9, na\u00efve and fa\u00e7ade are words with accents.",
)

_SPECIALS = ("<pad>", "<s>", "</s>")


def train_tokenizer(
    texts: Iterable[str] | None = None, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with ``<pad>``/``<s>``/``</s>`` specials (ids 0, 1, 2).

    Encoding prepends ``<s>`` (``add_special_tokens=False`` leaves it out); decoding with
    ``skip_special_tokens=True`` returns the text exactly (no prefix space, no clean-up), for any
    text without a special-token string in it, including characters never seen in training.

    Args:
        texts: training text; ``None`` uses :data:`HARMLESS_SENTENCES`.
        vocab_size: the vocabulary size, at least 259 (256 bytes and the 3 specials).

    Returns:
        A ``PreTrainedTokenizerFast`` with ``pad_token``, ``bos_token`` and ``eos_token`` set and no
        chat template.

    Raises:
        TypeError: if ``texts`` is a bare string or holds non-strings.
        ValueError: if ``vocab_size < 259``.
    """
    size = check_positive_int(vocab_size, "vocab_size")
    if size < 256 + len(_SPECIALS):
        raise ValueError(
            f"vocab_size must be >= {256 + len(_SPECIALS)} (256 byte symbols and the special "
            f"tokens {list(_SPECIALS)}), got {size}"
        )
    corpus = _text_list(HARMLESS_SENTENCES if texts is None else texts, "texts")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=list(_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        clean_up_tokenization_spaces=False,
    )


def word_tokenizer(
    words: Sequence[str],
    *,
    eos_token: str = "</s>",
    pad_token: str | None = None,
    bos_token: str | None = None,
) -> PreTrainedTokenizerFast:
    """A closed-vocabulary tokenizer: one token per word, specials first.

    Texts are split on whitespace and decoded by joining with single spaces, so texts made of the
    given words separated by single spaces round-trip exactly. Ids: the specials in the order
    eos, pad, bos (those given), then ``words`` in order. With only an eos token, a policy uses eos
    as its pad token (see :class:`backends.hf.HFPolicy`).

    Args:
        words: the distinct words of the vocabulary (no whitespace inside a word).
        eos_token: the end-of-sequence token.
        pad_token: an optional separate padding token.
        bos_token: an optional beginning-of-sequence token (not added when encoding).

    Returns:
        A ``PreTrainedTokenizerFast``; unknown words map to ``eos_token`` (avoid them).

    Raises:
        TypeError, ValueError: for an empty or repeated word list or words with whitespace.

    Examples:
        >>> tok = word_tokenizer(["a", "b"])
        >>> tok("b a")["input_ids"], tok.decode([2, 1, 0], skip_special_tokens=True)
        ([2, 1], 'b a')
    """
    vocab_words = _text_list(words, "words")
    specials = [s for s in (eos_token, pad_token, bos_token) if s is not None]
    if not vocab_words:
        raise ValueError("words must hold at least one word, got an empty sequence")
    bad = [w for w in vocab_words if not w or w.split() != [w]]
    if bad:
        raise ValueError(f"words must be non-empty and contain no whitespace, got {short(bad)}")
    all_tokens = specials + vocab_words
    if len(set(all_tokens)) != len(all_tokens):
        raise ValueError(
            f"words and special tokens must be distinct, got {short(all_tokens)}; remove repeats"
        )
    vocab = {t: i for i, t in enumerate(all_tokens)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=eos_token))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with one space
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        pad_token=pad_token,
        bos_token=bos_token,
        clean_up_tokenization_spaces=False,
    )


def tiny_llama(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    *,
    heads: int = 4,
    max_positions: int = 256,
    init_std: float = 0.02,
) -> LlamaForCausalLM:
    """A random-weight ``LlamaForCausalLM`` sized to ``tokenizer``, in eval mode.

    The weights depend only on the arguments: they are drawn from a forked torch RNG seeded with
    ``seed``, so the caller's global RNG is left as it was.

    Args:
        tokenizer: gives ``vocab_size`` (``len(tokenizer)``) and the pad/bos/eos ids.
        hidden_size: model width, a multiple of ``heads``.
        layers: number of transformer blocks.
        seed: weight-initialisation seed.
        heads: attention heads.
        max_positions: the context length (``max_position_embeddings``).
        init_std: standard deviation of the initial weights; larger values (e.g. 0.3) give
            output distributions far from uniform, which makes distribution tests discriminative.

    Returns:
        The model (float32, CPU, ``eval()``).

    Examples:
        >>> model = tiny_llama(word_tokenizer(["a", "b"]), hidden_size=16, layers=1, heads=2)
        >>> model.config.vocab_size, model.training
        (3, False)
    """
    hidden = check_positive_int(hidden_size, "hidden_size")
    n_heads = check_positive_int(heads, "heads")
    if hidden % n_heads:
        raise ValueError(
            f"hidden_size must be a multiple of heads, got hidden_size={hidden}, heads={n_heads}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {short(seed)}")
    if not hasattr(tokenizer, "__len__") or not hasattr(tokenizer, "eos_token_id"):
        raise TypeError(f"tokenizer must be a transformers tokenizer, got {short(tokenizer)}")
    config = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=check_positive_int(layers, "layers"),
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        intermediate_size=2 * hidden,
        vocab_size=len(tokenizer),
        max_position_embeddings=check_positive_int(max_positions, "max_positions"),
        initializer_range=check_positive(init_std, "init_std"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA RNGs are not touched
        model = LlamaForCausalLM(config)
    return model.eval()


def _text_list(texts: Iterable[str], name: str) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"{name} must be a sequence of strings, got the single string {short(texts)}; "
            "wrap it in a list"
        )
    try:
        out = list(texts)
    except TypeError as exc:
        raise TypeError(f"{name} must be an iterable of strings, got {short(texts)}") from exc
    bad = [t for t in out if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must hold only strings, got {short(bad)}")
    return out
