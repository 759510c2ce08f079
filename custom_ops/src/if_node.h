// The integrate-and-fire dynamics of IFNode, on raw float32 buffers.
//
// This is the C++ twin of onnx_snn/ops/dynamics.py::if_step; the tests check
// that the two (and the ONNX function body) agree bit for bit. Per element:
//
//     h = v + x_t
//     s = (h >= threshold) ? 1 : 0
//     v = h - s * threshold                  (soft reset)
//     v = h * (1 - s) + s * v_reset          (hard reset)
//
// Keep the operations and their order exactly as written: float32 arithmetic
// without contraction into fused multiply-adds (the build passes
// -ffp-contract=off) gives the same bits as numpy and onnxruntime's Add/Mul.
#pragma once

#include <cstdint>

namespace onnx_snn {

struct IFParams {
  float threshold;  // v_threshold
  float v_reset;    // used by the hard reset only
  float v_start;    // initial potential: v_init * v_threshold
  bool hard_reset;
};

// Runs features [begin, end) through the neuron for all steps, writing 0/1
// spikes [steps, features] (row-major) to s. Step t reads x + t * x_stride:
// x_stride = features for an input [steps, features], 0 for one row shown at
// every step.
void RunIF(const IFParams& params, const float* x, int64_t x_stride, float* s, int64_t steps,
           int64_t features, int64_t begin, int64_t end);

}  // namespace onnx_snn
