#include "models/data.h"

#include "autograd/ops.h"
#include "core/safetensors.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <sstream>

namespace nmperm {

const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

std::string read_file_maybe_gz(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  NMPERM_CHECK(f, "cannot open '{}': {}", path, std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  return gunzip_if_needed(ss.str(), path);
}

std::string gunzip_if_needed(std::string raw, const std::string& path) {
  if (raw.size() < 2 || uint8_t(raw[0]) != 0x1f || uint8_t(raw[1]) != 0x8b) return raw;
  NMPERM_CHECK(raw.size() <= UINT32_MAX, "'{}': gzip files over 4 GiB are not supported", path);
  z_stream z{};
  NMPERM_CHECK(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, "'{}': cannot start gzip decoder", path);
  z.next_in = reinterpret_cast<Bytef*>(raw.data());
  z.avail_in = uInt(raw.size());
  std::string out;
  char buf[1 << 16];
  int rc;
  do {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&z);
      NMPERM_FAIL("'{}': corrupt gzip data ({})", path, z.msg ? z.msg : "inflate failed");
    }
    out.append(buf, sizeof buf - z.avail_out);
    NMPERM_CHECK(out.size() < (size_t(1) << 33), "'{}': decompressed data exceeds 8 GiB", path);
  } while (rc != Z_STREAM_END && (z.avail_in > 0 || z.avail_out == 0));
  inflateEnd(&z);
  NMPERM_CHECK(rc == Z_STREAM_END, "'{}': gzip stream is truncated", path);
  return out;
}

Tensor parse_idx(const std::string& b, const std::string& what) {
  auto u32 = [&](size_t at) {
    return uint32_t(uint8_t(b[at])) << 24 | uint32_t(uint8_t(b[at + 1])) << 16 | uint32_t(uint8_t(b[at + 2])) << 8 |
           uint32_t(uint8_t(b[at + 3]));
  };
  NMPERM_CHECK(b.size() >= 4, "{}: too short for an IDX header", what);
  uint32_t magic = u32(0);
  NMPERM_CHECK((magic >> 8) == 0x08, "{}: not an unsigned-byte IDX file (magic 0x{:08x})", what, magic);
  uint32_t nd = magic & 0xff;
  NMPERM_CHECK(nd >= 1 && nd <= 4, "{}: IDX rank {} not supported", what, nd);
  NMPERM_CHECK(b.size() >= 4 + 4 * nd, "{}: truncated IDX header", what);
  Shape shape;
  // An empty file like (0, 28, 28) is well-formed, but (0, 2^32, 2^32) describes no tensor
  // we could index: the product of the non-zero dims is bounded too.
  uint64_t count = 1, nonzero = 1, limit = std::max<uint64_t>(b.size(), uint64_t(1) << 24);
  for (uint32_t d = 0; d < nd; ++d) {
    uint32_t n = u32(4 + 4 * d);
    shape.push_back(int64_t(n));
    count *= n;
    NMPERM_CHECK(std::max<uint32_t>(n, 1) <= limit / nonzero, "{}: IDX dims {} are too large", what, shape);
    nonzero *= std::max<uint32_t>(n, 1);
    NMPERM_CHECK(count <= b.size(), "{}: IDX dims {} need more bytes than the file has", what, shape);
  }
  NMPERM_CHECK(b.size() - (4 + 4 * nd) == count, "{}: IDX dims {} need {} data bytes, the file has {}", what, shape,
               count, b.size() - (4 + 4 * nd));
  Tensor t = Tensor::empty(shape, DType::I64);
  int64_t* p = t.data<int64_t>();
  const uint8_t* src = reinterpret_cast<const uint8_t*>(b.data()) + 4 + 4 * nd;
  for (uint64_t i = 0; i < count; ++i) p[i] = src[i];
  return t;
}

ImageSet load_idx_pair(const std::string& images_path, const std::string& labels_path) {
  Tensor img = parse_idx(read_file_maybe_gz(images_path), images_path);
  Tensor lab = parse_idx(read_file_maybe_gz(labels_path), labels_path);
  NMPERM_CHECK(img.ndim() == 3, "{}: expected (N, rows, cols) images, got {}", images_path, img.shape());
  NMPERM_CHECK(lab.ndim() == 1 && lab.shape(0) == img.shape(0), "{}: {} labels for {} images", labels_path,
               lab.shape(0), img.shape(0));
  NMPERM_CHECK(img.shape(0) > 0, "{}: holds no images", images_path);
  ImageSet s;
  int64_t N = img.shape(0), H = img.shape(1), W = img.shape(2);
  s.images = Tensor::empty({N, 1, H, W}, DType::F32);
  const int64_t* ip = img.data<int64_t>();
  float* dp = s.images.data<float>();
  for (int64_t i = 0; i < img.numel(); ++i) dp[i] = float(ip[i]) / 255.0f;
  s.labels = lab;
  return s;
}

ImageSet load_fashion_mnist(const std::string& dir, const std::string& split) {
  NMPERM_CHECK(split == "train" || split == "t10k", "fashion-mnist split must be 'train' or 't10k', got '{}'", split);
  auto path = [&](const char* kind) {
    std::string base = fmt::format("{}/{}-{}", dir, split, kind);
    std::ifstream probe(base + ".gz");
    return probe ? base + ".gz" : base;
  };
  return load_idx_pair(path("images-idx3-ubyte"), path("labels-idx1-ubyte"));
}

std::vector<int32_t> load_token_file(const std::string& path, const std::string& format) {
  return parse_tokens(read_file_maybe_gz(path), format, path);
}

std::vector<int32_t> parse_tokens(const std::string& b, const std::string& format_in, const std::string& path) {
  std::string format = format_in;
  auto le32 = [&](size_t at) {
    return uint32_t(uint8_t(b[at])) | uint32_t(uint8_t(b[at + 1])) << 8 | uint32_t(uint8_t(b[at + 2])) << 16 |
           uint32_t(uint8_t(b[at + 3])) << 24;
  };
  if (format == "auto") {
    if (b.size() >= 1024 && le32(0) == 20240520u) format = "llmc";
    else if (path.ends_with(".u32")) format = "u32";
    else if (path.ends_with(".u16")) format = "u16";
    else NMPERM_FAIL("'{}': not an llm.c .bin token file (magic 20240520) and no .u16/.u32 extension; "
                     "pass --token-format u16|u32 for raw arrays", path);
  }
  std::vector<int32_t> out;
  if (format == "llmc") {
    NMPERM_CHECK(b.size() >= 1024, "'{}': too short for an llm.c header (1024 bytes)", path);
    NMPERM_CHECK(le32(0) == 20240520u, "'{}': bad llm.c magic {} (expected 20240520)", path, le32(0));
    NMPERM_CHECK(le32(4) == 1u, "'{}': llm.c token file version {} is not supported (1 = uint16 tokens)", path, le32(4));
    uint64_t n = le32(8);
    NMPERM_CHECK(b.size() - 1024 == 2 * n, "'{}': header says {} tokens, the file holds {} bytes of tokens", path, n,
                 b.size() - 1024);
    out.resize(n);
    for (uint64_t i = 0; i < n; ++i) out[i] = int32_t(uint8_t(b[1024 + 2 * i]) | uint8_t(b[1025 + 2 * i]) << 8);
  } else if (format == "u16") {
    NMPERM_CHECK(b.size() % 2 == 0, "'{}': {} bytes is not a whole number of uint16 tokens", path, b.size());
    out.resize(b.size() / 2);
    for (size_t i = 0; i < out.size(); ++i) out[i] = int32_t(uint8_t(b[2 * i]) | uint8_t(b[2 * i + 1]) << 8);
  } else if (format == "u32") {
    NMPERM_CHECK(b.size() % 4 == 0, "'{}': {} bytes is not a whole number of uint32 tokens", path, b.size());
    out.resize(b.size() / 4);
    for (size_t i = 0; i < out.size(); ++i) {
      uint32_t v = le32(4 * i);
      NMPERM_CHECK(v <= uint32_t(INT32_MAX), "'{}': token {} at position {} is too large", path, v, i);
      out[i] = int32_t(v);
    }
  } else {
    NMPERM_FAIL("unknown token format '{}' (auto, llmc, u16, u32)", format);
  }
  NMPERM_CHECK(!out.empty(), "'{}' holds no tokens", path);
  return out;
}

void split_chunks(const std::vector<int32_t>& all, int64_t chunk, int64_t every, TokenData& d) {
  d.train.clear();
  d.val.clear();
  d.test.clear();
  for (size_t at = 0, i = 0; at < all.size(); at += size_t(chunk), ++i) {
    bool held = int64_t(i) % every == every - 1;
    auto& dst = !held ? d.train : (int64_t(i) / every) % 2 == 0 ? d.val : d.test;
    dst.insert(dst.end(), all.begin() + long(at), all.begin() + long(std::min(all.size(), at + size_t(chunk))));
  }
}

TokenData load_kjv_bytes(const std::string& cache_dir) {
  namespace fs = std::filesystem;
  fs::path cached = fs::path(cache_dir) / "kjv.txt";
  if (!fs::exists(cached)) {
    fs::create_directories(cache_dir);
    FILE* p = popen("bible -p /usr/share/bible-kjv 'Gen1:1-Rev22:21' 2>/dev/null || bible 'Gen1:1-Rev22:21'", "r");
    NMPERM_CHECK(p, "cannot run the 'bible' program (Debian package bible-kjv)");
    std::string text;
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
    int rc = pclose(p);
    NMPERM_CHECK(rc == 0 && text.size() > 1000000,
                 "exporting the KJV text with 'bible' failed (exit {}, {} bytes); install Debian's bible-kjv", rc,
                 text.size());
    write_file_atomic(cached.string(), text);
  }
  std::string text = read_file_maybe_gz(cached.string());
  std::vector<int32_t> all(text.size());
  for (size_t i = 0; i < text.size(); ++i) all[i] = uint8_t(text[i]);
  TokenData d;
  d.vocab = 256;
  split_chunks(all, 8192, 10, d);
  d.description =
      fmt::format("KJV bytes ({} train, {} validation, {} test)", d.train.size(), d.val.size(), d.test.size());
  return d;
}

TokenData load_token_data(const std::string& train_path, const std::string& eval_path, const std::string& format) {
  TokenData d;
  d.train = load_token_file(train_path, format);
  if (!eval_path.empty()) {
    d.test = load_token_file(eval_path, format);
  } else {
    size_t cut = d.train.size() - std::max<size_t>(d.train.size() / 20, 1);
    d.test.assign(d.train.begin() + long(cut), d.train.end());
    d.train.resize(cut);
  }
  int32_t mx = 0;
  for (int32_t t : d.train) mx = std::max(mx, t);
  for (int32_t t : d.test) mx = std::max(mx, t);
  d.vocab = int64_t(mx) + 1;
  d.description = fmt::format("{} ({} train, {} test tokens)", train_path, d.train.size(), d.test.size());
  return d;
}

std::vector<int64_t> spread_indices(int64_t total, int64_t count) {
  NMPERM_CHECK(count >= 0 && count <= total, "cannot draw {} of {} items", count, total);
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i)  // 128-bit product: no overflow for any int64 total
    out[size_t(i)] = int64_t(__extension__((__int128)(2 * i + 1) * total) / (2 * count));
  return out;
}

ImageSet hold_out_images(ImageSet& s, int64_t n) {
  NMPERM_CHECK(n >= 0 && n < s.size(), "cannot hold out {} of {} images", n, s.size());
  int64_t keep = s.size() - n;
  ImageSet held{contiguous(narrow(s.images, 0, keep, n)), contiguous(narrow(s.labels, 0, keep, n))};
  s = {contiguous(narrow(s.images, 0, 0, keep)), contiguous(narrow(s.labels, 0, 0, keep))};
  return held;
}

}  // namespace nmperm
