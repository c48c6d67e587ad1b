// The network: forward and backward through every layer, in parallel. Two schedules, chosen from the
// shapes alone (never from the thread count), both deterministic:
//
// * chunked (many rows): the batch is cut into chunks of `rows` rows, sized so that a chunk's
//   activations stay in L2. A thread carries its chunk forward through every layer, through the head
//   and back, so activations are written once and re-read from cache. Consecutive chunks form groups
//   (at most kMaxGroups); each group accumulates its weight gradients in its own buffer, one thread
//   per group at a time, and the group buffers are summed in a fixed pairwise order at the end.
//
// * layered (few rows for the size of the weights): one layer at a time over the whole batch, each
//   product cut into 2-D output tiles shared among the threads. Every output element, dW included,
//   is summed by one tile over the full inner dimension in a fixed order: no reduction at all.
//
// Either way, chunks, groups and the order of every sum depend on the shapes only, so results are
// bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engines.hpp"
#include "heads.hpp"
#include "layers.hpp"
#include "narrow.hpp"
#include "poll.hpp"
#include "config.hpp"
#include "mlpgrad/mlp.hpp"

namespace mlpgrad::MLPGRAD_ISA {

inline int64_t align16(int64_t x) { return round_up(x, 16); }

// One 64-byte aligned allocation per calling thread, grown when a call needs more and reused by the
// next call: a repeated call with the same shapes allocates nothing. Contents are not initialized.
template <typename T> class Workspace {
 public:
  T* get(int64_t n) {
    if (n > size_) {
      release();
      p_ = static_cast<T*>(::operator new[](sizeof(T) * n, std::align_val_t(64)));
      size_ = n;
    }
    return p_;
  }
  ~Workspace() { release(); }

 private:
  void release() {
    if (p_) ::operator delete[](p_, std::align_val_t(64));
    p_ = nullptr;
    size_ = 0;
  }
  T* p_ = nullptr;
  int64_t size_ = 0;
};

template <typename T> Workspace<T>& thread_workspace() {
  static thread_local Workspace<T> ws;
  return ws;
}

// The calling thread's workspace, or a private one for a nested call: the interrupt poll runs Python
// signal handlers on this thread in the middle of a call, and a handler may call mlpgrad again.
template <typename T> class WorkspaceLease {
 public:
  WorkspaceLease() : outer_(!busy()) { busy() = true; }
  ~WorkspaceLease() { if (outer_) busy() = false; }
  WorkspaceLease(const WorkspaceLease&) = delete;
  WorkspaceLease& operator=(const WorkspaceLease&) = delete;
  T* get(int64_t n) { return outer_ ? thread_workspace<T>().get(n) : own_.get(n); }

 private:
  static bool& busy() {
    static thread_local bool b = false;
    return b;
  }
  bool outer_;
  Workspace<T> own_;
};

// Sizes and offsets for one call, computed once from the shapes (never from the thread count).
template <typename T> struct Plan {
  int64_t L, n, k;
  std::vector<int64_t> d;        // d_0 .. d_L
  bool layered = false, narrow = false;
  int64_t rows = 0, n_chunks = 0, n_groups = 0;  // rows: the longest chunk
  bool even_chunks = false;
  // offsets into one workspace allocation
  std::vector<int64_t> wp, wtp;  // W_l and W_l^T as full-K panels
  std::vector<int64_t> gw, gb;   // dW_l, db_l inside one group's gradient buffer (chunked)
  int64_t n_params = 0, groups = 0;
  std::vector<int64_t> act;      // h_l (rows, d_l), l = 1..L (h_L: logits, then delta_L)
  int64_t delta0 = 0, delta1 = 0, p = 0, e = 0, m = 0, lse = 0, c = 0, gemm = 0;
  int64_t per_thread = 0, shared = 0, shared_rows = 0;

  Plan(const std::vector<int64_t>& sizes, int64_t n_rows, Mode mode, bool input_grad, Schedule forced)
      : L(int64_t(sizes.size()) - 1), n(n_rows), k(sizes.back()), d(sizes) {
    int64_t max_hidden = 1, sum_d = 0;
    for (int64_t l = 1; l <= L; ++l) sum_d += d[l];
    for (int64_t l = 1; l < L; ++l) max_hidden = std::max(max_hidden, d[l]);
    for (int64_t l = 0; l < L; ++l) {
      gw.push_back(n_params);  // no padding: the pairwise sum reads every element, all of them written
      n_params += d[l] * d[l + 1];
      gb.push_back(n_params);
      n_params += d[l + 1];
    }
    // Rows per chunk: fill about kChunkBytes with the chunk's rows of X, activations, deltas and head
    // scratch. When the parameters are larger than that, take at least 256 rows: each chunk streams
    // the packed weights (and, for gradients, adds its dW into its group buffer), memory traffic
    // ~ parameters, paid for by the chunk's 2 * rows flops per parameter. (A 2048-wide layer's forward
    // ran at 206 GFLOP/s with 16-row chunks, 284 with whole-batch tiles.)
    const int64_t row_bytes = int64_t(sizeof(T)) * (d[0] + sum_d + 2 * max_hidden + 2 * k + 3);
    rows = std::clamp(config::kChunkBytes / row_bytes, config::kMinChunkRows, config::kMaxChunkRows);
    if (n_params * int64_t(sizeof(T)) > config::kChunkBytes) rows = std::max<int64_t>(rows, 256);
    // A call too small for the layered schedule (below kMinFlopsForLayered) still makes two chunks when
    // each gets kMinChunkRows rows: two threads can then share it (kMinFlopsForLayered says how measured).
    int64_t forward_flops = 0;
    for (int64_t l = 0; l < L; ++l) forward_flops += 2 * n * d[l] * d[l + 1];
    if (forward_flops < config::kMinFlopsForLayered && n >= 2 * config::kMinChunkRows)
      rows = std::min(rows, round_up((n + 1) / 2, config::kChunkRowMultiple));
    n_chunks = std::max<int64_t>(1, (n + rows - 1) / rows);
    // Whole groups: a chunk count that is a multiple of kMaxGroups gives every group as many chunks
    // (18 chunks in 8 groups ran mnist N = 4096 7% slower on 2 threads than 16), unless the chunks
    // would then be shorter than kMinChunkRows.
    if (n_chunks > config::kMaxGroups) {
      const int64_t up = round_up(n_chunks, config::kMaxGroups);
      n_chunks = n / up >= config::kMinChunkRows ? up : n_chunks / config::kMaxGroups * config::kMaxGroups;
    }
    rows = chunk_begin(1);
    for (int64_t c = 1; c < n_chunks; ++c) rows = std::max(rows, chunk_begin(c + 1) - chunk_begin(c));
    // The layered schedule when the batch makes too few chunks to share among threads (and the call
    // is not tiny); set_schedule() can force chunked or layered (then never the narrow engine).
    const bool big_params = n_params * int64_t(sizeof(T)) > config::kLayeredMinParamBytes;
    layered = (n_chunks < config::kMinChunksForChunked || (big_params && n_chunks <= config::kMaxGroups)) &&
              forward_flops >= config::kMinFlopsForLayered;
    if (forced == Schedule::layered) layered = true;
    if (forced == Schedule::chunked) layered = false;
    narrow = forced == Schedule::automatic && is_narrow(sizes);
    if (narrow) {
      layered = false;
      rows = std::max<int64_t>(1, std::min(n, config::kNarrowChunkRows));
      n_chunks = (n + rows - 1) / rows;
      even_chunks = true;
    }
    if (layered) { rows = n; n_chunks = 1; even_chunks = true; }
    n_groups = layered ? 0 : std::min(n_chunks, config::kMaxGroups);

    int64_t off = 0;
    for (int64_t l = 0; l < L; ++l) {
      wp.push_back(off);
      off += align16(panels_size<T>(d[l], d[l + 1]));
      wtp.push_back(off);
      if (mode == Mode::grad && (l > 0 || input_grad)) off += align16(panels_size<T>(d[l + 1], d[l]));
    }
    groups = off;
    if (mode == Mode::grad && !layered) off += align16(n_params) * n_groups;
    // Activations and head scratch: per thread for a chunk, or shared for the whole batch (layered).
    int64_t a = 0;
    act.assign(L + 1, 0);
    for (int64_t l = 1; l <= L; ++l) { act[l] = a; a += align16(rows * d[l]); }
    delta0 = a; a += align16(rows * max_hidden);
    delta1 = a; a += align16(rows * max_hidden);
    p = a;      a += align16(rows * k);
    e = a;      a += align16(rows * k);
    m = a;      a += align16(rows);
    lse = a;    a += align16(rows);
    c = a;      a += align16(rows);
    if (narrow) {
      gemm = 0;
      per_thread = align16(NarrowPlan<T>(sizes).size);
    } else if (layered) {
      shared = off;
      off += a;
      gemm = 0;
      per_thread = align16(GemmScratch<T>::size);
    } else {
      gemm = a;
      per_thread = a + align16(GemmScratch<T>::size);
    }
    shared_rows = off;  // per-thread scratch starts here
  }
  int64_t group_begin(int64_t g) const { return g * n_chunks / n_groups; }  // first chunk of group g
  // First row of chunk c (c = n_chunks: n). Chunked schedule: chunks of nearly equal size, starting on
  // multiples of kChunkRowMultiple (so of every MR); the narrow engine: chunks of `rows` rows.
  int64_t chunk_begin(int64_t c) const {
    if (c >= n_chunks) return n;
    if (even_chunks) return c * rows;
    return c * n / n_chunks / config::kChunkRowMultiple * config::kChunkRowMultiple;
  }
  int64_t workspace_size(int threads) const { return shared_rows + per_thread * threads; }
};

inline int thread_count(int requested, int64_t tasks) {
#ifdef _OPENMP
  const int64_t want = requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  const int64_t want = 1;
#endif
  return int(std::max<int64_t>(1, std::min<int64_t>(want, tasks)));
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Ctrl-C: the calling thread (OpenMP thread 0) polls the interrupt before a unit of work, at most every
// kInterruptPollMs; every thread then sees `stopped` and skips its remaining units.
class StopFlag {
 public:
  explicit StopFlag(const Interrupt* intr) : timer_(intr) {}
  bool stopped() {
    if (thread_id() == 0 && timer_.due_and_stop()) stop_.store(true, std::memory_order_relaxed);
    return stop_.load(std::memory_order_relaxed);
  }
  bool raised() const { return stop_.load(std::memory_order_relaxed); }

 private:
  PollTimer timer_;
  std::atomic<bool> stop_{false};
};

// Sum of v[0..n) in a fixed pairwise order.
inline double pairwise_sum(const double* v, int64_t n) {
  if (n <= 8) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += v[i];
    return s;
  }
  return pairwise_sum(v, n / 2) + pairwise_sum(v + n / 2, n - n / 2);
}

// A 2-D tiling of an (rows, cols) output = A (rows, k) @ B (k, cols) into R x C tiles of equal size
// (up to rounding to MR rows and NR columns), for `threads` threads. Each row tile reads all of B
// and each column tile all of A (and packs it again), so among the tilings with at least `want`
// tiles, a count the thread count divides when there is one, it takes the one that reads least:
// C * rows + R * cols (times k). Any tiling gives the same bits: each element is summed by one tile
// over the full inner dimension, in the same order.
template <typename T> struct Tiling {
  int64_t rows, cols, mt = 0, nt = 0, row_tiles = 0, col_tiles = 0;
  Tiling(int64_t r, int64_t c, int64_t want, int64_t threads) : rows(r), cols(c) {
    const int64_t max_r = std::max<int64_t>(1, (r + Tile<T>::MR - 1) / Tile<T>::MR);
    const int64_t max_c = std::max<int64_t>(1, (c + Tile<T>::NR - 1) / Tile<T>::NR);
    double best = -1;
    bool best_even = false;
    for (int64_t R = 1; R <= max_r; ++R) {
      // equal tiles: R row tiles of mt rows, C column tiles of nt columns
      const int64_t m_t = round_up((r + R - 1) / R, Tile<T>::MR), R_eff = (r + m_t - 1) / m_t;
      if (R_eff != R) continue;
      for (int64_t C0 = std::max<int64_t>(1, (want + R - 1) / R); C0 <= std::max<int64_t>(1, (want + R - 1) / R) + 2; ++C0) {
        const int64_t C1 = std::min(C0, max_c);
        const int64_t n_t = round_up((c + C1 - 1) / C1, Tile<T>::NR), C = (c + n_t - 1) / n_t;
        const bool even = (R * C) % threads == 0;
        const double cost = double(C) * double(r) + double(R) * double(c);
        if (best < 0 || (even && !best_even) || (even == best_even && cost < best)) {
          best = cost; best_even = even; mt = m_t; nt = n_t; row_tiles = R; col_tiles = C;
        }
      }
      if (R >= want && best_even) break;  // more row tiles only add reads of B
    }
  }
  int64_t count() const { return row_tiles * col_tiles; }
  // tile t: rows [r0, r0 + mr), columns [c0, c0 + nc)
  void get(int64_t t, int64_t& r0, int64_t& mr, int64_t& c0, int64_t& nc) const {
    r0 = t / col_tiles * mt;
    c0 = t % col_tiles * nt;
    mr = std::min(mt, rows - r0);
    nc = std::min(nt, cols - c0);
  }
};

// Scratch for the head on m rows: p, e (m, k); m, lse, c (m,).
template <typename T> struct HeadScratch {
  T *p, *e, *m, *lse, *c;
  // rows [r0, ...) of the buffers laid out by `plan` from `base` (for plan.rows rows)
  HeadScratch(const Plan<T>& plan, T* base, int64_t r0)
      : p(base + plan.p + r0 * plan.k), e(base + plan.e + r0 * plan.k), m(base + plan.m + r0),
        lse(base + plan.lse + r0), c(base + plan.c + r0) {}
};

// The head on rows [r0, r0 + m): logits z (m, k) -> loss of these rows (returned), and for gradients
// delta_L written over z. probs mode writes the probabilities to `probs` instead.
template <typename T>
double head_rows(int64_t k, Head head, const Batch<T>& batch, double scale, Mode mode, T* probs, T* z,
                 const HeadScratch<T>& s, int64_t r0, int64_t m) {
  if (mode == Mode::probs) {
    T* out = probs + r0 * k;
    if (head == Head::sigmoid) {
      std::memcpy(out, z, sizeof(T) * m * k);
      sigmoid_forward<T>(out, m * k);
    } else {
      softmax_probs<T>(out, s.m, s.lse, z, m, k);
    }
    return 0.0;
  }
  for (int64_t i = 0; i < m; ++i) s.c[i] = batch.sample_weight ? batch.sample_weight[r0 + i] * T(scale) : T(scale);
  const T* t = batch.targets ? batch.targets + r0 * k : nullptr;
  const int64_t* y = batch.labels ? batch.labels + r0 : nullptr;
  double loss;
  if (head == Head::sigmoid) {
    loss = sigmoid_xent_forward<T>(s.p, s.e, z, t, s.c, m, k);
    if (mode == Mode::grad) sigmoid_xent_backward<T>(z, s.p, t, s.c, m, k);
  } else {
    loss = softmax_xent_forward<T>(s.p, s.m, s.lse, z, y, t, s.c, m, k);
    if (mode == Mode::grad) softmax_xent_backward<T>(z, s.p, y, t, s.c, m, k);
  }
  return loss;
}

// One call: probabilities (mode probs), the loss, or the loss and every gradient.
template <typename T>
double run(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction, const Gradients<T>* grads,
           T* probs, Mode mode, int n_threads, const Interrupt* interrupt) {
  StopFlag stop(interrupt);
  const bool input_grad = grads && grads->dX;
  const Plan<T> plan(net.sizes, batch.n, mode, input_grad, schedule());
  const int64_t L = plan.L, n = batch.n;
  const std::vector<int64_t>& d = plan.d;

  // 1 for "sum"; 1 / total weight for "mean" (the entry points checked it is positive)
  const double scale = mode != Mode::probs && reduction == Reduction::mean ? 1.0 / batch.total_weight : 1.0;

  if (n == 0) {  // empty sums: loss 0, gradients 0
    if (grads)
      for (int64_t l = 0; l < L; ++l) {
        std::fill(grads->dW[l], grads->dW[l] + d[l] * d[l + 1], T(0));
        std::fill(grads->db[l], grads->db[l] + d[l + 1], T(0));
      }
    return 0.0;
  }


  // Never more threads than units of work: for the layered schedule, the most tiles (of the smallest
  // size, MR x NR) any of its products can be cut into.
  int64_t max_tasks = mode == Mode::grad ? plan.n_groups : plan.n_chunks;
  if (plan.layered) {
    auto tiles = [](int64_t r, int64_t c) {
      return ((r + Tile<T>::MR - 1) / Tile<T>::MR) * ((c + Tile<T>::NR - 1) / Tile<T>::NR);
    };
    max_tasks = (n + 255) / 256;
    for (int64_t l = 0; l < L; ++l)
      max_tasks = std::max({max_tasks, tiles(n, d[l + 1]), tiles(d[l], d[l + 1]), tiles(n, d[l])});
  }
  const int nt = thread_count(n_threads, max_tasks);
  WorkspaceLease<T> lease;
  T* ws = lease.get(plan.workspace_size(nt));
  T* shared = ws + plan.shared;
  const int64_t n_blocks = plan.layered ? (n + 255) / 256 : plan.n_chunks;  // units of the loss sum
  std::vector<double> block_loss(n_blocks, 0.0);

  // chunked: forward (and, for gradients, backward) through every layer for rows [r0, r0 + m).
  const NarrowPlan<T> narrow_plan(plan.narrow ? net.sizes : std::vector<int64_t>{1, 1});
  auto do_chunk = [&](int64_t chunk, T* buf, T* acc, bool first_in_group) {
    const int64_t r0 = plan.chunk_begin(chunk), m = plan.chunk_begin(chunk + 1) - r0;
    if (plan.narrow) {
      block_loss[chunk] = narrow_chunk<T>(narrow_plan, net, head, batch, T(scale), mode, probs,
                                          input_grad ? grads->dX : nullptr, buf, r0, m, acc, plan.gw, plan.gb,
                                          first_in_group);
      return;
    }
    GemmScratch<T> gs(buf + plan.gemm);
    const T* h = batch.X + r0 * d[0];
    for (int64_t l = 0; l < L; ++l) {
      T* z = buf + plan.act[l + 1];
      linear_forward<T>(z, d[l + 1], h, d[l], ws + plan.wp[l], net.b[l], m, d[l], d[l + 1], l < L - 1, gs);
      h = z;
    }
    block_loss[chunk] = head_rows<T>(plan.k, head, batch, scale, mode, probs, buf + plan.act[L],
                                     HeadScratch<T>(plan, buf, 0), r0, m);
    if (mode != Mode::grad) return;

    // Backward: the forward reversed. delta_L overwrote the logits; the others alternate two buffers.
    const T* delta = buf + plan.act[L];
    for (int64_t l = L - 1; l >= 0; --l) {
      const T* h_in = l > 0 ? buf + plan.act[l] : batch.X + r0 * d[0];
      T* db = acc + plan.gb[l];
      if (first_in_group) std::fill(db, db + d[l + 1], T(0));
      linear_backward_weights<T>(acc + plan.gw[l], d[l + 1], db, delta, d[l + 1], h_in, d[l], m, d[l], d[l + 1],
                                 !first_in_group, gs);
      if (l > 0) {
        T* next = buf + (delta == buf + plan.delta0 ? plan.delta1 : plan.delta0);
        linear_backward_input<T>(next, d[l], delta, d[l + 1], ws + plan.wtp[l], h_in, d[l], m, d[l], d[l + 1], gs);
        delta = next;
      } else if (input_grad) {
        linear_backward_input<T>(grads->dX + r0 * d[0], d[0], delta, d[1], ws + plan.wtp[0], nullptr, 0, m, d[0],
                                 d[1], gs);
      }
    }
  };

  // Where each parameter's slot of a group buffer goes in the outputs (the final sum writes there).
  struct Segment { int64_t begin, len; T* out; };
  std::vector<Segment> segs;
  if (mode == Mode::grad && !plan.layered)
    for (int64_t l = 0; l < L; ++l) {
      segs.push_back({plan.gw[l], d[l] * d[l + 1], grads->dW[l]});
      segs.push_back({plan.gb[l], d[l + 1], grads->db[l]});
    }

#pragma omp parallel num_threads(nt)
  {
    const int tid = thread_id();
    T* mine = ws + plan.shared_rows + plan.per_thread * tid;  // this thread's scratch
    // Pack every weight matrix once: W_l for h @ W, W_l^T for delta @ W^T.
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < (plan.narrow ? 0 : 2 * L); ++task) {
      const int64_t l = task / 2;
      if (task % 2 == 0) {
        pack_b_panels<T>(d[l], d[l + 1], net.W[l], d[l + 1], 1, ws + plan.wp[l]);
      } else if (mode == Mode::grad && (l > 0 || input_grad)) {
        pack_b_panels<T>(d[l + 1], d[l], net.W[l], 1, d[l + 1], ws + plan.wtp[l]);
      }
    }

    if (!plan.layered) {
      T* groups = ws + plan.groups;
      const int64_t stride = align16(plan.n_params);
      if (mode == Mode::grad) {
#pragma omp for schedule(dynamic, 1)
        for (int64_t g = 0; g < plan.n_groups; ++g)
          for (int64_t chunk = plan.group_begin(g); chunk < plan.group_begin(g + 1); ++chunk)
            if (!stop.stopped()) do_chunk(chunk, mine, groups + g * stride, chunk == plan.group_begin(g));
        // Sum the group buffers pairwise, block by block: ((g0 + g1) + (g2 + g3)) + ..., the last
        // addition written straight into the outputs (no pass over g0 afterwards to copy it out).
        const int64_t block = 4096, n_sum_blocks = (plan.n_params + block - 1) / block;
#pragma omp for schedule(static)
        for (int64_t bi = 0; bi < n_sum_blocks; ++bi) {
          const int64_t lo = bi * block, hi = std::min(plan.n_params, lo + block);
          int64_t step = 1;
          for (; 2 * step < plan.n_groups; step *= 2)
            for (int64_t g = 0; g + step < plan.n_groups; g += 2 * step) {
              T* a = groups + g * stride;
              const T* b = groups + (g + step) * stride;
              for (int64_t i = lo; i < hi; ++i) a[i] += b[i];
            }
          const T* a = groups;
          const T* b = plan.n_groups > 1 ? groups + step * stride : nullptr;
          for (const Segment& sg : segs) {
            const int64_t s0 = std::max(lo, sg.begin), s1 = std::min(hi, sg.begin + sg.len);
            if (b)
              for (int64_t i = s0; i < s1; ++i) sg.out[i - sg.begin] = a[i] + b[i];
            else
              for (int64_t i = s0; i < s1; ++i) sg.out[i - sg.begin] = a[i];
          }
        }
      } else {
#pragma omp for schedule(dynamic, 1)
        for (int64_t chunk = 0; chunk < plan.n_chunks; ++chunk)
          if (!stop.stopped()) do_chunk(chunk, mine, nullptr, true);
      }
    } else {
      // layered: each product over the whole batch, cut into tiles shared among the threads.
      GemmScratch<T> gs(mine + plan.gemm);
      const int want = 4 * nt;
      for (int64_t l = 0; l < L; ++l) {
        const Tiling<T> tiles(n, d[l + 1], want, nt);
        const T* h = l == 0 ? batch.X : shared + plan.act[l];
        T* z = shared + plan.act[l + 1];
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < tiles.count(); ++t) {
          if (stop.stopped()) continue;
          int64_t r0, mr, c0, nc;
          tiles.get(t, r0, mr, c0, nc);
          linear_forward<T>(z + r0 * d[l + 1] + c0, d[l + 1], h + r0 * d[l], d[l], ws + plan.wp[l] + c0 * d[l],
                            net.b[l] + c0, mr, d[l], nc, l < L - 1, gs);
        }
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t blk = 0; blk < n_blocks; ++blk) {
        if (stop.stopped()) continue;
        const int64_t r0 = blk * 256, m = std::min<int64_t>(256, n - r0);
        block_loss[blk] = head_rows<T>(plan.k, head, batch, scale, mode, probs, shared + plan.act[L] + r0 * plan.k,
                                       HeadScratch<T>(plan, shared, r0), r0, m);
      }
      if (mode == Mode::grad) {
        const T* delta = shared + plan.act[L];
        for (int64_t l = L - 1; l >= 0; --l) {
          const T* h_in = l > 0 ? shared + plan.act[l] : batch.X;
          T* next = nullptr;
          if (l > 0) next = shared + (delta == shared + plan.delta0 ? plan.delta1 : plan.delta0);
          const bool want_input = l > 0 || input_grad;
          // dW_l tiles (d_l, d_{l+1}) and, beside them, the tiles of delta_l (n, d_l) or dX.
          const Tiling<T> wtiles(d[l], d[l + 1], want, nt);
          const Tiling<T> itiles(n, d[l], want_input ? want : 1, nt);
          const int64_t n_wt = wtiles.count(), n_it = want_input ? itiles.count() : 0;
#pragma omp for schedule(dynamic, 1)
          for (int64_t t = 0; t < n_wt + n_it; ++t) {
            if (stop.stopped()) continue;
            int64_t r0, mr, c0, nc;
            if (t < n_wt) {
              wtiles.get(t, r0, mr, c0, nc);
              T* db = r0 == 0 ? grads->db[l] + c0 : nullptr;  // column sums once, by the first row of tiles
              if (db) std::fill(db, db + nc, T(0));
              linear_backward_weights<T>(grads->dW[l] + r0 * d[l + 1] + c0, d[l + 1], db, delta + c0, d[l + 1],
                                         h_in + r0, d[l], n, mr, nc, false, gs);
            } else {
              itiles.get(t - n_wt, r0, mr, c0, nc);
              T* out = l > 0 ? next : grads->dX;
              linear_backward_input<T>(out + r0 * d[l] + c0, d[l], delta + r0 * d[l + 1], d[l + 1],
                                       ws + plan.wtp[l] + c0 * d[l + 1], l > 0 ? h_in + r0 * d[l] + c0 : nullptr,
                                       d[l], mr, nc, d[l + 1], gs);
            }
          }
          delta = next;
        }
      }
    }
  }
  if (stop.raised()) throw Interrupted();
  return pairwise_sum(block_loss.data(), n_blocks);
}

}  // namespace mlpgrad::MLPGRAD_ISA
