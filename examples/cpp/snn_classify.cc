/* snn_classify: classify a batch with a converted spiking model, from C++ alone.
 *
 * Build (from the repository root). The headers come from fetch_ort_headers.py; the
 * library may be any onnxruntime shared library, e.g. the one in the Python wheel:
 *
 *   ORT_LIB=$(python -c "import glob, onnxruntime, os; print(glob.glob(os.path.join(
 *       os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*'))[0])")
 *   cmake -S examples/cpp -B build/cpp -DCMAKE_BUILD_TYPE=Release \
 *       -DORT_INCLUDE_DIR="$(python custom_ops/fetch_ort_headers.py)" -DORT_LIBRARY="$ORT_LIB"
 *   cmake --build build/cpp
 *
 * Run:
 *
 *   build/cpp/snn_classify MODEL.onnx OPS_LIBRARY INPUT.npy T [CHUNK]
 *
 * MODEL: a model converted by onnx_snn: one data input [S, N, ...], the int64 scalar
 * input T (named in the metadata under onnx_snn.timesteps_input, normally `timesteps`),
 * and a first output [T, N, classes] (one slice per step).
 * OPS_LIBRARY: the native IFNode kernels (python -c "import onnx_snn;
 * print(onnx_snn.native_library_path())"), or `-` to let onnxruntime run the IFNode
 * function body instead (same spikes, slower).
 * INPUT.npy: a float32 C-order array [N, ...], presented at every step (S = 1).
 * T: the number of time steps.
 * CHUNK: run the T steps as calls of at most CHUNK steps, so that memory holds one
 * chunk (default: one call). The model must then be in the chunked format
 * (onnx-snn convert --format chunked): each call's state outputs, listed in the
 * metadata under onnx_snn.chunk_states, are fed to the next call's state inputs.
 *
 * Prints one class per sample and line: the argmax of the first output averaged
 * over the T steps (the first maximum wins, as in numpy.argmax). Errors: one line
 * on stderr and exit status 1.
 */
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

// The text after `'key':` in a .npy header dict, leading spaces skipped.
std::string header_value(const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) fail("no '" + key + "' in the header");
  at = header.find(':', at);
  if (at == std::string::npos) fail("no value for '" + key + "' in the header");
  at = header.find_first_not_of(' ', at + 1);
  return at == std::string::npos ? std::string() : header.substr(at);
}

std::vector<int64_t> parse_shape(const std::string& value) {
  size_t end = value.find(')');
  if (value.empty() || value[0] != '(' || end == std::string::npos) fail("bad 'shape'");
  std::vector<int64_t> shape;
  std::stringstream items(value.substr(1, end - 1));
  for (std::string item; std::getline(items, item, ',');) {
    size_t first = item.find_first_not_of(' '), last = item.find_last_not_of(' ');
    if (first == std::string::npos) continue;  // the empty item after a trailing comma
    item = item.substr(first, last - first + 1);
    if (item.find_first_not_of("0123456789") != std::string::npos || item.size() > 15) {
      fail("bad 'shape' entry '" + item + "'");
    }
    shape.push_back(std::stoll(item));
  }
  return shape;
}

// A float32 C-order .npy file (format versions 1.0, 2.0 and 3.0).
Array read_npy(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(path + ": cannot open");
  std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  try {
    if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) fail("not a .npy file");
    int major = static_cast<unsigned char>(bytes[6]);
    if (major < 1 || major > 3) fail("unsupported .npy version " + std::to_string(major));
    size_t length_size = major == 1 ? 2 : 4, start = 8 + length_size, length = 0;
    if (bytes.size() < start) fail("truncated header");
    for (size_t i = 0; i < length_size; ++i) {  // little-endian header length
      length |= size_t(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    }
    if (bytes.size() < start + length) fail("truncated header");
    std::string header = bytes.substr(start, length);

    std::string descr = header_value(header, "descr");
    if (descr.compare(0, 5, "'<f4'") != 0) {
      fail("dtype " + descr.substr(0, descr.find_first_of(",}")) +
           ", need little-endian float32 ('<f4')");
    }
    std::string fortran = header_value(header, "fortran_order");
    if (fortran.compare(0, 4, "True") == 0) fail("Fortran-order arrays are not supported");
    if (fortran.compare(0, 5, "False") != 0) fail("bad 'fortran_order'");
    Array array{parse_shape(header_value(header, "shape")), {}};
    if (array.shape.empty()) fail("a 0-d array: need [N, ...]");

    size_t count = 1;
    for (int64_t dim : array.shape) {
      if (dim != 0 && count > (SIZE_MAX / 4) / size_t(dim)) fail("shape too large");
      count *= size_t(dim);
    }
    if (bytes.size() - start - length != 4 * count) {
      fail("data holds " + std::to_string(bytes.size() - start - length) + " bytes, shape needs " +
           std::to_string(4 * count));
    }
    const uint16_t one = 1;
    if (*reinterpret_cast<const unsigned char*>(&one) != 1) fail("needs a little-endian host");
    array.data.resize(count);
    std::memcpy(array.data.data(), bytes.data() + start + length, 4 * count);
    return array;
  } catch (const std::runtime_error& error) {
    fail(path + ": " + error.what());
  }
}

// The (input, output) state pairs of a chunked model, in order, from the metadata JSON
// [{"node": ..., "input": "...", "output": "..."}, ...]; names are [A-Za-z0-9_] only.
std::vector<std::pair<std::string, std::string>> chunk_states(const std::string& json) {
  std::vector<std::pair<std::string, std::string>> states;
  auto value_after = [&json](const std::string& key, size_t from) -> std::pair<std::string, size_t> {
    size_t at = json.find("\"" + key + "\": \"", from);
    if (at == std::string::npos) return {"", std::string::npos};
    at += key.size() + 5;
    size_t end = json.find('"', at);
    if (end == std::string::npos) fail("bad onnx_snn.chunk_states metadata");
    return {json.substr(at, end - at), end};
  };
  for (size_t at = 0;;) {
    auto input = value_after("input", at);
    if (input.second == std::string::npos) break;
    auto output = value_after("output", input.second);
    if (output.second == std::string::npos) fail("bad onnx_snn.chunk_states metadata");
    states.emplace_back(input.first, output.first);
    at = output.second;
  }
  return states;
}

// numpy.argmax over one row: the first maximum wins, and a NaN counts as the maximum.
size_t argmax(const double* row, size_t size) {
  size_t best = 0;
  for (size_t i = 1; i < size && !std::isnan(row[best]); ++i) {
    if (std::isnan(row[i]) || row[i] > row[best]) best = i;
  }
  return best;
}

// A path as onnxruntime takes it (wide characters on Windows; ASCII paths only there).
std::basic_string<ORTCHAR_T> ort_path(const std::string& path) {
  return {path.begin(), path.end()};
}

// A positive integer argument (at most 9 digits), or an error naming it.
int64_t positive(const std::string& text, const std::string& what) {
  bool digits = !text.empty() && text.size() <= 9 &&
                text.find_first_not_of("0123456789") == std::string::npos;
  int64_t value = digits ? std::stoll(text) : 0;
  if (value <= 0) fail(what + " must be a positive integer, got '" + text + "'");
  return value;
}

int run(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    fail("usage: snn_classify MODEL.onnx OPS_LIBRARY|- INPUT.npy T [CHUNK]");
  }
  const std::string steps_arg = argv[4];
  const int64_t steps = positive(steps_arg, "T");
  const int64_t chunk = argc == 6 ? std::min(positive(argv[5], "CHUNK"), steps) : steps;
  Array input = read_npy(argv[3]);

  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "snn_classify");
  Ort::SessionOptions options;
  options.SetIntraOpNumThreads(0);  // 0: onnxruntime's default
  if (std::string(argv[2]) != "-") options.RegisterCustomOpsLibrary(ort_path(argv[2]).c_str());
  Ort::Session session(env, ort_path(argv[1]).c_str(), options);

  Ort::AllocatorWithDefaultOptions allocator;
  Ort::ModelMetadata metadata = session.GetModelMetadata();
  // The T input is named in the metadata: "timesteps" unless the ANN used that name.
  Ort::AllocatedStringPtr named =
      metadata.LookupCustomMetadataMapAllocated("onnx_snn.timesteps_input", allocator);
  const std::string steps_input = named ? named.get() : "timesteps";
  Ort::AllocatedStringPtr states_json =
      metadata.LookupCustomMetadataMapAllocated("onnx_snn.chunk_states", allocator);
  const auto states = states_json ? chunk_states(states_json.get())
                                  : std::vector<std::pair<std::string, std::string>>{};
  if (chunk < steps && !states_json) {
    fail("CHUNK needs a model in the chunked format (onnx-snn convert --format chunked)");
  }
  std::vector<std::string> data_inputs;
  bool has_steps = false;
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    std::string name = session.GetInputNameAllocated(i, allocator).get();
    bool is_state = false;
    for (const auto& state : states) is_state |= state.first == name;
    has_steps |= name == steps_input;
    if (name != steps_input && !is_state) data_inputs.push_back(name);
  }
  if (!has_steps) fail("not a converted model: no '" + steps_input + "' input");
  if (data_inputs.size() != 1) {
    fail("the model has " + std::to_string(data_inputs.size()) +
         " data inputs; this example feeds one");
  }
  std::string output = session.GetOutputNameAllocated(0, allocator).get();

  // Direct encoding: the batch [N, ...] becomes one step [1, N, ...], shown at every step.
  std::vector<int64_t> shape = input.shape;
  shape.insert(shape.begin(), 1);
  Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  const int64_t samples = input.shape[0];
  std::vector<double> sums;  // the first output summed over the steps, [N, classes]
  size_t classes = 0;
  std::vector<Ort::Value> carried;  // the state outputs of the previous call
  for (int64_t done = 0; done < steps; done += chunk) {
    int64_t count = std::min(chunk, steps - done);
    std::vector<Ort::Value> feed;
    std::vector<const char*> feed_names = {data_inputs[0].c_str(), steps_input.c_str()};
    feed.push_back(Ort::Value::CreateTensor<float>(memory, input.data.data(), input.data.size(),
                                                   shape.data(), shape.size()));
    feed.push_back(Ort::Value::CreateTensor<int64_t>(memory, &count, 1, nullptr, 0));
    for (size_t i = 0; i < carried.size(); ++i) {  // none at the first call: the defaults
      feed_names.push_back(states[i].first.c_str());
      feed.push_back(std::move(carried[i]));
    }
    std::vector<const char*> output_names = {output.c_str()};
    for (const auto& state : states) output_names.push_back(state.second.c_str());
    std::vector<Ort::Value> results =
        session.Run(Ort::RunOptions{nullptr}, feed_names.data(), feed.data(), feed.size(),
                    output_names.data(), output_names.size());

    Ort::TensorTypeAndShapeInfo info = results[0].GetTensorTypeAndShapeInfo();
    std::vector<int64_t> out_shape = info.GetShape();
    if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || out_shape.size() != 3 ||
        out_shape[0] != count || out_shape[1] != samples || out_shape[2] < 1) {
      fail("output '" + output + "' is not float32 [T, N, classes] with T = " +
           std::to_string(count) + ", N = " + std::to_string(samples));
    }
    // The argmax of the mean over time is that of the sum, taken in float64 step by step
    // (as onnx_snn's SpikingOutput.predictions does, so the classes match it exactly).
    classes = size_t(out_shape[2]);
    const size_t row = size_t(samples) * classes;
    sums.resize(row, 0.0);
    const float* per_step = results[0].GetTensorData<float>();
    for (int64_t t = 0; t < count; ++t) {
      for (size_t i = 0; i < row; ++i) sums[i] += per_step[size_t(t) * row + i];
    }
    carried.clear();
    for (size_t i = 1; i < results.size(); ++i) carried.push_back(std::move(results[i]));
  }
  for (size_t n = 0; n < size_t(samples); ++n) {
    std::cout << argmax(&sums[n * classes], classes) << '\n';
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Ort::Exception& error) {
    std::string message = error.what();
    std::cerr << "snn_classify: onnxruntime: " << message.substr(0, message.find('\n')) << '\n';
  } catch (const std::exception& error) {
    std::string message = error.what();
    std::cerr << "snn_classify: " << message.substr(0, message.find('\n')) << '\n';
  }
  return 1;
}
