// The engine's tuning constants, in one place (private to the core). Each says why it has its value;
// the measurements behind them, dated and with their commands, belong in docs/tuning-log.md.
#pragma once

#include <cstdint>

namespace mlpgrad::config {

// Rows per chunk: one chunk's input rows, activations, deltas and head scratch fill about this many
// bytes, half of a 2 MiB per-core L2, so the chunk stays in L2 from its forward to its backward and
// the packed weights keep the other half. (128 KiB to 4 MiB gave the same time within 4%.)
constexpr int64_t kChunkBytes = 1 << 20;
// Chunks start on multiples of 12, which every register tile's row count (MR = 12 or 6) divides: only
// the batch's last chunk can have an edge tile of rows.
constexpr int64_t kChunkRowMultiple = 12;
// Bounds on rows per chunk: fewer rows than this leave the per-chunk costs (packing, group buffer
// writes) unpaid for; more than kMaxChunkRows make too few chunks to share among threads.
constexpr int64_t kMinChunkRows = 48;
constexpr int64_t kMaxChunkRows = 1024;

// Weight gradients accumulate into at most this many per-group buffers, summed at the end in a fixed
// pairwise order. The count depends on the problem only, never on the thread count: that is what makes
// results bit-identical for any number of threads. 8 keeps 2 to 8 threads busy.
constexpr int64_t kMaxGroups = 8;

// Sparse X (sparse.hpp): the weight gradient dW_1 = X^T delta_1 runs by blocks of W_1's rows, this many per thread
// (shared dynamically: popular columns make some blocks heavier). Each block re-reads every delta_1 row that has a
// value in it, so few large blocks win over L2-sized ones: at 50,000 x 100,000 (0.1% nonzero, 100 hidden, float32,
// 2 threads) blocks of 1 MB took 150 ms, 8 blocks of 5 MB 112 ms, 4 blocks 106 ms (tuning log, 2026-12-04).
constexpr int64_t kSparseBlocksPerThread = 2;
// Sparse X in the per-sample and curvature passes and the Gram matrix: rows densified this many bytes at a
// time, each slab run by the dense engine (the sums over slabs added in slab order).
constexpr int64_t kSparseSlabBytes = int64_t(64) << 20;

// The layered schedule (whole-batch products cut into 2-D tiles) runs when the batch makes fewer than
// kMinChunksForChunked chunks (nothing to share among threads otherwise), or at most kMaxGroups chunks
// of a network whose parameters take more than kLayeredMinParamBytes: then every chunk has a large group
// buffer of its own, written in full and reduced, which costs more than the layered products save.
// (Measured 2026-11-25, 2 threads, float32: 8 MiB of parameters at N = 1024, 2048 ran 3-4% faster
// layered; 1 MiB at N = 512-2048 ran 11-13% faster chunked.)
constexpr int64_t kMinChunksForChunked = 2;
constexpr int64_t kLayeredMinParamBytes = int64_t(4) << 20;
// ... unless the whole forward pass is below this many flops: then the layered schedule's barriers
// cost more than its tiles save, and a small call never waits for a second thread that another process
// holds. (Measured 2026-11-25: 64-100-10 N = 200 chunked 125 us on 1 thread, layered 132-148 us on 1-2.)
// Since every batch of 2 kMinChunkRows rows or more makes two chunks (plan.hpp), the first case is left
// to batches shorter than that.
constexpr int64_t kMinFlopsForLayered = 8'000'000;

// The narrow engine (lanes across rows, no matrix-product tiles) runs when every width is at most
// this: a 12 x 32 register tile would be mostly padding. Its chunks have kNarrowChunkRows rows (a
// multiple of every lane count).
constexpr int64_t kNarrowMaxWidth = 16;
constexpr int64_t kNarrowChunkRows = 1024;

// How often (at most) the calling thread polls for an interrupt (Ctrl-C) between chunks of work: often
// enough to feel immediate, rarely enough that taking Python's GIL costs nothing measurable.
constexpr int kInterruptPollMs = 20;

// Matrix-product cache blocking (BLIS names): the packed B micro-panel (KC x NR) stays in L1 (48 KiB),
// the packed A block (MC x KC) in L2. KC = 256: a 32 KiB B micro-panel for float (NR = 32); MC is a
// multiple of every MR; NC bounds a packed B block (KC x NC x 4 bytes = 1 MiB).
constexpr int64_t kKC = 256;
constexpr int64_t kMC = 240;
constexpr int64_t kNC = 1024;

// A product whose B has at most this many NR-wide panels reads A in place instead of packing it: each
// element of A then serves too few micro-kernel calls to pay for its packing. (Measured 2026-11-25,
// 1 thread: 2 panels -5 to -10%; 8 panels made 784-wide A rows 11% slower.)
constexpr int64_t kDirectAMaxPanels = 2;

// Products with at most this many output columns skip the register tiles (gemm_small_n): a 12 x 32
// tile computing 1 useful column of 32 does as much work as a full one.
constexpr int64_t kSmallN = 4;

// The FMA peak (peak.cpp): the best of kPeakRuns runs of about kPeakRunSeconds each, ~0.1 s in all: long
// enough that the barriers and the clock (microseconds) are noise, short enough for a bench header; the best,
// because on a shared machine a run can only lose time to other processes, never gain it.
constexpr double kPeakRunSeconds = 0.02;
constexpr int kPeakRuns = 5;

}  // namespace mlpgrad::config
