#include "models/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <sentencepiece_processor.h>
#include <utf8proc.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "models/data.h"

namespace nmperm {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string fnv1a64_hex(std::string_view bytes, uint64_t h) {
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001B3ull;
  return fmt::format("{:016x}", h);
}

std::vector<int32_t> Tokenizer::encode_with_special(std::string_view text) const {
  std::vector<int32_t> ids = encode(text);
  if (bos) ids.insert(ids.begin(), *bos);
  return ids;
}

namespace {

json parse_json(const std::string& bytes, const fs::path& p) {
  json j = json::parse(bytes, nullptr, false);
  NMPERM_CHECK(!j.is_discarded() && j.is_object(), "'{}' is not a JSON object", p.string());
  return j;
}

// The byte offset of the first invalid UTF-8 sequence, or npos.
size_t invalid_utf8_at(std::string_view s) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  size_t at = 0;
  while (at < s.size()) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(p + at, utf8proc_ssize_t(s.size() - at), &cp);
    if (n <= 0) return at;
    at += size_t(n);
  }
  return std::string::npos;
}

void check_utf8(std::string_view text) {
  size_t bad = invalid_utf8_at(text);
  NMPERM_CHECK(bad == std::string::npos, "the text is not valid UTF-8 (byte offset {})", bad);
}

std::string utf8_of(int32_t cp) {
  utf8proc_uint8_t buf[4];
  utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
  return std::string(reinterpret_cast<char*>(buf), size_t(n));
}

// A compiled regex (PCRE2, UTF + Unicode properties for \s \w \d and \p{..}).
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int err;
    PCRE2_SIZE off;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      NMPERM_FAIL("{}: the regex does not compile at offset {}: {}", where, off, reinterpret_cast<char*>(msg));
    }
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  // Pieces of s as Split(behavior: Isolated) makes them: every match, and every gap between
  // matches, in order. Empty matches are skipped, as the reference's find_iter does.
  void split_isolated(std::string_view s, std::vector<std::string_view>& out) const {
    size_t at = 0, gap = 0;
    while (at <= s.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), at, PCRE2_NO_UTF_CHECK, data_,
                           nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      NMPERM_CHECK(rc > 0, "pre-tokenizer regex failed (PCRE2 error {})", rc);
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data_);
      size_t b = ov[0], e = ov[1];
      if (e == b) {  // empty: step over one code point
        if (b >= s.size()) break;
        at = b + 1;
        while (at < s.size() && (uint8_t(s[at]) & 0xC0) == 0x80) ++at;
        continue;
      }
      if (b > gap) out.push_back(s.substr(gap, b - gap));
      out.push_back(s.substr(b, e - b));
      at = gap = e;
    }
    if (gap < s.size()) out.push_back(s.substr(gap));
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
};

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct AddedToken {
  std::string content;
  int32_t id;
};

class ByteLevelBpe : public Tokenizer {
 public:
  ByteLevelBpe(const json& j, const json& config, const std::string& where) {
    const json& model = j.at("model");
    auto null_or = [&](const char* key) { return !model.contains(key) || model[key].is_null(); };
    NMPERM_CHECK(null_or("continuing_subword_prefix") && null_or("end_of_word_suffix"),
                 "{}: BPE with continuing_subword_prefix / end_of_word_suffix is not supported", where);
    NMPERM_CHECK(null_or("dropout") || model["dropout"].get<double>() == 0, "{}: BPE dropout is not supported", where);
    NMPERM_CHECK(!model.value("byte_fallback", false), "{}: byte-level BPE with byte_fallback is not supported", where);
    ignore_merges_ = model.value("ignore_merges", false);
    for (auto& [tok, id] : model.at("vocab").items()) add_vocab(tok, id.get<int32_t>());
    int32_t rank = 0;
    for (const json& m : model.at("merges")) {
      std::string a, b;
      if (m.is_string()) {  // the older form "a b"
        std::string s = m.get<std::string>();
        size_t sp = s.find(' ');
        NMPERM_CHECK(sp != std::string::npos, "{}: merge '{}' is not two tokens", where, s);
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else {
        NMPERM_CHECK(m.is_array() && m.size() == 2, "{}: merge {} is not two tokens", where, m.dump());
        a = m[0].get<std::string>(), b = m[1].get<std::string>();
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
      NMPERM_CHECK(ia != vocab_.end() && ib != vocab_.end() && iab != vocab_.end(),
                   "{}: merge '{} {}' uses tokens not in the vocabulary", where, a, b);
      merges_.emplace(pair_key(ia->second, ib->second), std::pair{rank++, iab->second});
    }
    // The byte-to-unicode map of GPT-2: printable Latin-1 bytes map to themselves, the
    // others to 256 + n in byte order.
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      std::string u = utf8_of(printable ? b : 256 + n++);
      auto it = vocab_.find(u);
      NMPERM_CHECK(it != vocab_.end(), "{}: the vocabulary lacks byte 0x{:02x} ('{}'): not a byte-level BPE", where, b,
                   u);
      byte_id_[size_t(b)] = it->second;
      byte_str_[size_t(b)] = u;
    }
    read_added_tokens(j, where);
    read_normalizer(j.contains("normalizer") ? j["normalizer"] : json(), where);
    NMPERM_CHECK(j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null(), "{}: no pre_tokenizer", where);
    read_pre_tokenizer(j["pre_tokenizer"], where);
    NMPERM_CHECK(byte_level_, "{}: a BPE without a ByteLevel pre-tokenizer is not byte-level BPE", where);
    if (j.contains("post_processor")) read_post_processor(j["post_processor"], where);
    // transformers adds what the post-processor adds; a tokenizer_config.json that says
    // otherwise would make the reference depend on its version, so it is refused.
    if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean())
      NMPERM_CHECK(config["add_bos_token"].get<bool>() == bos.has_value(),
                   "{}: tokenizer_config.json add_bos_token {} disagrees with the post-processor, which {}", where,
                   config["add_bos_token"].dump(), bos ? "adds a BOS" : "adds none");
    kind = "byte-level BPE (tokenizer.json)";
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    check_utf8(text);
    std::vector<int32_t> out;
    std::unordered_map<std::string, std::vector<int32_t>> cache;  // word -> ids, for this text
    size_t at = 0, seg = 0;
    auto flush = [&](size_t end) {
      if (end > seg) encode_segment(text.substr(seg, end - seg), out, cache);
    };
    while (at < text.size()) {  // added tokens first, leftmost-longest, in the raw text
      const AddedToken* hit = nullptr;
      for (size_t i : added_by_first_[uint8_t(text[at])])
        if (text.compare(at, added_[i].content.size(), added_[i].content) == 0 &&
            (!hit || added_[i].content.size() > hit->content.size()))
          hit = &added_[i];
      if (!hit) {
        ++at;
        continue;
      }
      flush(at);
      out.push_back(hit->id);
      at = seg = at + hit->content.size();
    }
    flush(text.size());
    return out;
  }

 private:
  static uint64_t pair_key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }

  void add_vocab(const std::string& tok, int32_t id) {
    NMPERM_CHECK(id >= 0, "tokenizer.json: negative id {} for '{}'", id, tok);
    vocab_[tok] = id;
    vocab_size = std::max<int64_t>(vocab_size, int64_t(id) + 1);
  }

  void read_added_tokens(const json& j, const std::string& where) {
    if (!j.contains("added_tokens")) return;
    for (const json& t : j["added_tokens"]) {
      std::string c = t.at("content").get<std::string>();
      for (const char* flag : {"single_word", "lstrip", "rstrip"})
        NMPERM_CHECK(!t.value(flag, false), "{}: added token '{}' with {} is not supported", where, c, flag);
      NMPERM_CHECK(!c.empty(), "{}: an added token is empty", where);
      if (t.value("normalized", false)) normalized_added_.push_back(c);
      added_.push_back({c, t.at("id").get<int32_t>()});
      add_vocab(c, added_.back().id);
      added_by_first_[uint8_t(c[0])].push_back(added_.size() - 1);
    }
  }

  void read_normalizer(const json& n, const std::string& where) {
    if (n.is_null()) return;
    std::string type = n.value("type", "");
    if (type == "Sequence") {
      for (const json& s : n.at("normalizers")) read_normalizer(s, where);
      return;
    }
    NMPERM_CHECK(type == "NFC", "{}: normalizer '{}' is not supported (none, NFC)", where, type);
    // Added tokens marked normalized are matched after normalisation by the reference; ours
    // are matched in the raw text, which is the same only without a normaliser.
    NMPERM_CHECK(normalized_added_.empty(), "{}: added token '{}' is normalized=true under an NFC normalizer: not "
                 "supported", where, normalized_added_.empty() ? "" : normalized_added_[0]);
    nfc_ = true;
  }

  void read_pre_tokenizer(const json& p, const std::string& where) {
    std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const json& s : p.at("pretokenizers")) read_pre_tokenizer(s, where);
    } else if (type == "Split") {
      NMPERM_CHECK(!byte_level_, "{}: a Split after ByteLevel is not supported", where);
      NMPERM_CHECK(p.value("behavior", "") == "Isolated" && !p.value("invert", false),
                   "{}: Split with behavior '{}'{} is not supported (Isolated)", where, p.value("behavior", ""),
                   p.value("invert", false) ? ", inverted," : "");
      const json& pat = p.at("pattern");
      NMPERM_CHECK(pat.contains("Regex") || pat.contains("String"), "{}: Split pattern {} is not supported", where,
                   pat.dump());
      NMPERM_CHECK(!pat.contains("String"), "{}: Split on a plain string is not supported (a Regex is)", where);
      splits_.push_back(std::make_unique<Regex>(pat["Regex"].get<std::string>(), where + " pre_tokenizer"));
    } else if (type == "ByteLevel") {
      byte_level_ = true;
      add_prefix_space_ = p.value("add_prefix_space", false);
      if (p.value("use_regex", true)) splits_.push_back(std::make_unique<Regex>(kGpt2Pattern, where));
      NMPERM_CHECK(!(add_prefix_space_ && splits_.size() > (p.value("use_regex", true) ? 1u : 0u)),
                   "{}: ByteLevel add_prefix_space after a Split is not supported", where);
    } else {
      NMPERM_FAIL("{}: pre-tokenizer '{}' is not supported (Sequence, Split, ByteLevel)", where, type);
    }
  }

  void read_post_processor(const json& p, const std::string& where) {
    if (p.is_null()) return;
    std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const json& s : p.at("processors")) read_post_processor(s, where);
    } else if (type == "TemplateProcessing") {
      bool seen_a = false;
      for (const json& item : p.at("single")) {
        if (item.contains("Sequence")) {
          seen_a = true;
          continue;
        }
        std::string name = item.at("SpecialToken").at("id").get<std::string>();
        const json& ids = p.at("special_tokens").at(name).at("ids");
        NMPERM_CHECK(!seen_a && ids.size() == 1 && !bos,
                     "{}: TemplateProcessing other than one token before the sequence (a BOS) is not supported", where);
        bos = ids[0].get<int32_t>();
      }
    } else {
      NMPERM_CHECK(type == "ByteLevel", "{}: post-processor '{}' is not supported (ByteLevel, TemplateProcessing)",
                   where, type);
    }
  }

  void encode_segment(std::string_view seg, std::vector<int32_t>& out,
                      std::unordered_map<std::string, std::vector<int32_t>>& cache) const {
    std::string normalized;
    if (nfc_) {
      utf8proc_uint8_t* n = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(std::string(seg).c_str()));
      NMPERM_CHECK(n, "NFC normalisation failed");
      normalized = reinterpret_cast<char*>(n);
      free(n);
      seg = normalized;
    }
    std::vector<std::string_view> pieces{seg}, next;
    std::string prefixed;
    if (add_prefix_space_ && !seg.empty() && seg[0] != ' ') {
      prefixed = " " + std::string(seg);
      pieces = {prefixed};
    }
    for (const auto& re : splits_) {
      next.clear();
      for (std::string_view p : pieces) re->split_isolated(p, next);
      pieces.swap(next);
    }
    for (std::string_view p : pieces) {
      auto [it, fresh] = cache.try_emplace(std::string(p));
      if (fresh) it->second = bpe(p);
      out.insert(out.end(), it->second.begin(), it->second.end());
    }
  }

  // One pre-tokenized word: its bytes as byte-level symbols, then the lowest-ranked adjacent
  // pair merged (leftmost first among equals) until no pair has a merge.
  std::vector<int32_t> bpe(std::string_view word) const {
    if (ignore_merges_) {
      std::string mapped;
      for (unsigned char c : word) mapped += byte_str_[c];
      auto it = vocab_.find(mapped);
      if (it != vocab_.end()) return {it->second};
    }
    std::vector<int32_t> s;
    s.reserve(word.size());
    for (unsigned char c : word) s.push_back(byte_id_[c]);
    while (s.size() > 1) {
      int32_t best_rank = INT32_MAX, merged = 0;
      size_t at = 0;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        auto it = merges_.find(pair_key(s[i], s[i + 1]));
        if (it != merges_.end() && it->second.first < best_rank) {
          best_rank = it->second.first, merged = it->second.second, at = i;
        }
      }
      if (best_rank == INT32_MAX) break;
      s[at] = merged;
      s.erase(s.begin() + long(at) + 1);
    }
    return s;
  }

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, a+b)
  int32_t byte_id_[256] = {};
  std::string byte_str_[256];  // the byte-to-unicode map, UTF-8
  std::vector<AddedToken> added_;
  std::vector<size_t> added_by_first_[256];
  std::vector<std::string> normalized_added_;
  std::vector<std::unique_ptr<Regex>> splits_;  // applied in order, each splitting every piece
  bool byte_level_ = false, add_prefix_space_ = false, ignore_merges_ = false, nfc_ = false;
};

class SentencePiece : public Tokenizer {
 public:
  SentencePiece(const fs::path& model, const json& config) {
    auto st = sp_.Load(model.string());
    NMPERM_CHECK(st.ok(), "'{}': not a SentencePiece model: {}", model.string(), st.ToString());
    vocab_size = sp_.GetPieceSize();
    // LlamaTokenizer's defaults: add BOS, not EOS.
    NMPERM_CHECK(!config.value("add_eos_token", false), "'{}': tokenizer_config.json add_eos_token is not supported",
                 model.string());
    if (config.value("add_bos_token", true)) {
      NMPERM_CHECK(sp_.bos_id() >= 0, "'{}': add_bos_token, but the model has no BOS piece", model.string());
      bos = sp_.bos_id();
    }
    kind = "SentencePiece (tokenizer.model)";
  }
  std::vector<int32_t> encode(std::string_view text) const override {
    check_utf8(text);
    std::vector<int> ids;
    auto st = sp_.Encode(text, &ids);
    NMPERM_CHECK(st.ok(), "SentencePiece: {}", st.ToString());
    return {ids.begin(), ids.end()};
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& checkpoint) {
  fs::path dir = fs::is_directory(checkpoint) ? fs::path(checkpoint) : fs::path(checkpoint).parent_path();
  fs::path tj = dir / "tokenizer.json", tm = dir / "tokenizer.model", tc = dir / "tokenizer_config.json";
  std::string config_bytes = fs::exists(tc) ? read_file_maybe_gz(tc.string()) : "{}";
  json config = parse_json(config_bytes, tc);
  std::unique_ptr<Tokenizer> tok;
  std::string files;
  std::string refusal;
  if (fs::exists(tj)) {
    files = read_file_maybe_gz(tj.string());
    json j = parse_json(files, tj);
    std::string where = fmt::format("'{}'", tj.string());
    NMPERM_CHECK(j.contains("model") && j["model"].is_object(), "{}: no model", where);
    std::string type = j["model"].value("type", "");
    bool byte_level = type == "BPE" && j.contains("pre_tokenizer") && j["pre_tokenizer"].dump().find("\"ByteLevel\"") !=
                                                                           std::string::npos;
    if (byte_level) {
      try {
        tok = std::make_unique<ByteLevelBpe>(j, config, where);
      } catch (const json::exception& e) {
        NMPERM_FAIL("{}: {}", where, e.what());
      }
    } else {
      refusal = fmt::format("{}: tokenizer kind '{}'{} is not supported (byte-level BPE; or a SentencePiece "
                            "tokenizer.model beside it)",
                            where, type, type == "BPE" ? " without a ByteLevel pre-tokenizer" : "");
    }
  }
  if (!tok && fs::exists(tm)) {
    files = read_file_maybe_gz(tm.string());
    tok = std::make_unique<SentencePiece>(tm, config);
  }
  NMPERM_CHECK(tok || refusal.empty(), "{}", refusal);
  if (!tok) return nullptr;
  tok->fingerprint = fnv1a64_hex(config_bytes, std::stoull(fnv1a64_hex(files), nullptr, 16));
  return tok;
}

}  // namespace nmperm
