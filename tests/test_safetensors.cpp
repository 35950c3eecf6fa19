// safetensors: round trip of every dtype with metadata, half-precision widening, and one
// test per malformed-file case, each checking that the error says what is wrong.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "helpers.h"

namespace nmperm {
namespace {

using json = nlohmann::json;

std::string temp_path(const std::string& name) {
  return test::scratch_path("test_" + name).string();
}

// A file from a header object and a data section.
std::string file_bytes(const std::string& header, const std::string& data) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out += char((n >> (8 * i)) & 0xff);
  return out + header + data;
}

SafeTensors parse(const std::string& bytes) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.safetensors");
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  Generator g(3);
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"a.f32", randn({3, 5}, g)},
      {"b.f64", randn({7}, g, DType::F64)},
      {"c.i32", from_vector<int32_t>({1, -2, 3}, {3})},
      {"d.i64", from_vector<int64_t>({1LL << 40, -5}, {2, 1})},
      {"e.scalar", scalar_tensor(2.5)},
      {"f.empty", zeros({0, 4})},
      {"g.view", transpose(randn({2, 3}, g), 0, 1)},  // non-contiguous input is packed on save
  };
  std::string path = temp_path("roundtrip.safetensors");
  save_safetensors(path, ts, {{"format", "pt"}, {"note", "hello"}});
  SafeTensors back = load_safetensors(path);
  std::filesystem::remove(path);
  ASSERT_EQ(back.tensors.size(), ts.size());
  for (auto& [name, t] : ts) {
    const Tensor* b = back.find(name);
    ASSERT_TRUE(b) << name;
    EXPECT_EQ(b->dtype(), t.dtype()) << name;
    EXPECT_EQ(b->shape(), t.shape()) << name;
    EXPECT_EQ(b->to_vector<double>(), t.to_vector<double>()) << name;
  }
  EXPECT_EQ(back.metadata.at("note"), "hello");
  EXPECT_THROW_MSG(back.at("missing"), "tensor 'missing' not found");
}

TEST(Safetensors, WidensBf16AndF16ToF32) {
  // 1.0, -2.0, 0.5 in bf16 and f16; plus an f16 subnormal (2^-24) and infinity.
  std::string bf16 = std::string("\x80\x3f\x00\xc0\x00\x3f", 6);
  std::string f16 = std::string("\x00\x3c\x00\xc0\x00\x38\x01\x00\x00\x7c", 10);
  json h = {{"x", {{"dtype", "BF16"}, {"shape", {3}}, {"data_offsets", {0, 6}}}},
            {"y", {{"dtype", "F16"}, {"shape", {5}}, {"data_offsets", {6, 16}}}}};
  SafeTensors s = parse(file_bytes(h.dump(), bf16 + f16));
  EXPECT_EQ(s.at("x").dtype(), DType::F32);
  EXPECT_EQ(s.at("x").to_vector<float>(), (std::vector<float>{1.0f, -2.0f, 0.5f}));
  auto y = s.at("y").to_vector<float>();
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -2.0f);
  EXPECT_EQ(y[2], 0.5f);
  EXPECT_EQ(y[3], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(y[4]));
}

TEST(Safetensors, ReadsAFileWrittenByAnotherWriter) {
  // The PyTorch fixtures were written by a separate Python writer.
  SafeTensors s = load_safetensors(std::string(NMPERM_FIXTURES) + "/ops_reference.safetensors");
  EXPECT_GT(s.tensors.size(), 10u);
  EXPECT_EQ(s.metadata.at("made_by"), "tools/make_fixtures.py");
}

json good_entry(uint64_t b, uint64_t e, Shape shape = {2}) {
  return {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {b, e}}};
}

TEST(SafetensorsMalformed, TooShortForTheLengthPrefix) {
  EXPECT_THROW_MSG(parse("abc"), "shorter than the 8-byte header length");
}
TEST(SafetensorsMalformed, HeaderLengthPastEndOfFile) {
  std::string b = file_bytes("{}", "");
  b[0] = char(200);
  EXPECT_THROW_MSG(parse(b), "header length 200 runs past the end of the file");
}
TEST(SafetensorsMalformed, HugeHeaderLength) {
  std::string b(8, char(0xff));
  EXPECT_THROW_MSG(parse(b), "runs past the end of the file");
}
TEST(SafetensorsMalformed, HeaderIsNotJson) {
  EXPECT_THROW_MSG(parse(file_bytes("{not json", "")), "header is not valid JSON");
}
TEST(SafetensorsMalformed, HeaderIsNotAnObject) {
  EXPECT_THROW_MSG(parse(file_bytes("[1, 2]", "")), "header is not a JSON object");
}
TEST(SafetensorsMalformed, EntryIsNotAnObject) {
  EXPECT_THROW_MSG(parse(file_bytes(R"({"w": 3})", "")), "entry for tensor 'w' is not an object");
}
TEST(SafetensorsMalformed, MissingDtype) {
  json h = {{"w", {{"shape", {2}}, {"data_offsets", {0, 8}}}}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), std::string(8, 0))), "tensor 'w' has no dtype");
}
TEST(SafetensorsMalformed, UnsupportedDtype) {
  json h = {{"w", {{"dtype", "F8_E4M3"}, {"shape", {2}}, {"data_offsets", {0, 2}}}}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), std::string(2, 0))), "unsupported dtype 'F8_E4M3'");
}
TEST(SafetensorsMalformed, NegativeShape) {
  json h = {{"w", {{"dtype", "F32"}, {"shape", {-2}}, {"data_offsets", {0, 8}}}}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), std::string(8, 0))), "not a non-negative integer");
}
TEST(SafetensorsMalformed, MissingOffsets) {
  json h = {{"w", {{"dtype", "F32"}, {"shape", {2}}}}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), std::string(8, 0))), "needs data_offsets");
}
TEST(SafetensorsMalformed, OffsetsRunBackwards) {
  json h = {{"w", good_entry(8, 0)}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), std::string(8, 0))), "run backwards");
}
TEST(SafetensorsMalformed, OffsetsPastTheData) {
  json h = {{"w", good_entry(0, 8)}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), std::string(4, 0))), "run past the data section (4 bytes; is the file truncated?)");
}
TEST(SafetensorsMalformed, ByteSizeDoesNotMatchShape) {
  json h = {{"w", good_entry(0, 12)}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), std::string(12, 0))), "holds 12 bytes but dtype F32 x shape [2] needs 8");
}
TEST(SafetensorsMalformed, OverlappingTensors) {
  json h = {{"a", good_entry(0, 8)}, {"b", good_entry(4, 12)}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), std::string(12, 0))), "tensors 'a' and 'b' overlap");
}
TEST(SafetensorsMalformed, AbsurdShape) {
  json h = {{"w", {{"dtype", "F32"}, {"shape", {1LL << 40, 1LL << 40}}, {"data_offsets", {0, 8}}}}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), std::string(8, 0))), "absurdly large shape");
}
TEST(SafetensorsMalformed, MetadataNotStrings) {
  json h = {{"__metadata__", {{"k", 3}}}};
  EXPECT_THROW_MSG(parse(file_bytes(h.dump(), "")), "__metadata__ value for 'k' is not a string");
}
TEST(SafetensorsMalformed, MissingFile) {
  EXPECT_THROW_MSG(load_safetensors("/nonexistent/x.safetensors"), "cannot open '/nonexistent/x.safetensors'");
}

TEST(Safetensors, FailedSaveLeavesThePreviousFile) {
  std::string path = temp_path("keep.safetensors");
  save_safetensors(path, {{"w", ones({2})}});
  // An undefined tensor fails before anything is written; the old file must survive.
  EXPECT_THROW_MSG(save_safetensors(path, {{"w", Tensor()}}), "undefined");
  EXPECT_EQ(load_safetensors(path).at("w").to_vector<float>(), (std::vector<float>{1, 1}));
  // Writing where no file can be created fails with the path in the message.
  EXPECT_THROW_MSG(save_safetensors("/nonexistent/dir/x.safetensors", {{"w", ones({2})}}), "cannot create");
  std::filesystem::remove(path);
  // No temp files left behind.
  for (auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path()))
    EXPECT_EQ(e.path().string().find(path + ".tmp"), std::string::npos);
}

}  // namespace
}  // namespace nmperm
