// Minimal fork-join helper for the CPU kernels: split [0, n) into contiguous chunks, one per
// thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace cnnviz::cpu {

/// Fewest elements worth a thread of their own: below this, spawning and joining a thread (tens of
/// microseconds) costs more than a memory-bound elementwise kernel saves.
inline constexpr std::int64_t kMinElementsPerThread = std::int64_t{1} << 16;

/// Threads to use for `requested` (0 = the hardware concurrency, at least 1).
inline int resolve_num_threads(int requested) {
  if (requested < 0) {
    throw std::invalid_argument(
        "cnnviz: num_threads must be >= 0 (0 = all hardware threads), got " +
        std::to_string(requested));
  }
  if (requested > 0) return requested;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

/// Calls fn(begin, end) on disjoint contiguous chunks that cover [0, n), on at most `num_threads`
/// threads (0 = all hardware threads) with at least `min_per_thread` elements each; the calling
/// thread runs the first chunk. Chunk starts are multiples of 16 elements so that threads writing
/// float outputs never share a 64-byte cache line. Rethrows the first exception a chunk threw,
/// once all threads have joined.
template <class Fn>
void parallel_for(std::int64_t n, int num_threads, Fn&& fn,
                  std::int64_t min_per_thread = kMinElementsPerThread) {
  const int requested = resolve_num_threads(num_threads);
  if (n <= 0) return;
  const std::int64_t by_size =
      std::max<std::int64_t>(1, n / std::max<std::int64_t>(1, min_per_thread));
  const int threads = static_cast<int>(std::min<std::int64_t>(requested, by_size));
  if (threads == 1) {
    fn(std::int64_t{0}, n);
    return;
  }
  constexpr std::int64_t kAlign = 16;
  const std::int64_t chunk = ((n + threads - 1) / threads + kAlign - 1) / kAlign * kAlign;
  std::vector<std::exception_ptr> errors(threads);
  auto run_chunk = [&](int t) {
    const std::int64_t begin = t * chunk;
    const std::int64_t end = std::min(n, begin + chunk);
    if (begin >= end) return;
    try {
      fn(begin, end);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(threads - 1);
  int spawned = 1;
  for (; spawned < threads; ++spawned) {
    try {
      workers.emplace_back(run_chunk, spawned);
    } catch (const std::system_error&) {
      break;  // the OS refused another thread: the chunks left run on this one below
    }
  }
  for (int t = spawned; t < threads; ++t) run_chunk(t);
  run_chunk(0);
  for (std::thread& w : workers) w.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace cnnviz::cpu
