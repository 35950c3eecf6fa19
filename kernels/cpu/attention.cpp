// CPU attention: per (batch, head) the score block lives only in a thread-local buffer;
// two gemms and a row softmax make the forward, four gemms the backward. Causal attention
// goes in blocks of kRowBlock query rows, each multiplied only against the keys its last
// row can see, so the masked upper triangle is not computed (about 40% of the products
// at T = S = 128).
// The backward runs per (batch, kv head) so one thread owns each dk/dv block (GQA sums
// over the query heads of a group without races or atomics).
#include "kernels/attention.h"
#include "kernels/cpu/launchers.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/vmath.h"

namespace nmperm::kernels::cpu {

namespace {

using Dims = AttentionDims;

constexpr int64_t kRowBlock = 32;

// Query rows [t0, t1) of one head and the keys they may see, [0, visible of row t1 - 1).
struct RowBlock {
  int64_t t0, t1, keys;
};

template <class F> void for_row_blocks(const Dims& d, bool causal, F&& f) {
  if (!causal) return f(RowBlock{0, d.T, d.S});
  for (int64_t t0 = 0; t0 < d.T; t0 += kRowBlock) {
    int64_t t1 = std::min(d.T, t0 + kRowBlock);
    f(RowBlock{t0, t1, std::clamp<int64_t>(t1 + d.shift, 0, d.S)});
  }
}

// P = softmax(scale * Q K^T) for the rows of `rb` into p (rows, rb.keys; leading dim S)
// with their lse (computed, or given by the forward when have_lse); masked entries are 0.
// Rows of q are ldq apart, rows of k ldk. With inv_sum (the forward), the rows are left
// unnormalised, exp(s - max), and inv_sum[t - rb.t0] gets 1 / their sum: the forward
// scales the D columns of its output row instead of the row's keys.
template <class T>
void scores(const Dims& d, const RowBlock& rb, const T* qh, int64_t ldq, const T* kh, int64_t ldk, T scale, bool causal,
            T* p, T* lse, bool have_lse, T* inv_sum = nullptr) {
  int64_t rows = rb.t1 - rb.t0;
  if (rb.keys > 0) gemm<T>(false, true, rows, rb.keys, d.D, scale, qh + rb.t0 * ldq, ldq, kh, ldk, T(0), p, d.S);
  for (int64_t t = rb.t0; t < rb.t1; ++t) {
    T* row = p + (t - rb.t0) * d.S;
    int64_t visible = causal ? std::clamp<int64_t>(t + d.shift + 1, 0, d.S) : d.S;
    if (have_lse) {
      exp_shift_sum<T>(row, lse[t], row, visible);
    } else {
      T m = max_of(row, visible);
      T sum = visible > 0 ? exp_shift_sum<T>(row, m, row, visible) : T(0);
      T inv = sum > 0 ? T(1) / sum : T(0);
      if (inv_sum)
        inv_sum[t - rb.t0] = inv;
      else
        for (int64_t s = 0; s < visible; ++s) row[s] *= inv;
      lse[t] = visible > 0 ? m + std::log(sum) : -std::numeric_limits<T>::infinity();
    }
    for (int64_t s = visible; s < rb.keys; ++s) row[s] = 0;
  }
}

}  // namespace

void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse, double scale, bool causal) {
  Dims d = attention_dims(q, k, v);
  HeadRows qs = head_rows(q, "attention: q"), ks = head_rows(k, "attention: k"), vs = head_rows(v, "attention: v"),
           os = head_rows(out, "attention: out");
  dispatch_float(q.dtype(), [&]<class T>() {
    const T *qp = q.data<T>(), *kp = k.data<T>(), *vp = v.data<T>();
    T *op = out.data<T>(), *lp = lse.data<T>();
    int64_t BH = d.B * d.H;
    auto one = [&](int64_t bh, std::vector<T>& buf) {
      int64_t b = bh / d.H, h = bh % d.H, kvh = h / d.group;
      const T *qh = qp + b * qs.b + h * qs.h, *kh = kp + b * ks.b + kvh * ks.h, *vh = vp + b * vs.b + kvh * vs.h;
      T* oh = op + b * os.b + h * os.h;
      for_row_blocks(d, causal, [&](const RowBlock& rb) {
        T inv[kRowBlock];
        int64_t rows = rb.t1 - rb.t0;
        T* inv_sum = rows <= kRowBlock ? inv : nullptr;  // a non-causal block is all T rows
        scores<T>(d, rb, qh, qs.t, kh, ks.t, T(scale), causal, buf.data(), lp + bh * d.T, false, inv_sum);
        if (rb.keys == 0) {
          for (int64_t t = rb.t0; t < rb.t1; ++t) std::memset(oh + t * os.t, 0, sizeof(T) * size_t(d.D));
          return;
        }
        gemm<T>(false, false, rows, d.D, rb.keys, T(1), buf.data(), d.S, vh, vs.t, T(0), oh + rb.t0 * os.t, os.t);
        if (inv_sum)
          for (int64_t t = 0; t < rows; ++t) {
            T* o = oh + (rb.t0 + t) * os.t;
            for (int64_t j = 0; j < d.D; ++j) o[j] *= inv[t];
          }
      });
    };
    if (BH >= omp_get_max_threads() && BH > 1) {
      BlasSingleThread single;
#pragma omp parallel
      {
        std::vector<T> buf(static_cast<size_t>(d.T * d.S));
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < BH; ++bh) one(bh, buf);
      }
    } else {
      std::vector<T> buf(static_cast<size_t>(d.T * d.S));
      for (int64_t bh = 0; bh < BH; ++bh) one(bh, buf);
    }
  });
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv, double scale, bool causal) {
  Dims d = attention_dims(q, k, v);
  HeadRows qs = head_rows(q, "attention: q"), ks = head_rows(k, "attention: k"), vs = head_rows(v, "attention: v"),
           os = head_rows(out, "attention: out"),
           gs = head_rows(dout, "attention: dout");
  NMPERM_CHECK(dq.is_contiguous() && dk.is_contiguous() && dv.is_contiguous(),
               "attention_backward: dq, dk, dv must be packed, got {}, {}, {}", describe(dq), describe(dk), describe(dv));
  dispatch_float(q.dtype(), [&]<class T>() {
    const T *qp = q.data<T>(), *kp = k.data<T>(), *vp = v.data<T>(), *op = out.data<T>(), *lp = lse.data<T>(),
            *gp = dout.data<T>();
    T *dqp = dq.data<T>(), *dkp = dk.data<T>(), *dvp = dv.data<T>();
    int64_t BK = d.B * d.Hkv;
    auto one = [&](int64_t bk, std::vector<T>& p, std::vector<T>& dp) {
      int64_t b = bk / d.Hkv, kh = bk % d.Hkv;
      const T *kb = kp + b * ks.b + kh * ks.h, *vb = vp + b * vs.b + kh * vs.h;
      T *dkb = dkp + bk * d.S * d.D, *dvb = dvp + bk * d.S * d.D;
      // dK and dV sum over the query heads of the group and over the row blocks.
      std::memset(dkb, 0, sizeof(T) * size_t(d.S * d.D));
      std::memset(dvb, 0, sizeof(T) * size_t(d.S * d.D));
      for (int64_t g = 0; g < d.group; ++g) {
        int64_t h = kh * d.group + g, bh = b * d.H + h;
        const T *qh = qp + b * qs.b + h * qs.h, *oh = op + b * os.b + h * os.h, *gh = gp + b * gs.b + h * gs.h;
        T* dqh = dqp + bh * d.T * d.D;
        for_row_blocks(d, causal, [&](const RowBlock& rb) {
          int64_t rows = rb.t1 - rb.t0;
          if (rb.keys == 0) {
            std::memset(dqh + rb.t0 * d.D, 0, sizeof(T) * size_t(rows * d.D));
            return;
          }
          const T *qr = qh + rb.t0 * qs.t, *orow = oh + rb.t0 * os.t, *gr = gh + rb.t0 * gs.t;
          scores<T>(d, rb, qh, qs.t, kb, ks.t, T(scale), causal, p.data(), const_cast<T*>(lp + bh * d.T), true);
          // dV += P^T dO ; dP = dO V^T
          gemm<T>(true, false, rb.keys, d.D, rows, T(1), p.data(), d.S, gr, gs.t, T(1), dvb, d.D);
          gemm<T>(false, true, rows, rb.keys, d.D, T(1), gr, gs.t, vb, vs.t, T(0), dp.data(), d.S);
          // dS = P * (dP - rowsum(dO * O))
          for (int64_t t = 0; t < rows; ++t) {
            T di = dot(gr + t * gs.t, orow + t * os.t, d.D);
            T *pr = p.data() + t * d.S, *dr = dp.data() + t * d.S;
            for (int64_t s = 0; s < rb.keys; ++s) dr[s] = pr[s] * (dr[s] - di);
          }
          // dQ = scale dS K ; dK += scale dS^T Q
          gemm<T>(false, false, rows, d.D, rb.keys, T(scale), dp.data(), d.S, kb, ks.t, T(0), dqh + rb.t0 * d.D, d.D);
          gemm<T>(true, false, rb.keys, d.D, rows, T(scale), dp.data(), d.S, qr, qs.t, T(1), dkb, d.D);
        });
      }
    };
    if (BK >= omp_get_max_threads() && BK > 1) {
      BlasSingleThread single;
#pragma omp parallel
      {
        std::vector<T> p(static_cast<size_t>(d.T * d.S)), dp(static_cast<size_t>(d.T * d.S));
#pragma omp for schedule(static)
        for (int64_t bk = 0; bk < BK; ++bk) one(bk, p, dp);
      }
    } else {
      std::vector<T> p(static_cast<size_t>(d.T * d.S)), dp(static_cast<size_t>(d.T * d.S));
      for (int64_t bk = 0; bk < BK; ++bk) one(bk, p, dp);
    }
  });
}

}  // namespace nmperm::kernels::cpu
