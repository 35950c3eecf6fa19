// Times the exact linear-assignment solver on the cost matrices of a safetensors file
// (tools/bench/compare_assignment.py writes them and times SciPy on the same ones).
// Prints one JSON object per matrix: name, n, seconds, total cost.
#include <chrono>
#include <cstdio>

#include "core/safetensors.h"
#include "kernels/runtime.h"
#include "permute/assignment.h"

using namespace nmperm;

int main(int argc, char** argv) {
  kernels::select_blas_kernels(argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_assignment COSTS.safetensors\n");
    return 2;
  }
  try {
    SafeTensors st = load_safetensors(argv[1]);
    for (auto& [name, t] : st.tensors) {
      Tensor c = t.to(DType::F64).contiguous();
      auto t0 = std::chrono::steady_clock::now();
      std::vector<int64_t> p = linear_assignment(c);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("{\"name\": \"%s\", \"n\": %lld, \"seconds\": %.6f, \"cost\": %.10g}\n", name.c_str(),
                  (long long)c.shape(0), s, assignment_cost(c.data<double>(), c.shape(0), p));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
