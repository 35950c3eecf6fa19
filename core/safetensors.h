// safetensors (the Hugging Face checkpoint format): 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}},
// then the raw little-endian data. The reader checks every header field against the file
// before touching data and names what is wrong; BF16 and F16 are widened to F32 when a
// tensor is read. Files are mapped, not read: MappedSafeTensors reads a tensor only when
// asked and then drops its pages from memory, so a model far larger than memory can be
// worked through piece by piece. Writers are atomic: a temp file in the same folder,
// flushed, then renamed.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace nmperm {

struct SafeTensors {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in file order of data offsets
  std::map<std::string, std::string> metadata;
  std::map<std::string, std::string> disk_dtypes;  // name -> dtype in the file ("BF16", ...)
  const Tensor* find(const std::string& name) const;
  const Tensor& at(const std::string& name) const;  // throws naming the missing tensor
};

// One tensor's header entry; begin and end are byte offsets into the data section.
struct TensorEntry {
  std::string name, dtype;  // dtype as on disk: "F32", "BF16", ...
  Shape shape;
  uint64_t begin = 0, end = 0;
};
struct SafeTensorsHeader {
  std::vector<TensorEntry> entries;  // in order of data offsets
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data section
};
// Checks the header against a file of `size` bytes (every tensor inside it, sizes matching
// dtype x shape, no overlaps); `what` names the file in errors.
SafeTensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& what);
// BF16 / F16 are widened to F32 unless keep_half (then the tensor keeps the file's dtype).
Tensor decode_tensor(const TensorEntry& entry, const uint8_t* bytes, bool keep_half = false);

class MappedSafeTensors {
 public:
  explicit MappedSafeTensors(const std::string& path);  // maps the file and checks its header
  ~MappedSafeTensors();
  MappedSafeTensors(const MappedSafeTensors&) = delete;
  MappedSafeTensors& operator=(const MappedSafeTensors&) = delete;
  const std::string& path() const { return path_; }
  const SafeTensorsHeader& header() const { return header_; }
  const TensorEntry* find(const std::string& name) const;
  Tensor read(const TensorEntry& entry, bool keep_half = false) const;  // decoded, then its pages released
  const uint8_t* bytes(const TensorEntry& entry) const;
  void release(const TensorEntry& entry) const;  // drops the entry's pages from this process's memory

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  SafeTensorsHeader header_;
  std::map<std::string, size_t> index_;
};

SafeTensors load_safetensors(const std::string& path);  // every tensor, read through a mapping
// Parses an in-memory file; `what` names it in errors (used by the loader and fuzzers).
SafeTensors parse_safetensors(const uint8_t* data, size_t size, const std::string& what);
// float_dtype: the disk dtype of F32 tensors: "F32", or "BF16" / "F16" (rounded to nearest even).
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {}, const std::string& float_dtype = "F32");

// A safetensors file written tensor by tensor, for models written out piece by piece: the
// plan (names, disk dtypes and shapes, in file order; offsets are laid out here) fixes the
// header, the data goes to its place in PATH.partial, and finish() flushes it and renames
// it to PATH. With resume the partial file of an interrupted run is reopened (it must
// carry exactly this header) and what it holds is kept.
class SafeTensorsWriter {
 public:
  SafeTensorsWriter(const std::string& path, std::vector<TensorEntry> plan,
                    const std::map<std::string, std::string>& metadata, bool resume = false);
  ~SafeTensorsWriter();
  SafeTensorsWriter(const SafeTensorsWriter&) = delete;
  SafeTensorsWriter& operator=(const SafeTensorsWriter&) = delete;
  void write(const std::string& name, const Tensor& t);  // converted to the planned dtype
  void write_bytes(const std::string& name, const uint8_t* data, size_t n);  // already in it
  void sync();    // what is written so far reaches the disk
  void finish();  // sync, then rename onto the path
  const std::vector<TensorEntry>& entries() const { return entries_; }

 private:
  std::string path_, temp_;
  std::vector<TensorEntry> entries_;
  std::map<std::string, size_t> index_;
  uint64_t data_start_ = 0;
  int fd_ = -1;
};

// Writes bytes to path atomically (temp file + fsync + rename); on any failure the old
// file is untouched and the temp file removed.
void write_file_atomic(const std::string& path, const std::string& bytes);


}  // namespace nmperm
