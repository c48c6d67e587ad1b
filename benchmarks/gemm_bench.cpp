// Single-thread GFLOP/s of the engine's matrix product (cpp/src/gemm.hpp) on given shapes, for tuning
// the micro-kernel and its blocking without Python in the way. Build (from the repository root):
//   g++ -O3 -std=c++17 -fno-math-errno -ffp-contract=fast -mavx512f -mavx512dq -mavx512bw -mavx512vl \
//       -mavx2 -mfma -Icpp/include -Icpp/src benchmarks/gemm_bench.cpp -o /tmp/gemm_bench
//   /tmp/gemm_bench M N K [M N K ...]        (default: a few of the benchmark configs' products)
// Each shape: C (M, N) = A (M, K) @ B (K, N), B packed once as full-K panels (as the engine does with
// weights), A packed by gemm(); the median of 9 timed runs after 2 untimed ones.
#define MLPGRAD_ISA avx512
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "gemm.hpp"

using namespace mlpgrad::avx512;

int main(int argc, char** argv) {
  std::vector<int64_t> shapes = {240, 256, 784, 240, 256, 256, 240, 784, 256, 1024, 1024, 1024, 2048, 2048, 2048};
  if (argc > 1) {
    shapes.clear();
    for (int i = 1; i < argc; ++i) shapes.push_back(std::atoll(argv[i]));
  }
  for (size_t s = 0; s + 2 < shapes.size(); s += 3) {
    const int64_t m = shapes[s], n = shapes[s + 1], k = shapes[s + 2];
    std::vector<float> A(m * k), B(k * n), C(m * n), Bp(panels_size<float>(k, n) + 64);
    std::vector<float> scratch(GemmScratch<float>::size + 64);
    for (auto& x : A) x = float(std::rand()) / RAND_MAX - 0.5f;
    for (auto& x : B) x = float(std::rand()) / RAND_MAX - 0.5f;
    pack_b_panels<float>(k, n, B.data(), n, 1, Bp.data());
    GemmScratch<float> gs(scratch.data());
    const int64_t reps = std::max<int64_t>(1, int64_t(2e8 / (2.0 * m * n * k)));
    std::vector<double> t;
    for (int r = 0; r < 11; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < reps; ++i)
        gemm<float>({C.data(), n}, false, {A.data(), k, 1}, Bp.data(), {nullptr, 0, 0}, m, n, k, gs);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
      if (r >= 2) t.push_back(dt);
    }
    std::sort(t.begin(), t.end());
    std::printf("%6lld x %6lld x %6lld: %8.1f us  %6.1f GFLOP/s\n", (long long)m, (long long)n, (long long)k,
                t[t.size() / 2] * 1e6, 2.0 * m * n * k / t[t.size() / 2] * 1e-9);
  }
}
