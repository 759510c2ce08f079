#include "if_node.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace onnx_snn {
namespace {

// Features per block: the block's potentials stay in L1 while the block runs
// through all time steps.
constexpr int64_t kBlock = 2048;
// Outputs at least this large are written with non-temporal stores: they do
// not fit in cache anyway, and skipping the read-for-ownership of every output
// line saves a third of the memory traffic.
constexpr int64_t kStreamBytes = int64_t{32} << 20;

// One element of the dynamics; returns the spike and updates v.
template <bool kHardReset>
inline float Step(float& v, float x, float threshold, float v_reset) {
  const float h = v + x;
  const bool fired = h >= threshold;
  const float spike = fired ? 1.0f : 0.0f;
  v = kHardReset ? (fired ? v_reset : h) : h - spike * threshold;
  return spike;
}

// One element of the burst / signed dynamics; returns the spikes k and updates v.
// The clamp is written with compares, so a NaN k stays NaN, as in numpy and Clip.
template <bool kHardReset>
inline float QuantizedStep(float& v, float x, const IFParams& p) {
  const float h = v + x;
  float k = std::floor(h / p.threshold);
  k = k < p.spikes_low ? p.spikes_low : (k > p.spikes_high ? p.spikes_high : k);
  v = kHardReset ? (k != 0.0f ? p.v_reset : h) : h - k * p.threshold;
  return k;
}

template <bool kHardReset>
void StepRow(float* v, const float* x, float* s, int64_t count, float threshold, float v_reset) {
  for (int64_t i = 0; i < count; ++i) s[i] = Step<kHardReset>(v[i], x[i], threshold, v_reset);
}

template <bool kHardReset>
void QuantizedRow(float* v, const float* x, float* s, int64_t count, const IFParams& p) {
  for (int64_t i = 0; i < count; ++i) s[i] = QuantizedStep<kHardReset>(v[i], x[i], p);
}

#if defined(__SSE2__)
// StepRow with the same arithmetic in SSE, storing spikes around the cache.
// The hard reset blends on the compare mask: (mask & v_reset) | (~mask & h).
template <bool kHardReset>
void StepRowStreaming(float* v, const float* x, float* s, int64_t count, float threshold,
                      float v_reset) {
  int64_t head = static_cast<int64_t>((16 - reinterpret_cast<uintptr_t>(s) % 16) % 16) / 4;
  if (reinterpret_cast<uintptr_t>(s) % 4 != 0 || head > count) head = count;
  StepRow<kHardReset>(v, x, s, head, threshold, v_reset);
  const __m128 theta = _mm_set1_ps(threshold);
  const __m128 reset = _mm_set1_ps(v_reset);
  const __m128 one = _mm_set1_ps(1.0f);
  int64_t i = head;
  for (; i + 4 <= count; i += 4) {
    const __m128 h = _mm_add_ps(_mm_loadu_ps(v + i), _mm_loadu_ps(x + i));
    const __m128 fired = _mm_cmpge_ps(h, theta);  // all ones where h >= θ (false for NaN)
    const __m128 spike = _mm_and_ps(fired, one);
    _mm_stream_ps(s + i, spike);
    const __m128 next = kHardReset
        ? _mm_or_ps(_mm_and_ps(fired, reset), _mm_andnot_ps(fired, h))
        : _mm_sub_ps(h, _mm_mul_ps(spike, theta));
    _mm_storeu_ps(v + i, next);
  }
  StepRow<kHardReset>(v + i, x + i, s + i, count - i, threshold, v_reset);
}
#endif

// kState: the potentials start from v_in and end in v_out, where given. Without it
// both go unused, and the loops compile as they always have: the extra pointers
// would change their register allocation, and with it which NaN an addition of two
// NaNs returns (x86 returns its first operand's).
template <bool kHardReset, bool kStream, bool kQuantized, bool kState>
void RunBlocks(const IFParams& p, const float* x, int64_t x_stride, float* s, int64_t steps,
               int64_t features, int64_t begin, int64_t end, const float* v_in, float* v_out) {
  float v[kBlock];
  for (int64_t first = begin; first < end; first += kBlock) {
    const int64_t count = std::min(kBlock, end - first);
    if (kState && v_in != nullptr) {
      std::copy(v_in + first, v_in + first + count, v);
    } else {
      std::fill(v, v + count, p.v_start);
    }
    for (int64_t t = 0; t < steps; ++t) {
      const float* xt = x + t * x_stride + first;
      float* st = s + t * features + first;
      if (kQuantized) {
        QuantizedRow<kHardReset>(v, xt, st, count, p);
        continue;
      }
#if defined(__SSE2__)
      if (kStream) {
        StepRowStreaming<kHardReset>(v, xt, st, count, p.threshold, p.v_reset);
        continue;
      }
#endif
      StepRow<kHardReset>(v, xt, st, count, p.threshold, p.v_reset);
    }
    if (kState && v_out != nullptr) std::copy(v, v + count, v_out + first);
  }
#if defined(__SSE2__)
  if (kStream && !kQuantized) _mm_sfence();  // make the streamed spikes visible to other threads
#endif
}

// RunBlocks for the params' dynamics, with or without kState.
template <bool kState>
void RunDynamics(const IFParams& params, bool stream, const float* x, int64_t x_stride, float* s,
                 int64_t steps, int64_t features, int64_t begin, int64_t end, const float* v_in,
                 float* v_out) {
  const auto run =
      params.quantized
          ? (params.hard_reset ? RunBlocks<true, false, true, kState>
                               : RunBlocks<false, false, true, kState>)
      : params.hard_reset
          ? (stream ? RunBlocks<true, true, false, kState> : RunBlocks<true, false, false, kState>)
          : (stream ? RunBlocks<false, true, false, kState>
                    : RunBlocks<false, false, false, kState>);
  run(params, x, x_stride, s, steps, features, begin, end, v_in, v_out);
}

}  // namespace

void RunIF(const IFParams& params, const float* x, int64_t x_stride, float* s, int64_t steps,
           int64_t features, int64_t begin, int64_t end, const float* v_in, float* v_out) {
  int64_t bytes = 0;  // an output too large to count is certainly large enough to stream
  const bool stream = !CheckedMul(steps, features, &bytes) ||
                      !CheckedMul(bytes, static_cast<int64_t>(sizeof(float)), &bytes) ||
                      bytes >= kStreamBytes;
  const auto run = v_in != nullptr || v_out != nullptr ? RunDynamics<true> : RunDynamics<false>;
  run(params, stream, x, x_stride, s, steps, features, begin, end, v_in, v_out);
}

}  // namespace onnx_snn
