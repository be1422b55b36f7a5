"""A tiny randomly initialised text-generation pipeline built offline: a 1-layer GPT-2 and a WordLevel
tokenizer over the knowledge prompt and a few posts, for tests of `KnowledgeWriter` and what it writes."""

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, pipeline

from modeling_mgcm.knowledge_writer import NO_CAPTION_TEXT, PGIM_PROMPT

TOKENIZER_SENTENCES = [
    PGIM_PROMPT,
    NO_CAPTION_TEXT,
    "Obama meets Merkel in Berlin today",
    "RT @JayKenMinaj George Zimmerman trial in Florida",
    "Named entities: 1. Obama (person) 2. Berlin (location) Reasoning: the image shows a stage",
    "a man on a stage holding a microphone",
    "<user> <bot>",
]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace WordLevel tokenizer over `TOKENIZER_SENTENCES`, with unk and eos but no pad token."""
    word_level = Tokenizer(models.WordLevel(unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.decoder = decoders.WordPiece(prefix="##")
    word_level.train_from_iterator(
        TOKENIZER_SENTENCES, trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"])
    )
    return PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>", eos_token="<eos>")


def tiny_gpt2_config(vocab_size: int) -> GPT2Config:
    """A 1-layer, 32-wide GPT-2 config without bos/eos tokens."""
    return GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        vocab_size=vocab_size,
        n_positions=512,
        bos_token_id=None,
        eos_token_id=None,
    )


def build_pipeline(seed: int = 0):
    """A text-generation pipeline over a 1-layer random GPT-2. The model has no eos token, so every answer
    runs to max_new_tokens."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_gpt2_config(len(tokenizer))).eval()
    return pipeline("text-generation", model=model, tokenizer=tokenizer)
