// safetensors (the Hugging Face checkpoint format): 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}},
// then the raw little-endian data. The reader checks every header field against the file
// before touching data and names what is wrong; BF16 and F16 are widened to F32 on load.
// The writer is atomic: a temp file in the same folder, flushed, then renamed.
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

SafeTensors load_safetensors(const std::string& path);
// Parses an in-memory file; `what` names it in errors (used by the loader and fuzzers).
SafeTensors parse_safetensors(const uint8_t* data, size_t size, const std::string& what);
// float_dtype: the disk dtype of F32 tensors: "F32", or "BF16" / "F16" (rounded to nearest even).
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {}, const std::string& float_dtype = "F32");

// Writes bytes to path atomically (temp file + fsync + rename); on any failure the old
// file is untouched and the temp file removed.
void write_file_atomic(const std::string& path, const std::string& bytes);

float bf16_to_f32(uint16_t h);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);  // round to nearest even; NaN stays NaN
uint16_t f32_to_f16(float f);

}  // namespace nmperm
