// Shared test helpers: seeded inputs and closeness checks that report the worst element.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "autograd/ops.h"
#include "kernels/runtime.h"

namespace nmperm::test {

// A path in the temporary directory that no other test process shares: ctest runs tests as
// parallel processes, and a name shared by two tests lets one remove the other's files
// mid-test. The process id comes first so that an extension in `name` stays last.
inline std::filesystem::path scratch_path(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("nmperm_" + std::to_string(getpid()) + "_" + name);
}

inline Tensor randn64(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return randn(s, g, DType::F64);
}

// max |a - b| <= atol + rtol * |b| elementwise; the failure names the worst index.
inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double atol, double rtol) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << describe(a) << " vs " << describe(b);
  auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < av.size(); ++i) {
    double r = std::abs(av[i] - bv[i]) / (atol + rtol * std::abs(bv[i]));
    if (std::isnan(av[i]) != std::isnan(bv[i])) r = INFINITY;
    if (r > worst) { worst = r; wi = i; }
  }
  if (worst <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "worst element " << wi << ": " << av[wi] << " vs " << bv[wi]
                                       << " (atol " << atol << ", rtol " << rtol << ")";
}

// fn() run with `threads` CPU threads (OpenMP and the BLAS), the previous count restored after.
template <class Fn>
auto at_threads(int threads, Fn&& fn) {
  struct Restore {
    int saved = kernels::num_threads();
    ~Restore() { kernels::set_num_threads(saved); }
  } restore;
  kernels::set_num_threads(threads);
  return fn();
}

#define EXPECT_THROW_MSG(stmt, substring)                                                      \
  do {                                                                                         \
    try {                                                                                      \
      stmt;                                                                                    \
      ADD_FAILURE() << "expected an nmperm::Error containing '" << (substring) << "'";        \
    } catch (const ::nmperm::Error& e) {                                                       \
      EXPECT_NE(std::string(e.what()).find(substring), std::string::npos)                      \
          << "message was: " << e.what();                                                      \
    }                                                                                          \
  } while (0)

}  // namespace nmperm::test
