"""`KnowledgeWriter`: writes PGIM-style auxiliary knowledge for posts that have none.

PGIM (Li et al., Findings of EMNLP 2023) gives a tweet NER model some extra text per post, written by a
large language model from the post's text and its image caption: the entities the post likely names, each
with a type, and a short reasoning. MGCM reads that text as its `knowledge` input. The released knowledge
files only cover the benchmark posts; this module writes knowledge for new posts, with a local
`transformers` text-generation pipeline (or any callable that does the same job).

Answers are cached by input (prompt template, generator, text, caption), in memory and optionally in a JSON
lines file, so a corpus is only ever written once per generator.
"""

import hashlib
import json
import logging
import os
import string
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from transformers import Pipeline, TextGenerationPipeline

logger = logging.getLogger(__name__)

PGIM_PROMPT = (
    "You will read a social media post and a description of the image posted with it.\n"
    "Post: {text}\n"
    "Image description: {caption}\n"
    "Which named entities does the post mention? List each one with its type: person, location, "
    "organisation or other. Then explain in a few sentences why, using the image description where it "
    "helps. Keep the answer under 100 words, in this form:\n"
    "Named entities: 1. <entity> (<type>) 2. <entity> (<type>) ... Reasoning: <your reasoning>"
)
"""The default instruction, in the spirit of PGIM's prompt to ChatGPT (wording our own).

`{text}` is the post's text and `{caption}` its image description, or `NO_CAPTION_TEXT` when the post has
none. A custom template may use the same two fields (`{text}` is required); other literal braces must be
doubled, as for `str.format`.
"""

NO_CAPTION_TEXT = "none (no image description is available for this post)"
"""What `{caption}` becomes in the prompt for a post without a caption (None or "")."""

TEMPLATE_FIELDS = frozenset({"text", "caption"})

KnowledgeFunction = Callable[[list[str], list[str]], Sequence[str]]


def one_line(text: str) -> str:
    """`text` stripped, with every run of whitespace (newlines included) made a single space."""
    return " ".join(text.split())


def check_prompt_template(template: str) -> None:
    """Raise ValueError unless `template` is a `str.format` template using `{text}` and maybe `{caption}`."""
    if not isinstance(template, str):
        raise TypeError(f"prompt_template must be a str, got {type(template).__name__}")
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as error:
        raise ValueError(f"prompt_template is not a valid str.format template: {error}") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"prompt_template uses unknown fields {sorted(unknown)}; only {{text}} and {{caption}} are filled "
            "(double any literal brace)"
        )
    if "text" not in fields:
        raise ValueError("prompt_template must contain the {text} field")


def qualified_name(function: Callable) -> str:
    """`module.qualname` of a function, or of the class of a callable object."""
    named = function if hasattr(function, "__qualname__") else type(function)
    return f"{getattr(named, '__module__', '?')}.{named.__qualname__}"


class KnowledgeCacheFile:
    """The on-disk half of the cache: JSON lines `{"key": ..., "knowledge": ...}`, appended to.

    A last line cut short by an interrupted write is ignored with a warning, and cut off the file before the
    next append; any other malformed line raises ValueError.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # Where a truncated last line starts, so the first append can cut it off; None when there is none.
        self._truncated_tail_at: int | None = None
        self._checked_before_append = False

    def read(self) -> dict[str, str]:
        """The cached knowledge by key (later lines win); {} when the file does not exist yet."""
        if not self.path.exists():
            return {}
        content = self.path.read_bytes()
        *complete_lines, last_line = content.split(b"\n")
        entries: dict[str, str] = {}
        for line_number, line in enumerate(complete_lines, start=1):
            if line.strip():
                key, knowledge = self._parse_line(line, line_number)
                entries[key] = knowledge
        if last_line.strip():
            # No newline after it: the line may have been cut short by an interrupted write.
            line_number = len(complete_lines) + 1
            try:
                key, knowledge = self._parse_line(last_line, line_number)
            except ValueError:
                self._truncated_tail_at = len(content) - len(last_line)
                warnings.warn(
                    f"{self.path}, line {line_number}: ignoring a truncated last line (an interrupted "
                    "write?); it will be cut off before the next append",
                    stacklevel=3,
                )
            else:
                entries[key] = knowledge
        return entries

    def _parse_line(self, line: bytes, line_number: int) -> tuple[str, str]:
        """The key and knowledge of one line; ValueError naming the file, line and content otherwise."""
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise self._malformed(line, line_number, str(error)) from None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("key"), str)
            or not isinstance(record.get("knowledge"), str)
        ):
            raise self._malformed(line, line_number, 'expected {"key": str, "knowledge": str}')
        return record["key"], record["knowledge"]

    def _malformed(self, line: bytes, line_number: int, reason: str) -> ValueError:
        shown = line.decode("utf-8", errors="replace")
        if len(shown) > 200:
            shown = shown[:200] + "..."
        return ValueError(
            f"{self.path}, line {line_number}: malformed knowledge cache line ({reason}): {shown!r}"
        )

    def append(self, entries: dict[str, str]) -> None:
        """Append `entries` as one line each and flush."""
        if not entries:
            return
        if not self._checked_before_append:
            self._prepare_for_append()
        lines = "".join(
            json.dumps({"key": key, "knowledge": knowledge}, ensure_ascii=False) + "\n"
            for key, knowledge in entries.items()
        )
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()

    def _prepare_for_append(self) -> None:
        """Cut off a truncated last line, or end an unterminated valid one, so appends start a new line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._truncated_tail_at is not None:
            os.truncate(self.path, self._truncated_tail_at)
            self._truncated_tail_at = None
        elif self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
        self._checked_before_append = True


class KnowledgeWriter:
    """Writes auxiliary knowledge for posts from their text and caption, with a transformers
    text-generation pipeline or any callable; answers are cached by input.

    Args:
        generator: a `transformers` text-generation pipeline, or a callable `f(texts, captions)` taking two
            lists of str (a missing caption is "") and returning one str per post.
        prompt_template: the instruction given to a pipeline, with `{text}` and `{caption}` fields (see
            `PGIM_PROMPT`). A callable does not see it, but it is part of the cache key.
        max_new_tokens: the most tokens a pipeline writes per post.
        batch_size: how many posts are generated per generator call (and per append to `cache_file`).
        cache_file: a JSON lines file that keeps the answers across runs; None keeps them in memory only.

    Pipelines decode greedily, so a post's knowledge depends only on its input. Answers are made one line
    (whitespace runs become a space), as the knowledge file format has one line per post.

    Attributes:
        cache_hits: posts served from the cache, including repeats of a post within one call.
        cache_misses: posts whose knowledge was generated.
    """

    def __init__(
        self,
        generator: Pipeline | KnowledgeFunction,
        prompt_template: str = PGIM_PROMPT,
        max_new_tokens: int = 160,
        batch_size: int = 8,
        cache_file: str | os.PathLike | None = None,
    ):
        check_prompt_template(prompt_template)
        for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(generator, Pipeline):
            if not isinstance(generator, TextGenerationPipeline) and generator.task != "text-generation":
                raise ValueError(
                    f"KnowledgeWriter needs a text-generation pipeline, got a {type(generator).__name__} for task "
                    f"{generator.task!r}"
                )
            if generator.tokenizer is None:
                raise ValueError("the text-generation pipeline has no tokenizer")
            self._generator_identity = (
                f"pipeline:{generator.model.name_or_path}:max_new_tokens={max_new_tokens}"
            )
        elif callable(generator):
            self._generator_identity = f"callable:{qualified_name(generator)}"
        else:
            raise TypeError(
                f"generator must be a text-generation pipeline or a callable, got {type(generator).__name__}"
            )
        self.generator = generator
        self.prompt_template = prompt_template
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.cache_file = None if cache_file is None else KnowledgeCacheFile(cache_file)
        self._cache: dict[str, str] = {} if self.cache_file is None else self.cache_file.read()
        self.cache_hits = 0
        self.cache_misses = 0

    def __call__(self, texts: Sequence[str], captions: Sequence[str | None] | None = None) -> list[str]:
        """One knowledge string per post; `captions[i]` None or "" means post i has no caption."""
        texts, captions = checked_posts(texts, captions)
        keys = [self.cache_key(text, caption) for text, caption in zip(texts, captions, strict=True)]
        missing: dict[str, tuple[str, str]] = {}
        for key, text, caption in zip(keys, texts, captions, strict=True):
            if key not in self._cache and key not in missing:
                missing[key] = (text, caption)
        missing_items = list(missing.items())
        for start in range(0, len(missing_items), self.batch_size):
            batch = missing_items[start : start + self.batch_size]
            batch_texts = [text for _, (text, _) in batch]
            batch_captions = [caption for _, (_, caption) in batch]
            answers = self._generate(batch_texts, batch_captions)
            written = {key: answer for (key, _), answer in zip(batch, answers, strict=True)}
            self._cache.update(written)
            if self.cache_file is not None:
                self.cache_file.append(written)
        self.cache_misses += len(missing)
        self.cache_hits += len(texts) - len(missing)
        if missing:
            logger.info(
                "wrote knowledge for %d posts (%d from the cache)", len(missing), len(texts) - len(missing)
            )
        return [self._cache[key] for key in keys]

    def cache_key(self, text: str, caption: str) -> str:
        """The sha256 (hex) naming the answer for this post, prompt template and generator."""
        identity = [self.prompt_template, self._generator_identity, text, caption]
        return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode("utf-8")).hexdigest()

    def build_prompt(self, text: str, caption: str) -> str:
        """The instruction a pipeline gets for one post."""
        return self.prompt_template.format(text=text, caption=caption or NO_CAPTION_TEXT)

    def _generate(self, texts: list[str], captions: list[str]) -> list[str]:
        """Knowledge for one batch of posts, made one line each."""
        if isinstance(self.generator, Pipeline):
            answers = self._generate_with_pipeline(texts, captions)
        else:
            answers = checked_answers(
                self.generator(texts, captions), len(texts), qualified_name(self.generator)
            )
        return [one_line(answer) for answer in answers]

    def _generate_with_pipeline(self, texts: list[str], captions: list[str]) -> list[str]:
        pipeline = self.generator
        tokenizer = pipeline.tokenizer
        prompts = [self.build_prompt(text, caption) for text, caption in zip(texts, captions, strict=True)]
        if getattr(tokenizer, "chat_template", None):
            # The pipeline applies the tokenizer's chat template to a list of chats.
            inputs = [[{"role": "user", "content": prompt}] for prompt in prompts]
        else:
            inputs = prompts
        batch_size = min(self.batch_size, len(inputs))
        if batch_size > 1:
            prepare_for_batching(pipeline)
        generate_options = {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        if tokenizer.pad_token_id is not None:
            # The pipeline took its default pad_token_id from the tokenizer when it was built, before
            # `prepare_for_batching` may have set one: pass it on each call.
            generate_options["pad_token_id"] = tokenizer.pad_token_id
        outputs = pipeline(inputs, return_full_text=False, batch_size=batch_size, **generate_options)
        answers = []
        for output in outputs:
            first = output[0] if isinstance(output, list) else output
            answers.append(first["generated_text"])
        return checked_answers(answers, len(texts), type(pipeline).__name__)


def prepare_for_batching(pipeline: Pipeline) -> None:
    """Give the pipeline's tokenizer what batched generation needs: a pad token, and left padding for a
    decoder-only model (padding on the right would put pads between the prompt and the answer)."""
    tokenizer = pipeline.tokenizer
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "the pipeline's tokenizer has neither a pad token nor an eos token, so posts cannot be batched: "
                "set tokenizer.pad_token, or use batch_size=1"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(pipeline.model.config, "is_encoder_decoder", False):
        tokenizer.padding_side = "left"


def checked_posts(texts: Sequence[str], captions: Sequence[str | None] | None) -> tuple[list[str], list[str]]:
    """The texts and captions as lists of str (a missing caption becomes ""); TypeError or ValueError
    naming the first bad entry otherwise."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of str (one per post), got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] must be a str (join the words first), got {text!r}")
    if captions is None:
        return list(texts), [""] * len(texts)
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise TypeError(f"captions must be None or a sequence of str/None, got {type(captions).__name__}")
    if len(captions) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(captions)} captions")
    for index, caption in enumerate(captions):
        if caption is not None and not isinstance(caption, str):
            raise TypeError(f"captions[{index}] must be a str or None, got {caption!r}")
    return list(texts), [caption or "" for caption in captions]


def checked_answers(answers: Sequence[str], expected: int, source: str) -> list[str]:
    """`answers` as a list, if it holds `expected` strings; TypeError or ValueError otherwise."""
    if isinstance(answers, str) or not isinstance(answers, Sequence):
        raise TypeError(f"{source} must return a list of str (one per post), got {type(answers).__name__}")
    if len(answers) != expected:
        raise ValueError(f"{source} returned {len(answers)} answers for {expected} posts")
    for index, answer in enumerate(answers):
        if not isinstance(answer, str):
            raise TypeError(f"{source} returned a non-str answer at index {index}: {answer!r}")
    return list(answers)


def as_knowledge_writer(writer_or_generator) -> KnowledgeWriter | None:
    """None -> None; a KnowledgeWriter -> itself; a transformers Pipeline (task text-generation) or any other
    callable -> KnowledgeWriter(it)."""
    if writer_or_generator is None or isinstance(writer_or_generator, KnowledgeWriter):
        return writer_or_generator
    return KnowledgeWriter(writer_or_generator)
