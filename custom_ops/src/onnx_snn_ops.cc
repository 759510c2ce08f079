// onnxruntime custom-op library: the native kernels of onnx_snn::IFNode and of the
// time-difference bookkeeping ops (RunningSum, RunningMean, Difference,
// StepDifference; time_ops.h).
//
// Register it with RegisterCustomOpsLibrary (C/C++), RegisterCustomOpLibraryV2
// (C#), registerCustomOpLibrary (Java) or SessionOptions.register_custom_ops_library
// (Python); onnxruntime then runs this kernel instead of the op's ONNX function.
//
// IFNode(X: float32, T: int64 scalar, V: float32, optional) -> (S: float32 0/1 spikes
// [T*N, ...], V_next: float32, optional).
// Attributes: v_threshold, v_reset, v_init (a fraction of v_threshold), hard_reset,
// max_spikes and signed (optional, 1 and 0 when absent: a burst neuron fires up
// to max_spikes a step, a signed one down to -max_spikes), broadcast_input (0: X is [T*N, ...], one slice per step; 1: X is [S, N, ...]
// with S = 1, the same input at every step, or S = T). V holds the potentials
// before the first step: one per feature of a step (e.g. [N, ...]), or exactly one
// value, the start of every potential (e.g. [1, 1]); without V they start at
// v_init * v_threshold. V_next receives them after the last step: in V's shape where
// V holds one per feature (also where a step has one feature and V one value), else
// in one step's shape [N, ...]. Fed to the next call as V, it continues the run, so
// T steps may run as several calls. From API 17 the op also tells onnxruntime
// the spikes' shape (InferShape): X's, or [T*N, X[2:]...].
//
// RunningSum, RunningMean, Difference, StepDifference(X: float32 [T*N, ...], T: int64
// with one value) -> Y: float32, X's shape; X is read as T rows, one per step.
//
// Only the C API is used, through a version negotiated with the running
// onnxruntime: min(the headers' ORT_API_VERSION, the runtime's), so one build
// loads on older releases too (down to kMinApiVersion).
//
// No C++ exception crosses the C ABI: every entry point onnxruntime calls
// catches them (Guarded) and returns an OrtStatus instead, or, where the
// callback cannot return one, swallows them harmlessly. Sizes computed from the
// inputs (T times rows, element and byte counts) are checked for int64
// overflow and reported as errors.
#include <onnxruntime_c_api.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "if_node.h"
#include "time_ops.h"

namespace {

constexpr const char* kDomain = "onnx_snn";
constexpr const char* kOpType = "IFNode";
// CreateKernelV2/KernelComputeV2 (errors as statuses) arrived in API 16.
constexpr uint32_t kMinApiVersion = 16;
// KernelContext_ParallelFor arrived in API 17; older runtimes run serially.
constexpr uint32_t kParallelForApiVersion = 17;
// So did OrtCustomOp::InferOutputShapeFn and the ShapeInferContext_* functions.
constexpr uint32_t kShapeInferenceApiVersion = 17;
// Features per parallel task: enough work per task to amortise scheduling.
constexpr int64_t kTaskFeatures = 2048;

const OrtApi* g_api = nullptr;
uint32_t g_api_version = 0;
// Numbers the symbols made up for unknown output dimensions (InferShape).
std::atomic<uint64_t> g_unknown_dims{0};

// A status "<op>: <message>".
OrtStatus* FailIn(const char* op, const std::string& message) {
  return g_api->CreateStatus(ORT_INVALID_ARGUMENT, (std::string(op) + ": " + message).c_str());
}

OrtStatus* Fail(const std::string& message) { return FailIn(kOpType, message); }

// A status "onnx_snn: <message>" built without allocating (for the exception
// handlers, where memory may have run out). Never throws.
OrtStatus* StatusNoThrow(const OrtApi* api, OrtErrorCode code, const char* message) noexcept {
  char text[1024];
  std::snprintf(text, sizeof text, "%s: %s", kDomain, message ? message : "");
  return api->CreateStatus(code, text);
}

// Runs body() (which returns an OrtStatus*), turning any C++ exception into a
// status made with api: nothing thrown may cross into onnxruntime's C code.
template <typename Body>
OrtStatus* Guarded(const OrtApi* api, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return StatusNoThrow(api, ORT_FAIL, "out of memory (std::bad_alloc)");
  } catch (const std::exception& error) {
    return StatusNoThrow(api, ORT_RUNTIME_EXCEPTION, error.what());
  } catch (...) {
    return StatusNoThrow(api, ORT_RUNTIME_EXCEPTION, "unknown C++ exception");
  }
}

// Evaluates an OrtStatus* expression and returns it from the caller on error.
#define RETURN_IF_ERROR(expr)               \
  do {                                      \
    OrtStatus* status_ = (expr);            \
    if (status_ != nullptr) return status_; \
  } while (0)

// What onnxruntime creates once per node and calls once per run.
struct Kernel {
  virtual ~Kernel() = default;
  virtual OrtStatus* Compute(OrtKernelContext* context) const = 0;
};

struct IFKernel final : Kernel {
  IFKernel(const onnx_snn::IFParams& params, bool broadcast_input)
      : params(params), broadcast_input(broadcast_input) {}
  OrtStatus* Compute(OrtKernelContext* context) const override;
  onnx_snn::IFParams params;
  bool broadcast_input;
};

struct TimeKernel final : Kernel {
  TimeKernel(onnx_snn::TimeOp op, const char* name) : op(op), name(name) {}
  OrtStatus* Compute(OrtKernelContext* context) const override;
  onnx_snn::TimeOp op;
  const char* name;
};

// One op of the library: onnxruntime hands &custom back to every callback, and
// custom is the first member, so the callback finds the rest.
struct OpEntry {
  OrtCustomOp custom;
  const char* name;
  bool is_if;                 // IFNode, else a time op
  onnx_snn::TimeOp time_op;   // time ops only
};

const OpEntry& EntryOf(const OrtCustomOp* op) { return *reinterpret_cast<const OpEntry*>(op); }

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

// An optional int attribute: *out keeps its default when the node lacks it.
void ReadOptionalInt(const OrtKernelInfo* info, const char* name, int64_t* out) {
  int64_t value = 0;
  OrtStatus* status = g_api->KernelInfoGetAttribute_int64(info, name, &value);
  if (status == nullptr) {
    *out = value;
  } else {
    g_api->ReleaseStatus(status);
  }
}

OrtStatus* CreateIFKernel(const OrtKernelInfo* info, void** kernel) {
  float threshold = 0.0f, v_reset = 0.0f, v_init = 0.0f;
  int64_t hard_reset = 0, broadcast_input = 0, max_spikes = 1, is_signed = 0;
  RETURN_IF_ERROR(ReadFloat(info, "v_threshold", &threshold));
  RETURN_IF_ERROR(ReadFloat(info, "v_reset", &v_reset));
  RETURN_IF_ERROR(ReadFloat(info, "v_init", &v_init));
  RETURN_IF_ERROR(ReadInt(info, "hard_reset", &hard_reset));
  RETURN_IF_ERROR(ReadInt(info, "broadcast_input", &broadcast_input));
  ReadOptionalInt(info, "max_spikes", &max_spikes);
  ReadOptionalInt(info, "signed", &is_signed);
  if (max_spikes < 1 || max_spikes > (int64_t{1} << 24)) {
    return Fail("attribute 'max_spikes' must be in [1, 2^24], got " + std::to_string(max_spikes));
  }
  // The same float32 product as the function body's Mul(v_init, v_threshold).
  const float v_start = v_init * threshold;
  const float high = static_cast<float>(max_spikes);
  const bool quantized = max_spikes > 1 || is_signed != 0;
  *kernel = static_cast<Kernel*>(new IFKernel({threshold, v_reset, v_start, hard_reset != 0,
                                                quantized, is_signed != 0 ? -high : 0.0f, high},
                                               broadcast_input != 0));
  return nullptr;
}

OrtStatus* ORT_API_CALL CreateKernel(const OrtCustomOp* op, const OrtApi*,
                                     const OrtKernelInfo* info, void** kernel) noexcept {
  return Guarded(g_api, [&]() -> OrtStatus* {
    const OpEntry& entry = EntryOf(op);
    if (entry.is_if) return CreateIFKernel(info, kernel);
    *kernel = static_cast<Kernel*>(new TimeKernel(entry.time_op, entry.name));
    return nullptr;
  });
}

struct Task {
  const onnx_snn::IFParams* params;
  const float* x;
  int64_t x_stride;
  float* s;
  int64_t steps;
  int64_t features;
  const float* v_in;  // V, or null
  float* v_out;       // V_next, or null
  std::atomic<bool> failed{false};  // set by a task that threw (RunIF does not)
};

// Runs on onnxruntime's thread pool, which cannot take a status or an
// exception: a failure is recorded in the task and reported by Compute.
void RunTask(void* data, size_t index) noexcept {
  Task& task = *static_cast<Task*>(data);
  try {
    const int64_t begin = static_cast<int64_t>(index) * kTaskFeatures;
    const int64_t end = std::min(task.features, begin + kTaskFeatures);
    onnx_snn::RunIF(*task.params, task.x, task.x_stride, task.s, task.steps, task.features, begin,
                    end, task.v_in, task.v_out);
  } catch (...) {
    task.failed.store(true);
  }
}

OrtStatus* ReadSteps(const char* op, const OrtValue* value, int64_t* steps) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorTypeAndShape(value, &info));
  size_t count = 0;
  OrtStatus* status = g_api->GetTensorShapeElementCount(info, &count);
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  RETURN_IF_ERROR(status);
  if (count != 1) return FailIn(op, "input T must hold one value, got " + std::to_string(count));
  void* data = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorMutableData(const_cast<OrtValue*>(value), &data));
  *steps = *static_cast<const int64_t*>(data);
  return nullptr;
}

// A tensor's shape and element count.
OrtStatus* ReadShape(const OrtValue* value, std::vector<int64_t>* shape, size_t* count) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  OrtStatus* status = g_api->GetDimensionsCount(info, &rank);
  shape->resize(rank);
  if (status == nullptr) status = g_api->GetDimensions(info, shape->data(), rank);
  if (status == nullptr) status = g_api->GetTensorShapeElementCount(info, count);
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  return status;
}

// A kernel's inputs X and T: X's shape and element count, and T's value (at least 1).
struct Inputs {
  const OrtValue* x = nullptr;
  std::vector<int64_t> shape;
  int64_t elements = 0;
  int64_t steps = 0;
};

OrtStatus* ReadInputs(const char* op, OrtKernelContext* context, Inputs* inputs) {
  const OrtValue* t_value = nullptr;
  RETURN_IF_ERROR(g_api->KernelContext_GetInput(context, 0, &inputs->x));
  RETURN_IF_ERROR(g_api->KernelContext_GetInput(context, 1, &t_value));
  RETURN_IF_ERROR(ReadSteps(op, t_value, &inputs->steps));
  size_t count = 0;
  RETURN_IF_ERROR(ReadShape(inputs->x, &inputs->shape, &count));
  if (count > static_cast<size_t>(INT64_MAX)) {
    return FailIn(op, "X has " + std::to_string(count) + " elements, more than int64 holds");
  }
  inputs->elements = static_cast<int64_t>(count);
  if (inputs->steps < 1) {
    return FailIn(op, "T must be at least 1, got " + std::to_string(inputs->steps));
  }
  return nullptr;
}

// ceil(features / kTaskFeatures), without overflow.
size_t TaskCount(int64_t features) {
  return static_cast<size_t>(features / kTaskFeatures + (features % kTaskFeatures != 0));
}

// Runs run(data, index) for index in [0, tasks): on onnxruntime's thread pool when
// there is more than one task and the runtime has one, else here.
OrtStatus* RunTasks(OrtKernelContext* context, void (*run)(void*, size_t), size_t tasks,
                    void* data) {
  if (tasks > 1 && g_api_version >= kParallelForApiVersion) {
    return g_api->KernelContext_ParallelFor(context, run, tasks, 0, data);
  }
  for (size_t index = 0; index < tasks; ++index) run(data, index);
  return nullptr;
}

// IFNode's optional input V and output V_next: the potentials before the first step
// and after the last.
struct State {
  const float* in = nullptr;  // V's values where it holds one per feature, else null
  bool uniform = false;       // V holds one value, start, for every feature
  float start = 0.0f;
  float* out = nullptr;       // V_next's values, or null: the node has no V_next
};

// Reads V (input 2) and allocates V_next (output 1) where the node has them. V holds
// one value per feature, or one value for all of them; V_next takes V's shape, or
// else (no V, or one value for features != 1) step_shape, one step's shape (null
// when X has none: a first dimension that is not a multiple of T).
OrtStatus* ReadState(OrtKernelContext* context, int64_t features,
                     const std::vector<int64_t>* step_shape, State* state) {
  size_t input_count = 0;
  size_t output_count = 0;
  RETURN_IF_ERROR(g_api->KernelContext_GetInputCount(context, &input_count));
  RETURN_IF_ERROR(g_api->KernelContext_GetOutputCount(context, &output_count));
  const OrtValue* v_value = nullptr;  // stays null where the node leaves V out
  if (input_count > 2) RETURN_IF_ERROR(g_api->KernelContext_GetInput(context, 2, &v_value));
  std::vector<int64_t> v_shape;
  if (v_value != nullptr) {
    size_t count = 0;
    RETURN_IF_ERROR(ReadShape(v_value, &v_shape, &count));
    if (count != static_cast<size_t>(features) && count != 1) {
      return Fail("V holds " + std::to_string(count) + " potentials, expected " +
                  std::to_string(features) + ", one per feature of a step, or 1");
    }
    void* data = nullptr;
    RETURN_IF_ERROR(g_api->GetTensorMutableData(const_cast<OrtValue*>(v_value), &data));
    if (count == static_cast<size_t>(features)) {
      state->in = static_cast<const float*>(data);
    } else {
      state->uniform = true;
      state->start = *static_cast<const float*>(data);
    }
  }
  if (output_count < 2) return nullptr;
  if (v_value == nullptr || state->uniform) {
    if (step_shape == nullptr) {
      const char* needs = v_value == nullptr ? "V" : "a V of one value per feature";
      return Fail(std::string("V_next needs ") + needs +
                  " here: X's first dimension is not a multiple of T, so a step has no "
                  "shape [N, ...]");
    }
    v_shape = *step_shape;
  }
  OrtValue* v_next = nullptr;
  RETURN_IF_ERROR(
      g_api->KernelContext_GetOutput(context, 1, v_shape.data(), v_shape.size(), &v_next));
  if (v_next == nullptr) return nullptr;  // an output named "": not wanted
  void* data = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorMutableData(v_next, &data));
  state->out = static_cast<float*>(data);
  return nullptr;
}

OrtStatus* IFKernel::Compute(OrtKernelContext* context) const {
  Inputs in;
  RETURN_IF_ERROR(ReadInputs(kOpType, context, &in));
  std::vector<int64_t>& shape = in.shape;
  const int64_t elements = in.elements;
  const int64_t steps = in.steps;
  // Spikes are [steps, features]; step t reads X at t * x_stride.
  int64_t features = 0;
  int64_t x_stride = 0;
  std::vector<int64_t> step_shape;  // one step's shape [N, ...]: V_next's without a
                                    // V of one value per feature
  bool has_step_shape = true;
  if (broadcast_input) {
    if (shape.size() < 2) return Fail("X must be [S, N, ...] with broadcast_input = 1");
    const int64_t x_steps = shape[0];
    if (x_steps != 1 && x_steps != steps) {
      return Fail("X holds " + std::to_string(x_steps) + " steps, expected 1 or T = " +
                  std::to_string(steps));
    }
    features = elements / x_steps;
    x_stride = x_steps == 1 ? 0 : features;
    shape.erase(shape.begin());
    step_shape = shape;
    int64_t rows = 0;  // the spikes' first dimension, T * N
    if (!onnx_snn::CheckedMul(steps, shape[0], &rows)) {
      return Fail("T = " + std::to_string(steps) + " times " + std::to_string(shape[0]) +
                  " rows overflows int64");
    }
    shape[0] = rows;
  } else {
    if (elements % steps != 0) {
      return Fail("X has " + std::to_string(elements) + " elements, not a multiple of T = " +
                  std::to_string(steps));
    }
    features = elements / steps;
    x_stride = features;
    step_shape = shape;
    if (!shape.empty()) {
      has_step_shape = shape[0] % steps == 0;
      step_shape[0] /= steps;
    }
  }
  // The spikes hold steps * features float32 values; both counts must fit.
  int64_t outputs = 0;
  int64_t bytes = 0;
  if (!onnx_snn::CheckedMul(steps, features, &outputs)) {
    return Fail("T = " + std::to_string(steps) + " times " + std::to_string(features) +
                " features per step overflows int64");
  }
  if (!onnx_snn::CheckedMul(outputs, static_cast<int64_t>(sizeof(float)), &bytes) ||
      static_cast<uint64_t>(bytes) > SIZE_MAX) {
    return Fail("the spikes' " + std::to_string(outputs) + " float32 values (T = " +
                std::to_string(steps) + ") overflow the byte count");
  }

  OrtValue* s_value = nullptr;
  RETURN_IF_ERROR(
      g_api->KernelContext_GetOutput(context, 0, shape.data(), shape.size(), &s_value));
  State state;
  RETURN_IF_ERROR(ReadState(context, features, has_step_shape ? &step_shape : nullptr, &state));
  if (elements == 0) return nullptr;
  void* x_data = nullptr;
  void* s_data = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorMutableData(const_cast<OrtValue*>(in.x), &x_data));
  RETURN_IF_ERROR(g_api->GetTensorMutableData(s_value, &s_data));

  // A one-value V starts every potential there, as v_start does without V: the same
  // loops (without V_next, the stateless ones), a copy of the params.
  onnx_snn::IFParams run_params = params;
  if (state.uniform) run_params.v_start = state.start;
  Task task;
  task.params = &run_params;
  task.x = static_cast<const float*>(x_data);
  task.x_stride = x_stride;
  task.s = static_cast<float*>(s_data);
  task.steps = steps;
  task.features = features;
  task.v_in = state.in;
  task.v_out = state.out;
  RETURN_IF_ERROR(RunTasks(context, RunTask, TaskCount(features), &task));
  if (task.failed.load()) return Fail("a worker task failed");
  return nullptr;
}

struct TimeTask {
  onnx_snn::TimeOp op;
  const float* x;
  float* y;
  int64_t steps;
  int64_t features;
};

void RunTimeTask(void* data, size_t index) noexcept {  // RunTimeOp does not throw
  const TimeTask& task = *static_cast<const TimeTask*>(data);
  const int64_t begin = static_cast<int64_t>(index) * kTaskFeatures;
  const int64_t end = std::min(task.features, begin + kTaskFeatures);
  onnx_snn::RunTimeOp(task.op, task.x, task.y, task.steps, task.features, begin, end);
}

OrtStatus* TimeKernel::Compute(OrtKernelContext* context) const {
  Inputs in;
  RETURN_IF_ERROR(ReadInputs(name, context, &in));
  if (in.elements % in.steps != 0) {
    return FailIn(name, "X has " + std::to_string(in.elements) +
                            " elements, not a multiple of T = " + std::to_string(in.steps));
  }
  OrtValue* y_value = nullptr;
  RETURN_IF_ERROR(
      g_api->KernelContext_GetOutput(context, 0, in.shape.data(), in.shape.size(), &y_value));
  if (in.elements == 0) return nullptr;
  void* x_data = nullptr;
  void* y_data = nullptr;
  RETURN_IF_ERROR(g_api->GetTensorMutableData(const_cast<OrtValue*>(in.x), &x_data));
  RETURN_IF_ERROR(g_api->GetTensorMutableData(y_value, &y_data));
  TimeTask task{op, static_cast<const float*>(x_data), static_cast<float*>(y_data), in.steps,
                in.elements / in.steps};
  return RunTasks(context, RunTimeTask, TaskCount(task.features), &task);
}

OrtStatus* ORT_API_CALL Compute(void* kernel, OrtKernelContext* context) noexcept {
  return Guarded(g_api, [&] { return static_cast<const Kernel*>(kernel)->Compute(context); });
}

void ORT_API_CALL Destroy(void* kernel) noexcept {
  try {
    delete static_cast<Kernel*>(kernel);
  } catch (...) {  // Kernel's destructor does not throw; nothing to report to anyway
  }
}

// IFNode's broadcast_input attribute, as shape inference sees it.
OrtStatus* ReadBroadcast(OrtShapeInferContext* context, int64_t* broadcast) {
  const OrtOpAttr* attribute = nullptr;
  OrtStatus* status = g_api->ShapeInferContext_GetAttribute(context, "broadcast_input", &attribute);
  if (status != nullptr) {
    g_api->ReleaseStatus(status);
    return Fail("missing int attribute 'broadcast_input'");
  }
  size_t size = 0;
  status = g_api->ReadOpAttr(attribute, ORT_OP_ATTR_INT, broadcast, sizeof *broadcast, &size);
  if (status != nullptr) {
    g_api->ReleaseStatus(status);
    return Fail("attribute 'broadcast_input' must be an int");
  }
  return nullptr;
}

// Output 0 is float32. For the time ops, and IFNode with broadcast_input = 0 its shape is X's (symbolic
// dimensions kept); with broadcast_input = 1, X is [S, N, d2, ...] and the
// spikes are [T * N, d2, ...]: T is an input value, unknown here, so the first
// dimension is unknown and the rest are X[2:].
// IFNode's optional V_next (output 1) is left alone: this context does not tell how
// many outputs the node has, and onnxruntime does not check the index it is given
// (InferenceContextImpl::getOutputType), so describing output 1 of a node without
// one would write past the end of its output types.
OrtStatus* InferShapeImpl(const OpEntry& entry, OrtShapeInferContext* context) {
  size_t inputs = 0;
  RETURN_IF_ERROR(g_api->ShapeInferContext_GetInputCount(context, &inputs));
  if (inputs < 1) return FailIn(entry.name, "shape inference found no input X");
  // X's description belongs to the context: onnxruntime 1.32 frees it itself (releasing
  // it here, as Ort::ShapeInferContext's wrapper would, is a double free).
  OrtTensorTypeAndShapeInfo* x_info = nullptr;
  RETURN_IF_ERROR(g_api->ShapeInferContext_GetInputTypeShape(context, 0, &x_info));
  size_t rank = 0;
  RETURN_IF_ERROR(g_api->GetDimensionsCount(x_info, &rank));
  std::vector<int64_t> dims(rank);
  std::vector<const char*> symbols(rank, "");
  RETURN_IF_ERROR(g_api->GetDimensions(x_info, dims.data(), rank));
  RETURN_IF_ERROR(g_api->GetSymbolicDimensions(x_info, symbols.data(), rank));

  int64_t broadcast = 0;  // time ops have no broadcast_input: Y has X's shape
  if (entry.is_if) RETURN_IF_ERROR(ReadBroadcast(context, &broadcast));

  // onnxruntime describes an input of unknown rank as rank 0: say nothing
  // about the spikes' shape then (the element type comes from the schema).
  if (rank == 0) return nullptr;
  if (broadcast != 0) {
    if (rank < 2) {
      return Fail("X must be [S, N, ...] with broadcast_input = 1, got rank " +
                  std::to_string(rank));
    }
    dims.erase(dims.begin());
    symbols.erase(symbols.begin());
    dims[0] = -1;  // T * N: T is an input's value
    symbols[0] = "";
  }
  // onnxruntime writes a dimension without a symbol as its value, so an
  // unknown one would become the value -1: a fixed size that every run then
  // "mismatches", and that makes unrelated tensors look the same size to the
  // memory planner. Each unknown dimension gets a fresh symbol instead.
  std::vector<std::string> fresh;
  fresh.reserve(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] >= 0 || (symbols[i] != nullptr && symbols[i][0] != '\0')) continue;
    fresh.push_back(std::string(entry.name) + "_unk_" +
                    std::to_string(g_unknown_dims.fetch_add(1) + 1));
    symbols[i] = fresh.back().c_str();
  }
  OrtTensorTypeAndShapeInfo* s_info = nullptr;
  RETURN_IF_ERROR(g_api->CreateTensorTypeAndShapeInfo(&s_info));
  OrtStatus* status = g_api->SetTensorElementType(s_info, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  if (status == nullptr) status = g_api->SetDimensions(s_info, dims.data(), dims.size());
  if (status == nullptr) {
    status = g_api->SetSymbolicDimensions(s_info, symbols.data(), symbols.size());
  }
  if (status == nullptr) status = g_api->ShapeInferContext_SetOutputTypeShape(context, 0, s_info);
  g_api->ReleaseTensorTypeAndShapeInfo(s_info);
  return status;
}

OrtStatus* ORT_API_CALL InferShape(const OrtCustomOp* op, OrtShapeInferContext* context) noexcept {
  return Guarded(g_api, [&] { return InferShapeImpl(EntryOf(op), context); });
}

const char* ORT_API_CALL Name(const OrtCustomOp* op) { return EntryOf(op).name; }
const char* ORT_API_CALL Provider(const OrtCustomOp*) { return "CPUExecutionProvider"; }
// IFNode(X, T, V?) -> (S, V_next?); a time op (X, T) -> Y. Only T is int64.
size_t ORT_API_CALL InputCount(const OrtCustomOp* op) { return EntryOf(op).is_if ? 3 : 2; }
size_t ORT_API_CALL OutputCount(const OrtCustomOp* op) { return EntryOf(op).is_if ? 2 : 1; }
ONNXTensorElementDataType ORT_API_CALL InputType(const OrtCustomOp*, size_t index) {
  return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
ONNXTensorElementDataType ORT_API_CALL OutputType(const OrtCustomOp*, size_t) {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
// X and T, S and Y are required; IFNode's V (input 2) and V_next (output 1) are optional.
OrtCustomOpInputOutputCharacteristic ORT_API_CALL InputCharacteristic(const OrtCustomOp*,
                                                                      size_t index) {
  return index < 2 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}
OrtCustomOpInputOutputCharacteristic ORT_API_CALL OutputCharacteristic(const OrtCustomOp*,
                                                                       size_t index) {
  return index < 1 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
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
  op.GetInputCharacteristic = InputCharacteristic;
  op.GetOutputCharacteristic = OutputCharacteristic;
  op.GetInputMemoryType = InputMemory;
  op.GetVariadicInputMinArity = MinArity;
  op.GetVariadicInputHomogeneity = Homogeneous;
  op.GetVariadicOutputMinArity = MinArity;
  op.GetVariadicOutputHomogeneity = Homogeneous;
  op.CreateKernelV2 = CreateKernel;
  op.KernelComputeV2 = Compute;
  if (version >= kShapeInferenceApiVersion) op.InferOutputShapeFn = InferShape;
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

// The ops of the library, in the order they are added to the domain.
OpEntry g_ops[] = {
    {{}, kOpType, true, onnx_snn::TimeOp::kRunningSum},
    {{}, "RunningSum", false, onnx_snn::TimeOp::kRunningSum},
    {{}, "RunningMean", false, onnx_snn::TimeOp::kRunningMean},
    {{}, "Difference", false, onnx_snn::TimeOp::kDifference},
    {{}, "StepDifference", false, onnx_snn::TimeOp::kStepDifference},
};
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
  g_init_error = g_api->CreateCustomOpDomain(kDomain, &g_domain);
  for (OpEntry& entry : g_ops) {
    if (g_init_error != nullptr) break;
    entry.custom = MakeOp(version);
    g_init_error = g_api->CustomOpDomain_Add(g_domain, &entry.custom);
  }
}

}  // namespace

extern "C" {

// The entry point onnxruntime calls when the library is registered. The one
// domain is created once and shared by every session that registers it.
ORT_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                     const OrtApiBase* api_base) noexcept {
  const OrtApi* api = g_api ? g_api : api_base->GetApi(1);
  if (api == nullptr) return nullptr;  // no API to report with: the function body runs
  return Guarded(api, [&]() -> OrtStatus* {
    std::call_once(g_init, Initialise, api_base);  // a throw leaves g_init unset: retried
    if (g_init_error != nullptr) {  // each caller owns (and releases) its own copy
      const OrtApi* owner = g_api ? g_api : api;
      return owner->CreateStatus(owner->GetErrorCode(g_init_error),
                                 owner->GetErrorMessage(g_init_error));
    }
    if (g_domain == nullptr) return nullptr;  // no API to report with: the function body runs
    return g_api->AddCustomOpDomain(options, g_domain);
  });
}

}  // extern "C"
