// The engine compiled for one instruction-set level; CMake gives this file its own flags.
#define MLPGRAD_ISA avx512
#include "isa_engine.hpp"
