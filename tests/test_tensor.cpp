// Tensor value semantics, views, factories, RNG and printing.
#include "core/storage.h"
#include "core/view.h"
#include "helpers.h"

namespace nmperm {
namespace {

using test::all_close;

// The host cache keeps large freed blocks for reuse; past its limit the blocks freed
// longest ago go back to the system, so recently freed ones stay.
TEST(Storage, TheHostCacheLetsTheOldestFreeBlocksGo) {
  release_host_cache();
  const size_t MiB = size_t(1) << 20, old_limit = set_host_cache_limit(3 * MiB);
  void* a = host_alloc(MiB);
  void* b = host_alloc(MiB + MiB / 4);
  host_free(a);
  host_free(b);
  EXPECT_EQ(host_memory_stats().cached_bytes, 2 * MiB + MiB / 4);
  void* c = host_alloc(MiB + MiB / 2);
  host_free(c);  // 3.75 MiB would pass the limit: a, the oldest, goes
  EXPECT_EQ(host_memory_stats().cached_bytes, 2 * MiB + 3 * MiB / 4);
  void* b2 = host_alloc(MiB + MiB / 4);
  void* c2 = host_alloc(MiB + MiB / 2);
  EXPECT_EQ(b2, b);
  EXPECT_EQ(c2, c);
  EXPECT_EQ(host_memory_stats().cached_bytes, 0u);
  host_free(b2);
  host_free(c2);
  set_host_cache_limit(MiB);  // a lower limit lets blocks go at once
  EXPECT_LE(host_memory_stats().cached_bytes, MiB);
  set_host_cache_limit(old_limit);
  release_host_cache();
}

TEST(Tensor, ViewsShareStorage) {
  Tensor x = arange(0, 12, 1, DType::F64);
  Tensor m = reshape(x, {3, 4});
  Tensor t = transpose(m, 0, 1);
  EXPECT_EQ(t.shape(), Shape({4, 3}));
  EXPECT_EQ(t.strides(), Shape({1, 4}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.storage(), x.storage());
  Tensor n = narrow(m, 1, 1, 2);
  EXPECT_EQ(n.offset(), 1);
  EXPECT_EQ(n.to_vector<double>(), (std::vector<double>{1, 2, 5, 6, 9, 10}));
  Tensor c = contiguous(t);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), x.storage());
  EXPECT_EQ(c.to_vector<double>(), (std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
}

TEST(Tensor, ReshapeViewsWhenStridesAllowAndCopiesOtherwise) {
  Tensor x = reshape(arange(0, 24, 1, DType::F64), {2, 3, 4});
  Tensor p = permute(x, {1, 2, 0});     // (3, 4, 2), strides (4, 1, 12)
  Tensor merged = reshape(p, {12, 2});  // dims 0 and 1 merge without a copy
  EXPECT_EQ(merged.storage(), x.storage());
  EXPECT_EQ(merged.strides(), Shape({1, 12}));
  Tensor copied = reshape(transpose(reshape(x, {6, 4}), 0, 1), {24});
  EXPECT_NE(copied.storage(), x.storage());
  EXPECT_EQ(copied.to_vector<double>()[1], 4.0);
  EXPECT_EQ(reshape(x, {-1, 4}).shape(), Shape({6, 4}));
  EXPECT_THROW_MSG(reshape(x, {5, -1}), "cannot infer");
  EXPECT_THROW_MSG(reshape(x, {-1, -1}), "more than one -1");
}

TEST(Tensor, ExpandUsesZeroStrides) {
  Tensor x = from_vector<double>({1, 2, 3}, {3, 1});
  Tensor e = expand(x, {2, 3, 4});
  EXPECT_EQ(e.strides(), Shape({0, 1, 0}));
  EXPECT_EQ(contiguous(e).to_vector<double>()[5], 2.0);
  EXPECT_THROW_MSG(expand(x, {2, 4}), "cannot broadcast");
}

TEST(Tensor, FactoriesAndConversions) {
  EXPECT_EQ(zeros({2, 3}).to_vector<float>(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(full({2}, 2.5, DType::F64).to_vector<double>(), (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(arange(2, 9, 3).to_vector<int64_t>(), (std::vector<int64_t>{2, 5, 8}));
  EXPECT_EQ(arange(5, 0, -2).to_vector<int64_t>(), (std::vector<int64_t>{5, 3, 1}));
  Tensor f = from_vector<float>({1.5f, -2.25f}, {2});
  EXPECT_EQ(f.to(DType::F64).to_vector<double>(), (std::vector<double>{1.5, -2.25}));
  EXPECT_EQ(f.to(DType::I32).to_vector<int32_t>(), (std::vector<int32_t>{1, -2}));
  EXPECT_DOUBLE_EQ(scalar_tensor(4.0).item(), 4.0);
  EXPECT_THROW_MSG(f.item(), "one-element");
  EXPECT_THROW_MSG(from_vector<float>({1, 2, 3}, {2, 2}), "3 values for shape");
  EXPECT_THROW_MSG(f.data<double>(), "data<f64>() on a f32 tensor");
}

TEST(Tensor, PhiloxMatchesTheReferenceVector) {
  // Random123's known-answer test: Philox4x32-10, key = 0, counter = 0.
  auto r = philox4x32(0, 0);
  EXPECT_EQ(r[0], 0x6627e8d5u);
  EXPECT_EQ(r[1], 0xe169c58du);
  EXPECT_EQ(r[2], 0xbc57ac4cu);
  EXPECT_EQ(r[3], 0x9b00dbd8u);
}

TEST(Tensor, RandomDrawsAreSeededAndWellShaped) {
  Generator a(7), b(7), c(8);
  Tensor x = randn({10000}, a, DType::F64), y = randn({10000}, b, DType::F64), z = randn({10000}, c, DType::F64);
  EXPECT_EQ(x.to_vector<double>(), y.to_vector<double>());
  EXPECT_NE(x.to_vector<double>(), z.to_vector<double>());
  EXPECT_NEAR(mean(x).item(), 0.0, 0.05);
  EXPECT_NEAR(var(x).item(), 1.0, 0.05);
  Tensor u = rand({10000}, a);
  EXPECT_GE(min(u).item(), 0.0);
  EXPECT_LT(max(u).item(), 1.0);
  EXPECT_NEAR(mean(u).item(), 0.5, 0.02);
  EXPECT_EQ(a.offset, 2 * 2500u);  // each fill of 10000 consumed 2500 counters
}

TEST(Tensor, PrintsReadably) {
  Tensor x = reshape(arange(0, 6, 1, DType::F32), {2, 3});
  std::string s = x.str();
  EXPECT_NE(s.find("[[0.0000, 1.0000, 2.0000]"), std::string::npos) << s;
  EXPECT_NE(s.find("shape=[2, 3]"), std::string::npos) << s;
  EXPECT_NE(s.find("dtype=f32"), std::string::npos) << s;
  std::string big = arange(0, 100).str();
  EXPECT_NE(big.find("..."), std::string::npos) << big;
  EXPECT_NE(big.find("99"), std::string::npos) << big;
}

TEST(Tensor, ErrorsNameShapesAndDtypes) {
  Tensor a = zeros({2, 3}), b = zeros({4, 3}), d = zeros({2, 3}, DType::F64);
  EXPECT_THROW_MSG(add(a, b), "shapes [2, 3] and [4, 3] do not broadcast");
  EXPECT_THROW_MSG(add(a, d), "dtypes differ: f32[2, 3] cpu and f64[2, 3] cpu");
  EXPECT_THROW_MSG(matmul(a, a), "inner dims differ");
  EXPECT_THROW_MSG(sum(a, {2}), "dim 2 out of range");
  if (cuda_available())  // a GPU, or the CUDA emulator
    EXPECT_EQ(a.to(Device::CUDA).device(), Device::CUDA);
  else
    EXPECT_THROW_MSG(a.to(Device::CUDA), "CUDA");
}

}  // namespace
}  // namespace nmperm
