#!/usr/bin/env python3
"""Trains small tokenizers of every kind nmperm reads, with the reference libraries, on a
varied corpus, and records the ids those libraries give, so the C++ tokenizers can be
checked against them without Python:

  corpus.jsonl.gz   ~1.2 MB of text in documents ({"text": ...} per line, like a C4 shard):
                    KJV, this project's own source code, digits, whitespace runs, non-Latin
                    scripts, emoji (ZWJ sequences, skin tones, flags), decomposed accents
                    (NFC), contractions in any case, and special-token strings inside text
  llama3/           byte-level BPE with Llama-3's published pre-tokenizer (Split on its
                    regex, isolated; ByteLevel without its own regex), ignore_merges, a
                    TemplateProcessing post-processor adding <|begin_of_text|>
  qwen2/            byte-level BPE with Qwen2's: NFC normaliser, its regex (single digits)
  gpt2/             byte-level BPE with GPT-2's ByteLevel pre-tokenizer (its own regex)
  spm/              a SentencePiece BPE model (tokenizer.model) trained like Llama-2's:
                    byte fallback, split digits, identity normalisation, dummy prefix
  */reference.json  per document: the token count and FNV-1a 64 of the ids (int32 little
                    endian), both without special tokens; and the ids of document 0 with them

    /tmp/hfenv/bin/pip install tokenizers sentencepiece transformers
    /tmp/hfenv/bin/python tools/make_tokenizer_fixtures.py
"""
import gzip
import json
import os
import random
import shutil
import subprocess

import sentencepiece as spm
import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
CODE_COMMIT = "3da9e2c"  # whose sources are the corpus's code documents
ROOT = os.path.join(HERE, "..", "tests", "fixtures", "tokenizers")
LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")


def kjv_text():
    cached = os.path.expanduser("~/.cache/nmperm/kjv.txt")
    if os.path.exists(cached):
        return open(cached, encoding="utf-8").read()
    return subprocess.run(["bible", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout


def corpus(rng):
    docs = []
    kjv = kjv_text()
    for i in range(160):  # 160 passages of ~2.5 KB spread over the whole Bible
        at = (2 * i + 1) * len(kjv) // 320
        docs.append(kjv[at:at + 2500])
    code = ""  # the project's sources at a fixed commit, so that the corpus is reproducible
    files = subprocess.run(["git", "-C", os.path.join(HERE, ".."), "ls-tree", "-r", "--name-only", CODE_COMMIT], capture_output=True,
                           text=True, check=True).stdout.split()
    for path in sorted(f for f in files if f.endswith((".cpp", ".h", ".py")) and not f.startswith("tests/fixtures")):
        code += subprocess.run(["git", "-C", os.path.join(HERE, ".."), "show", f"{CODE_COMMIT}:{path}"], capture_output=True, text=True,
                               check=True).stdout
    for at in range(0, min(len(code), 250_000), 3000):
        docs.append(code[at:at + 3000])
    scripts = {  # code point ranges of letters in several scripts
        "cyrillic": (0x0410, 0x044F), "greek": (0x0391, 0x03C9), "arabic": (0x0627, 0x064A),
        "hebrew": (0x05D0, 0x05EA), "devanagari": (0x0905, 0x0939), "thai": (0x0E01, 0x0E2E),
        "cjk": (0x4E00, 0x4FFF), "hangul": (0xAC00, 0xAD00), "hiragana": (0x3041, 0x3096), "katakana": (0x30A1, 0x30FA)}
    for i in range(60):
        lo, hi = list(scripts.values())[i % len(scripts)]
        words = ["".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))) for _ in range(300)]
        sep = "" if i % len(scripts) in (6, 7, 8, 9) and i % 2 else " "
        docs.append(sep.join(words) + rng.choice(["。", ".", "!", "؟", "\n"]))
    emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "❤️", "✋🏿", "🧑‍💻", "©️", "1️⃣", "🤖", "🦀", "🐍", "👩🏻‍🔬"]
    for i in range(25):
        docs.append(" ".join(rng.choice(emoji) * rng.randint(1, 3) + rng.choice(["", " ok", "!!", "word", "\t"])
                             for _ in range(250)))
    for i in range(25):  # digits: numbers, decimals, dates, long runs
        parts = [str(rng.randint(0, 10 ** rng.randint(1, 12))) for _ in range(200)]
        parts += [f"{rng.random() * 1000:.{rng.randint(1, 6)}f}" for _ in range(80)]
        parts += [f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" for _ in range(40)]
        parts += ["9" * rng.randint(10, 60), "١٢٣٤٥٦", "१२३", "½ ⅓ ²³"]
        rng.shuffle(parts)
        docs.append(rng.choice([" ", ", ", "\n", "+"]).join(parts))
    for i in range(25):  # whitespace runs
        pieces = []
        for _ in range(300):
            pieces.append(rng.choice(["word", "x", "Tab", "end.", "", "ünï", "(a)"]))
            pieces.append(rng.choice([" ", "  ", " " * rng.randint(3, 40), "\t", "\t\t ", "\n", "\r\n", "\n\n\n",
                                      " \n ", "\u00a0", "\u3000", "\u2003", "\v", "\f", " \r"]))
        docs.append("".join(pieces))
    for i in range(15):  # decomposed accents (NFC composes them), contractions in any case
        words = []
        for _ in range(300):
            w = rng.choice(["cafe\u0301", "nai\u0308ve", "A\u030angstro\u0308m", "\u1100\u1161\u11a8", "e\u0301le\u0300ve",
                            "DON'T", "I'M", "you'RE", "it'S", "We'Ll", "they'VE", "he'D", "o'clock", "'tis", "can't"])
            words.append(w)
        docs.append(" ".join(words))
    docs.append("Special strings inside text: <|begin_of_text|>Hello<|end_of_text|> and <|im_start|>user\n"
                "hi<|im_end|> <|endoftext|>; not special: <|unknown|> <s> </s>")
    return docs


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little", signed=True):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def write_reference(d, docs, encode, encode_with_special, kind):
    per_doc = [[len(ids), fnv1a64(ids)] for ids in (encode(t) for t in docs)]
    ref = {"kind": kind, "made_by": "tools/make_tokenizer_fixtures.py", "tokenizers": tokenizers.__version__,
           "sentencepiece": spm.__version__, "documents": len(docs), "tokens": sum(c for c, _ in per_doc),
           "per_document": per_doc, "document0_with_special_tokens": encode_with_special(docs[0])}
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f)
    print(f"{kind}: {ref['tokens']} tokens over {len(docs)} documents")


def byte_level_bpe(name, docs, split_pattern, nfc, ignore_merges, bos, specials, vocab):
    d = os.path.join(ROOT, name)
    os.makedirs(d)
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    if split_pattern:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    if bos:
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, tok.token_to_id(bos))])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(os.path.join(d, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": specials[-1],
              "bos_token": bos, "model_max_length": 131072}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_reference(d, docs, lambda t: tok.encode(t, add_special_tokens=False).ids, lambda t: tok.encode(t).ids,
                    "byte-level BPE " + name)


def ignore_merges_variant(docs):
    """Llama-3's tokenizer has whole words in its vocabulary that its merges do not build;
    with ignore_merges they come out as one token. The trained llama3 tokenizer plus 64 such
    words (frequent corpus words it lacks) shows that."""
    src = os.path.join(ROOT, "llama3", "tokenizer.json")
    j = json.load(open(src, encoding="utf-8"))
    vocab = j["model"]["vocab"]
    byte_map = {b: c for b, c in zip(*_bytes_to_unicode())}
    counts = {}
    for t in docs:
        for w in t.split():
            if w.isalpha() and len(w) > 5:
                counts[w] = counts.get(w, 0) + 1
    added = []
    for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        mapped = "".join(byte_map[b] for b in (" " + w).encode("utf-8"))
        if mapped not in vocab:
            added.append(mapped)
        if len(added) == 64:
            break
    next_id = max(max(vocab.values()), max(t["id"] for t in j["added_tokens"])) + 1
    for i, m in enumerate(added):
        vocab[m] = next_id + i
    d = os.path.join(ROOT, "llama3_ignore_merges")
    os.makedirs(d)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    shutil.copy(os.path.join(ROOT, "llama3", "tokenizer_config.json"), d)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    write_reference(d, docs, lambda t: tok.encode(t, add_special_tokens=False).ids, lambda t: tok.encode(t).ids,
                    "byte-level BPE llama3 with whole words beyond its merges")


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


def sentencepiece_model(docs):
    d = os.path.join(ROOT, "spm")
    os.makedirs(d)
    train_txt = os.path.join(d, "train.txt")
    with open(train_txt, "w", encoding="utf-8") as f:
        for t in docs:
            f.write(t.replace("\n", " ") + "\n")
    spm.SentencePieceTrainer.train(input=train_txt, model_prefix=os.path.join(d, "tokenizer"), model_type="bpe",
                                   vocab_size=2000, byte_fallback=True, split_digits=True, character_coverage=0.9995,
                                   normalization_rule_name="identity", add_dummy_prefix=True,
                                   remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                                   max_sentence_length=1 << 20, minloglevel=2)
    os.remove(train_txt)
    os.remove(os.path.join(d, "tokenizer.vocab"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                   "bos_token": "<s>", "eos_token": "</s>"}, f, indent=2)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    write_reference(d, docs, lambda t: sp.encode(t), lambda t: [sp.bos_id()] + sp.encode(t), "sentencepiece")


if __name__ == "__main__":
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    docs = corpus(random.Random(0))
    with gzip.GzipFile(os.path.join(ROOT, "corpus.jsonl.gz"), "wb", mtime=0) as f:
        for t in docs:
            f.write((json.dumps({"text": t}, ensure_ascii=False) + "\n").encode("utf-8"))
    print(f"corpus: {len(docs)} documents, {sum(len(t.encode('utf-8')) for t in docs)} bytes")
    byte_level_bpe("llama3", docs, LLAMA3_PAT, False, True, "<|begin_of_text|>",
                   ["<|begin_of_text|>", "<|end_of_text|>"], 3000)
    byte_level_bpe("qwen2", docs, QWEN2_PAT, True, False, None, ["<|im_start|>", "<|im_end|>", "<|endoftext|>"], 3000)
    byte_level_bpe("gpt2", docs, None, False, False, None, ["<|endoftext|>"], 2000)
    ignore_merges_variant(docs)
    sentencepiece_model(docs)


def protocol_fixture():
    """A tiny Llama with the llama3 tokenizer (tests/fixtures/llama3_tok) and a WikiText-style
    file; the reference perplexity is computed as Wanda / SparseGPT do (tokenize the joined
    lines once, non-overlapping seqlen windows, remainder dropped) with transformers."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    kjv = kjv_text().splitlines()
    lines = []
    for i in range(30):
        lines += ["", f" = Chapter {i + 1} = \n", ""]
        lines += [" " + v.strip() + " \n" for v in kjv[1000 + 40 * i:1000 + 40 * i + 6] if v.strip()]
    wiki = os.path.join(ROOT, "wiki_small.txt")
    with open(wiki, "w", encoding="utf-8") as f:
        f.write("".join(l if l else "\n" for l in lines))
    d = os.path.join(ROOT, "..", "llama3_tok")
    shutil.rmtree(d, ignore_errors=True)
    torch.manual_seed(6)
    cfg = LlamaConfig(vocab_size=3000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, initializer_range=0.3,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 32})
    model = LlamaForCausalLM(cfg).float().eval()
    model.save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(ROOT, "llama3", f), d)
    tok = AutoTokenizer.from_pretrained(d)
    with open(wiki, encoding="utf-8") as f:  # as the datasets wikitext loader yields lines
        rows = [r if r.strip() else "" for r in f]
    enc = tok("\n\n".join(rows), return_tensors="pt").input_ids
    ref = {"tokens": enc.numel()}
    for seqlen in (64, 128):
        n = enc.numel() // seqlen
        nll = 0.0
        with torch.no_grad():
            for i in range(n):
                ids = enc[:, i * seqlen:(i + 1) * seqlen]
                logits = model(ids).logits
                loss = torch.nn.functional.cross_entropy(logits[0, :-1].double(), ids[0, 1:])
                nll += loss.item() * seqlen
        ref[f"seqlen{seqlen}"] = {"windows": n, "perplexity": float(torch.exp(torch.tensor(nll / (n * seqlen))))}
    with open(os.path.join(ROOT, "wiki_small_reference.json"), "w") as f:
        json.dump(ref, f, indent=2)
    print("protocol:", ref)


if __name__ == "__main__":
    protocol_fixture()
