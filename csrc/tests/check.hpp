// A minimal check harness shared by the C++ test programs: CHECK counts failures instead of
// aborting, so that one run reports every broken case.
#pragma once

#include <cstdint>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

namespace cnnviz::test {

inline int g_failures = 0;

template <class Fn>
bool throws_invalid_argument(Fn&& fn) {
  try {
    fn();
  } catch (const std::invalid_argument&) {
    return true;
  }
  return false;
}

/// ``count`` standard-normal floats, reproducible from ``seed``.
inline std::vector<float> random_values(std::int64_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(static_cast<std::size_t>(count));
  for (float& x : v) x = dist(rng);
  return v;
}

/// Prints the summary and returns the exit status of a test program.
inline int finish(const char* what) {
  if (g_failures != 0) {
    std::fprintf(stderr, "%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("all %s tests passed\n", what);
  return 0;
}

}  // namespace cnnviz::test

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++cnnviz::test::g_failures;                                                   \
    }                                                                               \
  } while (0)
