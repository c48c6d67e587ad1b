// Tuning constants in one place. Each says how it was chosen.
#pragma once

#include <cstdint>

namespace mlpgrad::config {

// Rows per chunk are chosen so that one chunk's activations, deltas and input rows take about this
// many bytes: they then stay in the 2 MiB per-core L2 of the development machine while the chunk
// goes forward through every layer and back. First guess (half of L2, leaving room for packed
// weights); to be tuned with `python -m mlpgrad bench`.
constexpr int64_t kChunkBytes = 1 << 20;
// Chunks start on multiples of 12, which every register tile's row count (MR = 12 or 6) divides.
constexpr int64_t kChunkRowMultiple = 12;
constexpr int64_t kMinChunkRows = 48;
constexpr int64_t kMaxChunkRows = 1024;

// Weight gradients accumulate into at most this many per-group buffers, summed at the end in a fixed
// pairwise order. The number depends on the problem only, never on the thread count, which is what
// makes results bit-identical for any number of threads. 8 keeps 2..8 threads busy.
constexpr int64_t kMaxGroups = 8;

// The layered schedule (whole-batch products cut into 2-D tiles) runs when the batch makes a single
// chunk (nothing to share among threads otherwise), or at most kMaxGroups chunks of a network whose
// parameters take more than kLayeredMinParamBytes: then every chunk has a large group buffer of its
// own, written in full and reduced, and nothing is shared. Measured (interleaved A/B with
// MLPGRAD_SCHEDULE, 2 threads, float32, 2026-11-25): wide (8 MiB of parameters) at N = 1024 and 2048
// (4 and 8 chunks) ran 3-4% faster layered; mnist (1 MiB) at N = 512, 1024, 2048 ran 11-13% faster
// chunked, seed1_small at N = 4096 18%, deep_narrow equal. (Chunked with 2 to 8 chunks keeps at most
// that many threads busy: the price of results that do not depend on the thread count.)
constexpr int64_t kMinChunksForChunked = 2;
constexpr int64_t kLayeredMinParamBytes = int64_t(4) << 20;
// ... unless the whole forward pass is below this many flops: then one chunk on one thread, with no
// barriers, is faster (measured: 64-100-10 softmax, N = 200, float32: 125 us chunked on 1 thread,
// 132-148 us layered on 1-2 threads; mnist N = 64, 34 Mflop: layered on 2 threads 549 us, chunked
// 736 us), and a small call never waits for a second thread that another process holds. Such a call
// is cut into two chunks when each gets kMinChunkRows rows or more, so two threads share it (interleaved
// A/B, 2 threads, loss + every gradient, 2026-11-25: 64-100-10 N = 200 float64 192 -> 126 us, float32
// 107 -> 76 us; 100-100-1 N = 200 float64 247 -> 156 us; 32-64-64-1 N = 300 float32 113 -> 77 us).
constexpr int64_t kMinFlopsForLayered = 8'000'000;

// The narrow engine (lanes across rows, no matrix-product tiles) runs when every width is at most
// this; its chunks have kNarrowChunkRows rows (a multiple of every lane count).
constexpr int64_t kNarrowMaxWidth = 16;
constexpr int64_t kNarrowChunkRows = 1024;

// How often (at most) the calling thread polls for an interrupt (Ctrl-C) between chunks of work.
constexpr int kInterruptPollMs = 20;

// Matrix-product cache blocking (BLIS names): the packed B micro-panel (KC x NR) stays in L1 (48 KiB),
// the packed A block (MC x KC) in L2. KC=256: a 32 KiB B micro-panel for float (NR = 32); MC is a
// multiple of every MR; NC bounds a packed B block (KC x NC x 4 bytes = 1 MiB).
constexpr int64_t kKC = 256;
constexpr int64_t kMC = 240;
constexpr int64_t kNC = 1024;

// A product whose B has at most this many NR-wide panels reads A in place instead of packing it: each
// element of A then serves only that many micro-kernel calls. Measured (interleaved A/B, 1 thread,
// a temporary environment switch): seed1_small -10%, mnist N=64 -5% at 2 panels; 8 panels made mnist
// N=4096 11% slower (A rows of 784 floats read in place by every panel).
constexpr int64_t kDirectAMaxPanels = 2;

// Products with at most this many output columns skip the register tiles (gemm_small_n): a 12 x 32
// tile computing 1 useful column of 32 did as much work for seed1_small's 64 -> 1 head layer as
// for its 32 -> 64 hidden layer.
constexpr int64_t kSmallN = 4;

}  // namespace mlpgrad::config
