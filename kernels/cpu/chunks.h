// Fixed row chunks for reductions across rows (weight gradients, squared norms): the
// chunking depends only on the row count, never on the thread count, and partial results
// are summed in chunk order, so results are identical for any number of threads.
#pragma once
#include <algorithm>
#include <cstdint>

namespace nmperm::kernels {

struct RowChunks {
  int64_t count, size;
  explicit RowChunks(int64_t rows, int64_t max_chunks = 256, int64_t min_size = 16) {
    count = std::clamp<int64_t>((rows + min_size - 1) / min_size, 1, max_chunks);
    size = (rows + count - 1) / count;
  }
  int64_t begin(int64_t c) const { return c * size; }
  int64_t end(int64_t c, int64_t rows) const { return std::min(rows, (c + 1) * size); }
};

}  // namespace nmperm::kernels
