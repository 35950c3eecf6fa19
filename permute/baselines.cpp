#include "permute/baselines.h"

#include <algorithm>
#include <numeric>

#include "autograd/ops.h"
#include "permute/assignment.h"
#include "permute/methods.h"

namespace nmperm {

namespace {

// Scores column-major (in, out): a channel's scores are contiguous, so a group's value
// reads M short columns.
struct Columns {
  int64_t O, I;
  std::vector<float> col;  // col[i * O + o] = S[o, i]
  explicit Columns(const Tensor& s) : O(s.shape(0)), I(s.shape(1)), col(size_t(O * I)) {
    Tensor c = s.to(DType::F32).to(Device::CPU).contiguous();  // the searches are host code
    const float* p = c.data<float>();
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) col[size_t(i * O + o)] = p[o * I + i];
  }
  const float* operator[](int64_t ch) const { return col.data() + ch * O; }
};

// Both per-group summaries below rank each row's M scores. For M of 2, 4 and 8 (template
// argument) every entry is ranked by counting the entries above it (higher, or equal at a
// lower index), without branches, so rows go through vector lanes; other M (0) sort the
// row. On ties the two may order equal values differently, which changes no sum or
// threshold.
// How many of v[0..kM) rank before v[a]: higher, or equal at a lower index.
template <int64_t kM> inline int64_t ranked_above(const float* v, int64_t a) {
  int64_t above = 0;
  for (int64_t b = 0; b < kM; ++b) above += (v[b] > v[a]) | ((v[b] == v[a]) & (b < a));
  return above;
}

template <int64_t kM>
double group_value_of(const Columns& c, const int64_t* ch, NMPattern pat) {
  double total = 0;
  if constexpr (kM > 0) {
    const float* col[kM];
    for (int64_t k = 0; k < kM; ++k) col[k] = c[ch[k]];
#pragma omp simd reduction(+ : total)
    for (int64_t o = 0; o < c.O; ++o) {
      float v[kM];
      for (int64_t k = 0; k < kM; ++k) v[k] = col[k][o];
      double kept = 0;
      for (int64_t a = 0; a < kM; ++a) kept += ranked_above<kM>(v, a) < pat.n ? double(v[a]) : 0.0;
      total += kept;
    }
  } else {
    float v[64];
    for (int64_t o = 0; o < c.O; ++o) {
      for (int64_t k = 0; k < pat.m; ++k) v[k] = c[ch[k]][o];
      std::partial_sort(v, v + pat.n, v + pat.m, std::greater<float>());
      for (int64_t k = 0; k < pat.n; ++k) total += v[k];
    }
  }
  return total;
}

// Sum over rows of the N largest scores among the channels `ch[0..M)` of one group.
double group_value(const Columns& c, const int64_t* ch, NMPattern pat) {
  switch (pat.m) {
    case 2: return group_value_of<2>(c, ch, pat);
    case 4: return group_value_of<4>(c, ch, pat);
    case 8: return group_value_of<8>(c, ch, pat);
    default: return group_value_of<0>(c, ch, pat);
  }
}

// What every group keeps if the channel in one of its slots is replaced by another channel
// x, in O(1) per row instead of a re-sort. In a row where the group keeps the sum K, with
// t its smallest kept score and u its largest dropped one:
//   slot kept:    K - s_slot + max(x, u) = (K - s_slot + u) + max(x - u, 0)
//   slot dropped: K + max(x - t, 0)
// so value = rest[slot] + sum_o max(x[o] - thr[slot][o], 0), slots numbered g * M + a.
// This turns the searches' inner loop into a streaming hinge sum over two columns.
struct SlotValues {
  int64_t O, M;
  std::vector<double> rest;  // (G * M)
  std::vector<float> thr;    // (G * M, O)

  SlotValues(const Columns& c, int64_t G, int64_t M)
      : O(c.O), M(M), rest(static_cast<size_t>(G * M)), thr(static_cast<size_t>(G * M * c.O)) {}
  const float* threshold(int64_t slot) const { return thr.data() + slot * O; }

  void update(const Columns& c, const int64_t* ch, int64_t g, NMPattern pat) {
    switch (M) {
      case 2: return update_of<2>(c, ch, g, pat);
      case 4: return update_of<4>(c, ch, g, pat);
      case 8: return update_of<8>(c, ch, g, pat);
      default: return update_of<0>(c, ch, g, pat);
    }
  }

  template <int64_t kM>
  void update_of(const Columns& c, const int64_t* ch, int64_t g, NMPattern pat) {
    double rest_g[64] = {};
    float* th = thr.data() + g * M * O;  // th[k * O + o]: slot k's threshold in row o
    if constexpr (kM > 0) {
      const float* col[kM];
      for (int64_t k = 0; k < kM; ++k) col[k] = c[ch[k]];
      double r[kM] = {};
#pragma omp simd reduction(+ : r[:kM])
      for (int64_t o = 0; o < O; ++o) {
        float v[kM];
        int64_t above[kM];
        for (int64_t k = 0; k < kM; ++k) v[k] = col[k][o];
        double K = 0;
        float t = 0, u = 0;  // the smallest kept score and the largest dropped one
        for (int64_t a = 0; a < kM; ++a) {
          above[a] = ranked_above<kM>(v, a);
          K += above[a] < pat.n ? double(v[a]) : 0.0;
          t += above[a] == pat.n - 1 ? v[a] : 0.0f;
          u += above[a] == pat.n ? v[a] : 0.0f;
        }
        for (int64_t a = 0; a < kM; ++a) {
          const bool kept = above[a] < pat.n;
          r[a] += kept ? K + (double(u) - double(v[a])) : K;
          th[a * O + o] = kept ? u : t;
        }
      }
      for (int64_t k = 0; k < kM; ++k) rest_g[k] = r[k];
    } else {
      float v[64];
      int64_t order[64];
      for (int64_t o = 0; o < O; ++o) {
        for (int64_t k = 0; k < M; ++k) {
          v[k] = c[ch[k]][o];
          order[k] = k;
        }
        std::partial_sort(order, order + pat.n + 1, order + M, [&](int64_t a, int64_t b) { return v[a] > v[b]; });
        double K = 0;
        for (int64_t k = 0; k < pat.n; ++k) K += v[order[k]];
        float t = v[order[pat.n - 1]], u = v[order[pat.n]];
        for (int64_t k = 0; k < M; ++k) {
          rest_g[k] += K;
          th[k * O + o] = t;
        }
        for (int64_t k = 0; k < pat.n; ++k) {
          rest_g[order[k]] += double(u) - double(v[order[k]]);
          th[order[k] * O + o] = u;
        }
      }
    }
    for (int64_t k = 0; k < M; ++k) rest[size_t(g * M + k)] = rest_g[k];
  }
};

// h[i * nt + j] = sum_o max(x_i[o] - t_j[o], 0). A tile of 4 x columns by 16 t columns
// walks the rows in runs of kRun, so the run of all 20 columns stays in L1 while every
// pair of them is summed, two t columns at a time against the four x (6 loads for 8
// hinges). The hinges are taken and summed in f32 (twice the lanes of f64, no
// conversions) within a run, and the runs' sums add up in f64. These sums only rank
// candidate moves; the searches value every move they make exactly (group_value), so f32
// here can cost a near-tie, never a wrong total. Compiled twice: AVX-512 where the CPU has
// it (16 lanes), the build's baseline otherwise (GCC on x86-64; not under ThreadSanitizer,
// whose runtime is not up yet when the choice is made at load time).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
__attribute__((target_clones("avx512f", "default")))
#endif
void hinge_sums(const float* const* x, int64_t nx, const float* const* t, int64_t nt, int64_t O, double* h) {
  constexpr int64_t kTile = 16, kRun = 256;
  for (int64_t j0 = 0; j0 < nt; j0 += kTile) {
    const int64_t j1 = std::min(nt, j0 + kTile);
    for (int64_t i0 = 0; i0 < nx; i0 += 4) {
      const int64_t w = std::min<int64_t>(4, nx - i0);
      const float *x0 = x[i0], *x1 = x[i0 + std::min<int64_t>(1, w - 1)], *x2 = x[i0 + std::min<int64_t>(2, w - 1)],
                  *x3 = x[i0 + std::min<int64_t>(3, w - 1)];
      double a[4][kTile] = {};
      for (int64_t o0 = 0; o0 < O; o0 += kRun) {
        const int64_t o1 = std::min(O, o0 + kRun);
        for (int64_t j = j0; j < j1; j += 2) {
          const float *t0 = t[j], *t1 = t[std::min(j + 1, j1 - 1)];
          float b00 = 0, b01 = 0, b10 = 0, b11 = 0, b20 = 0, b21 = 0, b30 = 0, b31 = 0;
#pragma omp simd reduction(+ : b00, b01, b10, b11, b20, b21, b30, b31)
          for (int64_t o = o0; o < o1; ++o) {
            const float u0 = t0[o], u1 = t1[o];
            b00 += std::max(x0[o] - u0, 0.0f), b01 += std::max(x0[o] - u1, 0.0f);
            b10 += std::max(x1[o] - u0, 0.0f), b11 += std::max(x1[o] - u1, 0.0f);
            b20 += std::max(x2[o] - u0, 0.0f), b21 += std::max(x2[o] - u1, 0.0f);
            b30 += std::max(x3[o] - u0, 0.0f), b31 += std::max(x3[o] - u1, 0.0f);
          }
          const int64_t c = j - j0;
          a[0][c] += b00, a[1][c] += b10, a[2][c] += b20, a[3][c] += b30;
          if (j + 1 < j1) a[0][c + 1] += b01, a[1][c + 1] += b11, a[2][c + 1] += b21, a[3][c + 1] += b31;
        }
      }
      for (int64_t k = 0; k < w; ++k)
        for (int64_t j = j0; j < j1; ++j) h[(i0 + k) * nt + j] = a[k][j - j0];
    }
  }
}

void check(const Tensor& s, NMPattern pat, const char* what) {
  NMPERM_CHECK(s.ndim() == 2, "{}: scores must be (out, in), got {}", what, describe(s));
  pat.check_fits(s.shape(1), what);
  NMPERM_CHECK(pat.m <= 64, "{}: M = {} is larger than supported (64)", what, pat.m);
}

}  // namespace

Perm identity_perm(int64_t n) {
  Perm p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  return p;
}

Perm random_perm(int64_t n, uint64_t seed) {
  Perm p = identity_perm(n);
  Generator g(seed);
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[size_t(i)], p[size_t(g.randint(i + 1))]);
  return p;
}

Perm channel_swap(const Tensor& scores, NMPattern pat, const SearchOptions& opt) {
  check(scores, pat, "channel-swap");
  Columns c(scores);
  int64_t I = c.I, G = I / pat.m, M = pat.m;
  Perm p = identity_perm(I), best = p;
  std::vector<double> val(static_cast<size_t>(G));
  SlotValues slots(c, G, M);
  auto refresh = [&](int64_t g) {  // exact value and slot values of a group whose channels changed
    val[size_t(g)] = group_value(c, p.data() + g * M, pat);
    slots.update(c, p.data() + g * M, g, pat);
  };
#pragma omp parallel for schedule(dynamic)
  for (int64_t g = 0; g < G; ++g) refresh(g);
  double cur = std::accumulate(val.begin(), val.end(), 0.0), best_total = cur;
  Generator gen(opt.seed);
  int64_t escapes = 0;
  struct Move {
    double gain;
    int64_t i, j;  // positions swapped
  };
  for (int64_t sweep = 0; sweep < opt.max_sweeps * (opt.escapes + 1); ++sweep) {
    // The best swap for every pair of groups, then as many of them as touch disjoint groups,
    // best first (one sweep then moves many channels instead of one).
    double eps = 1e-12 * std::max(1.0, std::abs(cur));
    std::vector<Move> moves;
    // Group pairs to try: all of them, or for many groups those within windows of
    // opt.window groups of a seeded shuffle, new each sweep (Apex's stripe groups).
    std::vector<std::pair<int64_t, int64_t>> pairs;
    if (opt.window <= 1 || G <= opt.window) {
      for (int64_t g1 = 0; g1 < G; ++g1)
        for (int64_t g2 = g1 + 1; g2 < G; ++g2) pairs.emplace_back(g1, g2);
    } else {
      Perm order = random_perm(G, opt.seed * 1000003 + uint64_t(sweep));
      for (int64_t w0 = 0; w0 < G; w0 += opt.window)
        for (int64_t a = w0; a < std::min(G, w0 + opt.window); ++a)
          for (int64_t b = a + 1; b < std::min(G, w0 + opt.window); ++b)
            pairs.emplace_back(std::min(order[size_t(a)], order[size_t(b)]), std::max(order[size_t(a)], order[size_t(b)]));
    }
#pragma omp parallel
    {
      std::vector<Move> local;
      std::vector<const float*> x1(size_t(M), nullptr), x2(size_t(M), nullptr), t1(size_t(M), nullptr),
          t2(size_t(M), nullptr);
      std::vector<double> into1(size_t(M * M)), into2(size_t(M * M));
#pragma omp for schedule(dynamic) nowait
      for (size_t k = 0; k < pairs.size(); ++k) {
        auto [g1, g2] = pairs[k];
        for (int64_t a = 0; a < M; ++a) {
          x1[size_t(a)] = c[p[size_t(g1 * M + a)]];
          x2[size_t(a)] = c[p[size_t(g2 * M + a)]];
          t1[size_t(a)] = slots.threshold(g1 * M + a);
          t2[size_t(a)] = slots.threshold(g2 * M + a);
        }
        hinge_sums(x2.data(), M, t1.data(), M, c.O, into1.data());  // [b * M + a]: g2's b into g1's slot a
        hinge_sums(x1.data(), M, t2.data(), M, c.O, into2.data());  // [a * M + b]: g1's a into g2's slot b
        Move best_move{eps, -1, -1};
        double before = val[size_t(g1)] + val[size_t(g2)];
        for (int64_t a = 0; a < M; ++a)
          for (int64_t b = 0; b < M; ++b) {
            double v1 = slots.rest[size_t(g1 * M + a)] + into1[size_t(b * M + a)];
            double v2 = slots.rest[size_t(g2 * M + b)] + into2[size_t(a * M + b)];
            double d = v1 + v2 - before;
            if (d > best_move.gain) best_move = {d, g1 * M + a, g2 * M + b};
          }
        if (best_move.i >= 0) local.push_back(best_move);
      }
#pragma omp critical
      moves.insert(moves.end(), local.begin(), local.end());
    }
    // Deterministic order whatever the threads did: by gain, then by position.
    std::sort(moves.begin(), moves.end(), [](const Move& x, const Move& y) {
      return x.gain != y.gain ? x.gain > y.gain : (x.i != y.i ? x.i < y.i : x.j < y.j);
    });
    std::vector<char> touched(static_cast<size_t>(G), 0);
    std::vector<int64_t> changed;
    for (const Move& mv : moves) {
      int64_t g1 = mv.i / M, g2 = mv.j / M;
      if (touched[size_t(g1)] || touched[size_t(g2)]) continue;
      touched[size_t(g1)] = touched[size_t(g2)] = 1;
      std::swap(p[size_t(mv.i)], p[size_t(mv.j)]);
      changed.push_back(g1);
      changed.push_back(g2);
    }
#pragma omp parallel for schedule(dynamic)
    for (size_t k = 0; k < changed.size(); ++k) refresh(changed[k]);
    double before = cur;
    cur = std::accumulate(val.begin(), val.end(), 0.0);
    if (cur > best_total) {
      best_total = cur;
      best = p;
    }
    // A sweep gaining less than 1e-5 of the total counts as a local optimum: on wide
    // layers some window always finds a tiny gain, and those sweeps cost as much as any.
    if (!changed.empty() && cur - before > 1e-5 * std::abs(before)) continue;
    // Local optimum: escape with one random swap between groups, a bounded number of times.
    if (escapes++ >= opt.escapes || G < 2) break;
    int64_t i = gen.randint(I), j = gen.randint(I);
    if (i / M == j / M) j = (j + M) % I;
    std::swap(p[size_t(i)], p[size_t(j)]);
    for (int64_t g : {i / M, j / M}) refresh(g);
    cur = std::accumulate(val.begin(), val.end(), 0.0);
  }
  return best;
}

Perm ria_permutation(const Tensor& scores, NMPattern pat, const SearchOptions& opt) {
  check(scores, pat, "ria");
  Columns c(scores);
  int64_t I = c.I, G = I / pat.m, M = pat.m;
  // Reallocation: channels by total score, dealt round-robin so each group gets a mix.
  std::vector<double> total(static_cast<size_t>(I), 0.0);
  for (int64_t i = 0; i < I; ++i)
    for (int64_t o = 0; o < c.O; ++o) total[size_t(i)] += c[i][o];
  Perm order = identity_perm(I);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return total[size_t(a)] > total[size_t(b)]; });
  Perm p(static_cast<size_t>(I));
  for (int64_t k = 0; k < I; ++k) p[size_t((k % G) * M + k / G)] = order[size_t(k)];
  // Each group's value under p; a candidate re-values only the groups it changes, and totals
  // are summed in group order, for any thread count.
  std::vector<double> values(static_cast<size_t>(G));
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < G; ++g) values[size_t(g)] = group_value(c, p.data() + g * M, pat);
  double cur = std::accumulate(values.begin(), values.end(), 0.0);
  // The slots' thresholds, with the permutation they were computed under: a group's are
  // recomputed only when one of its channels changed.
  SlotValues slots(c, G, M);
  Perm slots_at;
  // The hinge part of each slot's gain matrix is kept from its last visit, with the
  // permutation it was computed under: a visit recomputes only the rows whose channel
  // moved and the columns whose group's other slots changed (a slot's thresholds depend
  // only on the group's other channels). Late rounds move few channels and the last round
  // none, so most of their hinge sums are reused. Every entry is the same sum in the same
  // order as a full recomputation, so the permutation is too.
  const bool cache = G * G * M * int64_t(sizeof(double)) <= opt.ria_cache_bytes;
  std::vector<std::vector<double>> hinge(static_cast<size_t>(M));
  std::vector<Perm> computed_at(static_cast<size_t>(M));
  std::vector<std::vector<double>> duals(static_cast<size_t>(M));  // each slot's row potentials, by group
  constexpr int64_t kRows = 16;
  // Per-position assignment: the channels at slot m of every group are re-dealt to the
  // groups by a maximum-weight assignment, the other slots held fixed.
  for (int64_t round = 0; round < opt.max_sweeps; ++round) {
    bool improved = false;
    for (int64_t m = 0; m < M; ++m) {
#pragma omp parallel for schedule(dynamic)
      for (int64_t g = 0; g < G; ++g)
        if (slots_at.empty() || !std::equal(p.begin() + g * M, p.begin() + (g + 1) * M, slots_at.begin() + g * M))
          slots.update(c, p.data() + g * M, g, pat);
      slots_at = p;
      std::vector<const float*> x(static_cast<size_t>(G)), t(static_cast<size_t>(G));
      for (int64_t g = 0; g < G; ++g) {
        x[size_t(g)] = c[p[size_t(g * M + m)]];
        t[size_t(g)] = slots.threshold(g * M + m);
      }
      // h[k * G + g]: sum_o max(x_k - t_g, 0) for the channel now at slot m of group k in
      // group g's slot m. Rows to recompute against every column, the others only against
      // the columns to recompute (rows of 16 channels share one pass over the thresholds).
      std::vector<double>& h = hinge[size_t(m)];
      const Perm& q0 = computed_at[size_t(m)];
      std::vector<int64_t> rows, fresh_rows, cols;
      for (int64_t k = 0; k < G; ++k) (q0.empty() || q0[size_t(k * M + m)] != p[size_t(k * M + m)] ? rows : fresh_rows).push_back(k);
      for (int64_t g = 0; g < G && !q0.empty(); ++g)
        for (int64_t a = 0; a < M; ++a)
          if (a != m && q0[size_t(g * M + a)] != p[size_t(g * M + a)]) {
            cols.push_back(g);
            break;
          }
      h.resize(size_t(G * G));
      std::vector<const float*> tc(cols.size());
      for (size_t j = 0; j < cols.size(); ++j) tc[j] = t[size_t(cols[j])];
      const int64_t row_chunks = (int64_t(rows.size()) + kRows - 1) / kRows;
      const int64_t fresh_chunks = cols.empty() ? 0 : (int64_t(fresh_rows.size()) + kRows - 1) / kRows;
#pragma omp parallel
      {
        std::vector<const float*> xs(kRows);
        std::vector<double> out(size_t(kRows * G));
#pragma omp for schedule(dynamic)
        for (int64_t chunk = 0; chunk < row_chunks + fresh_chunks; ++chunk) {
          const bool all = chunk < row_chunks;
          const std::vector<int64_t>& rs = all ? rows : fresh_rows;
          const int64_t r0 = (all ? chunk : chunk - row_chunks) * kRows, n = std::min(kRows, int64_t(rs.size()) - r0);
          for (int64_t r = 0; r < n; ++r) xs[size_t(r)] = x[size_t(rs[size_t(r0 + r)])];
          if (all) {
            hinge_sums(xs.data(), n, t.data(), G, c.O, out.data());
            for (int64_t r = 0; r < n; ++r)
              std::copy_n(out.data() + r * G, G, h.data() + rs[size_t(r0 + r)] * G);
          } else {
            const int64_t nc = int64_t(cols.size());
            hinge_sums(xs.data(), n, tc.data(), nc, c.O, out.data());
            for (int64_t r = 0; r < n; ++r)
              for (int64_t j = 0; j < nc; ++j) h[size_t(rs[size_t(r0 + r)] * G + cols[size_t(j)])] = out[size_t(r * nc + j)];
          }
        }
      }
      computed_at[size_t(m)] = p;
      // The value of group g with the channel now at slot m of group k in its slot m is
      // h[k * G + g] + rest of g's other slots; every assignment adds each group's rest once,
      // so the best assignment of the sums is the best of h alone. Solving h keeps what
      // changed since this slot's last solve to the rows and columns recomputed above, so
      // that solve's potentials start this one.
      std::vector<int64_t> to = linear_assignment(h.data(), G, true, &duals[size_t(m)]);  // row k -> group to[k]
      if (!cache) {
        std::vector<double>().swap(h);
        computed_at[size_t(m)].clear();
      }
      Perm q = p;
      for (int64_t k = 0; k < G; ++k) q[size_t(to[size_t(k)] * M + m)] = p[size_t(k * M + m)];
      std::vector<double> q_values = values;
#pragma omp parallel for schedule(dynamic)
      for (int64_t g = 0; g < G; ++g)
        if (q[size_t(g * M + m)] != p[size_t(g * M + m)]) q_values[size_t(g)] = group_value(c, q.data() + g * M, pat);
      double v = std::accumulate(q_values.begin(), q_values.end(), 0.0);
      if (v > cur + 1e-12 * std::max(1.0, std::abs(cur))) {
        values.swap(q_values);
        std::vector<double>& u = duals[size_t(m)];  // rows follow their channels to their new groups
        std::vector<double> moved(u.size());
        for (int64_t k = 0; k < G; ++k) moved[size_t(to[size_t(k)])] = u[size_t(k)];
        u.swap(moved);
        p = q;
        cur = v;
        improved = true;
      }
    }
    if (!improved) break;
  }
  return p;
}

Perm search_permutation(const std::string& method, const Tensor& scores, NMPattern pat, const SearchOptions& opt) {
  const PermuteMethod& m = permute_method(method);
  NMPERM_CHECK(m.search, "'{}' learns its permutations against a model; a search on scores is one of: {}", method,
               fmt::join(permute_method_names(true), ", "));
  check(scores, pat, m.name);
  return m.search(scores, pat, opt);
}

double kept_fraction(const Tensor& scores, const Perm& p, NMPattern pat) {
  NMPERM_CHECK(int64_t(p.size()) == scores.shape(1), "kept_fraction: permutation of {} for {} channels", p.size(),
               scores.shape(1));
  Tensor permuted = index_select(scores, 1, from_vector(p, {int64_t(p.size())}).to(scores.device()));
  return kept_fraction(permuted, nm_mask(permuted, pat));
}

}  // namespace nmperm
