#include "models/data.h"

#include <zlib.h>

#include <cerrno>
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
  std::string raw = ss.str();
  if (raw.size() < 2 || uint8_t(raw[0]) != 0x1f || uint8_t(raw[1]) != 0x8b) return raw;
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
  uint64_t count = 1;
  for (uint32_t d = 0; d < nd; ++d) {
    uint32_t n = u32(4 + 4 * d);
    shape.push_back(int64_t(n));
    count *= n;
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

}  // namespace nmperm
