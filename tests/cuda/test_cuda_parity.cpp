// CPU-vs-CUDA parity of every CUDA kernel: the same launcher runs on CPU tensors and on
// their GPU copies, and the results must agree within atol + rtol * |cpu| (the failure
// names the worst index). Sizes 1, 7, 33 and 1000, f32 and f64, non-contiguous and
// broadcast inputs. Built whenever nvcc is present (label `cuda`: `ctest -L cuda`); each
// test skips at run time, reported as skipped, when no GPU is present.
#include <gtest/gtest.h>

#include <cstring>

#include "core/storage.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/optim.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"
#include "tests/helpers.h"

namespace nmperm {
namespace {

using namespace kernels;

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device"

const int64_t kSizes[] = {1, 7, 33, 1000};
const DType kTypes[] = {DType::F32, DType::F64};

double tol(DType t) { return t == DType::F32 ? 1e-5 : 1e-11; }

Tensor gpu(const Tensor& t) { return t.to(Device::CUDA); }
Tensor cpu(const Tensor& t) { return t.to(Device::CPU); }
Tensor like(const Tensor& t, Device d) { return Tensor::empty(t.shape(), t.dtype(), d); }

Tensor input(const Shape& s, DType t, uint64_t seed, double lo = -2, double hi = 2) {
  Generator g(seed);
  Tensor u = rand(s, g, t);
  auto v = u.to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i) v[i] = lo + (hi - lo) * v[i];
  return from_vector(v, s).to(t);
}

::testing::AssertionResult close(const Tensor& cuda_result, const Tensor& cpu_result, double rtol) {
  return test::all_close(cpu(cuda_result), cpu_result, rtol, rtol);
}

TEST(CudaParity, CopiesAnyLayoutAndDtype) {
  REQUIRE_GPU();
  for (int64_t n : kSizes) {
    Tensor x = input({n, 5, 3}, DType::F32, 1);
    Tensor t = permute(x, {2, 0, 1});
    EXPECT_TRUE(close(permute(gpu(x), {2, 0, 1}).contiguous(), t.contiguous(), 0)) << n;
    EXPECT_TRUE(close(gpu(x).to(DType::F64), x.to(DType::F64), 0)) << n;
    EXPECT_EQ(cpu(gpu(x)).to_vector<float>(), x.to_vector<float>());
  }
}

TEST(CudaParity, UnaryOpsAndTheirBackward) {
  REQUIRE_GPU();
  const UnaryOp ops[] = {UnaryOp::Neg,     UnaryOp::Exp,  UnaryOp::Log,      UnaryOp::Sqrt,     UnaryOp::Rsqrt,
                         UnaryOp::Tanh,    UnaryOp::Sigmoid, UnaryOp::Relu,  UnaryOp::GeluErf,  UnaryOp::GeluTanh,
                         UnaryOp::Silu,    UnaryOp::Abs,  UnaryOp::Pow,      UnaryOp::Square};
  for (DType t : kTypes)
    for (int64_t n : kSizes)
      for (UnaryOp op : ops) {
        bool positive = op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt || op == UnaryOp::Pow;
        Tensor x = input({n, 3}, t, 2, positive ? 0.1 : -3, 3), g = input({n, 3}, t, 3);
        Tensor y = like(x, Device::CPU), dx = like(x, Device::CPU);
        unary(op, x, y, 2.5);
        unary_backward(op, x, y, g, dx, 2.5);
        Tensor gx = gpu(x), gy = like(x, Device::CUDA), gdx = like(x, Device::CUDA);
        unary(op, gx, gy, 2.5);
        unary_backward(op, gx, gy, gpu(g), gdx, 2.5);
        EXPECT_TRUE(close(gy, y, tol(t))) << unary_name(op) << " n=" << n;
        EXPECT_TRUE(close(gdx, dx, tol(t))) << unary_name(op) << " backward n=" << n;
      }
}

TEST(CudaParity, BinaryOpsBroadcastAndWhere) {
  REQUIRE_GPU();
  const BinaryOp ops[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum,
                          BinaryOp::Minimum, BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt, BinaryOp::Le,
                          BinaryOp::Gt, BinaryOp::Ge};
  for (DType t : kTypes)
    for (int64_t n : kSizes) {
      Tensor a = input({n, 1}, t, 4), b = input({1, 33}, t, 5);
      Shape s{n, 33};
      for (BinaryOp op : ops) {
        Tensor out = Tensor::empty(s, t), gout = Tensor::empty(s, t, Device::CUDA);
        binary(op, expand(a, s), expand(b, s), out);
        binary(op, expand(gpu(a), s), expand(gpu(b), s), gout);
        EXPECT_TRUE(close(gout, out, tol(t))) << binary_name(op) << " n=" << n;
      }
      Tensor c = input({n, 33}, t, 6), out = Tensor::empty(s, t), gout = Tensor::empty(s, t, Device::CUDA);
      Tensor cond = gt(c, zeros({}, t));
      where(cond, expand(a, s), expand(b, s), out);
      where(gpu(cond), expand(gpu(a), s), expand(gpu(b), s), gout);
      EXPECT_TRUE(close(gout, out, 0)) << "where n=" << n;
      Tensor sc = c.clone(), gsc = gpu(c);
      scale_(sc, -0.75);
      scale_(gsc, -0.75);
      EXPECT_TRUE(close(gsc, sc, tol(t))) << "scale_ n=" << n;
    }
}

TEST(CudaParity, RowAndColumnReductions) {
  REQUIRE_GPU();
  const ReduceOp ops[] = {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min,
                          ReduceOp::LogSumExp, ReduceOp::Var, ReduceOp::ArgMax, ReduceOp::ArgMin};
  for (DType t : kTypes)
    for (int64_t rows : {int64_t(1), int64_t(33)})
      for (int64_t n : kSizes) {
        Tensor x = input({rows, n}, t, 7);
        for (ReduceOp op : ops) {
          if (op == ReduceOp::Var && n == 1) continue;
          bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
          DType ot = arg ? DType::I64 : t;
          Tensor out = Tensor::empty({rows}, ot), gout = Tensor::empty({rows}, ot, Device::CUDA);
          reduce_rows(op, x, out, 1);
          reduce_rows(op, gpu(x), gout, 1);
          EXPECT_TRUE(close(gout, out, tol(t))) << "reduce op " << int(op) << " rows=" << rows << " n=" << n;
        }
        for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean}) {
          Tensor out = Tensor::empty({n}, t), gout = Tensor::empty({n}, t, Device::CUDA);
          reduce_cols(op, x, out);
          reduce_cols(op, gpu(x), gout);
          EXPECT_TRUE(close(gout, out, tol(t))) << "reduce_cols rows=" << rows << " n=" << n;
        }
      }
}

TEST(CudaParity, SoftmaxAndLogSoftmax) {
  REQUIRE_GPU();
  for (DType t : kTypes)
    for (int64_t n : kSizes)
      for (bool log : {false, true}) {
        Tensor x = input({7, n}, t, 8, -20, 20), g = input({7, n}, t, 9);
        Tensor y = like(x, Device::CPU), dx = like(x, Device::CPU);
        softmax_rows(x, y, log);
        softmax_rows_backward(y, g, dx, log);
        Tensor gy = like(x, Device::CUDA), gdx = like(x, Device::CUDA);
        softmax_rows(gpu(x), gy, log);
        softmax_rows_backward(gy, gpu(g), gdx, log);
        EXPECT_TRUE(close(gy, y, tol(t))) << (log ? "log_softmax" : "softmax") << " n=" << n;
        EXPECT_TRUE(close(gdx, dx, tol(t))) << (log ? "log_softmax" : "softmax") << " backward n=" << n;
      }
}

TEST(CudaParity, LayerNormAndRmsNorm) {
  REQUIRE_GPU();
  for (DType t : kTypes)
    for (int64_t n : kSizes)
      for (bool affine : {true, false}) {
        Tensor x = input({33, n}, t, 10), g = input({33, n}, t, 11);
        Tensor w = affine ? input({n}, t, 12) : Tensor(), b = affine ? input({n}, t, 13) : Tensor();
        auto on = [&](Device d) {
          auto mv = [&](const Tensor& v) { return v.defined() ? v.to(d) : Tensor(); };
          Tensor xd = x.to(d), y = like(x, d), mean = Tensor::empty({33}, t, d), rstd = Tensor::empty({33}, t, d);
          layer_norm(xd, mv(w), mv(b), 1e-5, y, mean, rstd);
          Tensor dx = like(x, d), dw = affine ? Tensor::empty({n}, t, d) : Tensor(),
                 db = affine ? Tensor::empty({n}, t, d) : Tensor();
          layer_norm_backward(xd, mv(w), mean, rstd, g.to(d), dx, dw, db);
          Tensor ry = like(x, d), rr = Tensor::empty({33}, t, d), rdx = like(x, d),
                 rdw = affine ? Tensor::empty({n}, t, d) : Tensor();
          rms_norm(xd, mv(w), 1e-6, ry, rr);
          rms_norm_backward(xd, mv(w), rr, g.to(d), rdx, rdw);
          std::vector<Tensor> out = {y, mean, rstd, dx, ry, rr, rdx};
          if (affine) out.insert(out.end(), {dw, db, rdw});
          return out;
        };
        auto c = on(Device::CPU), gg = on(Device::CUDA);
        const char* names[] = {"ln y", "ln mean", "ln rstd", "ln dx", "rms y", "rms rstd", "rms dx", "ln dw", "ln db",
                               "rms dw"};
        for (size_t i = 0; i < c.size(); ++i)
          EXPECT_TRUE(close(gg[i], c[i], t == DType::F32 ? 1e-4 : 1e-10)) << names[i] << " n=" << n << " affine=" << affine;
      }
}

TEST(CudaParity, MatmulPlainTransposedBatchedBroadcast) {
  REQUIRE_GPU();
  for (DType t : kTypes)
    for (int64_t n : kSizes) {
      Tensor a = input({3, n, 33}, t, 14), b = input({3, 33, 7}, t, 15), bt = input({3, 7, 33}, t, 16);
      Tensor shared = input({1, 33, 7}, t, 17), c0 = input({3, n, 7}, t, 18);
      struct Case { const char* name; Tensor a, b; double alpha, beta; };
      Case cases[] = {{"plain", a, b, 1, 0},
                      {"B transposed", a, transpose(bt, 1, 2), 1, 0},
                      {"A transposed", transpose(transpose(a, 1, 2).contiguous(), 1, 2), b, 1, 0},
                      {"shared B", a, expand(shared, {3, 33, 7}), 0.5, 1},
                      {"empty inner", input({3, n, 0}, t, 19), input({3, 0, 7}, t, 20), 1, 0.25}};
      for (auto& k : cases) {
        Tensor c = c0.clone(), gc = gpu(c0);
        auto dev = [](const Tensor& v) {
          // the same view on the GPU: copy the underlying storage, keep the strides
          Tensor base = Tensor::empty({int64_t(v.storage()->nbytes / dtype_size(v.dtype()))}, v.dtype());
          std::memcpy(base.raw_data(), v.storage()->data, v.storage()->nbytes);
          return gpu(base).as_strided(v.shape(), v.strides(), v.offset());
        };
        matmul(k.a, k.b, c, k.alpha, k.beta);
        matmul(dev(k.a), dev(k.b), gc, k.alpha, k.beta);
        EXPECT_TRUE(close(gc, c, t == DType::F32 ? 1e-4 : 1e-10)) << k.name << " n=" << n;
      }
    }
}

TEST(CudaParity, AdamWStepsAndSumOfSquares) {
  REQUIRE_GPU();
  for (DType t : kTypes)
    for (int64_t n : kSizes) {
      Tensor p = input({n, 3}, t, 21), m = zeros({n, 3}, t), v = zeros({n, 3}, t);
      Tensor gp = gpu(p), gm = gpu(m), gv = gpu(v);
      AdamWParams hp{.lr = 1e-2, .weight_decay = 0.1};
      for (int64_t step = 1; step <= 5; ++step) {
        Tensor g = input({n, 3}, t, 100 + uint64_t(step));
        adamw(p, g, m, v, hp, step);
        adamw(gp, gpu(g), gm, gv, hp, step);
      }
      EXPECT_TRUE(close(gp, p, tol(t) * 10)) << "adamw n=" << n;
      EXPECT_TRUE(close(gv, v, tol(t) * 10)) << "adamw v n=" << n;
      EXPECT_NEAR(sum_squares(gp), sum_squares(p), 1e-9 * sum_squares(p)) << n;
      EXPECT_EQ(sum_squares(gp), sum_squares(gp));  // the same reduction order every time
    }
}

TEST(CudaRuntime, CachingAllocatorReusesAndReports) {
  REQUIRE_GPU();
  release_cuda_cache();
  DeviceMemoryStats s0 = cuda_memory_stats();
  const void* first;
  {
    Tensor a = Tensor::empty({1000, 1000}, DType::F32, Device::CUDA);
    first = a.raw_data();
    EXPECT_GE(cuda_memory_stats().active_bytes, s0.active_bytes + 4000000);
  }
  EXPECT_GE(cuda_memory_stats().cached_bytes, 4000000u);  // freed into the cache, not to the driver
  Tensor b = Tensor::empty({1000, 1000}, DType::F32, Device::CUDA);
  EXPECT_EQ(b.raw_data(), first);  // the same size class comes back from the free list
  EXPECT_GE(cuda_memory_stats().peak_active_bytes, 4000000u);
  release_cuda_cache();
  EXPECT_EQ(cuda_memory_stats().cached_bytes, 0u);
  // Host <-> device copies large enough for the pinned staging path.
  Tensor big = input({3, 1 << 20}, DType::F32, 30);
  EXPECT_EQ(cpu(gpu(big)).to_vector<float>(), big.to_vector<float>());
}

}  // namespace
}  // namespace nmperm
