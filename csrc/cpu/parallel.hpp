// Minimal fork-join helper for the CPU kernels: split [0, n) into contiguous chunks, one per
// thread, and the thread-count policy.
//
// Thread policy for num_threads = 0 (the rule, applied per kernel by the kind of work it does):
// - Memory-bound kernels (ReLU backward, pooling, unpool, im2col / col2im, occlusion): every
//   logical CPU (std::thread::hardware_concurrency). They wait on memory, and SMT siblings keep
//   more loads in flight.
// - Compute-bound kernels (the Gram forward and backward, FMA-bound GEMMs): one thread per
//   physical core, counted once from Linux sysfs (distinct
//   /sys/devices/system/cpu/cpuN/topology/thread_siblings_list among the CPUs this process may
//   run on). Two SMT siblings share one core's FMA units, so a second thread on a core adds no
//   multiply-add throughput and only splits the cache and adds a join. Where the topology cannot
//   be read (non-Linux, masked sysfs) it falls back to the logical count.
// An explicit num_threads > 0 is always used as given (capped by the work available).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

namespace cnnviz::cpu {

/// Fewest elements worth a thread of their own: below this, spawning and joining a thread (tens of
/// microseconds) costs more than a memory-bound elementwise kernel saves.
inline constexpr std::int64_t kMinElementsPerThread = std::int64_t{1} << 16;

/// What a kernel's time goes to; picks its default thread count (see the policy above).
enum class Work { memory, compute };

/// Logical CPUs (the hardware concurrency, at least 1).
inline int logical_cpus() {
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

/// Physical cores among the CPUs this process may run on, read once from sysfs (distinct
/// thread_siblings_list); the logical count when the topology cannot be read.
inline int physical_cores() {
  static const int value = [] {
    const int logical = logical_cpus();
#if defined(__linux__)
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    const bool have_mask = sched_getaffinity(0, sizeof allowed, &allowed) == 0;
    std::set<std::string> cores;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (have_mask && !CPU_ISSET(cpu, &allowed)) continue;
      if (!have_mask && cpu >= logical) break;
      std::ifstream in("/sys/devices/system/cpu/cpu" + std::to_string(cpu) +
                       "/topology/thread_siblings_list");
      std::string siblings;
      if (!(in >> siblings)) return logical;  // topology hidden: no basis to go lower
      cores.insert(siblings);
    }
    if (!cores.empty()) return std::clamp(static_cast<int>(cores.size()), 1, logical);
#endif
    return logical;
  }();
  return value;
}

/// Threads used for num_threads = 0 by a kernel doing `work`.
inline int default_threads(Work work) {
  return work == Work::compute ? physical_cores() : logical_cpus();
}

/// Threads to use for `requested` (0 = default_threads(work), at least 1).
inline int resolve_num_threads(int requested, Work work = Work::memory) {
  if (requested < 0) {
    throw std::invalid_argument(
        "cnnviz: num_threads must be >= 0 (0 = all hardware threads), got " +
        std::to_string(requested));
  }
  if (requested > 0) return requested;
  return default_threads(work);
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

/// Calls fn(item, worker, state) for every item in [0, count), on at most `num_threads` workers (0
/// = all hardware threads; worker in [0, workers), the calling thread is worker 0) that take the
/// next item from a shared counter: when the OS deschedules one worker (a loaded machine), the
/// others take its share instead of waiting for it. `make_state(worker)` is called once per
/// worker that takes an item, on that worker, before its first item, for per-worker scratch
/// (passed to fn as its third argument).
///
/// The call returns once every item is done, without waiting for a worker that took none: the
/// helper threads are detached, and one that starts after the items are gone (its core was busy)
/// only reads the shared counter, kept alive by its own reference, and exits. So a busy core costs
/// at most the items its thread holds, never a wait for that thread to be scheduled at all.
/// Rethrows the first exception once every item is done; after an exception the remaining items
/// are skipped.
template <class MakeState, class Fn>
void parallel_dynamic(std::int64_t count, int num_threads, MakeState&& make_state, Fn&& fn) {
  const int requested = resolve_num_threads(num_threads);
  if (count <= 0) return;
  const int workers = static_cast<int>(std::min<std::int64_t>(requested, count));
  // What a late helper thread may touch: owned jointly, outlives this call if need be.
  struct Shared {
    explicit Shared(std::int64_t n) : count(n) {}
    const std::int64_t count;
    std::atomic<std::int64_t> next{0}, done{0};
    std::atomic<bool> failed{false};
    std::mutex mutex;
    std::condition_variable finished;
  };
  const auto shared = std::make_shared<Shared>(count);
  std::vector<std::exception_ptr> errors(workers);
  // Runs `item` (already taken) and the items this worker takes after it. The caller's objects
  // (fn, make_state, errors) are only touched while this worker holds an item not yet done, so
  // they are alive: the call does not return before that item is done.
  const auto run = [&](int worker, std::int64_t item, Shared& sh) {
    std::optional<decltype(make_state(worker))> state;
    for (;;) {
      if (!sh.failed.load(std::memory_order_relaxed)) {
        try {
          if (!state) state.emplace(make_state(worker));
          fn(item, worker, *state);
        } catch (...) {
          if (!errors[worker]) errors[worker] = std::current_exception();
          sh.failed.store(true, std::memory_order_relaxed);
        }
      }
      // Take the next item before marking this one done, so the caller's objects stay alive
      // for it; once this one is marked done they may not be touched again unless next is real.
      const std::int64_t next = sh.next.fetch_add(1, std::memory_order_relaxed);
      if (sh.done.fetch_add(1, std::memory_order_acq_rel) + 1 == sh.count) {
        const std::lock_guard<std::mutex> lock(sh.mutex);
        sh.finished.notify_all();
      }
      if (next >= sh.count) return;
      item = next;
    }
  };
  for (int t = 1; t < workers; ++t) {
    try {
      std::thread([shared, run_ptr = &run, t] {
        const std::int64_t item = shared->next.fetch_add(1, std::memory_order_relaxed);
        if (item < shared->count) (*run_ptr)(t, item, *shared);  // else: touch nothing more
      }).detach();
    } catch (const std::system_error&) {
      break;  // the OS refused another thread: the others take its items
    }
  }
  const std::int64_t first = shared->next.fetch_add(1, std::memory_order_relaxed);
  if (first < count) run(0, first, *shared);
  if (shared->done.load(std::memory_order_acquire) < count) {
    std::unique_lock<std::mutex> lock(shared->mutex);
    shared->finished.wait(
        lock, [&] { return shared->done.load(std::memory_order_acquire) == shared->count; });
  }
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace cnnviz::cpu
