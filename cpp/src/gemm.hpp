// Cache-blocked matrix product on packed panels (the BLIS loop nest), single-threaded: the engine
// gives each thread its own tiles of the output.
//   C (m, n) = [C +] A (m, k) @ B (k, n), then an epilogue on each finished tile of C.
// A is read through strides (Strided: element (i, p) at A[i*rsa + p*csa]), so H^T needs no copy beyond
// packing. B is either packed here from strides, or pre-packed once per call (pack_b_panels, used for
// every weight matrix) as "full-K panels": panel q holds columns [q NR, q NR + NR) for all k rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "config.hpp"
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

// A row-major matrix in memory with its leading dimension: element (i, j) at p[i * ld + j]. at(i, j) is
// the view of the block starting there (a tile, a column block of a wider matrix). A MatView<T> passes
// where a MatView<const T> is expected.
template <typename T> struct MatView {
  T* p;
  int64_t ld;
  MatView(T* p_, int64_t ld_) : p(p_), ld(ld_) {}
  template <typename U, typename = std::enable_if_t<std::is_same_v<const U, T>>>
  MatView(MatView<U> v) : p(v.p), ld(v.ld) {}
  MatView at(int64_t i, int64_t j) const { return {p + i * ld + j, ld}; }
};

// A matrix read through any strides: element (i, j) at p[i * rs + j * cs]. From a MatView, as it is
// (rs = ld, cs = 1) or transposed (rs = 1, cs = ld): H^T needs no copy beyond packing.
template <typename T> struct Strided {
  const T* p;
  int64_t rs, cs;
  static Strided rows(MatView<const T> v) { return {v.p, v.ld, 1}; }
  static Strided transposed(MatView<const T> v) { return {v.p, 1, v.ld}; }
};

// Split `total` into the fewest blocks of at most max_block (a multiple of mult), all of one size (a
// multiple of mult) but the last: the size of a block.
inline int64_t balanced_block(int64_t total, int64_t max_block, int64_t mult) {
  const int64_t blocks = std::max<int64_t>(1, (total + max_block - 1) / max_block);
  return std::min(max_block, round_up((total + blocks - 1) / blocks, mult));
}

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
      for (int q = 0; q < W; ++q) store_partial<T>(dst + (p + q) * NT + g, r[q], width);
    }
    for (; p < kc; ++p)
      for (int j = 0; j < width; ++j) dst[p * NT + g + j] = j < lines ? src[(g + j) * lds + p] : T(0);
  });
}

// Rows contiguous: row p of every panel at once, so the source is read row by row (panel by panel,
// a panel's 12 or 32 values per row came from a new cache line every row: with a 4 KiB row stride,
// all from one L1 set). Vector copies, masked for a last partial panel.
template <typename T, int NT>
void pack_from_rows(int64_t kc, int64_t n, const T* src, int64_t lds, T* dst, int64_t panel) {
  constexpr int W = kLanes<T>;
  const int64_t full = n / NT, rest = n - full * NT;
  for (int64_t p = 0; p < kc; ++p) {
    const T* row = src + p * lds;
    for (int64_t q = 0; q < full; ++q)
      for_groups<T, NT>([&](auto gc) {
        constexpr int g = decltype(gc)::value, width = std::min(W, NT - g);
        store_partial<T>(dst + q * panel + p * NT + g, load_padded<T>(row + q * NT + g, width), width);
      });
    if (rest)  // masked loads, zeros past the last line (not a library copy and fill per row)
      for_groups<T, NT>([&](auto gc) {
        constexpr int g = decltype(gc)::value, width = std::min(W, NT - g);
        const int64_t len = std::clamp<int64_t>(rest - g, 0, width);
        store_partial<T>(dst + full * panel + p * NT + g, load_padded<T>(row + full * NT + g, len), width);
      });
  }
}

// A block of kc rows and n lines -> ceil(n / NT) panels, `panel` elements apart.
template <typename T, int NT>
void pack_panels(int64_t kc, int64_t n, const T* src, int64_t stride_p, int64_t stride_j, T* dst, int64_t panel) {
  if (stride_j == 1 && stride_p != 1) {
    pack_from_rows<T, NT>(kc, n, src, stride_p, dst, panel);
    return;
  }
  for (int64_t j0 = 0; j0 < n; j0 += NT, dst += panel) {
    const int64_t nj = std::min<int64_t>(NT, n - j0);
    const T* s = src + j0 * stride_j;
    if (stride_p == 1) {
      pack_from_lines<T, NT>(kc, nj, s, stride_j, dst);
    } else {
      for (int64_t p = 0; p < kc; ++p)
        for (int64_t j = 0; j < NT; ++j) dst[p * NT + j] = j < nj ? s[p * stride_p + j * stride_j] : T(0);
    }
  }
}

// A block (mc, kc) -> MR-row panels; panel element (p, i) at p*MR + i; rows past mc are zeros.
template <typename T>
void pack_a(int64_t mc, int64_t kc, const T* A, int64_t rsa, int64_t csa, T* Ap) {
  constexpr int MR = Tile<T>::MR;
  pack_panels<T, MR>(kc, mc, A, csa, rsa, Ap, MR * kc);
}

// B block (kc, nc) -> NR-column panels with panel stride `panel` (element (p, j) of panel q at
// q*panel + p*NR + j); columns past nc are zeros. If colsum is not null it receives, added, the
// column sums of the block (summed down the block's kc rows first, then added: blocked summation).
template <typename T>
void pack_b(int64_t kc, int64_t nc, const T* B, int64_t rsb, int64_t csb, T* Bp, int64_t panel, T* colsum) {
  constexpr int NR = Tile<T>::NR, W = kLanes<T>;
  pack_panels<T, NR>(kc, nc, B, rsb, csb, Bp, panel);
  if (!colsum) return;
  for (int64_t jr = 0; jr < nc; jr += NR, Bp += panel) {  // down each packed panel, in row order
    Vec<T> s0{}, s1{};
    for (int64_t p = 0; p < kc; ++p) {
      s0 += load<T>(Bp + p * NR);
      s1 += load<T>(Bp + p * NR + W);
    }
    T sums[NR];
    store<T>(sums, s0);
    store<T>(sums + W, s1);
    for (int64_t j = 0; j < std::min<int64_t>(NR, nc - jr); ++j) colsum[jr + j] += sums[j];
  }
}

// Whole B (k, n) as full-K panels: panel q at q*NR*k. Size in elements:
template <typename T> int64_t panels_size(int64_t k, int64_t n) { return k * round_up(n, Tile<T>::NR); }

template <typename T>
void pack_b_panels(int64_t k, int64_t n, const T* B, int64_t rsb, int64_t csb, T* Bp) {
  pack_b<T>(k, n, B, rsb, csb, Bp, int64_t(Tile<T>::NR) * k, nullptr);
}

// The micro-kernel: C (Rows, NR) = [C +] Ap (Rows, kc) @ Bp (kc, NR), Rows = MR but for the last row
// panel of a product, which takes the smallest multiple of 4 that covers it (a 32-row dW did 36 rows of
// work, a 64-row one 72). Sums start from zero and C is added once at the end, so a full tile and an
// edge tile (done through a scratch tile) round alike, and every variant gives the same bits.
//   Packed: element (i, p) of A at Ap[p * MR + i] (an MR-row panel, of which Rows are used).
//   Direct: A is read in place, element (i, p) at Ap[i * rsa + p * csa] (all Rows rows must exist).
// Not inlined: inside gemm's loop nest the compiler ran out of general registers for the direct
// variant's row addresses (single thread, benchmarks/gemm_bench.cpp, 2026-11-25: 1024 x 64 x K with K
// = 32, 64, 256: 150 -> 162, 161 -> 168, 164 -> 172 GFLOP/s; packed 256 x 256 x 784 166 -> 170).
template <typename T, bool Direct = false, int Rows = Tile<T>::MR>
[[gnu::noinline]] void micro_kernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* __restrict C,
                         int64_t ldc, bool accumulate, int64_t rsa = 0, int64_t csa = 0) {
  constexpr int MR = Tile<T>::MR, W = kLanes<T>;
  // The C tile is only read or written after the loop: fetch its lines meanwhile (rows of C a power
  // of two apart share an L1 set and are often gone by then; 1-3.5% on the benchmark configs).
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i) {
    __builtin_prefetch(C + i * ldc, 1);
    __builtin_prefetch(C + i * ldc + 2 * W - 1, 1);
  }
  Vec<T> c0[Rows], c1[Rows];
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i) c0[i] = c1[i] = Vec<T>{};
  if constexpr (Direct) {
    // Row i at base[i / 4][(i % 4) * rsa]: three moving base pointers and the offsets rsa, 2 rsa, 3 rsa
    // fit x86 addressing (base + index * scale). Written as Ap[i * rsa + p * csa], the twelve row offsets
    // were kept on the stack and reloaded every step: 25 loads per 24 FMAs.
    const int64_t r1 = rsa, r2 = 2 * rsa, r3 = 3 * rsa;
    const T* base[(Rows + 3) / 4];
    for (int q = 0; q < (Rows + 3) / 4; ++q) base[q] = Ap + 4 * q * rsa;
    for (int64_t p = 0; p < kc; ++p) {
      const Vec<T> b0 = load<T>(Bp + p * 2 * W), b1 = load<T>(Bp + p * 2 * W + W);
#pragma GCC unroll 16
      for (int i = 0; i < Rows; ++i) {
        const T* row = base[i / 4];
        const T a = i % 4 == 0 ? row[0] : i % 4 == 1 ? row[r1] : i % 4 == 2 ? row[r2] : row[r3];
        c0[i] += a * b0;
        c1[i] += a * b1;
      }
      for (auto& b : base) b += csa;
    }
  } else {
    for (int64_t p = 0; p < kc; ++p) {
      const Vec<T> b0 = load<T>(Bp + p * 2 * W), b1 = load<T>(Bp + p * 2 * W + W);
#pragma GCC unroll 16
      for (int i = 0; i < Rows; ++i) {
        const T a = Ap[p * MR + i];
        c0[i] += a * b0;
        c1[i] += a * b1;
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i) {
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

// The packed kernel for a panel of `rows` rows (1 .. MR): the variant of the fewest rows, in steps of 4.
template <typename T>
inline void micro_kernel_rows(int64_t rows, int64_t kc, const T* Ap, const T* Bp, T* C, int64_t ldc, bool accumulate) {
  constexpr int MR = Tile<T>::MR, R8 = MR > 8 ? 8 : MR;
  if (MR > 4 && rows <= 4) return micro_kernel<T, false, 4>(kc, Ap, Bp, C, ldc, accumulate);
  if (MR > 8 && rows <= 8) return micro_kernel<T, false, R8>(kc, Ap, Bp, C, ldc, accumulate);
  micro_kernel<T, false, MR>(kc, Ap, Bp, C, ldc, accumulate);
}

// Epilogues, applied to a finished tile C[0:mr, 0:nr] (still in L1) at columns j0.. of the output.
struct NoEpilogue {
  template <typename T> void operator()(T*, int64_t, int64_t, int64_t, int64_t, int64_t) const {}
};

// Lane r of the result: the sum of v[r]'s lanes in a fixed pairwise order (t[i] += t[i + h] for
// h = W/2, ..., 1), for r = 0 .. W-1 at once: log2(W) stages of shuffles and adds (W - 1 pairs of
// vectors) rather than W stores and scalar sums. A stage takes vectors holding W / g rows of g partial
// sums each and pairs them up: lane (row q, offset o) of the result is lane o + lane o + g/2 of row q.
template <int W, int g> constexpr int half_lane(int L) {
  const int q = L / (g / 2), o = L % (g / 2), rows = W / g;
  return (q >= rows ? W : 0) + (q % rows) * g + o;
}
template <typename T, int g, std::size_t... J>
inline Vec<T> reduce_pair(Vec<T> x, Vec<T> y, std::index_sequence<J...>) {
  constexpr int W = kLanes<T>;
  return __builtin_shufflevector(x, y, half_lane<W, g>(J)...) +
         __builtin_shufflevector(x, y, (half_lane<W, g>(J) + g / 2)...);
}
template <typename T, int g = kLanes<T>>
inline Vec<T> reduce_add_rows(Vec<T>* v) {  // v: kLanes<T> vectors, overwritten
  constexpr int W = kLanes<T>, count = g;  // vectors at this stage (W / g rows each)
#pragma GCC unroll 16
  for (int i = 0; i < count / 2; ++i) v[i] = reduce_pair<T, g>(v[2 * i], v[2 * i + 1], std::make_index_sequence<W>{});
  if constexpr (g > 2) return reduce_add_rows<T, g / 2>(v);
  else return v[0];
}

// Products with at most kSmallN columns (a layer of 1 to 4 units), where a register tile would be
// nearly all padding: 31 of 32 columns for the one-unit output of seed1_small. B (k, n) is copied
// column by column into scratch (b: column j at b + j k), then
//   A rows contiguous (csa = 1): each C element is a dot product along k, SIMD across k;
//   A columns contiguous (rsa = 1, A = H^T for dW): C columns += A columns times B(p, j), SIMD across
//   the rows of C.
// Fixed order either way. Returns false (nothing done) when the case does not apply. The test is on
// ldc, the row length of the whole output, not on this tile's n: the layered schedule cuts outputs
// into column tiles by thread count, and an element's summation order must not depend on its tile.
template <typename T, typename Epilogue>
bool gemm_small_n(MatView<T> Cv, bool accumulate, Strided<T> Av, const T* Bpanels, Strided<T> Bv, int64_t m,
                  int64_t n, int64_t k, GemmScratch<T> s, const Epilogue& epi, T* bsum) {
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, W = kLanes<T>;
  T* const C = Cv.p;
  const T* const A = Av.p;
  const T* const B = Bv.p;
  const int64_t ldc = Cv.ld, rsa = Av.rs, csa = Av.cs, rsb = Bv.rs, csb = Bv.cs;
  if (ldc > config::kSmallN || k * ldc > GemmScratch<T>::b_size || (csa != 1 && rsa != 1)) return false;
  T* b = s.b;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t p = 0; p < k; ++p) b[j * k + p] = Bpanels ? Bpanels[p * NR + j] : B[p * rsb + j * csb];
  // Every sum over k is blocked by kKC, as in gemm(): a slice's sum, then slices added in order.
  constexpr int64_t KC = config::kKC;
  if (bsum)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t pc = 0; pc < k; pc += KC) {
        T t = 0;
        for (int64_t p = pc; p < std::min(k, pc + KC); ++p) t += b[j * k + p];
        bsum[j] += t;
      }
  if (csa == 1) {
    // Each C element: two chains of products along k, added, then the lanes summed pairwise
    // (reduce_add's order), W rows at a time (reduce_add_rows).
    const int64_t kv = k / W * W;
    for (int64_t i0 = 0; i0 < m; i0 += W) {
      const int64_t mw = std::min<int64_t>(W, m - i0);
      for (int64_t j = 0; j < n; ++j) {
        const T* bj = b + j * k;
        Vec<T> v[W];
        for (int64_t r = 0; r < W; ++r) {
          if (r >= mw) {
            v[r] = Vec<T>{};
            continue;
          }
          const T* a = A + (i0 + r) * rsa;
          Vec<T> acc0{}, acc1{};
          int64_t p = 0;
          for (; p + 2 * W <= kv; p += 2 * W) {
            acc0 += load<T>(a + p) * load<T>(bj + p);
            acc1 += load<T>(a + p + W) * load<T>(bj + p + W);
          }
          for (; p < kv; p += W) acc0 += load<T>(a + p) * load<T>(bj + p);
          if (p < k) acc1 += load_padded<T>(a + p, k - p) * load_padded<T>(bj + p, k - p);
          v[r] = acc0 + acc1;
        }
        const Vec<T> dots = reduce_add_rows<T>(v);
        for (int64_t r = 0; r < mw; ++r) {
          T* c = C + (i0 + r) * ldc + j;
          *c = accumulate ? *c + dots[r] : dots[r];
        }
      }
    }
    for (int64_t i0 = 0; i0 < m; i0 += MR) epi(C + i0 * ldc, ldc, i0, 0, std::min<int64_t>(MR, m - i0), n);
    return true;
  }
  // rsa == 1: W rows of C at a time, one accumulator vector per column.
  for (int64_t i0 = 0; i0 < m; i0 += W) {
    const int64_t mw = std::min<int64_t>(W, m - i0);
    Vec<T> acc[config::kSmallN] = {};
    for (int64_t pc = 0; pc < k; pc += KC) {
      Vec<T> part[config::kSmallN] = {};
      for (int64_t p = pc; p < std::min(k, pc + KC); ++p) {
        const Vec<T> a = load_padded<T>(A + i0 + p * csa, mw);
        for (int64_t j = 0; j < n; ++j) part[j] += a * b[j * k + p];
      }
      for (int64_t j = 0; j < n; ++j) acc[j] += part[j];
    }
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < mw; ++i)
        C[(i0 + i) * ldc + j] = accumulate ? C[(i0 + i) * ldc + j] + acc[j][i] : acc[j][i];
  }
  for (int64_t i0 = 0; i0 < m; i0 += MR) epi(C + i0 * ldc, ldc, i0, 0, std::min<int64_t>(MR, m - i0), n);
  return true;
}

// C (m, n) = [C +] A (m, k) @ B (k, n), then epi(tile, ldc, row, col, mr, nr) on each finished tile.
// Bpanels: B as full-K panels (pack_b_panels) starting at column 0 of this product, or null to pack
// B here from its strides. bsum: if not null (and B is packed here), receives += the column sums of B.
template <typename T, typename Epilogue = NoEpilogue>
void gemm(MatView<T> Cv, bool accumulate, Strided<T> Av, const T* Bpanels, Strided<T> Bv, int64_t m, int64_t n,
          int64_t k, GemmScratch<T> s, const Epilogue& epi = Epilogue(), T* bsum = nullptr) {
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR;
  if (m == 0 || n == 0) return;
  if (k > 0 && gemm_small_n<T>(Cv, accumulate, Av, Bpanels, Bv, m, n, k, s, epi, bsum)) return;
  T* const C = Cv.p;
  const T* const A = Av.p;
  const T* const B = Bv.p;
  const int64_t ldc = Cv.ld, rsa = Av.rs, csa = Av.cs, rsb = Bv.rs, csb = Bv.cs;
  if (k == 0) {  // empty sum
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(C + i * ldc, C + i * ldc + n, T(0));
    for (int64_t i = 0; i < m; i += MR)
      for (int64_t j = 0; j < n; j += NR)
        epi(C + i * ldc + j, ldc, i, j, std::min<int64_t>(MR, m - i), std::min<int64_t>(NR, n - j));
    return;
  }
  // Blocks of equal size (up to rounding) rather than full blocks and a thin remainder: k = 784 in
  // slices of 256 left a 16-deep slice, whose kernel calls load and store C for 16 steps.
  // A read in place, not packed, when each of its elements serves few B panels: packing then costs
  // more than it saves.
  const bool direct = (n + NR - 1) / NR <= config::kDirectAMaxPanels;
  const int64_t NC = balanced_block(n, config::kNC, NR), KC = balanced_block(k, config::kKC, 4),
                MC = balanced_block(m, config::kMC, MR);
  for (int64_t jc = 0; jc < n; jc += NC) {  // loop 5: NC columns of B and C
    const int64_t nc = std::min(NC, n - jc);
    for (int64_t pc = 0; pc < k; pc += KC) {  // loop 4: KC deep slice
      const int64_t kc = std::min(KC, k - pc);
      const bool acc = accumulate || pc > 0, last = pc + kc == k;
      if (!Bpanels) pack_b<T>(kc, nc, B + pc * rsb + jc * csb, rsb, csb, s.b, NR * kc, bsum ? bsum + jc : nullptr);
      for (int64_t ic = 0; ic < m; ic += MC) {  // loop 3: MC rows of A and C
        const int64_t mc = std::min(MC, m - ic);
        if (!direct) pack_a(mc, kc, A + ic * rsa + pc * csa, rsa, csa, s.a);
        for (int64_t jr = 0; jr < nc; jr += NR) {  // loop 2: one B micro-panel
          const int64_t nr = std::min<int64_t>(NR, nc - jr);
          const T* b = Bpanels ? Bpanels + (jc + jr) * k + pc * NR : s.b + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += MR) {  // loop 1: one A micro-panel
            const int64_t mr = std::min<int64_t>(MR, mc - ir);
            const T* a = s.a + ir * kc;
            T* c = C + (ic + ir) * ldc + jc + jr;
            // A full tile goes straight to C; an edge tile through the scratch tile, then its mr x nr
            // corner is added or copied. A short panel of rows read in place takes the kernel variant of
            // exactly its rows (4 or 8), or is packed (zero-padded) for the packed kernel.
            const bool full = mr == MR && nr == NR;
            T* out = full ? c : s.tile;
            const int64_t ldo = full ? ldc : NR;
            const T* a_in_place = A + (ic + ir) * rsa + pc * csa;
            if (direct && mr == MR) {
              micro_kernel<T, true>(kc, a_in_place, b, out, ldo, full && acc, rsa, csa);
            } else if (direct && MR > 4 && mr == 4) {
              micro_kernel<T, true, 4>(kc, a_in_place, b, out, ldo, false, rsa, csa);
            } else if (direct && MR > 8 && mr == 8) {
              micro_kernel<T, true, (MR > 8 ? 8 : MR)>(kc, a_in_place, b, out, ldo, false, rsa, csa);
            } else {
              if (direct) pack_a(mr, kc, a_in_place, rsa, csa, s.a + ir * kc);
              micro_kernel_rows<T>(mr, kc, a, b, out, ldo, full && acc);
            }
            if (!full)
              for (int64_t i = 0; i < mr; ++i)
                for (int64_t j = 0; j < nr; ++j)
                  c[i * ldc + j] = acc ? c[i * ldc + j] + s.tile[i * NR + j] : s.tile[i * NR + j];
            if (last) epi(c, ldc, ic + ir, jc + jr, mr, nr);
          }
        }
      }
    }
  }
}

}  // namespace mlpgrad::MLPGRAD_ISA
