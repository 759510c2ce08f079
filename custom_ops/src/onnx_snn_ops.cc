// onnxruntime custom-op library: the native kernel of onnx_snn::IFNode.
//
// Register it with RegisterCustomOpsLibrary (C/C++), RegisterCustomOpLibraryV2
// (C#), registerCustomOpLibrary (Java) or SessionOptions.register_custom_ops_library
// (Python); onnxruntime then runs this kernel instead of the op's ONNX function.
//
// IFNode(X: float32, T: int64 scalar) -> S: float32 0/1 spikes [T*N, ...].
// Attributes: v_threshold, v_reset, v_init (a fraction of v_threshold), hard_reset,
// broadcast_input (0: X is [T*N, ...], one slice per step; 1: X is [S, N, ...]
// with S = 1, the same input at every step, or S = T).
//
// Only the C API is used, through a version negotiated with the running
// onnxruntime: min(the headers' ORT_API_VERSION, the runtime's), so one build
// loads on older releases too (down to kMinApiVersion).
#include <onnxruntime_c_api.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "if_node.h"

namespace {

constexpr const char* kDomain = "onnx_snn";
constexpr const char* kOpType = "IFNode";
// CreateKernelV2/KernelComputeV2 (errors as statuses) arrived in API 16.
constexpr uint32_t kMinApiVersion = 16;
// KernelContext_ParallelFor arrived in API 17; older runtimes run serially.
constexpr uint32_t kParallelForApiVersion = 17;
// Features per parallel task: enough work per task to amortise scheduling.
constexpr int64_t kTaskFeatures = 2048;

const OrtApi* g_api = nullptr;
uint32_t g_api_version = 0;

OrtStatus* Fail(const std::string& message) {
  return g_api->CreateStatus(ORT_INVALID_ARGUMENT, (std::string(kOpType) + ": " + message).c_str());
}

// Evaluates an OrtStatus* expression and returns it from the caller on error.
#define RETURN_IF_ERROR(expr)               \
  do {                                      \
    OrtStatus* status_ = (expr);            \
    if (status_ != nullptr) return status_; \
  } while (0)

struct Kernel {
  onnx_snn::IFParams params;
  bool broadcast_input;
};

OrtStatus* ReadFloat(const OrtKernelInfo* info, const char* name, float* out) {
  OrtStatus* status = g_api->KernelInfoGetAttribute_float(info, name, out);
  if (status == nullptr) return nullptr;
  g_api->ReleaseStatus(status);
  return Fail(std::string("missing float attribute '") + name + "'");
}

OrtStatus* ReadInt(const OrtKernelInfo* info, const char* name, int64_t* out) {
  OrtStatus* status = g_api->KernelInfoGetAttribute_int64(info, name, out);
  if (status == nullptr) return nullptr;
  g_api->ReleaseStatus(status);
  return Fail(std::string("missing int attribute '") + name + "'");
}

OrtStatus* ORT_API_CALL CreateKernel(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo* info,
                                     void** kernel) {
  float threshold = 0.0f, v_reset = 0.0f, v_init = 0.0f;
  int64_t hard_reset = 0, broadcast_input = 0;
  RETURN_IF_ERROR(ReadFloat(info, "v_threshold", &threshold));
  RETURN_IF_ERROR(ReadFloat(info, "v_reset", &v_reset));
  RETURN_IF_ERROR(ReadFloat(info, "v_init", &v_init));
  RETURN_IF_ERROR(ReadInt(info, "hard_reset", &hard_reset));
  RETURN_IF_ERROR(ReadInt(info, "broadcast_input", &broadcast_input));
  // The same float32 product as the function body's Mul(v_init, v_threshold).
  const float v_start = v_init * threshold;
  *kernel = new Kernel{{threshold, v_reset, v_start, hard_reset != 0}, broadcast_input != 0};
  return nullptr;
}

struct Task {
  const onnx_snn::IFParams* params;
  const float* x;
  int64_t x_stride;
  float* s;
  int64_t steps;
  int64_t features;
};

void RunTask(void* data, size_t index) {
  const Task& task = *static_cast<const Task*>(data);
  const int64_t begin = static_cast<int64_t>(index) * kTaskFeatures;
  const int64_t end = std::min(task.features, begin + kTaskFeatures);
  onnx_snn::RunIF(*task.params, task.x, task.x_stride, task.s, task.steps, task.features, begin,
                  end);
}

OrtStatus* ReadSteps(const OrtValue* value, int64_t* steps) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorTypeAndShape(value, &info));
  size_t count = 0;
  OrtStatus* status = g_api->GetTensorShapeElementCount(info, &count);
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  RETURN_IF_ERROR(status);
  if (count != 1) return Fail("input T must hold one value, got " + std::to_string(count));
  void* data = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorMutableData(const_cast<OrtValue*>(value), &data));
  *steps = *static_cast<const int64_t*>(data);
  return nullptr;
}

OrtStatus* ORT_API_CALL Compute(void* kernel, OrtKernelContext* context) {
  const auto& params = static_cast<const Kernel*>(kernel)->params;
  const bool broadcast = static_cast<const Kernel*>(kernel)->broadcast_input;
  const OrtValue* x_value = nullptr;
  const OrtValue* t_value = nullptr;
  RETURN_IF_ERROR(g_api->KernelContext_GetInput(context, 0, &x_value));
  RETURN_IF_ERROR(g_api->KernelContext_GetInput(context, 1, &t_value));
  int64_t steps = 0;
  RETURN_IF_ERROR(ReadSteps(t_value, &steps));

  OrtTensorTypeAndShapeInfo* info = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorTypeAndShape(x_value, &info));
  size_t rank = 0;
  size_t count = 0;
  OrtStatus* status = g_api->GetDimensionsCount(info, &rank);
  std::vector<int64_t> shape(rank);
  if (status == nullptr) status = g_api->GetDimensions(info, shape.data(), rank);
  if (status == nullptr) status = g_api->GetTensorShapeElementCount(info, &count);
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  RETURN_IF_ERROR(status);
  const int64_t elements = static_cast<int64_t>(count);
  if (steps < 1) return Fail("T must be at least 1, got " + std::to_string(steps));
  // Spikes are [steps, features]; step t reads X at t * x_stride.
  int64_t features = 0;
  int64_t x_stride = 0;
  if (broadcast) {
    if (rank < 2) return Fail("X must be [S, N, ...] with broadcast_input = 1");
    const int64_t x_steps = shape[0];
    if (x_steps != 1 && x_steps != steps) {
      return Fail("X holds " + std::to_string(x_steps) + " steps, expected 1 or T = " +
                  std::to_string(steps));
    }
    features = elements / x_steps;
    x_stride = x_steps == 1 ? 0 : features;
    shape.erase(shape.begin());
    shape[0] *= steps;
  } else {
    if (elements % steps != 0) {
      return Fail("X has " + std::to_string(elements) + " elements, not a multiple of T = " +
                  std::to_string(steps));
    }
    features = elements / steps;
    x_stride = features;
  }

  OrtValue* s_value = nullptr;
  RETURN_IF_ERROR(
      g_api->KernelContext_GetOutput(context, 0, shape.data(), shape.size(), &s_value));
  if (elements == 0) return nullptr;
  void* x_data = nullptr;
  void* s_data = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorMutableData(const_cast<OrtValue*>(x_value), &x_data));
  RETURN_IF_ERROR(g_api->GetTensorMutableData(s_value, &s_data));

  Task task{&params, static_cast<const float*>(x_data), x_stride, static_cast<float*>(s_data),
            steps, features};
  const size_t tasks = static_cast<size_t>((task.features + kTaskFeatures - 1) / kTaskFeatures);
  if (tasks > 1 && g_api_version >= kParallelForApiVersion) {
    RETURN_IF_ERROR(g_api->KernelContext_ParallelFor(context, RunTask, tasks, 0, &task));
  } else {
    for (size_t index = 0; index < tasks; ++index) RunTask(&task, index);
  }
  return nullptr;
}

void ORT_API_CALL Destroy(void* kernel) { delete static_cast<Kernel*>(kernel); }

const char* ORT_API_CALL Name(const OrtCustomOp*) { return kOpType; }
const char* ORT_API_CALL Provider(const OrtCustomOp*) { return "CPUExecutionProvider"; }
size_t ORT_API_CALL InputCount(const OrtCustomOp*) { return 2; }
size_t ORT_API_CALL OutputCount(const OrtCustomOp*) { return 1; }
ONNXTensorElementDataType ORT_API_CALL InputType(const OrtCustomOp*, size_t index) {
  return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
}
ONNXTensorElementDataType ORT_API_CALL OutputType(const OrtCustomOp*, size_t) {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
OrtCustomOpInputOutputCharacteristic ORT_API_CALL Required(const OrtCustomOp*, size_t) {
  return INPUT_OUTPUT_REQUIRED;
}
OrtMemType ORT_API_CALL InputMemory(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
int ORT_API_CALL MinArity(const OrtCustomOp*) { return 1; }
int ORT_API_CALL Homogeneous(const OrtCustomOp*) { return 1; }
int ORT_API_CALL StartVersion(const OrtCustomOp*) { return 1; }
int ORT_API_CALL EndVersion(const OrtCustomOp*) { return INT_MAX; }
size_t ORT_API_CALL NoPairs(int** inputs, int** outputs) {
  *inputs = nullptr;
  *outputs = nullptr;
  return 0;
}
void ORT_API_CALL ReleasePairs(int*, int*) {}

// Only the V2 (status-returning) entry points are provided; onnxruntime reads
// the fields its negotiated version knows about.
OrtCustomOp MakeOp(uint32_t version) {
  OrtCustomOp op{};
  op.version = version;
  op.GetName = Name;
  op.GetExecutionProviderType = Provider;
  op.GetInputType = InputType;
  op.GetInputTypeCount = InputCount;
  op.GetOutputType = OutputType;
  op.GetOutputTypeCount = OutputCount;
  op.KernelDestroy = Destroy;
  op.GetInputCharacteristic = Required;
  op.GetOutputCharacteristic = Required;
  op.GetInputMemoryType = InputMemory;
  op.GetVariadicInputMinArity = MinArity;
  op.GetVariadicInputHomogeneity = Homogeneous;
  op.GetVariadicOutputMinArity = MinArity;
  op.GetVariadicOutputHomogeneity = Homogeneous;
  op.CreateKernelV2 = CreateKernel;
  op.KernelComputeV2 = Compute;
  op.GetStartVersion = StartVersion;
  op.GetEndVersion = EndVersion;
  op.GetMayInplace = NoPairs;
  op.ReleaseMayInplace = ReleasePairs;
  op.GetAliasMap = NoPairs;
  op.ReleaseAliasMap = ReleasePairs;
  return op;
}

// The runtime's API version: the minor number of its "1.M.P" version string.
uint32_t RuntimeApiVersion(const OrtApiBase* base) {
  const char* text = base->GetVersionString();
  const char* dot = text ? std::strchr(text, '.') : nullptr;
  return dot ? static_cast<uint32_t>(std::strtoul(dot + 1, nullptr, 10)) : 0;
}

OrtCustomOp g_op;
OrtCustomOpDomain* g_domain = nullptr;
std::once_flag g_init;
OrtStatus* g_init_error = nullptr;

void Initialise(const OrtApiBase* base) {
  const uint32_t version = std::min<uint32_t>(ORT_API_VERSION, RuntimeApiVersion(base));
  const OrtApi* api = version >= kMinApiVersion ? base->GetApi(version) : nullptr;
  if (api == nullptr) {
    const OrtApi* oldest = base->GetApi(1);
    const std::string message = std::string("onnx_snn_ops needs onnxruntime API ") +
                                std::to_string(kMinApiVersion) + " or newer (onnxruntime 1." +
                                std::to_string(kMinApiVersion) + "), this is onnxruntime " +
                                base->GetVersionString();
    g_init_error = oldest ? oldest->CreateStatus(ORT_FAIL, message.c_str()) : nullptr;
    return;
  }
  g_api = api;
  g_api_version = version;
  g_op = MakeOp(version);
  g_init_error = g_api->CreateCustomOpDomain(kDomain, &g_domain);
  if (g_init_error == nullptr) g_init_error = g_api->CustomOpDomain_Add(g_domain, &g_op);
}

}  // namespace

extern "C" {

// The entry point onnxruntime calls when the library is registered. The one
// domain is created once and shared by every session that registers it.
ORT_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                     const OrtApiBase* api_base) {
  std::call_once(g_init, Initialise, api_base);
  if (g_init_error != nullptr) {  // each caller owns (and releases) its own copy
    const OrtApi* api = g_api ? g_api : api_base->GetApi(1);
    return api->CreateStatus(api->GetErrorCode(g_init_error), api->GetErrorMessage(g_init_error));
  }
  if (g_domain == nullptr) return nullptr;  // no API to report with: the function body runs
  return g_api->AddCustomOpDomain(options, g_domain);
}

}  // extern "C"
