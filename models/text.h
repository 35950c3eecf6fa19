// Raw text corpora for language models, as pruning papers use them:
//   .txt               one document: the whole file (WikiText-2 raw: wiki.test.raw, ...)
//   .jsonl / .json     JSON lines (C4 shards) or one JSON array; each item an object with a
//                      "text" field, or a string
// either optionally gzip-compressed (detected by its magic, whatever the name).
// Tokenized once per (file, tokenizer) and cached as a u32 token file in the cache folder.
#pragma once
#include <string>
#include <vector>

#include "models/tokenizer.h"

namespace nmperm {

// The documents of a text file; `what` for errors is its path.
std::vector<std::string> read_documents(const std::string& path);
// True when `path` looks like a text corpus (by extension, before any .gz).
bool is_text_file(const std::string& path);

// The whole file's tokens, as the field's perplexity scripts make them: the documents
// joined with "\n\n" (WikiText-2's convention), tokenized once with the checkpoint's
// special tokens (its BOS) in front. Cached under cache_dir keyed by the file's size,
// modification time and path, and the tokenizer's fingerprint; progress on stderr.
std::vector<int32_t> tokenize_file(const std::string& path, const Tokenizer& tok, const std::string& cache_dir);

}  // namespace nmperm
