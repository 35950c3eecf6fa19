// Datasets. IDX files (MNIST / Fashion-MNIST format, optionally gzip-compressed):
// magic 0x00000803 (u8 images, N x rows x cols) or 0x00000801 (u8 labels, N), big-endian
// dims. The reader checks the magic, the dims and the payload size against the file.
#pragma once
#include <string>

#include "core/tensor.h"

namespace nmperm {

struct ImageSet {
  Tensor images;  // (N, 1, H, W) f32 in [0, 1]
  Tensor labels;  // (N) i64
  int64_t size() const { return labels.numel(); }
};

// Reads a whole file, gunzipping when it starts with the gzip magic.
std::string read_file_maybe_gz(const std::string& path);
// Parses IDX bytes; `what` names the source in errors.
Tensor parse_idx(const std::string& bytes, const std::string& what);
// images/labels file pair, e.g. DIR/train-images-idx3-ubyte.gz + DIR/train-labels-idx1-ubyte.gz.
ImageSet load_idx_pair(const std::string& images_path, const std::string& labels_path);
// Fashion-MNIST from a folder holding the four standard files; split is "train" or "t10k".
ImageSet load_fashion_mnist(const std::string& dir, const std::string& split);
extern const char* kFashionMnistDir;  // where Debian's dataset-fashion-mnist installs it

}  // namespace nmperm
