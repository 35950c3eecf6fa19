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
  int64_t size() const { return labels.defined() ? labels.numel() : 0; }
};

// Reads a whole file, gunzipping when it starts with the gzip magic.
std::string read_file_maybe_gz(const std::string& path);
// Decompresses `raw` when it is gzip data, else returns it; `what` names it in errors.
std::string gunzip_if_needed(std::string raw, const std::string& what);
// Parses IDX bytes; `what` names the source in errors.
Tensor parse_idx(const std::string& bytes, const std::string& what);
// images/labels file pair, e.g. DIR/train-images-idx3-ubyte.gz + DIR/train-labels-idx1-ubyte.gz.
ImageSet load_idx_pair(const std::string& images_path, const std::string& labels_path);
// Fashion-MNIST from a folder holding the four standard files; split is "train" or "t10k".
ImageSet load_fashion_mnist(const std::string& dir, const std::string& split);
extern const char* kFashionMnistDir;  // where Debian's dataset-fashion-mnist installs it

}  // namespace nmperm

namespace nmperm {

// A token stream for language modelling, split into training, validation (for choosing
// settings; may be empty) and test (the split results are reported on).
struct TokenData {
  std::vector<int32_t> train, val, test;
  int64_t vocab = 0;  // tokens are < vocab
  std::string description;
  int64_t seqlen = 0;  // window length (at most the model's context); 0: the model's context
  // The field's protocol (Wanda, SparseGPT, RIA): evaluation windows of seqlen tokens, each
  // predicting its last seqlen - 1 from those before it, the remainder dropped; calibration
  // windows of seqlen tokens at random starts drawn with calib_seed. Otherwise (the
  // embedded models): windows of seqlen + 1 tokens predict seqlen, calibration windows are
  // spread evenly over the training split.
  bool field_protocol = false;
  uint64_t calib_seed = 0;
};

// llm.c's .bin token file: 256 int32 header (magic 20240520, version 1, token count),
// then uint16 tokens. Raw arrays: "u16" or "u32" little-endian tokens with no header.
std::vector<int32_t> load_token_file(const std::string& path, const std::string& format = "auto");
// The same from bytes already read (and gunzipped); `what` names the source in errors and,
// for format "auto", its .u16/.u32 extension picks a raw array format.
std::vector<int32_t> parse_tokens(const std::string& bytes, const std::string& format, const std::string& what);
// The King James Bible as UTF-8 bytes (vocab 256), exported by the `bible` program of
// Debian's bible-kjv package (cached under cache_dir). Split: every 10th 8 KiB chunk is
// held out, alternately to validation and test (both spread from Genesis to Revelation);
// the rest is training.
TokenData load_kjv_bytes(const std::string& cache_dir);
// Any token file(s): the test split is eval_path, or the last 5% of the training file when
// it is empty; there is no validation split.
TokenData load_token_data(const std::string& train_path, const std::string& eval_path, const std::string& format);
// Splits a stream by interleaved chunks: every `every`-th chunk is held out, alternately
// to validation and test; the rest is training.
void split_chunks(const std::vector<int32_t>& all, int64_t chunk, int64_t every, TokenData& out);
// `count` indices spread evenly over [0, total): the middle of each of `count` equal
// parts, so that samples drawn this way cover a whole split, not its beginning.
std::vector<int64_t> spread_indices(int64_t total, int64_t count);
// The last `n` images of `s` become the validation split (ViT): returns them and keeps
// the rest in `s`.
ImageSet hold_out_images(ImageSet& s, int64_t n);

}  // namespace nmperm
