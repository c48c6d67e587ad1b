// SIMD vectors (GCC/Clang vector extensions) and the vectorized exp and sigmoid.
// Compiled once per instruction set (see isa_*.cpp): the vector width follows the compiler flags of
// the translation unit, and everything lives in the namespace mlpgrad::MLPGRAD_ISA.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif

#ifndef MLPGRAD_ISA
#error "define MLPGRAD_ISA (the per-ISA namespace) before including the kernels"
#endif

namespace mlpgrad::MLPGRAD_ISA {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

template <typename T> struct VecTraits;
template <> struct VecTraits<float> {
  typedef float V __attribute__((vector_size(kVecBytes)));
  typedef uint32_t U __attribute__((vector_size(kVecBytes)));
  typedef int32_t I __attribute__((vector_size(kVecBytes)));
};
template <> struct VecTraits<double> {
  typedef double V __attribute__((vector_size(kVecBytes)));
  typedef uint64_t U __attribute__((vector_size(kVecBytes)));
  typedef int64_t I __attribute__((vector_size(kVecBytes)));
};
template <typename T> using Vec = typename VecTraits<T>::V;
template <typename T> constexpr int kLanes = kVecBytes / static_cast<int>(sizeof(T));

template <typename T> inline Vec<T> load(const T* p) { Vec<T> v; std::memcpy(&v, p, sizeof v); return v; }
template <typename T> inline void store(T* p, Vec<T> v) { std::memcpy(p, &v, sizeof v); }
template <typename T> inline Vec<T> splat(T x) { return Vec<T>{} + x; }

template <typename To, typename From> inline To bitcast(From v) {
  static_assert(sizeof(To) == sizeof(From));
  To r; std::memcpy(&r, &v, sizeof r); return r;
}

// a * b + c, rounded once where the ISA has FMA, else twice. -ffp-contract=fast fuses a product and a
// sum that meet in one basic block, so whether it fuses one that crosses a call (a kernel not inlined, a
// branch in between) depends on the inliner; a kernel whose bits must not depend on where it is called
// from writes its fused steps out.
template <typename T> inline Vec<T> vfma(Vec<T> a, Vec<T> b, Vec<T> c) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4)
    return bitcast<Vec<T>>(_mm512_fmadd_ps(bitcast<__m512>(a), bitcast<__m512>(b), bitcast<__m512>(c)));
  else
    return bitcast<Vec<T>>(_mm512_fmadd_pd(bitcast<__m512d>(a), bitcast<__m512d>(b), bitcast<__m512d>(c)));
#elif defined(__FMA__) && defined(__AVX2__)
  if constexpr (sizeof(T) == 4)
    return bitcast<Vec<T>>(_mm256_fmadd_ps(bitcast<__m256>(a), bitcast<__m256>(b), bitcast<__m256>(c)));
  else
    return bitcast<Vec<T>>(_mm256_fmadd_pd(bitcast<__m256d>(a), bitcast<__m256d>(b), bitcast<__m256d>(c)));
#else
  return a * b + c;
#endif
}

// The first min(len, lanes) values from p, the other lanes zero; and the store of the first len
// lanes, without touching memory past them (masked on AVX-512; a copy elsewhere). With len known at
// compile time (the packing's panel widths) both fold to a plain or a constant-mask access.
template <typename T> inline Vec<T> load_padded(const T* p, int64_t len) {
  if (len >= kLanes<T>) return load<T>(p);
#if defined(__AVX512F__)
  const __mmask16 m = __mmask16((1u << len) - 1);
  if constexpr (sizeof(T) == 4) return bitcast<Vec<T>>(_mm512_maskz_loadu_ps(m, p));
  else return bitcast<Vec<T>>(_mm512_maskz_loadu_pd(__mmask8(m), p));
#else
  T tmp[kLanes<T>] = {};
  std::memcpy(tmp, p, sizeof(T) * len);
  return load<T>(tmp);
#endif
}
template <typename T> inline void store_partial(T* p, Vec<T> v, int64_t len) {
  if (len >= kLanes<T>) return store<T>(p, v);
#if defined(__AVX512F__)
  const __mmask16 m = __mmask16((1u << len) - 1);
  if constexpr (sizeof(T) == 4) _mm512_mask_storeu_ps(p, m, bitcast<__m512>(v));
  else _mm512_mask_storeu_pd(p, __mmask8(m), bitcast<__m512d>(v));
#else
  T tmp[kLanes<T>];
  store<T>(tmp, v);
  std::memcpy(p, tmp, sizeof(T) * len);
#endif
}

// Lane r < len from p[r * stride], the other lanes zero; and the store of lanes r < len to p[r * stride]
// (len <= lanes): a column of row-major rows as one vector, for kernels that run one row per lane.
template <typename T> inline Vec<T> load_strided(const T* p, int64_t stride, int64_t len) {
  Vec<T> v = Vec<T>{};
  for (int64_t r = 0; r < len; ++r) v[r] = p[r * stride];
  return v;
}
template <typename T> inline void store_strided(T* p, int64_t stride, Vec<T> v, int64_t len) {
  for (int64_t r = 0; r < len; ++r) p[r * stride] = v[r];
}

// exp(x) lane by lane: x = n ln2 + r, |r| <= ln2/2, exp(r) by its Taylor polynomial (degree 7 for
// float, 13 for double: truncation below 0.5 ulp), times 2^n built in the exponent bits.
// Results below the smallest normal number flush to 0; x > hi (a little below the largest finite
// result) gives +inf. The kernels only take exp of x <= 0.
// NaN gives NaN. Rounding n uses the 1.5 * 2^mantissa trick, whose low bits then hold n.
template <typename T> struct ExpConst;
template <> struct ExpConst<float> {
  static constexpr float lo = -87.3365447505531f;   // log(FLT_MIN)
  static constexpr float hi = 88.37f;               // just below 127.5 ln 2: n stays <= 127
  static constexpr float round = 12582912.0f;       // 1.5 * 2^23
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr int degree = 7;
  static constexpr uint32_t bias = 127, shift = 23;
};
template <> struct ExpConst<double> {
  static constexpr double lo = -708.3964185322641;  // log(DBL_MIN)
  static constexpr double hi = 709.43;              // just below 1023.5 ln 2: n stays <= 1023
  static constexpr double round = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double ln2_hi = 0.693145751953125, ln2_lo = 1.42860682030941723212e-6;
  static constexpr int degree = 13;
  static constexpr uint64_t bias = 1023, shift = 52;
};

#if defined(__AVX512F__)
// AVX-512: exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln 2 in two steps (ln 2 = hi + lo, hi
// with trailing zero bits, so n hi is exact): |r| <= ln 2 / 2. exp(r) by its Taylor polynomial (degree
// 7 float, 13 double: truncation below 0.5 ulp), scaled by 2^n with vscalef, which handles overflow
// (+inf) and underflow (gradual, then 0) exactly. About 1.5 ulp.
// Bounded: the caller guarantees |x| <= 2 |log(min normal)| (or NaN), and the clamp is skipped.
template <typename T, bool Bounded = false>
inline Vec<T> vexp_scalef(Vec<T> x) {
  using C = ExpConst<T>;
  T inv_fact[C::degree + 1];  // 1 / i!, folded to constants by the compiler
  inv_fact[0] = T(1);
  for (int i = 1; i <= C::degree; ++i) inv_fact[i] = inv_fact[i - 1] / T(i);
  // Beyond +-2 |log(min normal)| the result is 0 or inf whatever x is: clamp first so n stays small
  // (this also maps +-inf to 0 / inf; NaN compares false and stays NaN).
  if constexpr (!Bounded) {
    const T bound = T(-2) * C::lo;
    x = x < -bound ? splat<T>(-bound) : x;
    x = x > bound ? splat<T>(bound) : x;
  }
  Vec<T> n;
  if constexpr (sizeof(T) == 4)
    n = bitcast<Vec<T>>(_mm512_roundscale_ps(bitcast<__m512>(x * T(1.4426950408889634)),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  else
    n = bitcast<Vec<T>>(_mm512_roundscale_pd(bitcast<__m512d>(x * T(1.4426950408889634074)),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  const Vec<T> r = (x - n * C::ln2_hi) - n * C::ln2_lo;
  Vec<T> p = splat<T>(inv_fact[C::degree]);
#pragma GCC unroll 16
  for (int i = C::degree; i >= 1; --i) p = p * r + inv_fact[i - 1];
  if constexpr (sizeof(T) == 4)
    return bitcast<Vec<T>>(_mm512_scalef_ps(bitcast<__m512>(p), bitcast<__m512>(n)));
  else
    return bitcast<Vec<T>>(_mm512_scalef_pd(bitcast<__m512d>(p), bitcast<__m512d>(n)));
}
#endif

template <typename T>
inline Vec<T> vexp(Vec<T> x) {
  using C = ExpConst<T>;
#if defined(__AVX512F__)
  return vexp_scalef<T>(x);  // exact overflow and gradual underflow (no flush to 0 on this path)
#else
  using U = typename VecTraits<T>::U;
  using UInt = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  const T log2e = T(1.4426950408889634073599);
  Vec<T> xc = x < C::lo ? splat<T>(C::lo) : x;  // NaN compares false and stays NaN
  xc = xc > C::hi ? splat<T>(C::hi) : xc;
  Vec<T> t = xc * log2e + C::round;
  Vec<T> n = t - C::round;
  Vec<T> r = (xc - n * C::ln2_hi) - n * C::ln2_lo;
  T inv_fact[C::degree + 1];  // 1 / i!, folded to constants by the compiler
  inv_fact[0] = T(1);
  for (int i = 1; i <= C::degree; ++i) inv_fact[i] = inv_fact[i - 1] / T(i);
  Vec<T> p = splat<T>(inv_fact[C::degree]);
#pragma GCC unroll 16
  for (int i = C::degree; i >= 1; --i) p = p * r + inv_fact[i - 1];  // Horner
  U ni = bitcast<U>(t) - bitcast<UInt>(C::round);  // n in the low bits (two's complement)
  U bits = (ni + C::bias) << C::shift;
  Vec<T> result = p * bitcast<Vec<T>>(bits);
  result = x < C::lo ? splat<T>(T(0)) : result;
  result = x > C::hi ? splat<T>(std::numeric_limits<T>::infinity()) : result;
  return result;
#endif
}

// sigmoid(z) = 1 / (1 + e) for z >= 0 and e / (1 + e) for z < 0, with e = exp(-|z|) in (0, 1]:
// no overflow for any z. Also returns e, which the losses reuse for softplus.
template <typename T>
inline Vec<T> vsigmoid(Vec<T> z, Vec<T>* e_out = nullptr) {
  Vec<T> a = z < 0 ? -z : z;
  Vec<T> e = vexp<T>(-a);
  Vec<T> r = T(1) / (T(1) + e);
  if (e_out) *e_out = e;
  return z >= 0 ? r : e * r;
}

// 1 / x. AVX-512: the 14-bit reciprocal estimate refined by Newton steps r <- r (2 - x r) (one for
// float, two for double: below 1 ulp of the division's error budget), several times cheaper than a
// division; elsewhere a division.
template <typename T>
inline Vec<T> vrecip(Vec<T> x) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    Vec<T> r = bitcast<Vec<T>>(_mm512_rcp14_ps(bitcast<__m512>(x)));
    return r * (T(2) - x * r);
  } else {
    Vec<T> r = bitcast<Vec<T>>(_mm512_rcp14_pd(bitcast<__m512d>(x)));
    r = r * (T(2) - x * r);
    return r * (T(2) - x * r);
  }
#else
  return T(1) / x;
#endif
}

// sigmoid(z) = 1 / (1 + exp(-z)) for the hidden layers: z is clamped to +-kSigmoidClamp first, so
// exp(-z) stays finite and 1 + exp(-z) never overflows. Below -kSigmoidClamp the result is 0 (the true
// value is under the smallest normal number, as vexp flushes); above, 1 (exactly its rounding).
// NaN stays NaN.
template <typename T> constexpr T kSigmoidClamp = sizeof(T) == 4 ? T(87) : T(707);

template <typename T>
inline Vec<T> vsigmoid_fast(Vec<T> z) {
#if defined(__AVX512F__)
  // vmax/vmin return their second operand when either is NaN: NaN stays NaN. The clamped value is in
  // vexp's range, so vexp skips its own clamp (25 -> 20 instructions).
  const Vec<T> lo = splat<T>(-kSigmoidClamp<T>), hi = splat<T>(kSigmoidClamp<T>);
  Vec<T> zc;
  if constexpr (sizeof(T) == 4)
    zc = bitcast<Vec<T>>(_mm512_min_ps(bitcast<__m512>(hi), _mm512_max_ps(bitcast<__m512>(lo), bitcast<__m512>(z))));
  else
    zc = bitcast<Vec<T>>(_mm512_min_pd(bitcast<__m512d>(hi), _mm512_max_pd(bitcast<__m512d>(lo), bitcast<__m512d>(z))));
  const Vec<T> h = vrecip<T>(T(1) + vexp_scalef<T, true>(-zc));
#else
  Vec<T> zc = z < -kSigmoidClamp<T> ? splat<T>(-kSigmoidClamp<T>) : z;
  zc = zc > kSigmoidClamp<T> ? splat<T>(kSigmoidClamp<T>) : zc;
  const Vec<T> h = vrecip<T>(T(1) + vexp<T>(-zc));
#endif
  return z < -kSigmoidClamp<T> ? Vec<T>{} : h;
}

// log1p(x) for x >= 0 (NaN stays NaN, +inf gives +inf): with u = 1 + x rounded, log1p(x) =
// log(u) * x / (u - 1), which cancels the rounding of u (and is x itself when u == 1). log(u) for
// u = 2^n m, m in [sqrt(1/2), sqrt(2)): n ln 2 + 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.1716,
// by its odd series (to s^9 for float, s^21 for double: truncation below 0.5 ulp).
template <typename T>
inline Vec<T> vlog1p_nonneg(Vec<T> x) {
  using U = typename VecTraits<T>::U;
  constexpr int mant = sizeof(T) == 4 ? 23 : 52;
  constexpr int terms = sizeof(T) == 4 ? 5 : 11;
  using UInt = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  const Vec<T> u = T(1) + x;
  // u = 2^n m with m in [1, 2), then moved to [sqrt(1/2), sqrt(2)).
  const U bits = bitcast<U>(u);
  const U expo = (bits >> mant) - UInt(sizeof(T) == 4 ? 127 : 1023);
  Vec<T> m = bitcast<Vec<T>>((bits & ((UInt(1) << mant) - 1)) | bitcast<UInt>(T(1)));
  Vec<T> nf = __builtin_convertvector(bitcast<typename VecTraits<T>::I>(expo), Vec<T>);
  const auto big = m > T(1.4142135623730951);
  m = big ? m * T(0.5) : m;
  nf = big ? nf + T(1) : nf;
  const Vec<T> s = (m - T(1)) * vrecip<T>(m + T(1)), s2 = s * s;
  Vec<T> poly = splat<T>(T(1) / T(2 * terms - 1));
#pragma GCC unroll 16
  for (int i = terms - 2; i >= 0; --i) poly = poly * s2 + T(1) / T(2 * i + 1);
  const Vec<T> log_u = nf * ExpConst<T>::ln2_hi + (nf * ExpConst<T>::ln2_lo + T(2) * s * poly);
  const Vec<T> um1 = u - T(1);
  Vec<T> r = um1 == 0 ? x : log_u * (x / (um1 == 0 ? splat<T>(T(1)) : um1));
  r = x == std::numeric_limits<T>::infinity() ? x : r;
  return r;
}

// One aligned vector stored non-temporally where the ISA has it (a plain store elsewhere): for output
// written once and not read again soon, the store skips the read of the line before it is written. A pass
// of such stores ends with stream_fence() before another thread reads them.
template <typename T> inline void stream_store(T* dst, Vec<T> v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) _mm512_stream_ps(reinterpret_cast<float*>(dst), bitcast<__m512>(v));
  else _mm512_stream_pd(reinterpret_cast<double*>(dst), bitcast<__m512d>(v));
#elif defined(__AVX2__)
  if constexpr (sizeof(T) == 4) _mm256_stream_ps(reinterpret_cast<float*>(dst), bitcast<__m256>(v));
  else _mm256_stream_pd(reinterpret_cast<double*>(dst), bitcast<__m256d>(v));
#else
  store<T>(dst, v);
#endif
}

// A long output row written piece by piece (put: s * x[0..n)) through a staging buffer in L1: every whole
// aligned vector of the row is streamed exactly once, only the row's first and last partial vectors get
// plain stores. (Streaming each short piece alone mixed plain and streaming stores on the lines where
// pieces meet: a 64-value piece of a float row ran at half the bandwidth of a 256-value one.)
template <typename T> class RowStreamer {
 public:
  static constexpr int64_t kCap = 2048;  // values staged (8 KiB float, 16 KiB double)
  explicit RowStreamer(T* dst) : dst_(dst) {}
  void put(T s, const T* x, int64_t n) {
    while (n > 0) {
      const int64_t take = std::min(n, kCap - fill_);
      for (int64_t j = 0; j < take; ++j) buf_[fill_ + j] = s * x[j];
      fill_ += take, x += take, n -= take;
      if (fill_ == kCap) flush(false);
    }
  }
  void finish() { flush(true); }

 private:
  // Writes the staged values from dst_[pos_]: plain stores up to the first aligned vector, then whole
  // aligned vectors; the remainder (fewer than a vector) is stored when `last`, else kept staged.
  void flush(bool last) {
    constexpr int W = kLanes<T>;
    int64_t j = 0;
    for (; j < fill_ && reinterpret_cast<uintptr_t>(dst_ + pos_ + j) % kVecBytes != 0; ++j) dst_[pos_ + j] = buf_[j];
    for (; j + W <= fill_; j += W) stream_store<T>(dst_ + pos_ + j, load<T>(buf_ + j));
    if (last) {
      for (; j < fill_; ++j) dst_[pos_ + j] = buf_[j];
    } else {
      std::copy(buf_ + j, buf_ + fill_, buf_);
    }
    pos_ += j;
    fill_ -= j;
  }
  T* dst_;
  int64_t pos_ = 0, fill_ = 0;  // values of the row written; values staged
  alignas(64) T buf_[kCap];
};
inline void stream_fence() {
#if defined(__AVX512F__) || defined(__AVX2__)
  _mm_sfence();
#endif
}

// Apply a vector function to n contiguous values in place; the tail goes through the same vector
// code (padded), so every element gets bit-identical treatment wherever it sits.
template <typename T, typename F>
inline void map_inplace(T* x, int64_t n, F f) {
  constexpr int W = kLanes<T>;
  int64_t i = 0;
  for (; i + W <= n; i += W) store<T>(x + i, f(load<T>(x + i)));
  if (i < n) {
    T tmp[W] = {};
    std::memcpy(tmp, x + i, sizeof(T) * (n - i));
    store<T>(tmp, f(load<T>(tmp)));
    std::memcpy(x + i, tmp, sizeof(T) * (n - i));
  }
}

}  // namespace mlpgrad::MLPGRAD_ISA
