// A minimal check harness shared by the C++ test programs: CHECK counts failures instead of
// aborting, so that one run reports every broken case.
#pragma once

#include <cstdio>
#include <stdexcept>

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
