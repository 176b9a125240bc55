// Run-time choice of instruction set for the FMA kernels (internal to csrc/cpu).
#pragma once

namespace cnnviz::detail {

/// The widest FMA instruction set a kernel may use on this CPU.
enum class Isa { avx512, avx2, generic };

/// AVX-512 (F + VL + FMA), else AVX2 + FMA, else the portable code; detected once per process.
/// Non-x86 or non-GCC/Clang builds always get ``generic``.
inline Isa fma_isa() {
  static const Isa value = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma")) {
      return Isa::avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
    return Isa::generic;
  }();
  return value;
}

/// The name the Python and C++ APIs report for an instruction set.
inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    default:
      return "generic";
  }
}

}  // namespace cnnviz::detail
