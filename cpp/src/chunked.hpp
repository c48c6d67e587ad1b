// The chunked schedule (many rows): the batch is cut into chunks of `rows` rows, sized so that a chunk's
// activations stay in L2. A thread carries its chunk forward through every layer, through the head and
// back, so activations are written once and re-read from cache. Consecutive chunks form groups (at most
// kMaxGroups); each group accumulates its weight gradients in its own buffer, one thread per group at a
// time, and the group buffers are summed in a fixed pairwise order at the end. Chunks, groups and the
// order of every sum depend on the shapes only: the same bits for any thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "call.hpp"
#include "narrow.hpp"
#include "sparse.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// Forward through every layer for rows [r0, r0 + m) of X; the logits end in buf + plan.act[L].
template <typename T> void chunk_forward(const Call<T>& c, T* buf, int64_t r0, int64_t m, GemmScratch<T> gs) {
  const Plan<T>& plan = c.plan;
  const std::vector<int64_t>& d = plan.d;
  const int64_t L = plan.L;
  const T* h = c.batch.X ? c.batch.X + r0 * d[0] : nullptr;
  for (int64_t l = 0; l < L; ++l) {
    T* z = buf + plan.act[l + 1];
    if (l == 0 && c.batch.sparse())
      sparse_linear_forward<T>({z, d[1]}, c.batch.Xs, r0, m, c.net.W[0], c.net.b[0], d[1], L > 1);
    else
      linear_forward<T>({z, d[l + 1]}, {h, d[l]}, c.ws + plan.wp[l], c.net.b[l], m, d[l], d[l + 1], l < L - 1, gs);
    h = z;
  }
}

// A sparse X's first layer in the backward: db_1 += the column sums of delta_1 (in row order), and delta_1
// kept for dW_1 = X^T delta_1 after the chunks (sparse_first_weights).
template <typename T> void sparse_first_backward(const Call<T>& c, T* db, const T* delta, int64_t r0, int64_t m) {
  const int64_t d1 = c.plan.d[1];
  for (int64_t i = 0; i < m; ++i)
    for (int64_t q = 0; q < d1; ++q) db[q] += delta[i * d1 + q];
  std::copy(delta, delta + m * d1, c.ws + c.plan.first_deltas + r0 * d1);
}

// dW_1 = X^T delta_1 for a sparse X, by blocks of W_1's rows shared among the threads (sparse.hpp), written
// into the output. Called by every thread of the region, once every chunk's delta_1 is kept.
template <typename T> void sparse_first_weights(const Call<T>& c) {
  const std::vector<int64_t>& d = c.plan.d;
  const int64_t rows = sparse_block_rows(d[0], omp_threads());
  const MatView<const T> D{c.ws + c.plan.first_deltas, d[1]};
#pragma omp for schedule(dynamic, 1)
  for (int64_t j0 = 0; j0 < d[0]; j0 += rows)
    if (!c.stop.stopped())
      sparse_linear_backward_weights<T>({c.grads->dW[0], d[1]}, c.batch.Xs, D, c.batch.n, d[1], j0,
                                        std::min(d[0], j0 + rows));
}

// Backward: the forward reversed. delta_L overwrote the logits; the others alternate two buffers. dW and
// db are written to the group buffer `acc` by the group's first chunk, added by the others.
template <typename T>
void chunk_backward(const Call<T>& c, T* buf, T* acc, bool first_in_group, int64_t r0, int64_t m, GemmScratch<T> gs) {
  const Plan<T>& plan = c.plan;
  const std::vector<int64_t>& d = plan.d;
  const T* delta = buf + plan.act[plan.L];
  for (int64_t l = plan.L - 1; l >= 0; --l) {
    const T* h_in = l > 0 ? buf + plan.act[l] : c.batch.X ? c.batch.X + r0 * d[0] : nullptr;
    T* db = acc + plan.gb[l];
    if (first_in_group) std::fill(db, db + d[l + 1], T(0));
    if (l == 0 && c.batch.sparse())
      sparse_first_backward<T>(c, db, delta, r0, m);
    else
      linear_backward_weights<T>({acc + plan.gw[l], d[l + 1]}, db, {delta, d[l + 1]}, {h_in, d[l]}, m, d[l], d[l + 1],
                                 !first_in_group, gs);
    if (l > 0) {
      T* next = buf + (delta == buf + plan.delta0 ? plan.delta1 : plan.delta0);
      linear_backward_input<T>({next, d[l]}, {delta, d[l + 1]}, c.ws + plan.wtp[l], {h_in, d[l]}, m, d[l], d[l + 1],
                               gs);
      delta = next;
    } else if (c.input_grad()) {
      linear_backward_input<T>({c.input_grad() + r0 * d[0], d[0]}, {delta, d[1]}, c.ws + plan.wtp[0], {nullptr, 0}, m,
                               d[0], d[1], gs);
    }
  }
}

// One chunk: forward, head, and for gradients backward into the group buffer `acc` (null otherwise);
// buf is the thread's scratch. Its loss goes to block_loss[chunk].
template <typename T>
void chunk_pass(const Call<T>& c, const NarrowPlan<T>& np, int64_t chunk, T* buf, T* acc, bool first_in_group) {
  const Plan<T>& plan = c.plan;
  const int64_t r0 = plan.chunk_begin(chunk), m = plan.chunk_begin(chunk + 1) - r0;
  if (plan.narrow) {
    c.block_loss[chunk] = narrow_chunk<T>(np, c.net, c.head, c.batch, T(c.scale), c.mode, c.probs, c.input_grad(),
                                          buf, r0, m, acc, plan.gw, plan.gb, first_in_group);
    return;
  }
  GemmScratch<T> gs(buf + plan.gemm);
  chunk_forward<T>(c, buf, r0, m, gs);
  c.block_loss[chunk] = head_rows<T>(c, buf + plan.act[plan.L], HeadScratch<T>(plan, buf, 0), r0, m);
  if (c.mode == Mode::grad) chunk_backward<T>(c, buf, acc, first_in_group, r0, m, gs);
}

// Where each parameter's slot of a group buffer goes in the outputs (the final sum writes there).
template <typename T> struct Segment { int64_t begin, len; T* out; };

template <typename T> std::vector<Segment<T>> gradient_segments(const Call<T>& c) {
  const std::vector<int64_t>& d = c.plan.d;
  std::vector<Segment<T>> segs;
  for (int64_t l = 0; l < c.plan.L; ++l) {
    if (c.plan.gw[l] >= 0) segs.push_back({c.plan.gw[l], d[l] * d[l + 1], c.grads->dW[l]});
    segs.push_back({c.plan.gb[l], d[l + 1], c.grads->db[l]});
  }
  return segs;
}

// The pairwise sum of n_groups buffers (stride apart) over [lo, hi): ((g0 + g1) + (g2 + g3)) + ..., every
// level but the last added in place; returns the last level's second operand (null for one group), to be
// added to g0 where the caller writes the sum.
template <typename T>
const T* sum_groups_but_last(T* groups, int64_t n_groups, int64_t stride, int64_t lo, int64_t hi) {
  int64_t step = 1;
  for (; 2 * step < n_groups; step *= 2)
    for (int64_t g = 0; g + step < n_groups; g += 2 * step) {
      T* a = groups + g * stride;
      const T* b = groups + (g + step) * stride;
      for (int64_t i = lo; i < hi; ++i) a[i] += b[i];
    }
  return n_groups > 1 ? groups + step * stride : nullptr;
}

// Sum the group buffers pairwise, block by block, the last addition written straight into the outputs (no
// pass over g0 afterwards to copy it out).
template <typename T> void sum_groups(const Call<T>& c, const std::vector<Segment<T>>& segs) {
  const Plan<T>& plan = c.plan;
  T* groups = c.ws + plan.groups;
  const int64_t stride = align16(plan.group_size);
  const int64_t block = 4096, n_sum_blocks = (plan.group_size + block - 1) / block;
#pragma omp for schedule(static)
  for (int64_t bi = 0; bi < n_sum_blocks; ++bi) {
    const int64_t lo = bi * block, hi = std::min(plan.group_size, lo + block);
    const T* b = sum_groups_but_last<T>(groups, plan.n_groups, stride, lo, hi);
    const T* a = groups;
    for (const Segment<T>& sg : segs) {
      const int64_t s0 = std::max(lo, sg.begin), s1 = std::min(hi, sg.begin + sg.len);
      if (b)
        for (int64_t i = s0; i < s1; ++i) sg.out[i - sg.begin] = a[i] + b[i];
      else
        for (int64_t i = s0; i < s1; ++i) sg.out[i - sg.begin] = a[i];
    }
  }
}

// The whole schedule on nt threads: pack the weights, then the chunks (for gradients, group by group,
// one thread per group), then the sum of the group buffers.
template <typename T> void run_chunked(const Call<T>& c, int nt) {
  const Plan<T>& plan = c.plan;
  const NarrowPlan<T> np(plan.narrow ? plan.d : std::vector<int64_t>{1, 1});
  const std::vector<Segment<T>> segs = c.mode == Mode::grad ? gradient_segments(c) : std::vector<Segment<T>>{};
#pragma omp parallel num_threads(nt)
  {
    T* mine = c.thread_scratch(thread_id());
    pack_weights<T>(c);
    if (c.mode == Mode::grad) {
      T* groups = c.ws + plan.groups;
      const int64_t stride = align16(plan.group_size);
#pragma omp for schedule(dynamic, 1)
      for (int64_t g = 0; g < plan.n_groups; ++g)
        for (int64_t chunk = plan.group_begin(g); chunk < plan.group_begin(g + 1); ++chunk)
          if (!c.stop.stopped()) chunk_pass<T>(c, np, chunk, mine, groups + g * stride, chunk == plan.group_begin(g));
      sum_groups<T>(c, segs);
      if (c.batch.sparse()) sparse_first_weights<T>(c);
      apply_hook<T>(c);
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t chunk = 0; chunk < plan.n_chunks; ++chunk)
        if (!c.stop.stopped()) chunk_pass<T>(c, np, chunk, mine, nullptr, true);
    }
  }
}

}  // namespace mlpgrad::MLPGRAD_ISA
