// Tokenizers against the reference libraries (fixtures from tools/make_tokenizer_fixtures.py):
// identical ids on ~1.1 MB of varied text, per document, for byte-level BPE tokenizers with
// Llama-3's, Qwen2's and GPT-2's pre-tokenizers and for a SentencePiece model.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "helpers.h"
#include "models/text.h"

namespace nmperm {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return std::string(NMPERM_FIXTURES) + "/tokenizers/" + name; }

std::string ids_hash(const std::vector<int32_t>& ids) {
  return fnv1a64_hex(std::string_view(reinterpret_cast<const char*>(ids.data()), ids.size() * 4));
}

void check_against_reference(const std::string& name, const std::string& kind) {
  SCOPED_TRACE(name);
  static const std::vector<std::string> docs = read_documents(fixture("corpus.jsonl.gz"));
  auto tok = load_tokenizer(fixture(name));
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->kind, kind);
  nlohmann::json ref = nlohmann::json::parse(std::ifstream(fixture(name + "/reference.json")));
  ASSERT_EQ(docs.size(), ref["documents"].get<size_t>());
  size_t wrong = 0, tokens = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    std::vector<int32_t> ids = tok->encode(docs[i]);
    tokens += ids.size();
    const auto& r = ref["per_document"][i];
    if (ids.size() != r[0].get<size_t>() || ids_hash(ids) != r[1].get<std::string>()) {
      if (wrong++ < 3)
        ADD_FAILURE() << "document " << i << ": " << ids.size() << " tokens, reference " << r[0] << "; text begins '"
                      << docs[i].substr(0, 80) << "'";
    }
  }
  EXPECT_EQ(wrong, 0u) << "documents that tokenize differently";
  EXPECT_EQ(tokens, ref["tokens"].get<size_t>());
  EXPECT_EQ(tok->encode_with_special(docs[0]), ref["document0_with_special_tokens"].get<std::vector<int32_t>>());
}

TEST(Tokenizer, CorpusIsLargeAndVaried) {
  std::vector<std::string> docs = read_documents(fixture("corpus.jsonl.gz"));
  size_t bytes = 0;
  for (auto& d : docs) bytes += d.size();
  EXPECT_GT(bytes, size_t(1) << 20);
  EXPECT_GT(docs.size(), 300u);
}

TEST(Tokenizer, Llama3StyleByteLevelBpeMatchesTokenizers) {
  check_against_reference("llama3", "byte-level BPE (tokenizer.json)");
}
TEST(Tokenizer, Qwen2StyleByteLevelBpeWithNfcMatchesTokenizers) {
  check_against_reference("qwen2", "byte-level BPE (tokenizer.json)");
}
// Whole words in the vocabulary that the merges do not build: one token each (Llama-3's
// ignore_merges), 1,679 fewer tokens than merging would give.
TEST(Tokenizer, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  check_against_reference("llama3_ignore_merges", "byte-level BPE (tokenizer.json)");
}
TEST(Tokenizer, Gpt2StyleByteLevelBpeMatchesTokenizers) {
  check_against_reference("gpt2", "byte-level BPE (tokenizer.json)");
}
TEST(Tokenizer, SentencePieceMatchesSentencepiece) {
  check_against_reference("spm", "SentencePiece (tokenizer.model)");
}

TEST(Tokenizer, UnsupportedKindsAndBadTextAreRefusedByName) {
  fs::path dir = test::scratch_path("tok_kind");
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "WordPiece", "vocab": {}}, "pre_tokenizer": null})";
  EXPECT_THROW_MSG(load_tokenizer(dir.string()), "tokenizer kind 'WordPiece' is not supported");
  std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "BPE", "vocab": {}, "merges": []},
      "pre_tokenizer": {"type": "Metaspace"}})";
  EXPECT_THROW_MSG(load_tokenizer(dir.string()), "tokenizer kind 'BPE' without a ByteLevel pre-tokenizer");
  fs::remove(dir / "tokenizer.json");
  EXPECT_EQ(load_tokenizer(dir.string()), nullptr);  // no tokenizer at all: the caller decides
  std::ofstream(dir / "tokenizer.model") << "not a model";
  EXPECT_THROW_MSG(load_tokenizer(dir.string()), "not a SentencePiece model");
  fs::remove_all(dir);
  auto tok = load_tokenizer(fixture("llama3"));
  EXPECT_THROW_MSG(tok->encode("ok \xff\xfe"), "not valid UTF-8 (byte offset 3)");
}

TEST(Tokenizer, TextFilesFollowTheFieldsConventions) {
  fs::path dir = test::scratch_path("text");
  fs::create_directories(dir);
  std::ofstream(dir / "wiki.txt") << "\n = Title = \n\n Body line .\n";
  EXPECT_EQ(read_documents((dir / "wiki.txt").string()),
            (std::vector<std::string>{"", " = Title = \n", "", " Body line .\n"}));
  std::ofstream(dir / "c4.jsonl") << R"({"text": "one", "url": "u"})" << "\n\n" << R"({"text": "two"})" << "\n";
  EXPECT_EQ(read_documents((dir / "c4.jsonl").string()), (std::vector<std::string>{"one", "two"}));
  std::ofstream(dir / "a.json") << R"(["x", {"text": "y"}])";
  EXPECT_EQ(read_documents((dir / "a.json").string()), (std::vector<std::string>{"x", "y"}));
  std::ofstream(dir / "bad.jsonl") << R"({"text": "one"})" << "\n" << R"({"txt": 2})" << "\n";
  EXPECT_THROW_MSG(read_documents((dir / "bad.jsonl").string()), "item 2 has no \"text\" string field");
  // Tokenized once, then read from the cache.
  auto tok = load_tokenizer(fixture("llama3"));
  std::string cache = (dir / "cache").string();
  std::vector<int32_t> ids = tokenize_file((dir / "wiki.txt").string(), *tok, cache);
  EXPECT_EQ(ids, tok->encode_with_special("\n\n = Title = \n\n\n\n\n Body line .\n"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir / "cache" / "tokens"), fs::directory_iterator()), 1);
  EXPECT_EQ(tokenize_file((dir / "wiki.txt").string(), *tok, cache), ids);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nmperm
