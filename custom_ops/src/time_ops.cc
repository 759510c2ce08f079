#include "time_ops.h"

#include <algorithm>

namespace onnx_snn {
namespace {

// Features per block: the block's running sums stay in L1 through all time steps.
constexpr int64_t kBlock = 2048;

template <bool kMean>
void RunningSums(const float* x, float* y, int64_t steps, int64_t features, int64_t begin,
                 int64_t end) {
  float sum[kBlock];
  for (int64_t first = begin; first < end; first += kBlock) {
    const int64_t count = std::min(kBlock, end - first);
    float steps_so_far = 0.0f;
    for (int64_t t = 0; t < steps; ++t) {
      const float* xt = x + t * features + first;
      float* yt = y + t * features + first;
      steps_so_far = steps_so_far + 1.0f;
      if (t == 0) {
        std::copy(xt, xt + count, sum);
      } else {
        for (int64_t i = 0; i < count; ++i) sum[i] = sum[i] + xt[i];
      }
      for (int64_t i = 0; i < count; ++i) yt[i] = kMean ? sum[i] / steps_so_far : sum[i];
    }
  }
}

template <bool kScaled>
void Differences(const float* x, float* y, int64_t steps, int64_t features, int64_t begin,
                 int64_t end) {
  float steps_so_far = 0.0f;  // c_t, and c_{t-1} before it is updated
  for (int64_t t = 0; t < steps; ++t) {
    const float previous_count = steps_so_far;
    steps_so_far = steps_so_far + 1.0f;
    const float* xt = x + t * features;
    float* yt = y + t * features;
    if (t == 0) {  // the step before the first is 0
      for (int64_t i = begin; i < end; ++i) {
        yt[i] = (kScaled ? xt[i] * steps_so_far : xt[i]) - 0.0f;
      }
      continue;
    }
    const float* before = xt - features;
    for (int64_t i = begin; i < end; ++i) {
      yt[i] = kScaled ? xt[i] * steps_so_far - before[i] * previous_count : xt[i] - before[i];
    }
  }
}

}  // namespace

void RunTimeOp(TimeOp op, const float* x, float* y, int64_t steps, int64_t features,
               int64_t begin, int64_t end) {
  switch (op) {
    case TimeOp::kRunningSum:
      return RunningSums<false>(x, y, steps, features, begin, end);
    case TimeOp::kRunningMean:
      return RunningSums<true>(x, y, steps, features, begin, end);
    case TimeOp::kDifference:
      return Differences<false>(x, y, steps, features, begin, end);
    case TimeOp::kStepDifference:
      return Differences<true>(x, y, steps, features, begin, end);
  }
}

}  // namespace onnx_snn
