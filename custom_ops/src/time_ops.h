// The time-difference bookkeeping of onnx_snn's time-difference ops
// (docs/semantics.md, "Time-difference ops"), on raw float32 buffers [steps, features]
// (row-major, one row per time step).
//
// Each op is the C++ twin of its ONNX function body (onnx_snn/ops/time_ops.py),
// and the tests check that the two agree bit for bit. Per feature, with
// c_t = 1 + 1 + ... + 1 (t ones, summed in float32, like the body's CumSum of ones):
//
//     RunningSum:      y_1 = x_1,  y_t = y_{t-1} + x_t          (CumSum over time)
//     RunningMean:     the running sum, divided by c_t
//     Difference:      y_t = x_t - x_{t-1}                      (x_0 = 0)
//     StepDifference:  y_t = x_t * c_t - x_{t-1} * c_{t-1}      (x_0 * c_0 = 0)
//
// Keep the operations and their order exactly as written (the build passes
// -ffp-contract=off, so no multiply-subtract is fused).
#pragma once

#include <cstdint>

namespace onnx_snn {

enum class TimeOp { kRunningSum, kRunningMean, kDifference, kStepDifference };

// Computes features [begin, end) of y [steps, features] from x [steps, features].
void RunTimeOp(TimeOp op, const float* x, float* y, int64_t steps, int64_t features,
               int64_t begin, int64_t end);

}  // namespace onnx_snn
