// Tokenizers of Hugging Face checkpoint folders, read as the reference libraries read them:
//   tokenizer.json, byte-level BPE (GPT-2, Llama-3, Qwen2 style): the normaliser (none or
//     NFC), the pre-tokenizer (ByteLevel with GPT-2's regex, or Split on a regex, isolated,
//     then ByteLevel; regexes through PCRE2 in UTF + Unicode-property mode), the byte-to-
//     unicode map, merges by rank (ignore_merges honoured), added tokens matched in the raw
//     text before anything else, and the post-processor's BOS (TemplateProcessing);
//   tokenizer.model, SentencePiece (Llama-1/2, Mistral), through libsentencepiece, with BOS
//     as tokenizer_config.json's add_bos_token says (default: add it).
// A tokenizer.json of another kind (WordPiece, Unigram, Metaspace BPE, ...) is refused by
// name unless a tokenizer.model beside it covers the model; nothing is approximated.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nmperm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text` without BOS/EOS (UTF-8; invalid UTF-8 is an error naming the offset).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // encode() with what the checkpoint adds to a sequence (its BOS, if any) in front.
  std::vector<int32_t> encode_with_special(std::string_view text) const;
  std::string kind;          // e.g. "byte-level BPE (tokenizer.json)"
  std::string fingerprint;   // hex digest of the tokenizer files: a cache key
  int64_t vocab_size = 0;    // ids are < vocab_size
  std::optional<int32_t> bos;  // prepended by encode_with_special
};

// The tokenizer of a checkpoint folder (or of the folder holding a .safetensors file), or
// nullptr when it has neither tokenizer.json nor tokenizer.model.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& checkpoint);

// FNV-1a 64 of bytes, as 16 hex digits (cache keys and test references).
std::string fnv1a64_hex(std::string_view bytes, uint64_t h = 0xCBF29CE484222325ull);

}  // namespace nmperm
