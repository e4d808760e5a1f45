#!/usr/bin/env python3
"""Generate the tokenizer fixtures for LoRASharedTests (TokenizerTests.swift).

Run from the repository root:  .venv/bin/python scripts/gen_tokenizer_fixtures.py
(any Python with `tokenizers` 0.23.x; this file was last run with tokenizers 0.23.3).

Writes (replacing) Tests/LoRASharedTests/Fixtures/tokenizer/:
  <kind>/tokenizer.json (+ tokenizer_config.json, chat_template.jinja)  small BPE tokenizers
      trained here with `tokenizers` on a multilingual corpus, each with exactly the component
      configuration of a real model family:
        llama3            Split(Llama 3 regex, Isolated) + ByteLevel(use_regex=false), ignore_merges,
                          TemplateProcessing "<|begin_of_text|> $A" inside a Sequence with ByteLevel
        qwen2             NFC + Split(Qwen2 regex) + ByteLevel, ByteLevel post-processor, added
                          tokens with lstrip/rstrip/single_word/normalized variants
        gpt2              ByteLevel(add_prefix_space=true, use_regex=true), merges in the legacy
                          "a b" string form
        llama2            SentencePiece-style: Prepend("▁")+Replace(" ","▁"), no pre-tokenizer,
                          byte_fallback, decoder Replace+ByteFallback+Fuse+Strip, "<s> $A"
        mistral           the same model with Metaspace(prepend_scheme "first", split false)
        metaspace-split   Metaspace(always, split true), decoder ByteFallback+Metaspace, unk + fuse_unk
        misc              NFKC+Lowercase+Strip, WhitespaceSplit+Punctuation+Digits, "##" prefix and
                          "</w>" suffix, unk, RobertaProcessing
  cases.json   for each tokenizer (and the real SmolLM2-135M-Instruct tokenizer, read from
               models/smollm2-135m-instruct when the tests find it there): texts with the ids of
               encode(text, add_special_tokens=True/False) and the decodes of those ids (with and
               without skip_special_tokens), random id sequences with their decodes; plus
               stand-alone normalizer, pre-tokenizer and decoder cases (normalize_str,
               pre_tokenize_str, decoder.decode).

Everything is seeded; running it twice gives identical bytes.
"""
import json
import random
import shutil
import sys
from pathlib import Path

import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "LoRASharedTests" / "Fixtures" / "tokenizer"
SMOL = ROOT / "models" / "smollm2-135m-instruct"
if not SMOL.exists():  # a worktree without the demo model: use the main checkout's copy
    for parent in ROOT.parents:
        if (parent / "main" / "models" / "smollm2-135m-instruct" / "tokenizer.json").exists():
            SMOL = parent / "main" / "models" / "smollm2-135m-instruct"
            break
SEED = 20240611

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# ----------------------------------------------------------------------------------------------
# Corpus: several scripts, numbers, code, whitespace runs, CRLF.

LINES = [
    "The quick brown fox jumps over the lazy dog. It's 2024, and they're shipping v1.2.3!",
    "I'm sure we'll see what you've done; he'd say THEY'RE right, isn't it?",
    "Café, naïve, résumé, façade, jalapeño, Ångström, Øresund, Łódź, Straße, Ærø.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, мир!",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Καλημέρα κόσμε! Ελληνικά γράμματα.",
    "日本語のテキストと中文字符，还有한국어 문장도 있습니다。東京は晴れです。",
    "我们正在训练一个小模型。这是一个测试句子，包含标点符号！",
    "مرحبا بالعالم، هذه جملة عربية للاختبار. العربية لغة جميلة.",
    "שלום עולם, זהו משפט בעברית. हिन्दी में एक वाक्य। ภาษาไทยง่ายนิดเดียว",
    "Emoji: 😀 😃 😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷 🤖✨ and more 🎉🎉🎉",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i * 42); }",
    "let x: [Int] = [1, 2, 3].map { $0 * 2 } // Swift closure",
    "{\"key\": \"value\", \"n\": 12345, \"pi\": 3.14159, \"ok\": true}",
    "Numbers: 0 7 42 123 1234 12345 1234567 3.14159 1,000,000 2^10=1024 -17 +3e-5",
    "Tabs\tand\t\ttabs, spaces    inside   words, and trailing spaces   ",
    "Windows line\r\nendings\r\n\r\nand blank lines\n\n\nhere",
    "   leading spaces and a URL: https://example.com/path?q=1&r=two#frag",
    "E-mail: someone@example.org; phone +1 (555) 010-9999; price $19.99 €5 £3 ¥100",
    "Unicode quotes “like this” and ‘this’, dashes – and — and ellipsis…",
    "MiXeD CaSe WoRdS, ALLCAPS, lowercase, snake_case_name, camelCaseName, kebab-case",
    "Decomposed: e\u0301 a\u0300 o\u0308 n\u0303 and composed é à ö ñ; ligature ﬁ ﬂ; fullwidth ＡＢＣ１２３",
    "Math: ∑ ∫ √ ∞ ≠ ≤ ≥ ± × ÷ ∂ ∇ α β γ δ ε",
    "Zero-width: a\u200bb, soft\u00adhyphen, nbsp\u00a0here, thin\u2009space, ideographic\u3000space",
    "Long words: antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "Repeated: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!! ??????",
    "Markdown: # Title\n\n* item one\n* item two\n\n```python\nprint('hi')\n```",
    "Mixed scripts: helloмирworld世界γειά123abcДЕФ",
    "Contractions: don't won't can't shouldn't y'all 'tis 'twas o'clock rock'n'roll",
]

WORDS = " ".join(LINES).split()


def common_char(c):
    """Characters the SentencePiece-style and misc models learn; the rest (CJK, emoji, Arabic, ...)
    must go through byte_fallback or unk. (Filtering the corpus keeps training deterministic,
    where limit_alphabet breaks frequency ties in hash order.)"""
    return ord(c) < 0x590 or c in "▁“”‘’–—…€£¥"


def corpus(n_lines, rng, common_only=False):
    out = list(LINES) * 3
    for _ in range(n_lines):
        k = rng.randint(3, 14)
        words = [rng.choice(WORDS) for _ in range(k)]
        sep = rng.choice([" ", " ", " ", "  ", "\t", "\n", " \n", "\r\n"])
        line = sep.join(words)
        if rng.random() < 0.3:
            line += " " + str(rng.randint(0, 10 ** rng.randint(1, 9)))
        out.append(line)
    if common_only:
        out = ["".join(c for c in line if common_char(c)) for line in out]
    return out


# ----------------------------------------------------------------------------------------------
# Test texts

SPECIAL_TEXTS = {
    "llama3": ["<|begin_of_text|>Hello<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>",
               "text <|end_of_text|> more", "<|begin_of_text|><|begin_of_text|>", "<|eot_id"],
    "qwen2": ["<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", "a<|endoftext|>b",
              "x  <tool_call>  y", "<lstrip>  text", "pre   <lstrip>post", "pre<rstrip>   post",
              "<both>  \n x  <both>  ", "word wordy aword word. word", "NORM: <norm> and <NORM>",
              "<|im_start|><|im_start|>", "<|im_star", "<tool_call><tool_call>"],
    "gpt2": ["<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> "],
    "llama2": ["<s>Hello</s>", "Hello <s> world</s>", "<unk> is unknown", "</s></s>", "<s>", " <s> "],
    "mistral": ["<s>Hello</s>", "Hello <s> world</s>", "[INST] hi [/INST]", "<s> ", " </s>x"],
    "metaspace-split": ["<s>Hello</s>", "Hello <s> world", "<s> "],
    "misc": ["<s>Hello</s>", "<mask> x <mask>", "<pad>"],
    "smollm2": ["<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
                "<|endoftext|>", "<repo_name>foo<file_sep>bar.py<filename>", "<|im_end", "<jupyter_code>x=1"],
}

BASE_TEXTS = [
    "", " ", "  ", "\n", "\r\n", "\t", "a", " a", "a ", "  a  ", "Hello world", " Hello world",
    "Hello world ", "Hello  world", "hello\nworld", "hello\r\nworld\r\n", "hello \n world",
    "x  \n\n  y", "  \n  ", "end with spaces   ", "   start with spaces",
    "It's it's IT'S he'll she'd we're they've I'm you'RE O'Neil 'quoted' '' 's",
    "1 12 123 1234 12345 123456 1234567 12345678901234567890",
    "3.14159 -42 +7 1e10 0x1F 1,234,567.89 ٣٤٥ ½ Ⅻ ²³",
    "Café naïve résumé", "e\u0301 vs é", "ﬁ ＡＢＣ１２３ ㈱", "Straße İstanbul ΣΑΣ",
    "Привет, мир! Как дела?", "Καλημέρα κόσμε", "中文字符测试，还有标点。", "日本語のテキスト", "한국어 문장",
    "مرحبا بالعالم", "שלום עולם", "हिन्दी", "ภาษาไทย",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈 flag", "🇫🇷🇩🇪", "a😀b", "emoji😀😃😄test", "🤖✨🎉",
    "def f(x):\n\treturn x ** 2\n", "if (a && b) { return c || d; }", "arr[i] = arr[i-1] + 1;",
    "<div class=\"x\">text</div>", "https://example.com/a?b=c&d=e", "user@example.org",
    "a\x0bb c\x0cd", "a\x85b", "a\u2028b\u2029c", "a\u00a0b", "a\u200bb", "a\u3000b", "x\u2009y",
    "!!!", "...", "?!", "—", "«ciao»", "“quoted”", "(parenthesized)", "[bracketed]", "{braced}",
    "___", "----", "====", "####", "   !!!   ", " ' ", "' s", "'s'", "''s",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supercalifragilisticexpialidocious" * 40,
    "ab" * 600, "9" * 300, "中" * 200, "😀" * 50, " " * 100 + "x", "x" + "\n" * 50,
    "Tab\tseparated\tvalues\t\t", "Mixed: helloмирworld世界γειά123abc",
]

POOL = (list("abcdefxyzABCXYZ") + list("0123456789") + list(" " * 12) + list("\t\n\r") +
        list(".,;:!?'\"()-_/\\@#$%&*+=<>[]{}|~`^") + list("éèàüößñçÅØæ") + list("абвгдЖЩЯ") +
        list("αβγΩ") + list("中文字日本語한국") + list("مرحبا") + ["\u0301", "\u0308", "\u200d", "\u200b",
        "\u00a0", "\u3000", "\x0b", "\x85", "\u2028", "😀", "👍", "🏽", "👨", "\u200d👩", "🇫", "🇷",
        "\ufe0f", "ﬁ", "Ａ", "１", "½", "²", "٣", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'RE",
        "\r\n", "  ", "   ", "¿", "€", "…", "—", "“", "”", "▁", "Ġ", "<", ">", "|"])


def random_texts(rng, n, specials):
    pool = POOL + specials
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        out.append("".join(rng.choice(pool) for _ in range(k)))
    return out


def sample_texts(rng, kind, specials):
    texts = list(BASE_TEXTS) + list(LINES) + SPECIAL_TEXTS.get(kind, [])
    texts += random_texts(rng, 160, specials)
    return texts


def token_cases(tok, texts):
    cases = []
    for t in texts:
        e_sp = tok.encode(t, add_special_tokens=True).ids
        e_no = tok.encode(t, add_special_tokens=False).ids
        cases.append({"text": t, "ids": e_sp, "ids_no_special": e_no,
                      "decoded": tok.decode(e_sp, skip_special_tokens=False),
                      "decoded_skip": tok.decode(e_sp, skip_special_tokens=True)})
    return cases


def decode_cases(tok, rng, n):
    vs = tok.get_vocab_size(with_added_tokens=True)
    ids_all = sorted(tok.get_vocab(with_added_tokens=True).values())
    out = []
    # Ids whose byte tokens split a multi-byte character: decode pieces of an encoding.
    for text in ["é中😀", "👨‍👩‍👧", "Привет 中文", "a😀b", "ＡＢＣ"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        for i in range(len(ids)):
            for piece in (ids[:i], ids[i:], ids[i:i + 1]):
                if piece:
                    out.append(piece)
    for _ in range(n):
        k = rng.randint(1, 12)
        out.append([rng.choice(ids_all) for _ in range(k)])
    out.append([vs + 5, 0])  # an unknown id is skipped
    return [{"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
             "decoded_skip": tok.decode(ids, skip_special_tokens=True)} for ids in out]


# ----------------------------------------------------------------------------------------------
# Builders

def byte_level_trained(rng, pre_tok, vocab_size, special, ignore_merges=False, normalizer=None):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(corpus(1500, rng), trainer=trainer)
    return tok


def build_llama3(rng):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                "<|reserved_special_token_0|>"]
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = byte_level_trained(rng, pre, 2000, [], ignore_merges=True)
    tok.add_special_tokens(specials)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": True,
           "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast",
           "chat_template": "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                            "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"}
    return tok, cfg, None


def build_qwen2(rng):
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = byte_level_trained(rng, pre, 2000, [], normalizer=normalizers.NFC())
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens([AddedToken("<tool_call>", normalized=False, special=False),
                    AddedToken("<lstrip>", lstrip=True, normalized=False),
                    AddedToken("<rstrip>", rstrip=True, normalized=False),
                    AddedToken("<both>", lstrip=True, rstrip=True, normalized=False),
                    AddedToken("word", single_word=True, normalized=False),
                    AddedToken("<norm>", normalized=True),
                    AddedToken("<|im_star", normalized=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    cfg = {"bos_token": None, "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "lstrip": False,
                                             "normalized": False, "rstrip": False, "single_word": False},
           "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace", "model_max_length": 32768,
           "chat_template": [{"name": "default", "template": "{% for m in messages %}<|im_start|>{{ m.role }}\n"
                                                             "{{ m.content }}<|im_end|>\n{% endfor %}"},
                             {"name": "tool_use", "template": "{{ tools }}"}]}
    return tok, cfg, None


def build_gpt2(rng):
    tok = byte_level_trained(rng, pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), 1500,
                             ["<|endoftext|>"])
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    cfg = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
           "add_prefix_space": True}
    return tok, cfg, "{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"


def sentencepiece_model(rng, unk_fuse=False, byte_fallback=True):
    """Trains on Metaspace words, then lays the vocab out as a SentencePiece conversion does:
    <unk> <s> </s>, the 256 <0xXX> byte tokens, then the learned pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=1800, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
                                  min_frequency=2)
    tok.train_from_iterator(corpus(1500, rng, common_only=True), trainer=trainer)
    j = json.loads(tok.to_str())
    learned = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    if byte_fallback:
        for b in range(256):
            vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in learned:
        if t not in vocab:
            vocab[t] = len(vocab)
    j["model"]["vocab"] = vocab
    j["model"]["byte_fallback"] = byte_fallback
    j["model"]["fuse_unk"] = unk_fuse
    for a in j["added_tokens"]:
        a["id"] = vocab[a["content"]]
    return j


def sp_decoder_json():
    return {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def bos_template_json(tok_ids):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [tok_ids["<s>"]], "tokens": ["<s>"]}}}


def build_llama2(rng):
    j = sentencepiece_model(rng, unk_fuse=True)
    j["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    j["pre_tokenizer"] = None
    j["decoder"] = sp_decoder_json()
    j["post_processor"] = bos_template_json(j["model"]["vocab"])
    tok = Tokenizer.from_str(json.dumps(j))
    cfg = {"add_bos_token": True, "add_eos_token": False, "legacy": True,
           "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False,
                         "rstrip": False, "single_word": False},
           "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
           "chat_template": "{% for m in messages %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}"}
    return tok, cfg, None


def build_mistral(rng):
    j = sentencepiece_model(rng)
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    j["decoder"] = sp_decoder_json()
    j["post_processor"] = bos_template_json(j["model"]["vocab"])
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens(["[INST]", "[/INST]"])
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    return tok, cfg, "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"


def build_metaspace_split(rng):
    j = sentencepiece_model(rng, unk_fuse=True, byte_fallback=False)
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}]}
    j["post_processor"] = None
    tok = Tokenizer.from_str(json.dumps(j))
    return tok, {}, None


def train_affixed_bpe(tok, lines, vocab_size, prefix, suffix, specials):
    """A small greedy BPE trainer with a deterministic tie-break (count, then the pair's text).
    tokenizers' BpeTrainer numbers a prefixed/suffixed alphabet in hash order, so its merges
    change from run to run; the model is then loaded and run by `tokenizers` itself."""
    from collections import Counter
    counts = Counter()
    for line in lines:
        for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(line)):
            counts[w] += 1
    words = {}
    for w, c in counts.items():
        syms = [ch if i == 0 else prefix + ch for i, ch in enumerate(w)]
        syms[-1] += suffix
        words[tuple(syms)] = c
    vocab = list(specials) + sorted({s for w in words for s in w})
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), c = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if c < 2:
            break
        new = a + b[len(prefix):]
        merges.append([a, b])
        if new not in vocab:
            vocab.append(new)
        merged = {}
        for w, cnt in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + cnt
        words = merged
    return {t: i for i, t in enumerate(vocab)}, merges


def build_misc(rng):
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                                 pre_tokenizers.Digits(individual_digits=False)])
    specials = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]
    vocab, merges = train_affixed_bpe(tok, corpus(1500, rng, common_only=True), 1200, "##", "</w>", specials)
    j = json.loads(tok.to_str())
    j["model"]["vocab"] = vocab
    j["model"]["merges"] = merges
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens(specials)
    tok.decoder = decoders.Sequence([decoders.Replace("</w>", " "), decoders.Replace("##", ""),
                                     decoders.Strip(" ", 0, 1)])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "[UNK]",
           "mask_token": {"content": "<mask>", "lstrip": True}}
    return tok, cfg, None


BUILDERS = [("llama3", build_llama3), ("qwen2", build_qwen2), ("gpt2", build_gpt2), ("llama2", build_llama2),
            ("mistral", build_mistral), ("metaspace-split", build_metaspace_split), ("misc", build_misc)]


def legacy_merges(tok_json):
    j = json.loads(tok_json)
    j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    return j


# ----------------------------------------------------------------------------------------------
# Component cases (normalize_str / pre_tokenize_str / decoder.decode)

COMPONENT_TEXTS = ["Hello world", "  Hello   world  ", "Hey, you! It's 1234567 o'clock...", "a\tb\nc\r\nd",
                   "Café e\u0301 ﬁ ＡＢＣ１２３ İ ΣΑΣ", "中文，日本語。", "😀👍🏽 x", "", " ", "▁already▁here",
                   "a1b22c333", "x--y__z", "  ", "end.", "!!!hi???", "(a)[b]{c}"]


def normalizer_cases():
    specs = [normalizers.NFC(), normalizers.NFD(), normalizers.NFKC(), normalizers.NFKD(), normalizers.Lowercase(),
             normalizers.Strip(left=True, right=False), normalizers.Strip(left=True, right=True),
             normalizers.Prepend("▁"), normalizers.Replace(" ", "▁"), normalizers.Replace(Regex(r"\s+"), " "),
             normalizers.Replace(Regex(r"[0-9]"), "#"),
             normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Prepend("▁"),
                                   normalizers.Replace(" ", "▁")]),
             normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()])]
    out = []
    for n in specs:
        t = Tokenizer(models.BPE())
        t.normalizer = n
        cfg = json.loads(t.to_str())["normalizer"]
        out.append({"config": cfg, "cases": [{"text": s, "normalized": n.normalize_str(s)} for s in COMPONENT_TEXTS]})
    return out


def pretokenizer_cases():
    P = pre_tokenizers
    specs = [P.ByteLevel(add_prefix_space=False, use_regex=True), P.ByteLevel(add_prefix_space=True, use_regex=True),
             P.ByteLevel(add_prefix_space=True, use_regex=False), P.Digits(individual_digits=True),
             P.Digits(individual_digits=False), P.Whitespace(), P.WhitespaceSplit(), P.Punctuation(),
             P.Punctuation(behavior="removed"), P.Punctuation(behavior="merged_with_next"),
             P.Metaspace(replacement="▁", prepend_scheme="always", split=True),
             P.Metaspace(replacement="▁", prepend_scheme="first", split=False),
             P.Metaspace(replacement="▁", prepend_scheme="never", split=True),
             P.Split(Regex(LLAMA3_RE), behavior="isolated"), P.Split(Regex(QWEN2_RE), behavior="isolated")]
    for behavior in ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]:
        for invert in [False, True]:
            specs.append(P.Split(" ", behavior=behavior, invert=invert))
            specs.append(P.Split(Regex(r"[0-9]+|o"), behavior=behavior, invert=invert))
    specs.append(P.Sequence([P.Split(Regex(LLAMA3_RE), behavior="isolated"), P.ByteLevel(add_prefix_space=False,
                                                                                       use_regex=False)]))
    specs.append(P.Sequence([P.Digits(individual_digits=True), P.ByteLevel(add_prefix_space=False)]))
    out = []
    for p in specs:
        t = Tokenizer(models.BPE())
        t.pre_tokenizer = p
        cfg = json.loads(t.to_str())["pre_tokenizer"]
        out.append({"config": cfg, "cases": [{"text": s, "words": [w for w, _ in p.pre_tokenize_str(s)]}
                                             for s in COMPONENT_TEXTS]})
    # Older files: Metaspace with add_prefix_space (true; false without prepend_scheme is an error in 0.23) or neither.
    for raw in [{"type": "Metaspace", "replacement": "▁", "add_prefix_space": True},
                {"type": "Metaspace", "replacement": "▁"}]:
        j = json.loads(Tokenizer(models.BPE()).to_str())
        j["pre_tokenizer"] = raw
        p = Tokenizer.from_str(json.dumps(j)).pre_tokenizer
        out.append({"config": raw, "cases": [{"text": s, "words": [w for w, _ in p.pre_tokenize_str(s)]}
                                             for s in COMPONENT_TEXTS]})
    return out


def decoder_cases():
    D = decoders
    token_lists = [["▁Hello", "▁world"], ["Hello", "Ġworld", "Ċ"], ["<0xE4>", "<0xB8>", "<0xAD>", "▁x"],
                   ["<0xE4>", "<0xB8>", "a", "<0xFF>"], ["▁", "▁a▁b", "▁c"], ["  x ", " y  "], ["Ã©", "ä¸", "Ń"],
                   ["ðŁĺ", "Ģ"], ["<0x41>", "<0x0A>"], ["a</w>", "##b", "c</w>"], [], ["▁"], ["<0xzz>", "<0x4"]]
    specs = [D.ByteLevel(), D.ByteFallback(), D.Fuse(), D.Replace("▁", " "), D.Replace(Regex("[a-c]"), "X"),
             D.Strip(" ", 1, 0), D.Strip(" ", 2, 2), D.Metaspace("▁", "always", True), D.Metaspace("▁", "never", True),
             D.Metaspace("▁", "first", False),
             D.Sequence([D.Replace("▁", " "), D.ByteFallback(), D.Fuse(), D.Strip(" ", 1, 0)]), D.BPEDecoder("</w>")]
    out = []
    for d in specs:
        t = Tokenizer(models.BPE())
        t.decoder = d
        cfg = json.loads(t.to_str())["decoder"]
        out.append({"config": cfg, "cases": [{"tokens": tl, "decoded": d.decode(tl)} for tl in token_lists]})
    return out


# ----------------------------------------------------------------------------------------------

def dump_cases(result):
    """JSON with one case per line: compact, and diffs stay readable."""
    def dumps(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    def block(items):
        return "[\n" + ",\n".join(dumps(c) for c in items) + "\n]"

    parts = []
    for k, v in result.items():
        if k == "tokenizers":
            toks = []
            for kind, t in v.items():
                fields = [f'{dumps(f)}:{block(x) if f in ("cases", "decode_cases") else dumps(x)}' for f, x in t.items()]
                toks.append(f"{dumps(kind)}:{{" + ",\n".join(fields) + "}")
            parts.append(f"{dumps(k)}:{{\n" + ",\n".join(toks) + "}")
        elif isinstance(v, list):
            parts.append(f"{dumps(k)}:{block(v)}")
        else:
            parts.append(f"{dumps(k)}:{dumps(v)}")
    return "{" + ",\n".join(parts) + "}\n"


def main():
    if not tokenizers.__version__.startswith("0.23."):
        print(f"warning: fixtures were made with tokenizers 0.23.x; this is {tokenizers.__version__}", file=sys.stderr)
    final = OUT
    work = OUT.with_name(OUT.name + ".tmp")  # built aside, swapped in at the end: a failed run leaves the old set
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    out = work
    rng = random.Random(SEED)
    result = {"generator": "scripts/gen_tokenizer_fixtures.py", "tokenizers_version": tokenizers.__version__,
              "tokenizers": {}}
    for kind, build in BUILDERS:
        tok, cfg, jinja = build(rng)
        d = out / kind
        d.mkdir()
        if kind == "gpt2":
            text = json.dumps(legacy_merges(tok.to_str()), ensure_ascii=False, indent=2)
            tok = Tokenizer.from_str(text)
        else:
            text = tok.to_str(pretty=True)
        (d / "tokenizer.json").write_text(text, encoding="utf-8")
        if cfg:
            (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
        if jinja:
            (d / "chat_template.jinja").write_text(jinja, encoding="utf-8")
        specials = [a.content for a in tok.get_added_tokens_decoder().values()]
        result["tokenizers"][kind] = {
            "dir": kind, "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "cases": token_cases(tok, sample_texts(rng, kind, specials)),
            "decode_cases": decode_cases(tok, rng, 60)}
    if (SMOL / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(SMOL / "tokenizer.json"))
        specials = [a.content for a in tok.get_added_tokens_decoder().values()]
        result["tokenizers"]["smollm2"] = {
            "dir": None, "model": "models/smollm2-135m-instruct",
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "cases": token_cases(tok, sample_texts(rng, "smollm2", specials)),
            "decode_cases": decode_cases(tok, rng, 60)}
    else:
        print(f"warning: {SMOL} not found; no SmolLM2 cases", file=sys.stderr)
    result["normalizers"] = normalizer_cases()
    result["pre_tokenizers"] = pretokenizer_cases()
    result["decoders"] = decoder_cases()
    (out / "cases.json").write_text(dump_cases(result), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    for kind, v in result["tokenizers"].items():
        print(f"{kind}: {len(v['cases'])} encode cases, {len(v['decode_cases'])} decode cases, vocab {v['vocab_size']}")


if __name__ == "__main__":
    main()
