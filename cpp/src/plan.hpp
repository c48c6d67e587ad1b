// The plan of one call, computed once from the shapes (never from the thread count): which schedule
// runs, how the batch is cut into chunks and groups, and where every buffer sits in the workspace.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "config.hpp"
#include "engines.hpp"
#include "gemm.hpp"
#include "mlpgrad/mlp.hpp"
#include "narrow.hpp"

namespace mlpgrad::MLPGRAD_ISA {

inline int64_t align16(int64_t x) { return round_up(x, 16); }

// What a per-sample pass (per_sample.hpp) needs beyond the gradient's workspace.
struct PlanExtras {
  bool keep_deltas = false;  // every layer's delta kept for the whole chunk, not two alternating buffers
  int64_t row_scratch = 0;   // values of per-thread scratch per row of a chunk (the product's own)
  bool sparse_input = false; // X is CSR (chunked schedule only): W_1 is read unpacked, dW_1 kept out of the groups
};

template <typename T> struct Plan {
  int64_t L, n, k;
  std::vector<int64_t> d;        // d_0 .. d_L
  bool layered = false, narrow = false;
  int64_t rows = 0, n_chunks = 0, n_groups = 0;  // rows: the longest chunk
  bool even_chunks = false;
  // offsets into one workspace allocation
  std::vector<int64_t> wp, wtp;  // W_l and W_l^T as full-K panels
  std::vector<int64_t> gw, gb;   // dW_l, db_l inside one group's gradient buffer (chunked; gw[0] = -1 for a sparse X)
  int64_t n_params = 0, groups = 0;
  int64_t group_size = 0;        // parameters in one group buffer: n_params, less dW_1 for a sparse X
  int64_t first_deltas = 0;      // sparse X, gradients: delta_1 of every row (n, d_1), for dW_1 after the chunks
  std::vector<int64_t> act;      // h_l (rows, d_l), l = 1..L (h_L: logits, then delta_L)
  int64_t delta0 = 0, delta1 = 0, p = 0, e = 0, m = 0, lse = 0, c = 0, gemm = 0;
  std::vector<int64_t> dl;       // keep_deltas: dL/dz of layer l (rows, d_{l+1}), l < L - 1 (delta_L is at act[L])
  int64_t extra = 0;             // the per-thread product scratch (rows * row_scratch), within the row buffers
  PlanExtras extras;
  int64_t per_thread = 0, shared = 0, shared_rows = 0;

  Plan(const std::vector<int64_t>& sizes, int64_t n_rows, Mode mode, bool input_grad, Schedule forced,
       PlanExtras x = {})
      : L(int64_t(sizes.size()) - 1), n(n_rows), k(sizes.back()), d(sizes), extras(x) {
    lay_out_gradients();
    const int64_t flops = forward_flops();
    cut_into_chunks();
    choose_schedule(flops, forced);
    lay_out_workspace(mode, input_grad);
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

  // Units of work to share among threads (never more threads than these): groups or chunks, or for the
  // layered schedule the most tiles (of the smallest size, MR x NR) any of its products can be cut into.
  int64_t max_tasks(Mode mode) const {
    if (!layered) return mode == Mode::grad ? n_groups : n_chunks;
    auto tiles = [](int64_t r, int64_t c) {
      return ((r + Tile<T>::MR - 1) / Tile<T>::MR) * ((c + Tile<T>::NR - 1) / Tile<T>::NR);
    };
    int64_t most = (n + 255) / 256;
    for (int64_t l = 0; l < L; ++l) most = std::max({most, tiles(n, d[l + 1]), tiles(d[l], d[l + 1]), tiles(n, d[l])});
    return most;
  }

 private:
  int64_t max_hidden() const {
    int64_t w = 1;
    for (int64_t l = 1; l < L; ++l) w = std::max(w, d[l]);
    return w;
  }
  int64_t forward_flops() const {
    int64_t f = 0;
    for (int64_t l = 0; l < L; ++l) f += 2 * n * d[l] * d[l + 1];
    return f;
  }

  // dW_l, db_l of every layer one after the other, without padding: the pairwise sum of group buffers
  // reads every element, all of them written. A sparse X's dW_1 is not in the group buffers (sparse.hpp).
  void lay_out_gradients() {
    for (int64_t l = 0; l < L; ++l) {
      const bool outside = l == 0 && extras.sparse_input;
      gw.push_back(outside ? -1 : group_size);
      if (!outside) group_size += d[l] * d[l + 1];
      gb.push_back(group_size);
      group_size += d[l + 1];
      n_params += d[l] * d[l + 1] + d[l + 1];
    }
  }

  // Rows per chunk: about kChunkBytes of the chunk's rows of X, activations, deltas and head scratch.
  // When the parameters are larger than that, at least 256 rows: each chunk streams the packed weights
  // (and, for gradients, adds its dW into its group buffer), memory traffic ~ parameters, paid for by the
  // chunk's 2 * rows flops per parameter. (A 2048-wide layer's forward ran at 206 GFLOP/s with 16-row
  // chunks, 284 with whole-batch tiles.) Any batch makes two chunks at least when each gets kMinChunkRows
  // rows, so two threads share it on the chunked schedule: a training batch of 256 rows that fitted one
  // chunk ran layered, whose barriers cost what its second thread saved (tuning log, 2026-12-04).
  int64_t target_rows() const {
    int64_t sum_d = 0;
    for (int64_t l = 1; l <= L; ++l) sum_d += d[l];
    const int64_t deltas = extras.keep_deltas ? sum_d - k : 2 * max_hidden();
    const int64_t x_row = extras.sparse_input ? 0 : d[0];  // a sparse row is read once, by the forward
    const int64_t row_bytes = int64_t(sizeof(T)) * (x_row + sum_d + deltas + 2 * k + 3 + extras.row_scratch);
    int64_t r = std::clamp(config::kChunkBytes / row_bytes, config::kMinChunkRows, config::kMaxChunkRows);
    if (group_size * int64_t(sizeof(T)) > config::kChunkBytes) r = std::max<int64_t>(r, 256);
    if (n >= 2 * config::kMinChunkRows) r = std::min(r, round_up((n + 1) / 2, config::kChunkRowMultiple));
    return r;
  }

  // The chunk count for target_rows, then whole groups: a chunk count that is a multiple of kMaxGroups
  // gives every group as many chunks (18 chunks in 8 groups ran 7% slower on 2 threads than 16), unless
  // the chunks would then be shorter than kMinChunkRows. `rows` ends as the longest chunk.
  void cut_into_chunks() {
    rows = target_rows();
    n_chunks = std::max<int64_t>(1, (n + rows - 1) / rows);
    if (n_chunks > config::kMaxGroups) {
      const int64_t up = round_up(n_chunks, config::kMaxGroups);
      n_chunks = n / up >= config::kMinChunkRows ? up : n_chunks / config::kMaxGroups * config::kMaxGroups;
    }
    rows = chunk_begin(1);
    for (int64_t c = 1; c < n_chunks; ++c) rows = std::max(rows, chunk_begin(c + 1) - chunk_begin(c));
  }

  // The layered schedule when the batch makes too few chunks to share among threads (and the call is not
  // tiny); set_schedule() can force chunked or layered (then never the narrow engine). The narrow engine
  // and the layered schedule then set their own chunks.
  void choose_schedule(int64_t flops, Schedule forced) {
    const bool big_params = n_params * int64_t(sizeof(T)) > config::kLayeredMinParamBytes;
    layered = (n_chunks < config::kMinChunksForChunked || (big_params && n_chunks <= config::kMaxGroups)) &&
              flops >= config::kMinFlopsForLayered;
    if (forced == Schedule::layered) layered = true;
    if (forced == Schedule::chunked) layered = false;
    narrow = forced == Schedule::automatic && is_narrow(d);
    if (narrow) {
      layered = false;
      rows = std::max<int64_t>(1, std::min(n, config::kNarrowChunkRows));
      n_chunks = (n + rows - 1) / rows;
      even_chunks = true;
    }
    if (layered) { rows = n; n_chunks = 1; even_chunks = true; }
    n_groups = layered ? 0 : std::min(n_chunks, config::kMaxGroups);
  }

  // Packed weights (W_l, and W_l^T where a delta goes through it), then the group buffers (chunked
  // gradients), then the row buffers: per thread for a chunk, or shared for the whole batch (layered),
  // then each thread's matrix-product scratch.
  void lay_out_workspace(Mode mode, bool input_grad) {
    int64_t off = 0;
    for (int64_t l = 0; l < L; ++l) {
      wp.push_back(off);
      if (!(l == 0 && extras.sparse_input)) off += align16(panels_size<T>(d[l], d[l + 1]));
      wtp.push_back(off);
      if (mode == Mode::grad && (l > 0 || input_grad)) off += align16(panels_size<T>(d[l + 1], d[l]));
    }
    groups = off;
    if (mode == Mode::grad && !layered) off += align16(group_size) * n_groups;
    first_deltas = off;
    if (mode == Mode::grad && extras.sparse_input) off += align16(n * d[1]);
    const int64_t a = lay_out_rows();
    if (narrow) {
      gemm = 0;
      per_thread = align16(NarrowPlan<T>(d).size);
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

  // Activations, deltas, head scratch and a per-sample product's scratch for `rows` rows; returns their size.
  int64_t lay_out_rows() {
    const int64_t w = max_hidden();
    int64_t a = 0;
    act.assign(L + 1, 0);
    for (int64_t l = 1; l <= L; ++l) { act[l] = a; a += align16(rows * d[l]); }
    if (extras.keep_deltas) {
      dl.assign(L, 0);
      for (int64_t l = 0; l + 1 < L; ++l) { dl[l] = a; a += align16(rows * d[l + 1]); }
    } else {
      delta0 = a; a += align16(rows * w);
      delta1 = a; a += align16(rows * w);
    }
    p = a;      a += align16(rows * k);
    e = a;      a += align16(rows * k);
    m = a;      a += align16(rows);
    lse = a;    a += align16(rows);
    c = a;      a += align16(rows);
    extra = a;  a += align16(rows * extras.row_scratch);
    return a;
  }
};

}  // namespace mlpgrad::MLPGRAD_ISA
