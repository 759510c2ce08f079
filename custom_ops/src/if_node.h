// The integrate-and-fire dynamics of IFNode, on raw float32 buffers.
//
// This is the C++ twin of onnx_snn/ops/dynamics.py::if_step; the tests check
// that the two (and the ONNX function body) agree bit for bit. Per element:
//
//     h = v + x_t
//     s = (h >= threshold) ? 1 : 0
//     v = h - s * threshold                  (soft reset)
//     v = (h >= threshold) ? v_reset : h     (hard reset: a select)
//
// A burst or signed neuron (quantized) fires k spikes a step instead
// (docs/semantics.md, "Burst and signed neurons"):
//
//     k = clamp(floor(h / threshold), spikes_low, spikes_high)   (NaN stays NaN)
//     v = h - k * threshold                  (soft reset)
//     v = (k != 0) ? v_reset : h             (hard reset)
//
// Keep the operations and their order exactly as written: float32 arithmetic
// without contraction into fused multiply-adds (the build passes
// -ffp-contract=off) gives the same bits as numpy and onnxruntime's Add/Mul.
// The hard reset is a select, like the function body's Where: the arithmetic
// form h * (1 - s) + s * v_reset would turn h = +inf into NaN (inf * 0).
#pragma once

#include <cstdint>

namespace onnx_snn {

struct IFParams {
  float threshold;  // v_threshold
  float v_reset;    // used by the hard reset only
  float v_start;    // initial potential where no v_in is given: v_init * v_threshold,
                    // or the one value of an IFNode's V
  bool hard_reset;
  bool quantized;     // a burst or signed neuron: max_spikes > 1 or signed
  float spikes_low;   // quantized only: -max_spikes if signed, else 0
  float spikes_high;  // quantized only: max_spikes
};

// Runs features [begin, end) through the neuron for all steps, writing the
// spikes [steps, features] (row-major) to s. Step t reads x + t * x_stride:
// x_stride = features for an input [steps, features], 0 for one row shown at
// every step. steps * features * sizeof(float) may be anything (the caller
// checks the sizes it allocates); the function does no other size arithmetic.
// Feature i's potential starts at v_in[i], or at params.v_start where v_in is null;
// unless v_out is null, v_out[i] receives it after the last step.
void RunIF(const IFParams& params, const float* x, int64_t x_stride, float* s, int64_t steps,
           int64_t features, int64_t begin, int64_t end, const float* v_in, float* v_out);

// *product = a * b; false (and *product unspecified) when that overflows int64.
inline bool CheckedMul(int64_t a, int64_t b, int64_t* product) {
#if defined(__GNUC__) || defined(__clang__)
  return !__builtin_mul_overflow(a, b, product);
#else
  if (a != 0 && b != 0) {
    const bool negative = (a < 0) != (b < 0);
    const uint64_t ua = a < 0 ? 0 - static_cast<uint64_t>(a) : static_cast<uint64_t>(a);
    const uint64_t ub = b < 0 ? 0 - static_cast<uint64_t>(b) : static_cast<uint64_t>(b);
    const uint64_t limit = negative ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
    if (ua > limit / ub) return false;
  }
  *product = static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  return true;
#endif
}

}  // namespace onnx_snn
