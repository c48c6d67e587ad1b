// The engine compiled for one instruction-set level; CMake gives this file its own flags.
#define MLPGRAD_ISA avx512
#include "network.hpp"

namespace mlpgrad::avx512 {
template double run<float>(const Network<float>&, Head, const Batch<float>&, Reduction, const Gradients<float>*,
                           float*, Mode, int, const Interrupt*);
template double run<double>(const Network<double>&, Head, const Batch<double>&, Reduction,
                            const Gradients<double>*, double*, Mode, int, const Interrupt*);
}  // namespace mlpgrad::avx512
