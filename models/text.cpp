#include "models/text.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/safetensors.h"
#include "models/data.h"

namespace nmperm {

namespace fs = std::filesystem;

namespace {

std::string without_gz(const std::string& path) {
  return path.ends_with(".gz") ? path.substr(0, path.size() - 3) : path;
}

std::string text_of(const nlohmann::json& item, const std::string& path, size_t n) {
  if (item.is_string()) return item.get<std::string>();
  NMPERM_CHECK(item.is_object() && item.contains("text") && item["text"].is_string(),
               "'{}': item {} has no \"text\" string field", path, n + 1);
  return item["text"].get<std::string>();
}

}  // namespace

bool is_text_file(const std::string& path) {
  std::string p = without_gz(path);
  return p.ends_with(".txt") || p.ends_with(".raw") || p.ends_with(".jsonl") || p.ends_with(".json");
}

std::vector<std::string> read_documents(const std::string& path) {
  std::string bytes = read_file_maybe_gz(path), p = without_gz(path);
  std::vector<std::string> docs;
  if (p.ends_with(".jsonl") || p.ends_with(".json")) {
    size_t first = bytes.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && bytes[first] == '[') {
      nlohmann::json a = nlohmann::json::parse(bytes, nullptr, false);
      NMPERM_CHECK(!a.is_discarded(), "'{}' is not valid JSON", path);
      for (size_t i = 0; i < a.size(); ++i) docs.push_back(text_of(a[i], path, i));
    } else {
      size_t at = 0, line = 0;
      while (at < bytes.size()) {
        size_t end = bytes.find('\n', at);
        if (end == std::string::npos) end = bytes.size();
        std::string_view l(bytes.data() + at, end - at);
        ++line;
        if (l.find_first_not_of(" \t\r") != std::string_view::npos) {
          nlohmann::json j = nlohmann::json::parse(l, nullptr, false);
          NMPERM_CHECK(!j.is_discarded(), "'{}': line {} is not valid JSON", path, line);
          docs.push_back(text_of(j, path, line - 1));
        }
        at = end + 1;
      }
    }
  } else {
    // Lines as Hugging Face's wikitext loader yields them: each with its "\n", blank
    // (whitespace-only) lines as "", so that joining with "\n\n" gives the text the
    // field's WikiText-2 perplexity scripts evaluate.
    size_t at = 0;
    while (at < bytes.size()) {
      size_t end = bytes.find('\n', at);
      end = end == std::string::npos ? bytes.size() : end + 1;
      std::string line = bytes.substr(at, end - at);
      docs.push_back(line.find_first_not_of(" \t\r\n") == std::string::npos ? "" : line);
      at = end;
    }
  }
  NMPERM_CHECK(!docs.empty(), "'{}' holds no text", path);
  return docs;
}

std::vector<int32_t> tokenize_file(const std::string& path, const Tokenizer& tok, const std::string& cache_dir) {
  std::error_code ec;
  fs::path abs = fs::absolute(path, ec);
  NMPERM_CHECK(fs::exists(path), "text file '{}' does not exist", path);
  auto stamp = fs::last_write_time(path).time_since_epoch().count();
  std::string key = fnv1a64_hex(fmt::format("v1|{}|{}|{}|{}", abs.string(), fs::file_size(path), stamp, tok.fingerprint));
  fs::path cached = fs::path(cache_dir) / "tokens" / (fs::path(path).filename().string() + "." + key + ".u32");
  if (fs::exists(cached)) return load_token_file(cached.string(), "u32");
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> docs = read_documents(path);
  std::string text;
  for (size_t i = 0; i < docs.size(); ++i) text += (i ? "\n\n" : "") + docs[i];
  fmt::print(stderr, "tokenizing '{}' ({} documents, {:.1f} MB) with its {} ...\n", path, docs.size(),
             double(text.size()) / 1e6, tok.kind);
  std::vector<int32_t> ids;
  try {
    ids = tok.encode_with_special(text);
  } catch (const Error& e) {
    NMPERM_FAIL("'{}': {}", path, e.what());
  }
  for (int32_t id : ids)
    NMPERM_CHECK(id >= 0 && id < tok.vocab_size, "'{}': token {} is outside the vocabulary", path, id);
  std::string bytes(ids.size() * 4, '\0');
  std::memcpy(bytes.data(), ids.data(), bytes.size());  // little-endian u32, as --token-format u32
  fs::create_directories(cached.parent_path());
  write_file_atomic(cached.string(), bytes);
  fmt::print(stderr, "  {} tokens in {:.1f}s, cached as '{}'\n", ids.size(),
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), cached.string());
  return ids;
}

}  // namespace nmperm
