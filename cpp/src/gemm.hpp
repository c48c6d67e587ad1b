// Cache-blocked matrix product on packed panels (the BLIS loop nest), single-threaded: the engine
// gives each thread its own tiles of the output.
//   C (m, n) = [C +] A (m, k) @ B (k, n), then an epilogue on each finished tile of C.
// A is read through strides (element (i, p) at A[i*rsa + p*csa]), so H^T needs no copy beyond
// packing. B is either packed here from strides, or pre-packed once per call (pack_b_panels, used for
// every weight matrix) as "full-K panels": panel q holds columns [q NR, q NR + NR) for all k rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "mlpgrad/config.hpp"
#include "simd.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// Register tile: MR rows x NR = 2 vectors. Accumulators: 2 MR vector registers, chosen to leave
// room for the two B vectors and a broadcast: 24 of 32 zmm (AVX-512), 12 of 16 ymm/xmm otherwise.
template <typename T> struct Tile {
#if defined(__AVX512F__)
  static constexpr int MR = 12;
#else
  static constexpr int MR = 6;
#endif
  static constexpr int NR = 2 * kLanes<T>;
};

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Scratch for one thread: a packed A block, a packed B block (when B is not pre-packed), an edge tile.
template <typename T> struct GemmScratch {
  static constexpr int64_t a_size = config::kMC * config::kKC;
  static constexpr int64_t b_size = config::kKC * config::kNC;
  static constexpr int64_t tile_size = Tile<T>::MR * Tile<T>::NR;
  static constexpr int64_t size = a_size + b_size + tile_size;
  T* a; T* b; T* tile;
  explicit GemmScratch(T* base) : a(base), b(base + a_size), tile(base + a_size + b_size) {}
};

// Packing. A packed panel is kc rows of NT values (NT = MR for A, NR for B): row p holds element p of
// "lines" j = 0..n-1 (the rows of A, the columns of B), zeros for j >= n. The source comes in one of
// two layouts, each with a vectorized path:
//   lines contiguous along p:  (p, j) at src[j * lds + p]  -> W x W blocks transposed in registers
//   rows contiguous along j:   (p, j) at src[p * lds + j]  -> vector copies
// and any other strides take the scalar path. Every path writes the same values.

// One stage of a W x W transpose held in W vectors (one per row): for each pair of rows (i, i + h),
// swap their h-wide off-diagonal blocks. The stages h = W/2, ..., 2, 1 together transpose.
template <typename T, int h, std::size_t... J>
inline void transpose_stage(Vec<T>* r, std::index_sequence<J...>) {
  constexpr int W = kLanes<T>;
#pragma GCC unroll 16
  for (int i = 0; i < W; ++i)
    if (!(i & h)) {
      const Vec<T> a = r[i], b = r[i + h];
      r[i] = __builtin_shufflevector(a, b, (J & h ? W + J - h : J)...);
      r[i + h] = __builtin_shufflevector(a, b, (J & h ? W + J : J + h)...);
    }
}
template <typename T, int h = kLanes<T> / 2> inline void transpose(Vec<T>* r) {
  transpose_stage<T, h>(r, std::make_index_sequence<kLanes<T>>{});
  if constexpr (h > 1) transpose<T, h / 2>(r);
}

// f(std::integral_constant<int, g>) for the vector-wide groups g = 0, W, 2W, ... < NT.
template <typename T, typename F, int... G> inline void for_groups(F&& f, std::integer_sequence<int, G...>) {
  (f(std::integral_constant<int, G * kLanes<T>>{}), ...);
}
template <typename T, int NT, typename F> inline void for_groups(F&& f) {
  for_groups<T>(f, std::make_integer_sequence<int, (NT + kLanes<T> - 1) / kLanes<T>>{});
}

template <typename T, int NT>
void pack_from_lines(int64_t kc, int64_t n, const T* src, int64_t lds, T* dst) {
  constexpr int W = kLanes<T>;
  for_groups<T, NT>([&](auto gc) {
    constexpr int g = decltype(gc)::value, width = std::min(W, NT - g);
    const int64_t lines = std::clamp<int64_t>(n - g, 0, W);
    int64_t p = 0;
    for (; p + W <= kc; p += W) {
      Vec<T> r[W];
#pragma GCC unroll 16
      for (int q = 0; q < W; ++q) r[q] = q < lines ? load<T>(src + (g + q) * lds + p) : Vec<T>{};
      transpose<T>(r);
#pragma GCC unroll 16
      for (int q = 0; q < W; ++q) store_n<T, width>(dst + (p + q) * NT + g, r[q]);
    }
    for (; p < kc; ++p)
      for (int j = 0; j < width; ++j) dst[p * NT + g + j] = j < lines ? src[(g + j) * lds + p] : T(0);
  });
}

template <typename T, int NT>
void pack_from_rows(int64_t kc, int64_t n, const T* src, int64_t lds, T* dst) {
  constexpr int W = kLanes<T>;
  if (n < NT) {  // an edge panel
    for (int64_t p = 0; p < kc; ++p) {
      std::copy(src + p * lds, src + p * lds + n, dst + p * NT);
      std::fill(dst + p * NT + n, dst + p * NT + NT, T(0));
    }
    return;
  }
  for (int64_t p = 0; p < kc; ++p)
    for_groups<T, NT>([&](auto gc) {
      constexpr int g = decltype(gc)::value, width = std::min(W, NT - g);
      store_n<T, width>(dst + p * NT + g, load_n<T, width>(src + p * lds + g));
    });
}

template <typename T, int NT>
void pack_panel(int64_t kc, int64_t n, const T* src, int64_t stride_p, int64_t stride_j, T* dst) {
  if (stride_p == 1) {
    pack_from_lines<T, NT>(kc, n, src, stride_j, dst);
  } else if (stride_j == 1) {
    pack_from_rows<T, NT>(kc, n, src, stride_p, dst);
  } else {
    for (int64_t p = 0; p < kc; ++p)
      for (int64_t j = 0; j < NT; ++j) dst[p * NT + j] = j < n ? src[p * stride_p + j * stride_j] : T(0);
  }
}

// A block (mc, kc) -> MR-row panels; panel element (p, i) at p*MR + i; rows past mc are zeros.
template <typename T>
void pack_a(int64_t mc, int64_t kc, const T* A, int64_t rsa, int64_t csa, T* Ap) {
  constexpr int MR = Tile<T>::MR;
  for (int64_t ir = 0; ir < mc; ir += MR, Ap += MR * kc)
    pack_panel<T, MR>(kc, std::min<int64_t>(MR, mc - ir), A + ir * rsa, csa, rsa, Ap);
}

// B block (kc, nc) -> NR-column panels with panel stride `panel` (element (p, j) of panel q at
// q*panel + p*NR + j); columns past nc are zeros. If colsum is not null it receives, added, the
// column sums of the block (summed down the block's kc rows first, then added: blocked summation).
template <typename T>
void pack_b(int64_t kc, int64_t nc, const T* B, int64_t rsb, int64_t csb, T* Bp, int64_t panel, T* colsum) {
  constexpr int NR = Tile<T>::NR, W = kLanes<T>;
  for (int64_t jr = 0; jr < nc; jr += NR, Bp += panel) {
    const int64_t nr = std::min<int64_t>(NR, nc - jr);
    pack_panel<T, NR>(kc, nr, B + jr * csb, rsb, csb, Bp);
    if (colsum) {  // down the packed panel, lane by lane in row order
      Vec<T> s0{}, s1{};
      for (int64_t p = 0; p < kc; ++p) {
        s0 += load<T>(Bp + p * NR);
        s1 += load<T>(Bp + p * NR + W);
      }
      T sums[NR];
      store<T>(sums, s0);
      store<T>(sums + W, s1);
      for (int64_t j = 0; j < nr; ++j) colsum[jr + j] += sums[j];
    }
  }
}

// Whole B (k, n) as full-K panels: panel q at q*NR*k. Size in elements:
template <typename T> int64_t panels_size(int64_t k, int64_t n) { return k * round_up(n, Tile<T>::NR); }

template <typename T>
void pack_b_panels(int64_t k, int64_t n, const T* B, int64_t rsb, int64_t csb, T* Bp) {
  pack_b<T>(k, n, B, rsb, csb, Bp, int64_t(Tile<T>::NR) * k, nullptr);
}

// The micro-kernel: C (MR, NR) = [C +] Ap (MR, kc) @ Bp (kc, NR). Sums start from zero and C is
// added once at the end, so a full tile and an edge tile (done through a scratch tile) round alike.
template <typename T>
inline void micro_kernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* __restrict C,
                         int64_t ldc, bool accumulate) {
  constexpr int MR = Tile<T>::MR, W = kLanes<T>;
  Vec<T> c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = Vec<T>{};
  for (int64_t p = 0; p < kc; ++p) {
    const Vec<T> b0 = load<T>(Bp + p * 2 * W), b1 = load<T>(Bp + p * 2 * W + W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const T a = Ap[p * MR + i];
      c0[i] += a * b0;
      c1[i] += a * b1;
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    T* row = C + i * ldc;
    if (accumulate) {
      store<T>(row, load<T>(row) + c0[i]);
      store<T>(row + W, load<T>(row + W) + c1[i]);
    } else {
      store<T>(row, c0[i]);
      store<T>(row + W, c1[i]);
    }
  }
}

// Epilogues, applied to a finished tile C[0:mr, 0:nr] (still in L1) at columns j0.. of the output.
struct NoEpilogue {
  template <typename T> void operator()(T*, int64_t, int64_t, int64_t, int64_t, int64_t) const {}
};

// C (m, n) = [C +] A (m, k) @ B (k, n), then epi(tile, ldc, row, col, mr, nr) on each finished tile.
// Bpanels: B as full-K panels (pack_b_panels) starting at column 0 of this product, or null to pack
// B here from strides. bsum: if not null (and B is packed here), receives += the column sums of B.
template <typename T, typename Epilogue = NoEpilogue>
void gemm(int64_t m, int64_t n, int64_t k, const T* A, int64_t rsa, int64_t csa, const T* Bpanels,
          const T* B, int64_t rsb, int64_t csb, T* C, int64_t ldc, bool accumulate, GemmScratch<T> s,
          const Epilogue& epi = Epilogue(), T* bsum = nullptr) {
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR;
  if (m == 0 || n == 0) return;
  if (k == 0) {  // empty sum
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(C + i * ldc, C + i * ldc + n, T(0));
    for (int64_t i = 0; i < m; i += MR)
      for (int64_t j = 0; j < n; j += NR)
        epi(C + i * ldc + j, ldc, i, j, std::min<int64_t>(MR, m - i), std::min<int64_t>(NR, n - j));
    return;
  }
  for (int64_t jc = 0; jc < n; jc += config::kNC) {  // loop 5: NC columns of B and C
    const int64_t nc = std::min(config::kNC, n - jc);
    for (int64_t pc = 0; pc < k; pc += config::kKC) {  // loop 4: KC deep slice
      const int64_t kc = std::min(config::kKC, k - pc);
      const bool acc = accumulate || pc > 0, last = pc + kc == k;
      if (!Bpanels) pack_b<T>(kc, nc, B + pc * rsb + jc * csb, rsb, csb, s.b, NR * kc, bsum ? bsum + jc : nullptr);
      for (int64_t ic = 0; ic < m; ic += config::kMC) {  // loop 3: MC rows of A and C
        const int64_t mc = std::min(config::kMC, m - ic);
        pack_a(mc, kc, A + ic * rsa + pc * csa, rsa, csa, s.a);
        for (int64_t jr = 0; jr < nc; jr += NR) {  // loop 2: one B micro-panel
          const int64_t nr = std::min<int64_t>(NR, nc - jr);
          const T* b = Bpanels ? Bpanels + (jc + jr) * k + pc * NR : s.b + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += MR) {  // loop 1: one A micro-panel
            const int64_t mr = std::min<int64_t>(MR, mc - ir);
            const T* a = s.a + ir * kc;
            T* c = C + (ic + ir) * ldc + jc + jr;
            if (mr == MR && nr == NR) {
              micro_kernel<T>(kc, a, b, c, ldc, acc);
            } else {
              micro_kernel<T>(kc, a, b, s.tile, NR, false);
              for (int64_t i = 0; i < mr; ++i)
                for (int64_t j = 0; j < nr; ++j)
                  c[i * ldc + j] = acc ? c[i * ldc + j] + s.tile[i * NR + j] : s.tile[i * NR + j];
            }
            if (last) epi(c, ldc, ic + ir, jc + jr, mr, nr);
          }
        }
      }
    }
  }
}

}  // namespace mlpgrad::MLPGRAD_ISA
