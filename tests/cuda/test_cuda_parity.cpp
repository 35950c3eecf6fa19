// CPU-vs-CUDA parity of every CUDA kernel: the same launcher runs on CPU tensors and on
// their GPU copies, and the results must agree within atol + rtol * |cpu| (the failure
// names the worst index). Sizes 1, 7, 33 and 1000, f32 and f64, non-contiguous and
// broadcast inputs. Built whenever nvcc is present (label `cuda`: `ctest -L cuda`); each
// test skips at run time, reported as skipped, when no GPU is present.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/storage.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/elementwise_fn.h"
#include "kernels/index.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/optim.h"
#include "kernels/reduce.h"
#include "kernels/rope.h"
#include "kernels/sinkhorn.h"
#include "kernels/softmax.h"
#include "kernels/topk.h"
#include "models/calibrate.h"
#include "models/optim.h"
#include "permute/learned.h"
#include "permute/nm.h"
#include "permute/blockwise.h"
#include "permute/prune.h"
#include "permute/sinkhorn.h"
#include "tests/helpers.h"
#include "tests/op_table.h"
#include "tests/tiny_models.h"
#include "autograd/ops.h"

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
  for (DType t : kTypes)
    for (int64_t n : kSizes)
      for (int i = 0; i < kUnaryOpCount; ++i) {  // every op of the list
        UnaryOp op = UnaryOp(i);
        bool positive = unary_positive_only(op);
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
  for (DType t : kTypes)
    for (int64_t n : kSizes) {
      Tensor a = input({n, 1}, t, 4), b = input({1, 33}, t, 5);
      Shape s{n, 33};
      for (int i = 0; i < kBinaryOpCount; ++i) {  // every op of the list
        BinaryOp op = BinaryOp(i);
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

// bf16/f16 operands with f32 accumulation (cuBLAS's GemmEx) against the CPU's (oneDNN for
// bf16, widened sgemm for f16): the products are exact in f32 on both sides, so only the
// order of the f32 sums differs.
TEST(CudaParity, HalfMatmulAccumulatesInF32LikeTheCpu) {
  REQUIRE_GPU();
  for (DType t : {DType::BF16, DType::F16})
    for (int64_t n : kSizes) {
      Tensor a = input({3, n, 33}, DType::F32, 14).to(t), bt = input({3, 7, 33}, DType::F32, 16).to(t);
      Tensor shared = input({1, 33, 7}, DType::F32, 17).to(t), c0 = input({3, n, 7}, DType::F32, 18);
      struct Case { const char* name; Tensor a, b; double alpha, beta; };
      Case cases[] = {{"B transposed", a, transpose(bt, 1, 2), 1, 0},
                      {"A transposed", transpose(transpose(a, 1, 2).contiguous(), 1, 2), transpose(bt, 1, 2), 1, 0},
                      {"shared B", a, expand(shared, {3, 33, 7}), 0.5, 1}};
      for (auto& k : cases) {
        Tensor c = c0.clone(), gc = gpu(c0);
        matmul(k.a.contiguous(), k.b.contiguous(), c, k.alpha, k.beta);
        Tensor ga = gpu(k.a.contiguous()), gb = gpu(k.b.contiguous());
        matmul(k.a.is_contiguous() ? ga : transpose(gpu(transpose(k.a, 1, 2).contiguous()), 1, 2),
               k.b.stride(1) == 1 ? transpose(gpu(transpose(k.b, 1, 2).contiguous()), 1, 2) : gb, gc, k.alpha, k.beta);
        EXPECT_TRUE(close(gc, c, 1e-4)) << dtype_name(t) << " " << k.name << " n=" << n;
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

// The whole optimizer on both devices: one fused launch over parameters of every test
// size (several chunks for the largest), per-parameter decay, one without gradient, a
// transposed gradient, a step that scales the gradients as it reads them (clipping); then
// the fused sum of squares over all gradients.
TEST(CudaParity, FusedAdamWOverManyParameters) {
  REQUIRE_GPU();
  for (DType t : kTypes) {
    std::vector<Tensor> cpu_params, gpu_params;
    for (int64_t n : kSizes) {
      cpu_params.push_back(input({n, 37}, t, 30 + uint64_t(n)).set_requires_grad());
      gpu_params.push_back(gpu(cpu_params.back()).set_requires_grad());
    }
    AdamWParams hp{.lr = 1e-2, .weight_decay = 0.1};
    AdamW on_cpu(cpu_params, hp), on_gpu(gpu_params, hp);
    on_cpu.decay[0] = on_gpu.decay[0] = 0.0;
    for (int64_t step = 1; step <= 4; ++step) {
      for (size_t i = 0; i < std::size(kSizes); ++i) {
        if (i == 1) continue;
        Tensor g = transpose(input({37, kSizes[i]}, t, 200 + uint64_t(step * 10 + int64_t(i))), 0, 1);
        cpu_params[i].set_grad(g);
        gpu_params[i].set_grad(gpu(g));
      }
      const double grad_scale = step == 3 ? 0.37 : 1.0;  // clipping inside the step
      on_cpu.step(grad_scale);
      on_gpu.step(grad_scale);
    }
    std::vector<Tensor> cg, gg;
    for (size_t i = 0; i < std::size(kSizes); ++i) {
      EXPECT_TRUE(close(gpu_params[i], cpu_params[i], tol(t) * 10)) << "param n=" << kSizes[i];
      EXPECT_TRUE(close(on_gpu.v[i], on_cpu.v[i], tol(t) * 10)) << "v n=" << kSizes[i];
      if (i == 1) continue;
      cg.push_back(cpu_params[i].grad());
      gg.push_back(gpu_params[i].grad());
    }
    double ref = sum_squares(cg);
    EXPECT_NEAR(sum_squares(gg), ref, 1e-9 * ref);
    EXPECT_EQ(grad_norm(gpu_params), grad_norm(gpu_params));
  }
}

// Indices in [0, limit), seeded, as i32 or i64.
Tensor indices(const Shape& s, int64_t limit, DType t, uint64_t seed) {
  Generator g(seed);
  auto u = rand(s, g, DType::F64).to_vector<double>();
  std::vector<double> v(u.size());
  for (size_t i = 0; i < u.size(); ++i) v[i] = std::min(double(limit - 1), std::floor(u[i] * double(limit)));
  return from_vector(v, s).to(t);
}

TEST(CudaParity, IndexSelectGatherAndTheirAdds) {
  REQUIRE_GPU();
  for (DType t : kTypes)
    for (DType it : {DType::I32, DType::I64})
      for (int64_t n : kSizes) {
        // index_select / index_add along dim 1 of (3, 33, n): repeated indices sum in order.
        Tensor x = input({3, 33, n}, t, 40), idx = indices({n}, 33, it, 41);
        Tensor out = Tensor::empty({3, n, n}, t), gout = Tensor::empty({3, n, n}, t, Device::CUDA);
        index_select(x, 1, idx, out);
        index_select(gpu(x), 1, gpu(idx), gout);
        EXPECT_TRUE(close(gout, out, 0)) << "index_select n=" << n;
        Tensor acc = input({3, 33, n}, t, 42), gacc = gpu(acc);
        index_add(acc, 1, idx, out);
        index_add(gacc, 1, gpu(idx), gout);
        EXPECT_TRUE(close(gacc, acc, tol(t))) << "index_add n=" << n;
        // embedding form: dim 0 of a (V, D) table
        Tensor table = input({n, 7}, t, 43), tok = indices({33}, n, it, 44);
        Tensor rows = Tensor::empty({33, 7}, t), grows = Tensor::empty({33, 7}, t, Device::CUDA);
        index_select(table, 0, tok, rows);
        index_select(gpu(table), 0, gpu(tok), grows);
        Tensor dt = zeros({n, 7}, t), gdt = zeros({n, 7}, t, Device::CUDA);
        index_add(dt, 0, tok, rows);
        index_add(gdt, 0, gpu(tok), grows);
        EXPECT_TRUE(close(gdt, dt, tol(t))) << "embedding backward n=" << n;
        // gather / scatter_add along dim 1
        Tensor gi = indices({3, 5, n}, 33, it, 45);
        Tensor go = Tensor::empty({3, 5, n}, t), ggo = Tensor::empty({3, 5, n}, t, Device::CUDA);
        gather(x, 1, gi, go);
        gather(gpu(x), 1, gpu(gi), ggo);
        EXPECT_TRUE(close(ggo, go, 0)) << "gather n=" << n;
        Tensor sa = input({3, 33, n}, t, 46), gsa = gpu(sa);
        scatter_add(sa, 1, gi, go);
        scatter_add(gsa, 1, gpu(gi), ggo);
        EXPECT_TRUE(close(gsa, sa, tol(t))) << "scatter_add n=" << n;
      }
  Tensor bad = from_vector(std::vector<double>{0, 33}, {2}).to(DType::I64);
  Tensor x = gpu(input({33, 2}, DType::F32, 47)), out = Tensor::empty({2, 2}, DType::F32, Device::CUDA);
  try {
    index_select(x, 0, gpu(bad), out);
    ADD_FAILURE() << "an index out of range was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 33 out of range"), std::string::npos) << e.what();
  }
}

TEST(CudaParity, CrossEntropyWithSmoothingAndIgnoredRows) {
  REQUIRE_GPU();
  for (DType t : kTypes)
    for (int64_t n : kSizes)
      for (double ls : {0.0, 0.1}) {
        Tensor x = input({33, n}, t, 50, -8, 8), y = indices({33}, n, DType::I64, 51), g = input({33}, t, 52);
        auto yv = y.to_vector<int64_t>();
        yv[3] = -100;  // an ignored row
        Tensor yi = from_vector(std::vector<double>(yv.begin(), yv.end()), {33}).to(DType::I64);
        auto on = [&](Device d) {
          Tensor loss = Tensor::empty({33}, t, d), lse = Tensor::empty({33}, t, d), dx = like(x, d);
          cross_entropy(x.to(d), yi.to(d), -100, ls, loss, lse);
          cross_entropy_backward(x.to(d), yi.to(d), lse, g.to(d), -100, ls, dx);
          return std::vector<Tensor>{loss, lse, dx};
        };
        auto c = on(Device::CPU), gg = on(Device::CUDA);
        for (size_t i = 0; i < c.size(); ++i)
          EXPECT_TRUE(close(gg[i], c[i], t == DType::F32 ? 1e-5 : 1e-11)) << "output " << i << " n=" << n << " ls=" << ls;
      }
}

TEST(CudaParity, RopeBothConventionsAndInverse) {
  REQUIRE_GPU();
  for (DType t : kTypes)
    for (int64_t T : kSizes)
      for (RopeStyle style : {RopeStyle::RotateHalf, RopeStyle::Interleaved})
        for (bool inverse : {false, true}) {
          Tensor x = input({2, 3, T, 16}, t, 60), y = like(x, Device::CPU), gy = like(x, Device::CUDA);
          rope(x, y, 5, rope_inv_freq(10000, x.shape(3)), style, inverse);
          rope(gpu(x), gy, 5, rope_inv_freq(10000, x.shape(3)), style, inverse);
          EXPECT_TRUE(close(gy, y, tol(t))) << "T=" << T << " style=" << int(style) << " inverse=" << inverse;
        }
}

TEST(CudaParity, TopKWithTies) {
  REQUIRE_GPU();
  for (DType t : kTypes)
    for (int64_t n : kSizes)
      for (bool largest : {true, false}) {
        // values on a coarse grid so rows have ties; the lower index must come first
        auto v = input({33, n}, t, 70, 0, 4).to_vector<double>();
        for (double& e : v) e = std::floor(e);
        Tensor x = from_vector(v, {33, n}).to(t);
        int64_t k = std::min<int64_t>(n, 4);
        Tensor val = Tensor::empty({33, k}, t), ind = Tensor::empty({33, k}, DType::I64);
        Tensor gval = Tensor::empty({33, k}, t, Device::CUDA), gind = Tensor::empty({33, k}, DType::I64, Device::CUDA);
        topk(x, k, largest, val, ind);
        topk(gpu(x), k, largest, gval, gind);
        EXPECT_TRUE(close(gval, val, 0)) << "n=" << n;
        EXPECT_EQ(cpu(gind).to_vector<int64_t>(), ind.to_vector<int64_t>()) << "n=" << n;
      }
}

TEST(CudaParity, AttentionForwardBackwardCausalAndGroupedHeads) {
  REQUIRE_GPU();
  struct Case { int64_t B, H, Hkv, T, S, D; bool causal; };
  const Case cases[] = {{1, 1, 1, 1, 1, 8, false},   {2, 4, 2, 7, 7, 16, true},     {1, 2, 1, 33, 33, 64, true},
                        {2, 4, 4, 33, 40, 32, false}, {1, 4, 2, 5, 70, 128, true},   {1, 2, 2, 100, 100, 24, true},
                        {1, 3, 1, 40, 17, 40, true}};
  for (DType t : kTypes)
    for (const Case& c : cases) {
      Tensor q = input({c.B, c.H, c.T, c.D}, t, 80), k = input({c.B, c.Hkv, c.S, c.D}, t, 81),
             v = input({c.B, c.Hkv, c.S, c.D}, t, 82), g = input({c.B, c.H, c.T, c.D}, t, 83);
      double scale = 1.0 / std::sqrt(double(c.D));
      auto on = [&](Device d) {
        Tensor out = like(q, d), lse = Tensor::empty({c.B, c.H, c.T}, t, d);
        attention(q.to(d), k.to(d), v.to(d), out, lse, scale, c.causal);
        Tensor dq = like(q, d), dk = like(k, d), dv = like(v, d);
        attention_backward(q.to(d), k.to(d), v.to(d), out, lse, g.to(d), dq, dk, dv, scale, c.causal);
        return std::vector<Tensor>{out, lse, dq, dk, dv};
      };
      auto cc = on(Device::CPU), gg = on(Device::CUDA);
      const char* names[] = {"out", "lse", "dq", "dk", "dv"};
      for (size_t i = 0; i < cc.size(); ++i) {
        // a row with no visible key has lse -inf on both sides: compare where finite
        Tensor a = cc[i], b = cpu(gg[i]);
        if (i == 1) {
          auto av = a.to_vector<double>(), bv = b.to_vector<double>();
          for (size_t j = 0; j < av.size(); ++j) {
            EXPECT_EQ(std::isinf(av[j]), std::isinf(bv[j])) << "lse " << j;
            if (std::isinf(av[j])) av[j] = bv[j] = 0;
          }
          a = from_vector(av, a.shape());
          b = from_vector(bv, b.shape());
        }
        EXPECT_TRUE(test::all_close(b, a, t == DType::F32 ? 1e-4 : 1e-10, t == DType::F32 ? 1e-4 : 1e-10))
            << names[i] << " B=" << c.B << " H=" << c.H << "/" << c.Hkv << " T=" << c.T << " S=" << c.S << " D=" << c.D
            << " causal=" << c.causal;
      }
    }
}

TEST(CudaParity, SinkhornForwardAndBackward) {
  REQUIRE_GPU();
  for (DType t : kTypes)
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(33), int64_t(300)})
      for (int64_t G : {int64_t(1), int64_t(4)}) {
        const int64_t iters = 12;
        Tensor L = input({G, n, n}, t, 90, -3, 3), dp = input({G, n, n}, t, 91);
        auto on = [&](Device d) {
          Tensor p = Tensor::empty({G, n, n}, t, d), rn = Tensor::empty({G, iters, n}, t, d),
                 cn = Tensor::empty({G, iters, n}, t, d), dl = Tensor::empty({G, n, n}, t, d);
          sinkhorn(L.to(d), iters, p, rn, cn);
          sinkhorn_backward(L.to(d), rn, cn, dp.to(d), dl);
          return std::vector<Tensor>{p, rn, cn, dl};
        };
        auto c = on(Device::CPU), gg = on(Device::CUDA);
        const char* names[] = {"plan", "row normalisers", "column normalisers", "dlogits"};
        for (size_t i = 0; i < c.size(); ++i)
          EXPECT_TRUE(close(gg[i], c[i], t == DType::F32 ? 1e-4 : 1e-10)) << names[i] << " n=" << n << " G=" << G;
      }
}

// Scores and N:M masks on the GPU equal the CPU's, ties included (the same tie rule).
TEST(CudaPermute, ScoresAndMasksMatchTheCpu) {
  REQUIRE_GPU();
  for (int64_t n : {4, 8, 32, 1000}) {
    Generator g{uint64_t(n)};
    Tensor w = randn({33, n}, g), norms = abs(randn({n}, g));
    for (Score s : {Score::Magnitude, Score::Wanda, Score::RIA}) {
      Tensor c = importance(w, norms, s), d = importance(w.to(Device::CUDA), norms.to(Device::CUDA), s);
      ASSERT_EQ(d.device(), Device::CUDA);
      EXPECT_TRUE(close(d, c, 1e-6)) << score_name(s) << " n=" << n;
    }
    std::vector<float> halves = abs(w).to_vector<float>();
    for (float& v : halves) v = std::floor(2 * v);  // many equal scores in a group
    Tensor tied = from_vector(halves, {33, n});
    for (NMPattern pat : {NMPattern{2, 4}, NMPattern{1, 4}}) {
      EXPECT_EQ(nm_mask(tied.to(Device::CUDA), pat).to_vector<float>(), nm_mask(tied, pat).to_vector<float>()) << n;
      EXPECT_EQ(unstructured_mask(tied.to(Device::CUDA), pat).to_vector<float>(),
                unstructured_mask(tied, pat).to_vector<float>()) << n;
    }
  }
}

// One learning step of the learned method (Sinkhorn, hard assignment, straight-through
// effective weight, Smooth-L1 against the dense output, backward) on both devices: the
// same hard permutation, loss and cost gradient.
TEST(CudaPermute, LearningStepFollowsTheCpu) {
  REQUIRE_GPU();
  for (int64_t G : {1, 4}) {
    int64_t n = 64, B = n / G;
    Generator g(40 + uint64_t(G));
    Tensor w = randn({48, n}, g, DType::F64), x = randn({16, n}, g, DType::F64), norms = abs(randn({n}, g));
    Tensor scores = importance(w, norms, Score::Wanda).to(DType::F64);
    Tensor cost0 = randn({G, B, B}, g, DType::F64);
    auto step = [&](Device d, Perm& hard) {
      Tensor cost = cost0.to(d).set_requires_grad();
      Tensor soft = sinkhorn(mul(cost, -1.0 / 0.5), 20);
      hard = assignment_permutation(cost, false);
      Tensor weff = effective_weight(w.to(d), scores.to(d), hard, soft, NMPattern{}, mean(scores).item(), false);
      Tensor loss = smooth_l1(linear(x.to(d), weff), linear(x.to(d), w.to(d)));
      backward(loss);
      return std::make_pair(loss.item(), cost.grad());
    };
    Perm hc, hg;
    auto [lc, gc] = step(Device::CPU, hc);
    auto [lg, gg] = step(Device::CUDA, hg);
    EXPECT_EQ(hg, hc) << "G=" << G;
    EXPECT_NEAR(lg, lc, 1e-9 * std::abs(lc)) << "G=" << G;
    ASSERT_EQ(gg.device(), Device::CUDA);
    EXPECT_TRUE(close(gg, gc, 1e-8)) << "cost gradient, G=" << G;
  }
}

// Pruning a model that lives on the GPU: every method runs (the searches on host copies
// of the scores, the learned ones on the GPU) and the result follows the CPU run. Search
// methods see the same scores, so they find the same permutations and prune to the same
// weights; the learned ones must give valid permutations, a finite held-out objective no
// worse than their start, and a pruned model that evaluates where the CPU's does.
TEST(CudaPermute, PruningOnTheGpuFollowsTheCpu) {
  REQUIRE_GPU();
  for (const char* arch : {"vit", "llama"})
    for (const char* method : {"none", "random", "channel-swap", "ria", "permllm", "learned"}) {
      auto make = [&] { return std::string(arch) == "vit" ? test::tiny_vit(5) : test::tiny_llama(5); };
      Model on_cpu = make(), on_gpu = make();
      on_gpu.to(Device::CUDA);
      TrainData data = test::tiny_data(on_cpu, 6);
      PruneOptions o;
      o.method = method;
      o.seed = 2;
      o.progress = false;
      o.search.escapes = 3;
      o.learn = learn_defaults(method);
      o.learn.steps = 4;
      o.learn.eval_every = 2;
      o.learn.batch = 8;
      o.learn.holdout = on_cpu.network->takes_images() ? 64 : 8;
      auto norms = activation_norms(on_cpu, data, {.batches = 2, .batch = 8});
      PruneResult c = prune_model(on_cpu, data, norms, o);
      PruneResult g = prune_model(on_gpu, data, activation_norms(on_gpu, data, {.batches = 2, .batch = 8}), o);
      ASSERT_EQ(on_gpu.parameters()[0].device(), Device::CUDA) << arch << " " << method;
      bool learned = std::string(method) == "permllm" || std::string(method) == "learned";
      for (const Site& s : permutation_sites(on_gpu)) check_permutation(g.perms.at(s.name), s.channels, s.name);
      double lc = evaluate(on_cpu, data, 8).loss, lg = evaluate(on_gpu, data, 8).loss;
      if (!learned) {
        EXPECT_EQ(g.perms, c.perms) << arch << " " << method;
        EXPECT_NEAR(g.mean_kept, c.mean_kept, 1e-6) << arch << " " << method;
        EXPECT_NEAR(lg, lc, 1e-3 * std::abs(lc)) << arch << " " << method;
      } else {
        EXPECT_TRUE(std::isfinite(g.learn.best_holdout)) << arch << " " << method;
        EXPECT_LE(g.learn.best_holdout, g.learn.start_holdout) << arch << " " << method;
        EXPECT_NEAR(g.learn.start_holdout, c.learn.start_holdout, 1e-3 * std::abs(c.learn.start_holdout))
            << arch << " " << method;
      }
    }
}

// Block by block on the GPU (each block moved there as it is loaded from the mapped
// files): the search methods find the CPU's permutations and the pruned model evaluates
// where the CPU's does, under both calibration conventions; the export is written; the
// learned method learns block by block there too.
TEST(CudaPermute, BlockByBlockPruningOnTheGpuFollowsTheCpu) {
  REQUIRE_GPU();
  namespace fs = std::filesystem;
  fs::path dir = test::scratch_path("cuda_blockwise");
  Model m = test::tiny_llama(5);
  save_checkpoint(m, (dir / "dense").string());
  TrainData data = test::tiny_data(m, 6);
  for (const char* calibration : {"sequential", "dense"}) {
    CompareOptions o;
    o.methods = {"none", "channel-swap", "ria"};
    o.calib = {.batches = 2, .batch = 8};
    o.pipeline = "block";
    o.calibration = calibration;
    o.progress = false;
    o.search.escapes = 3;
    nlohmann::json c = compare_methods((dir / "dense").string(), data, o);
    o.device = Device::CUDA;
    o.out_dir = (dir / calibration).string();
    nlohmann::json g = compare_methods((dir / "dense").string(), data, o);
    EXPECT_NEAR(g["dense"]["loss"].get<double>(), c["dense"]["loss"].get<double>(), 1e-4) << calibration;
    for (size_t i = 0; i < c["runs"].size(); ++i) {
      const nlohmann::json &rc = c["runs"][i], &rg = g["runs"][i];
      EXPECT_EQ(load_permutations(rg["checkpoint"].get<std::string>() + "/permutations.safetensors").size(), 8u);
      for (size_t l = 0; l < rc["layers"].size(); ++l)
        EXPECT_NEAR(rg["layers"][l]["kept"].get<double>(), rc["layers"][l]["kept"].get<double>(), 1e-6)
            << calibration << " " << rc["method"] << " " << rc["layers"][l]["layer"];
      EXPECT_NEAR(rg["eval"]["loss"].get<double>(), rc["eval"]["loss"].get<double>(), 1e-3) << calibration;
      EXPECT_EQ(rg["nm_violations"], 0);
    }
  }
  // The learned method block by block: the costs train on the GPU from each block's
  // calibration inputs. Rounding differences may tip a hard assignment, so the pruned
  // model is held to the CPU's loss within 2%, not bit for bit.
  CompareOptions o;
  o.methods = {"learned"};
  o.calib = {.batches = 2, .batch = 8};
  o.pipeline = "block";
  o.calibration = "sequential";
  o.progress = false;
  o.learn = {{"objective", "block"}, {"steps", 3}, {"eval_every", 3}, {"batch", 4}};
  nlohmann::json c = compare_methods((dir / "dense").string(), data, o);
  o.device = Device::CUDA;
  o.out_dir = (dir / "learned").string();
  nlohmann::json g = compare_methods((dir / "dense").string(), data, o);
  const nlohmann::json &rc = c["runs"][0], &rg = g["runs"][0];
  EXPECT_EQ(load_permutations(rg["checkpoint"].get<std::string>() + "/permutations.safetensors").size(), 8u);
  EXPECT_EQ(rg["nm_violations"], 0);
  EXPECT_NEAR(rg["eval"]["loss"].get<double>(), rc["eval"]["loss"].get<double>(),
              0.02 * rc["eval"]["loss"].get<double>());
  fs::remove_all(dir);
}

// `eval --pipeline auto` on the GPU: the whole model when it fits in the GPU's free memory,
// else block by block; both give the CPU's figures. The small GPU is the emulator's
// (NMPERM_CUDA_EMU_MEMORY_MIB); on a real GPU only the first half runs. The block pipeline
// of prune refuses, before any work, a GPU too small for one block and its activations.
TEST(CudaPermute, EvaluationTakesTheWholeModelOnTheGpuWhenItFitsElseBlockByBlock) {
  REQUIRE_GPU();
  namespace fs = std::filesystem;
  fs::path dir = test::scratch_path("cuda_auto");
  Model m = test::tiny_llama(5);
  save_checkpoint(m, (dir / "dense").string());
  TrainData data = test::tiny_data(m, 6);
  const double cpu = evaluate(m, data, 0).loss;
  std::string why;
  ASSERT_EQ(auto_eval_pipeline(m, data, 0, Device::CUDA, why), "whole") << why;
  EXPECT_NE(why.find("free on the GPU"), std::string::npos) << why;
  Model g = load_checkpoint((dir / "dense").string());
  g.to(Device::CUDA);
  EXPECT_NEAR(evaluate(g, data, 0).loss, cpu, 1e-4);
  if (cuda_device_name().find("emulator") != std::string::npos) {
    setenv("NMPERM_CUDA_EMU_MEMORY_MIB", "64", 1);  // less than the 0.25 GiB the estimates reserve
    struct Restore {
      ~Restore() { unsetenv("NMPERM_CUDA_EMU_MEMORY_MIB"); }
    } restore;
    EXPECT_LE(available_memory(Device::CUDA), 64.0 * (1 << 20));
    EXPECT_EQ(auto_eval_pipeline(m, data, 0, Device::CUDA, why), "block") << why;
    EXPECT_NEAR(evaluate_blockwise((dir / "dense").string(), data, 0, Split::Test, Device::CUDA, false).loss, cpu,
                1e-4);
    CompareOptions o;
    o.methods = {"none"};
    o.calib = {.batches = 2, .batch = 8};
    o.pipeline = "block";
    o.progress = false;
    o.device = Device::CUDA;
    o.out_dir = (dir / "pruned").string();
    EXPECT_THROW_MSG(compare_methods((dir / "dense").string(), data, o), "is available on the GPU");
    EXPECT_FALSE(fs::exists(dir / "pruned"));
  }
  fs::remove_all(dir);
}

// The op table of the CPU gradient checks, run on both devices in f64: outputs and the
// gradients of every input (for the upstream gradient of a seeded random tensor) agree.
class CudaOpTable : public ::testing::TestWithParam<test::OpCase> {};

TEST_P(CudaOpTable, ForwardAndBackwardMatchTheCpu) {
  REQUIRE_GPU();
  const test::OpCase& c = GetParam();
  std::vector<Tensor> xs, gxs;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    xs.push_back(test::make(c.inputs[i], 1000 + i));
    Tensor g = xs.back().detach().to(Device::CUDA);
    gxs.push_back(xs.back().requires_grad() ? g.set_requires_grad() : g);
  }
  Tensor y = c.fn(xs), gy = c.fn(gxs);
  ASSERT_EQ(gy.device(), Device::CUDA) << c.name;
  ASSERT_EQ(gy.shape(), y.shape()) << c.name;
  EXPECT_TRUE(close(gy, y, 1e-9)) << c.name << " forward";
  if (!y.requires_grad()) return;
  Generator gen(7);
  Tensor up = randn(y.shape(), gen, y.dtype());
  backward(sum(mul(y, up)));
  backward(sum(mul(gy, up.to(Device::CUDA))));
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].requires_grad()) continue;
    ASSERT_TRUE(gxs[i].grad().defined()) << c.name << " input " << i << " got no gradient on the GPU";
    EXPECT_TRUE(close(gxs[i].grad(), xs[i].grad(), 1e-9)) << c.name << " gradient of input " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AllOps, CudaOpTable, ::testing::ValuesIn(test::cases()),
                         [](const auto& info) { return info.param.name; });

// Whole models: a few training steps (forward, backward, clipping, AdamW, a checkpoint)
// and an evaluation on the GPU follow the same run on the CPU (f32, so loose tolerances:
// the reductions run in different orders).
TEST(CudaModels, TrainingAndEvaluationFollowTheCpu) {
  REQUIRE_GPU();
  for (const char* arch : {"vit", "llama"}) {
    auto make = [&] { return std::string(arch) == "vit" ? test::tiny_vit(3) : test::tiny_llama(3); };
    Model on_cpu = make(), on_gpu = make();
    on_gpu.to(Device::CUDA);
    ASSERT_EQ(on_gpu.parameters()[0].device(), Device::CUDA);
    TrainData data = test::tiny_data(on_cpu, 4);
    TrainConfig cfg;
    cfg.arch = arch;
    cfg.steps = 6;
    cfg.batch = 8;
    cfg.warmup = 2;
    cfg.eval_every = 3;
    cfg.ckpt_every = 3;
    cfg.eval_windows = 8;
    auto dir = [&](const char* d) { return test::scratch_path(fmt::format("cuda_{}_{}", arch, d)).string(); };
    cfg.out_dir = dir("cpu");
    EvalResult c = train(on_cpu, cfg, data, false, false);
    cfg.out_dir = dir("gpu");
    EvalResult g = train(on_gpu, cfg, data, false, false);
    EXPECT_NEAR(g.loss, c.loss, 1e-3 * std::abs(c.loss)) << arch;
    EXPECT_NEAR(g.accuracy, c.accuracy, 0.02) << arch;
    std::vector<std::string> names;
    on_cpu.visit([&](const std::string& name, Tensor&) { names.push_back(name); });
    auto pc = on_cpu.parameters(), pg = on_gpu.parameters();
    ASSERT_EQ(pc.size(), pg.size());
    double lr_sum = 0;
    for (int64_t s = 0; s < cfg.steps; ++s) lr_sum += lr_at(cfg, s);
    for (size_t i = 0; i < pc.size(); ++i) {
      // An attention key bias adds q . b to every score of a query, which the softmax
      // ignores: its gradient is exactly zero, so what either device computes for it is
      // rounding noise, and AdamW normalises noise to steps of about lr whose sign differs
      // between machines. It can only agree to the size of those steps.
      bool key_bias = names[i].ends_with("key.bias");
      if (key_bias) {
        EXPECT_LT(max(abs(pc[i].grad())).item(), 1e-6) << names[i] << ": not a zero gradient";
      }
      EXPECT_TRUE(test::all_close(cpu(pg[i]), pc[i], key_bias ? 2 * lr_sum : 1e-4, key_bias ? 0 : 1e-3))
          << arch << " parameter " << i << " " << names[i];
    }
    // The checkpoint written from the GPU loads on the CPU and evaluates like the GPU model.
    Model back = load_checkpoint(dir("gpu"));
    EXPECT_NEAR(evaluate(back, data, 8).loss, evaluate(on_gpu, data, 8).loss, 1e-4) << arch;
    std::filesystem::remove_all(dir("cpu"));
    std::filesystem::remove_all(dir("gpu"));
  }
}

// Determinism on the GPU is the default (fixed reduction trees, no floating-point
// atomics, cuBLAS GEMMs are bitwise reproducible on one device): two training runs give
// bitwise the same parameters.
TEST(CudaModels, TrainingIsBitwiseRepeatable) {
  REQUIRE_GPU();
  for (const char* arch : {"vit", "llama"}) {
    std::vector<std::vector<float>> runs[2];
    for (int rep = 0; rep < 2; ++rep) {
      Model m = std::string(arch) == "vit" ? test::tiny_vit(9) : test::tiny_llama(9);
      m.to(Device::CUDA);
      TrainData data = test::tiny_data(m, 10);
      TrainConfig cfg;
      cfg.arch = arch;
      cfg.steps = 5;
      cfg.batch = 8;
      cfg.eval_every = cfg.ckpt_every = 5;
      cfg.eval_windows = 4;
      cfg.out_dir = test::scratch_path(fmt::format("cuda_det_{}_{}", arch, rep)).string();
      train(m, cfg, data, false, false);
      for (Tensor& p : m.parameters()) runs[rep].push_back(cpu(p).to_vector<float>());
      std::filesystem::remove_all(cfg.out_dir);
    }
    EXPECT_EQ(runs[0], runs[1]) << arch;
  }
}

TEST(CudaRuntime, CachingAllocatorReusesAndReports) {
  REQUIRE_GPU();
  bool was = cuda_caching();
  set_cuda_caching(true);
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
  set_cuda_caching(was);
  // Host <-> device copies large enough for the pinned staging path.
  Tensor big = input({3, 1 << 20}, DType::F32, 30);
  EXPECT_EQ(cpu(gpu(big)).to_vector<float>(), big.to_vector<float>());
}

}  // namespace
}  // namespace nmperm
