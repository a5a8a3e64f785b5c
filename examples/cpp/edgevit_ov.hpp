// edgevit_ov: a small C++ helper around OpenVINO for edgevit-exported IRs.
//
//   edgevit::Classifier clf("model.xml", {"CPU", 1, "latency", "f32"});   // load IR + spec, compile
//   edgevit::Image img = edgevit::read_pnm("shirt.pgm");                    // binary/ASCII PGM or PPM
//   std::vector<float> x = edgevit::preprocess(img, clf.spec());           // = edgevit.data.preprocess
//   std::vector<float> logits = clf.infer(x, 1);                           // [batch * num_classes]
//
// The input spec (channels, size, mean, std, interpolation, crop_pct) is read from the IR's rt_info section
// edgevit/preprocess/*, written by `edgevit export openvino` (edgevit.export.openvino). Preprocessing follows
// edgevit.data.preprocess (= timm's evaluation transform) step by step: when the image is not the model's size,
// each channel of the original image is resized to keep its aspect ratio (see resize_geometry) and centre-cropped
// -- 8-bit images (maxval 255) exactly as PIL's Image.resize with the spec's interpolation (fixed-point, bit for
// bit), other bit depths as floats in [0, 1] (samples / maxval) with torch's antialiased filter, then clamped --,
// values scaled to [0, 1], grey -> 3 channels (repeat) or RGB -> grey (0.299 R + 0.587 G + 0.114 B), normalise.
//
// Each piece (spec, preprocess, one compiled model) stands alone so that other programs (an early-exit cascade of
// several IR segments, for instance) can reuse them.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <openvino/runtime/core.hpp>

namespace edgevit {

// What the model expects; mirrors edgevit.spec.InputSpec.
struct Spec {
    int channels = 0, height = 0, width = 0;
    std::vector<float> mean, std;
    std::string interpolation = "bilinear";  // bilinear | bicubic | nearest
    double crop_pct = 1.0;
    int num_classes = -1;  // -1 when the spec does not say
    std::vector<std::string> class_names;  // rt_info edgevit/preprocess/class_names (one a line); empty if absent
    std::string input_name = "input", output_name = "logits";

    // The name of class i, or "" when the IR names no classes (or fewer than i + 1).
    std::string class_name(std::size_t i) const { return i < class_names.size() ? class_names[i] : std::string(); }
    std::size_t input_numel() const { return static_cast<std::size_t>(channels) * height * width; }
};

// An image as read from a PNM file: samples interleaved (HWC), `channels` is 1 (PGM) or 3 (PPM).
struct Image {
    int width = 0, height = 0, channels = 0;
    int maxval = 255;
    std::vector<unsigned short> data;  // height * width * channels samples in [0, maxval]
};

// Read a binary (P5/P6) or ASCII (P2/P3) PGM/PPM file; throws std::runtime_error naming the problem.
Image read_pnm(const std::string& path);

// The edgevit input spec stored in an IR's rt_info; throws when the IR was not written by edgevit.
Spec load_spec(const std::shared_ptr<ov::Model>& model, const std::string& where = "model");

// Where timm's evaluation transform puts an image of height x width pixels: resized to height x width below, then
// cropped at (top, left) to the model's size. As edgevit.data.resize_geometry: the scale size is
// floor(size / crop_pct) per side; a square input resizes the short side to it (torchvision Resize(int): long side
// int(scale * long / short)), a non-square one keeps the ratio min(H / scale_h, W / scale_w) (timm ResizeKeepRatio,
// sides round(side / ratio)); crop offsets round((resized - size) / 2) (torchvision CenterCrop). std::nullopt when
// the image already has the model's size; throws when crop_pct would make it smaller than the model's input.
struct Geometry {
    int height = 0, width = 0, top = 0, left = 0;
};
std::optional<Geometry> resize_geometry(int height, int width, const Spec& spec);

// One image -> a normalised float32 CHW tensor of spec.input_numel() values (see the header comment).
std::vector<float> preprocess(const Image& image, const Spec& spec);

// Options for compiling a model; empty strings / 0 leave OpenVINO's default.
struct CompileOptions {
    std::string device = "CPU";         // CPU, GPU, GPU.1, NPU, AUTO, ...
    int threads = 0;                    // INFERENCE_NUM_THREADS (0: OpenVINO's choice)
    std::string hint = "latency";       // PERFORMANCE_HINT: latency | throughput | "" (default)
    // INFERENCE_PRECISION_HINT: file (the IR's edgevit/inference_precision record, else f32) | f32 | bf16 | f16 |
    // "" or default (the device's default)
    std::string precision = "file";
};

// One IR compiled for one device, with one synchronous infer request.
class Classifier {
public:
    Classifier(const std::string& xml_path, const CompileOptions& options = {});
    Classifier(ov::Core& core, const std::string& xml_path, const CompileOptions& options = {});

    // Logits for `batch` preprocessed images laid out back to back (batch * spec().input_numel() floats).
    std::vector<float> infer(const std::vector<float>& input, std::size_t batch = 1);

    const Spec& spec() const { return spec_; }
    std::size_t num_outputs() const { return num_outputs_; }  // logits per image
    // Properties read back from the compiled model (what it actually uses).
    std::string inference_precision() const;
    int inference_threads() const;
    std::string performance_hint() const;
    const std::string& device() const { return options_.device; }

private:
    void load(ov::Core& core, const std::string& xml_path);

    CompileOptions options_;
    Spec spec_;
    ov::CompiledModel compiled_;
    ov::InferRequest request_;
    std::size_t num_outputs_ = 0;
};

// Softmax of one row of logits.
std::vector<float> softmax(const float* logits, std::size_t n);

// Indices of the k largest values, largest first.
std::vector<std::size_t> top_k(const std::vector<float>& values, std::size_t k);

}  // namespace edgevit
