#include "permute/baselines.h"

#include <algorithm>
#include <numeric>

#include "autograd/ops.h"
#include "permute/assignment.h"

namespace nmperm {

namespace {

// Scores column-major (in, out): a channel's scores are contiguous, so a group's value
// reads M short columns.
struct Columns {
  int64_t O, I;
  std::vector<float> col;  // col[i * O + o] = S[o, i]
  explicit Columns(const Tensor& s) : O(s.shape(0)), I(s.shape(1)), col(size_t(O * I)) {
    Tensor c = s.to(DType::F32).contiguous();
    const float* p = c.data<float>();
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) col[size_t(i * O + o)] = p[o * I + i];
  }
  const float* operator[](int64_t ch) const { return col.data() + ch * O; }
};

// Sum over rows of the N largest scores among the channels `ch[0..M)` of one group.
double group_value(const Columns& c, const int64_t* ch, NMPattern pat) {
  double total = 0;
  float v[64];
  for (int64_t o = 0; o < c.O; ++o) {
    for (int64_t k = 0; k < pat.m; ++k) v[k] = c[ch[k]][o];
    std::partial_sort(v, v + pat.n, v + pat.m, std::greater<float>());
    for (int64_t k = 0; k < pat.n; ++k) total += v[k];
  }
  return total;
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
  for (int64_t g = 0; g < G; ++g) val[size_t(g)] = group_value(c, p.data() + g * M, pat);
  double cur = std::accumulate(val.begin(), val.end(), 0.0), best_total = cur;
  Generator gen(opt.seed);
  int64_t escapes = 0;
  struct Move {
    double gain, v1, v2;
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
      std::vector<int64_t> gi(static_cast<size_t>(M)), gj(static_cast<size_t>(M));
#pragma omp for schedule(dynamic) nowait
      for (size_t k = 0; k < pairs.size(); ++k) {
        auto [g1, g2] = pairs[k];
        Move best_move{eps, 0, 0, -1, -1};
        for (int64_t a = 0; a < M; ++a)
          for (int64_t b = 0; b < M; ++b) {
            std::copy(p.begin() + g1 * M, p.begin() + (g1 + 1) * M, gi.begin());
            std::copy(p.begin() + g2 * M, p.begin() + (g2 + 1) * M, gj.begin());
            std::swap(gi[size_t(a)], gj[size_t(b)]);
            double v1 = group_value(c, gi.data(), pat), v2 = group_value(c, gj.data(), pat);
            double d = v1 + v2 - val[size_t(g1)] - val[size_t(g2)];
            if (d > best_move.gain) best_move = {d, v1, v2, g1 * M + a, g2 * M + b};
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
    int64_t applied = 0;
    double before = cur;
    for (const Move& mv : moves) {
      int64_t g1 = mv.i / M, g2 = mv.j / M;
      if (touched[size_t(g1)] || touched[size_t(g2)]) continue;
      touched[size_t(g1)] = touched[size_t(g2)] = 1;
      std::swap(p[size_t(mv.i)], p[size_t(mv.j)]);
      val[size_t(g1)] = mv.v1;
      val[size_t(g2)] = mv.v2;
      cur += mv.gain;
      ++applied;
    }
    if (cur > best_total) {
      best_total = cur;
      best = p;
    }
    // A sweep gaining less than 1e-5 of the total counts as a local optimum: on wide
    // layers some window always finds a tiny gain, and those sweeps cost as much as any.
    if (applied > 0 && cur - before > 1e-5 * std::abs(before)) continue;
    // Local optimum: escape with one random swap between groups, a bounded number of times.
    if (escapes++ >= opt.escapes || G < 2) break;
    int64_t i = gen.randint(I), j = gen.randint(I);
    if (i / M == j / M) j = (j + M) % I;
    std::swap(p[size_t(i)], p[size_t(j)]);
    for (int64_t g : {i / M, j / M}) val[size_t(g)] = group_value(c, p.data() + g * M, pat);
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
  auto value = [&](const Perm& q) {
    double v = 0;
    for (int64_t g = 0; g < G; ++g) v += group_value(c, q.data() + g * M, pat);
    return v;
  };
  double cur = value(p);
  // Per-position assignment: the channels at slot m of every group are re-dealt to the
  // groups by a maximum-weight assignment, the other slots held fixed.
  for (int64_t round = 0; round < opt.max_sweeps; ++round) {
    bool improved = false;
    for (int64_t m = 0; m < M; ++m) {
      std::vector<double> gainm(static_cast<size_t>(G * G));
#pragma omp parallel for schedule(dynamic)
      for (int64_t g = 0; g < G; ++g) {
        std::vector<int64_t> grp(p.begin() + g * M, p.begin() + (g + 1) * M);
        for (int64_t k = 0; k < G; ++k) {  // channel now at slot m of group k, placed in group g
          grp[size_t(m)] = p[size_t(k * M + m)];
          gainm[size_t(k * G + g)] = group_value(c, grp.data(), pat);
        }
      }
      std::vector<int64_t> to = linear_assignment(gainm.data(), G, true);  // channel row k -> group to[k]
      Perm q = p;
      for (int64_t k = 0; k < G; ++k) q[size_t(to[size_t(k)] * M + m)] = p[size_t(k * M + m)];
      double v = value(q);
      if (v > cur + 1e-12 * std::max(1.0, std::abs(cur))) {
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
  check(scores, pat, method.c_str());
  if (method == "none") return identity_perm(scores.shape(1));
  if (method == "random") return random_perm(scores.shape(1), opt.seed);
  if (method == "channel-swap") return channel_swap(scores, pat, opt);
  if (method == "ria") return ria_permutation(scores, pat, opt);
  NMPERM_FAIL("unknown permutation method '{}' (none, random, channel-swap, ria)", method);
}

double kept_fraction(const Tensor& scores, const Perm& p, NMPattern pat) {
  NMPERM_CHECK(int64_t(p.size()) == scores.shape(1), "kept_fraction: permutation of {} for {} channels", p.size(),
               scores.shape(1));
  Tensor permuted = index_select(scores, 1, from_vector(p, {int64_t(p.size())}));
  return kept_fraction(permuted, nm_mask(permuted, pat));
}

}  // namespace nmperm
