// Non-temporal ("streaming") stores for kernels whose output is far larger than the cache. A plain
// store first reads the destination line into the cache (read-for-ownership), so a kernel that
// writes W bytes moves 2 W; streaming stores write whole lines straight to memory. Kernels that
// produce their output in pieces compute each piece into a small cache-resident buffer and hand
// it to stream_copy, which streams every whole aligned 64-byte line of the destination (plain
// stores for a ragged head and tail). SSE2 only (the x86-64 baseline); elsewhere a memcpy.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define CNNVIZ_HAS_STREAM 1
#endif

namespace cnnviz::cpu {

/// Output size from which kernels bypass the cache: well above a core's L2, where the written data
/// could not be read back from the cache anyway.
inline constexpr std::int64_t kStreamBytes = std::int64_t{16} << 20;

/// dst[0, bytes) = src[0, bytes), streaming every whole 64-byte line of dst. Call stream_fence()
/// before another thread may read dst (e.g. before a parallel_for chunk returns).
inline void stream_copy(void* dst, const void* src, std::size_t bytes) {
#if CNNVIZ_HAS_STREAM
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  const std::size_t head =
      std::min<std::size_t>(bytes, (64 - (reinterpret_cast<std::uintptr_t>(d) & 63)) & 63);
  std::memcpy(d, s, head);
  std::size_t i = head;
  for (; i + 64 <= bytes; i += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
  }
  std::memcpy(d + i, s + i, bytes - i);
#else
  std::memcpy(dst, src, bytes);
#endif
}

/// Orders the streaming stores of this thread before its later stores (the join's release).
inline void stream_fence() {
#if CNNVIZ_HAS_STREAM
  _mm_sfence();
#endif
}

}  // namespace cnnviz::cpu
