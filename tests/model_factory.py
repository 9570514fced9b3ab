"""Build tiny (or benchmark-sized) random-weight Hugging Face checkpoints offline.

The test-suite and benchmarks must not touch the Hugging Face hub, yet the code under
test loads models exactly like real hub checkpoints (``AutoTokenizer.from_pretrained`` +
``AutoModelFor*.from_pretrained(..., use_safetensors=True)``).  Each builder here trains a
small tokenizer of the same family as the real checkpoint on :data:`CORPUS`, creates a
randomly initialised model (deterministic via ``seed``) and writes both to a directory
with ``save_pretrained`` so the result is indistinguishable, format-wise, from a download.

Tiny defaults keep each build fast; ``config_overrides`` lets benchmarks request real
architecture sizes (e.g. ``{"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072,
"vocab_size": 30522}`` for DistilBERT-base).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BartForSequenceClassification,
    BartTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DebertaV2Tokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertTokenizer,
    ElectraConfig,
    ElectraForSequenceClassification,
    ElectraTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PegasusConfig,
    PegasusForConditionalGeneration,
    PegasusTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaTokenizer,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)

__all__ = [
    "CORPUS",
    "build_all",
    "CHAT_TEMPLATES",
    "build_bart_nli",
    "build_chat_lm",
    "build_distilbert_classifier",
    "build_gpt2_lm",
    "build_seq2seq",
    "build_sequence_classifier",
    "build_t5",
    "sharpen",
]

CORPUS: list[str] = [
    # chat lines
    "Hi there! How are you doing today?",
    "I'm fine, thanks. What about you?",
    "Not bad at all, just a little tired after work.",
    "Do you want to grab a coffee at the café later?",
    "Sure, let's meet at five o'clock near the station.",
    "Can you help me reset my password, please?",
    "Of course. Click the link in the email we just sent you.",
    "What's the weather like tomorrow in Zürich?",
    "It should be sunny with a high of 24 degrees.",
    "Haha, that's hilarious 😂",
    "Good night and sweet dreams 🌙",
    "See you soon! 👋",
    "Who won the game last night?",
    "The home team scored twice in the final minutes.",
    "Tell me a joke about programmers.",
    "Why do programmers prefer dark mode? Because light attracts bugs.",
    # positive reviews
    "This movie was absolutely wonderful, I loved every minute of it.",
    "Great product, works exactly as described and arrived early.",
    "The staff were friendly and the food was delicious.",
    "Best purchase I have made this year, highly recommended!",
    "A beautiful, moving story with brilliant performances.",
    "I am very happy with the service ❤️",
    "Fantastic quality and a fair price. Five stars ⭐⭐⭐⭐⭐",
    "The hotel room was clean, quiet and very comfortable.",
    "What a pleasant surprise, the sequel is even better than the original.",
    # negative reviews
    "This was the worst film I have ever seen.",
    "Terrible customer support, nobody answered my emails.",
    "The battery died after two days and the screen cracked.",
    "I would not recommend this restaurant to anyone.",
    "Awful experience, the package arrived broken and late.",
    "The plot was boring, predictable and far too long.",
    "Disappointing and overpriced, I want a refund 😠",
    "It's a naïve attempt at comedy that never lands.",
    "The app keeps crashing whenever I open the settings page.",
    # emails
    "Dear Ms. Smith, thank you for your application.",
    "Please find attached the report for the third quarter.",
    "We are pleased to inform you that your order has shipped.",
    "Unfortunately, the meeting on Monday has been cancelled.",
    "Could you send me the invoice by Friday? Best regards, John.",
    "Reminder: the team lunch is scheduled for 12:30 on Thursday.",
    "Hello team, the new release (v2.1.0) is now available for download.",
    "Kind regards, Zoë from the customer success department.",
    "Your subscription will renew automatically on 01/02/2025 for $9.99.",
    # misc / factual / unicode
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "Translate English to German: the house is wonderful.",
    "Summarize: the committee approved the budget after a long debate.",
    "The crème brûlée at that little bistro was perfect.",
    "He moved from São Paulo to Kraków to study mathematics.",
    "Machine learning models need data, compute and careful evaluation.",
    "The children played in the park while their parents talked.",
    "Science, technology, sports, politics and business are common topics.",
    "She said: \"I can't believe it's already December!\"",
    "Call me at +1 (555) 123-4567 or write to info@example.com.",
    "Visit https://example.org/docs for more information.",
    "Rain is expected this afternoon, so bring an umbrella ☔.",
    "The naïve Bayes classifier is a simple but strong baseline.",
    "I think this sentence is neutral and says nothing special.",
    "Is this review positive or negative? Hard to say.",
    "El niño comió una manzana y después durmió la siesta.",
]

_TINY_MAX_POSITIONS = 128

# _DEGENERATE_GREEDY_NOTE: with the stock init (tiny std, tied input/output embeddings) the
# residual stream is dominated by the last input embedding, so greedy decoding just repeats the
# last token: GPT-2 answers an eos-terminated DialoGPT prompt with eos (empty reply, every seed)
# and T5 emits <pad> forever.  A larger init scale makes the random models produce varied,
# non-empty text; it changes weight values only (not shapes/speed) and can be overridden.


# --------------------------------------------------------------------------- helpers


def _train_bpe(
    tokenizer: Tokenizer, special_tokens: list[str], vocab_size: int, initial_alphabet: list[str] | None = None
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a prefix-free BPE ``tokenizer`` on :data:`CORPUS`; returns ``(vocab, merges)``.

    tokenizers' BPE trainer is deterministic only without a continuing-subword prefix (the ids of
    ``##x`` tokens depend on hash-map order), so WordPiece is derived from this too, see below.
    """
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=initial_alphabet or [],
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _train_byte_level_bpe(
    special_tokens: list[str], vocab_size: int = 600
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a GPT-2/RoBERTa style byte-level BPE; returns ``(vocab, merges)``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return _train_bpe(tokenizer, special_tokens, vocab_size, pre_tokenizers.ByteLevel.alphabet())


def _train_wordpiece(special_tokens: list[str], vocab_size: int = 300) -> dict[str, int]:
    """Build a lowercase BERT-style WordPiece vocab (bert-base-uncased normalisation), deterministically.

    Sub-words come from a prefix-free BPE; each is added both word-initially and as ``##piece`` so
    greedy longest-match WordPiece can segment any word made of corpus characters.  Final size is
    roughly ``2 * vocab_size``.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab, _ = _train_bpe(tokenizer, special_tokens, vocab_size)
    pieces = sorted((p for p in vocab if p not in special_tokens), key=vocab.__getitem__)
    tokens = special_tokens + pieces + [f"##{p}" for p in pieces]
    return {tok: i for i, tok in enumerate(tokens)}


def _train_unigram(vocab_size: int = 400) -> list[tuple[str, float]]:
    """Train a T5-style SentencePiece unigram model; returns ``[(piece, score), ...]`` with
    ``<pad>=0, </s>=1, <unk>=2`` (sentencepiece, unlike tokenizers' UnigramTrainer, is deterministic).
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0,
        # T5Tokenizer rebuilds the pipeline without a normaliser, so train without one as well.
        normalization_rule_name="identity",
        num_threads=1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


def _make_config(
    config_cls: type[PretrainedConfig],
    tokenizer: PreTrainedTokenizerBase,
    defaults: dict[str, Any],
    overrides: dict[str, Any] | None,
) -> PretrainedConfig:
    """Merge tiny defaults with caller overrides; vocab may grow beyond the tokenizer, never shrink."""
    kwargs = {"vocab_size": len(tokenizer), **defaults, **(overrides or {})}
    if kwargs["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocab_size={kwargs['vocab_size']} is smaller than the tokenizer ({len(tokenizer)})")
    return config_cls(**kwargs)


def _set_labels(config: PretrainedConfig, id2label: dict[int, str]) -> None:
    """Set id2label/label2id (num_labels follows) so pipelines report the right label names."""
    config.id2label = {int(k): v for k, v in id2label.items()}
    config.label2id = {v: k for k, v in config.id2label.items()}


def _save(
    path: str | Path,
    model_cls: type[PreTrainedModel],
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    generation: dict[str, Any] | None = None,
) -> Path:
    """Instantiate ``model_cls`` with seeded random weights and save model + tokenizer (safetensors);
    ``generation`` is the checkpoint's own ``generation_config`` (e.g. a chat model's end-of-turn ids)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    if generation is not None:
        model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- builders


def build_distilbert_classifier(
    path: str | Path,
    *,
    id2label: dict[int, str] | None = None,
    config_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Tiny ``DistilBertForSequenceClassification`` (think distilbert-sst2) with an uncased WordPiece tokenizer."""
    id2label = id2label or {0: "NEGATIVE", 1: "POSITIVE"}
    vocab = _train_wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = DistilBertTokenizer(vocab=vocab, do_lower_case=True)
    defaults = dict(
        dim=32, n_layers=2, n_heads=2, hidden_dim=64,
        max_position_embeddings=_TINY_MAX_POSITIONS, pad_token_id=tokenizer.pad_token_id,
    )
    config = _make_config(DistilBertConfig, tokenizer, defaults, config_overrides)
    _set_labels(config, id2label)
    tokenizer.model_max_length = config.max_position_embeddings
    return _save(path, DistilBertForSequenceClassification, config, tokenizer, seed)


def build_bart_nli(
    path: str | Path,
    *,
    id2label: dict[int, str] | None = None,
    config_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Tiny ``BartForSequenceClassification`` shaped like facebook/bart-large-mnli (zero-shot NLI)."""
    id2label = id2label or {0: "contradiction", 1: "neutral", 2: "entailment"}
    # Same special-token ids as real BART: <s>=0, <pad>=1, </s>=2, <unk>=3 (+ <mask>).
    vocab, merges = _train_byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = BartTokenizer(vocab=vocab, merges=merges)
    defaults = dict(
        d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=_TINY_MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    config = _make_config(BartConfig, tokenizer, defaults, config_overrides)
    _set_labels(config, id2label)
    tokenizer.model_max_length = config.max_position_embeddings
    return _save(path, BartForSequenceClassification, config, tokenizer, seed)


def build_gpt2_lm(
    path: str | Path,
    *,
    config_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Tiny ``GPT2LMHeadModel`` shaped like microsoft/DialoGPT (``<|endoftext|>`` is bos/eos/unk, no pad)."""
    vocab, merges = _train_byte_level_bpe(["<|endoftext|>"])
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges)
    defaults = dict(
        n_embd=32, n_layer=2, n_head=2, n_positions=_TINY_MAX_POSITIONS,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.2,  # see _DEGENERATE_GREEDY_NOTE
    )
    config = _make_config(GPT2Config, tokenizer, defaults, config_overrides)
    tokenizer.model_max_length = config.n_positions
    return _save(path, GPT2LMHeadModel, config, tokenizer, seed)


def build_t5(
    path: str | Path,
    *,
    config_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Tiny ``T5ForConditionalGeneration`` with a Unigram (SentencePiece-style) tokenizer like t5-small."""
    # T5 layout: <pad>=0, </s>=1, <unk>=2, pieces, then 100 <extra_id_*> sentinels appended by T5Tokenizer.
    vocab = _train_unigram()
    tokenizer = T5Tokenizer(vocab=vocab, model_max_length=512)
    defaults = dict(
        d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        initializer_factor=20.0,  # see _DEGENERATE_GREEDY_NOTE
    )
    config = _make_config(T5Config, tokenizer, defaults, config_overrides)
    return _save(path, T5ForConditionalGeneration, config, tokenizer, seed)


# --------------------------------------------------------------------------- other architectures of each family

# Chat templates as today's instruct checkpoints ship them (tokenizer_config.json's "chat_template"), reduced to
# their turn layout: Qwen2.5's ChatML (with its default system turn), Llama 3's headers, and Gemma's turns, whose
# template has no system turn and refuses one.
CHAT_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{%- if messages[0]['role'] == 'system' -%}"
        "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
        "{%- else -%}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}{%- endif -%}"
        "{%- for message in messages -%}{%- if not (message['role'] == 'system' and loop.first) -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"),
    "llama3": (
        "{{- bos_token -}}{%- for message in messages -%}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
        " + '<|eot_id|>' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"),
    "gemma": (
        "{%- for message in messages -%}{%- if message['role'] == 'system' -%}"
        "{{- raise_exception('System role not supported') -}}{%- endif -%}"
        "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
        "{{- '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"),
}

# Chat checkpoints get a longer window than the other tiny models: a template's own tokens take a share of it.
_TINY_CHAT_POSITIONS = 256
_TINY_DECODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=64, max_position_embeddings=_TINY_CHAT_POSITIONS,
                     initializer_range=0.2)  # see _DEGENERATE_GREEDY_NOTE


def build_chat_lm(
    path: str | Path,
    architecture: str,
    *,
    template: str | None = None,
    config_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A tiny causal LM of today's chat checkpoints: ``"qwen2"`` (Qwen2.5-Instruct's tokens and ChatML template),
    ``"llama"`` (Llama-3-Instruct's headers) or ``"gpt2"`` (a GPT-2 fine-tune with Gemma's turns, no system turn,
    its turn markers added as plain tokens rather than special ones, as some fine-tunes do).

    ``template`` names another of :data:`CHAT_TEMPLATES` for the tokenizer. The saved ``generation_config`` names
    the template's end-of-turn token first among its end-of-sequence ids, as those checkpoints do; the tokenizer's
    own ``eos_token`` is the plain end of text, so an answer that stops at end-of-turn stops because of it.
    The output layer is not tied to the input embeddings (as in the larger checkpoints), so tests may edit what
    the model writes without changing how it reads.
    """
    if architecture == "qwen2":
        turn = ["<|im_start|>", "<|im_end|>"]
        vocab, merges = _train_byte_level_bpe(["<|endoftext|>", *turn])
        tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None)
        config_cls, model_cls, default_template = Qwen2Config, Qwen2ForCausalLM, "chatml"
        defaults = dict(_TINY_DECODER)
    elif architecture == "llama":
        turn = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        vocab, merges = _train_byte_level_bpe(["<|begin_of_text|>", "<|end_of_text|>", *turn])
        backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>",
                                            eos_token="<|end_of_text|>")
        config_cls, model_cls, default_template = LlamaConfig, LlamaForCausalLM, "llama3"
        defaults = dict(_TINY_DECODER)
    elif architecture == "gpt2":
        turn = ["<start_of_turn>", "<end_of_turn>"]
        vocab, merges = _train_byte_level_bpe(["<|endoftext|>", *turn])
        tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges)
        config_cls, model_cls, default_template = GPT2Config, GPT2LMHeadModel, "gemma"
        defaults = dict(n_embd=32, n_layer=2, n_head=2, n_positions=_TINY_CHAT_POSITIONS, initializer_range=0.2)
    else:
        raise ValueError(f"unknown chat architecture {architecture!r}")
    if architecture == "gpt2":
        tokenizer.add_tokens(turn)
    else:
        tokenizer.add_special_tokens({"additional_special_tokens": turn})
    tokenizer.chat_template = CHAT_TEMPLATES[template or default_template]
    end_of_turn = tokenizer.convert_tokens_to_ids(turn[-1])
    end_of_text = tokenizer.convert_tokens_to_ids("<|end_of_text|>" if architecture == "llama" else "<|endoftext|>")
    defaults.update(bos_token_id=tokenizer.bos_token_id if architecture == "llama" else end_of_text,
                    eos_token_id=end_of_text, tie_word_embeddings=False)
    config = _make_config(config_cls, tokenizer, defaults, config_overrides)
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", None) or config.n_positions
    generation = dict(bos_token_id=config.bos_token_id, eos_token_id=[end_of_turn, end_of_text])
    return _save(path, model_cls, config, tokenizer, seed, generation)


def build_sequence_classifier(
    path: str | Path,
    architecture: str,
    *,
    id2label: dict[int, str] | None = None,
    config_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A tiny ``*ForSequenceClassification`` of another encoder family: ``"bert"`` and ``"electra"`` (uncased
    WordPiece), ``"roberta"`` (byte-level BPE) or ``"deberta-v2"`` (SentencePiece unigram, DeBERTa-v3's layout)."""
    id2label = id2label or {0: "NEGATIVE", 1: "POSITIVE"}
    encoder = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=_TINY_MAX_POSITIONS)
    if architecture in ("bert", "electra"):
        vocab = _train_wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        tokenizer_cls = BertTokenizer if architecture == "bert" else ElectraTokenizer
        tokenizer = tokenizer_cls(vocab=vocab, do_lower_case=True)
        config_cls, model_cls = {"bert": (BertConfig, BertForSequenceClassification),
                                 "electra": (ElectraConfig, ElectraForSequenceClassification)}[architecture]
        if architecture == "electra":
            encoder["embedding_size"] = 16
    elif architecture == "roberta":
        vocab, merges = _train_byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
        config_cls, model_cls = RobertaConfig, RobertaForSequenceClassification
        # RoBERTa's positions start after the padding index
        encoder.update(max_position_embeddings=_TINY_MAX_POSITIONS + 2, bos_token_id=0, eos_token_id=2)
    elif architecture == "deberta-v2":
        pieces = [piece for piece in _train_unigram() if piece[0] not in ("<pad>", "</s>", "<unk>")]
        tokenizer = DebertaV2Tokenizer(vocab=[(token, 0.0) for token in ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")]
                                       + pieces, unk_id=3)
        config_cls, model_cls = DebertaV2Config, DebertaV2ForSequenceClassification
        encoder.update(relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
                       position_biased_input=False, max_relative_positions=-1)
    else:
        raise ValueError(f"unknown classifier architecture {architecture!r}")
    config = _make_config(config_cls, tokenizer, {**encoder, "pad_token_id": tokenizer.pad_token_id},
                          config_overrides)
    _set_labels(config, id2label)
    tokenizer.model_max_length = _TINY_MAX_POSITIONS
    return _save(path, model_cls, config, tokenizer, seed)


def build_seq2seq(
    path: str | Path,
    architecture: str,
    *,
    config_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A tiny text-to-text model of another family than T5: ``"bart"`` (``BartForConditionalGeneration``, byte-level
    BPE) or ``"pegasus"`` (``PegasusForConditionalGeneration``, SentencePiece unigram)."""
    sizes = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                 encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=_TINY_MAX_POSITIONS,
                 init_std=0.2)  # see _DEGENERATE_GREEDY_NOTE
    if architecture == "bart":
        vocab, merges = _train_byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tokenizer = BartTokenizer(vocab=vocab, merges=merges)
        config_cls, model_cls = BartConfig, BartForConditionalGeneration
        sizes.update(bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
                     forced_eos_token_id=tokenizer.eos_token_id)
    elif architecture == "pegasus":
        pieces = [piece for piece in _train_unigram() if piece[0] not in ("<pad>", "</s>", "<unk>")]
        tokenizer = PegasusTokenizer(vocab=[(token, 0.0) for token in ("<pad>", "</s>", "<mask_1>", "<mask_2>")]
                                     + pieces + [("<unk>", 0.0)])
        config_cls, model_cls = PegasusConfig, PegasusForConditionalGeneration
        # Pegasus scales its embeddings by sqrt(d_model) over sinusoidal positions: at std 0.2 every input gets the
        # same greedy answer (see _DEGENERATE_GREEDY_NOTE)
        sizes.update(decoder_start_token_id=tokenizer.pad_token_id, init_std=1.0)
    else:
        raise ValueError(f"unknown seq2seq architecture {architecture!r}")
    sizes.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    config = _make_config(config_cls, tokenizer, sizes, config_overrides)
    tokenizer.model_max_length = _TINY_MAX_POSITIONS
    return _save(path, model_cls, config, tokenizer, seed)


def write_token_at(model_dir: Path, out_dir: Path, input_ids: list[int], token: int, step: int) -> Path:
    """A copy of a chat model (untied output layer) whose greedy answer to ``input_ids`` has ``token`` at ``step``
    (0-based) instead of what it wrote there, and is unchanged before it.

    ``token``'s output row becomes the row of the token written at ``step`` plus a nudge along that step's hidden
    state, so ``token`` outscores it there; the nudge is kept below every earlier step's margin, so no earlier step
    changes. Callers check the result with ``generate``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    head = model.get_output_embeddings()
    states: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, inputs, output: states.append(inputs[0][0]))
    with torch.no_grad():
        unstopped = GenerationConfig(max_new_tokens=step + 1, do_sample=False, pad_token_id=0)
        output = model.generate(torch.tensor([input_ids]), generation_config=unstopped,
                                attention_mask=torch.ones(1, len(input_ids), dtype=torch.long))
        written = output[0, len(input_ids):].tolist()
        states.clear()
        model(output[:, :-1])
    hook.remove()
    hidden = states[0][len(input_ids) - 1:]  # the state that chose each written token
    chosen = written[step]
    with torch.no_grad():
        logits = head(hidden)
        direction = hidden[step] / hidden[step].dot(hidden[step])
        reach = (hidden[:step] @ direction).abs()  # how far a unit nudge at `step` moves each earlier logit
        margins = logits[:step].max(-1).values - logits[:step, chosen]
        nudge = min([1e-2] + [0.25 * float(m / r) for m, r in zip(margins, reach) if r > 0])
        head.weight[token] = head.weight[chosen] + nudge * direction
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
    return Path(out_dir)


def sharpen(model_dir: Path, seed: int = 0) -> Path:
    """Re-draw the tiny model's matrices larger, so scores differ between texts and from uniform."""
    weights = load_file(str(model_dir / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in weights.items():
        if tensor.dim() == 2:
            weights[name] = torch.randn(tensor.shape, generator=generator) * 0.2
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    return model_dir


def build_all(root: str | Path) -> dict[str, Path]:
    """Build every tiny model under ``root`` (one sub-directory each); handy for fixtures and manual runs."""
    root = Path(root)
    return {
        "distilbert": build_distilbert_classifier(root / "distilbert"),
        "bart": build_bart_nli(root / "bart"),
        "gpt2": build_gpt2_lm(root / "gpt2"),
        # At the default scale (20) the tiny T5 gives its tokens probabilities of ~1: every seed, temperature and
        # input writes the same email at confidence 1.0, so no comparison can fail. At 2.0 its answers differ per
        # input and per seed, and some end with end-of-sequence before the token budget.
        "t5": build_t5(root / "t5", config_overrides={"initializer_factor": 2.0}),
    }
