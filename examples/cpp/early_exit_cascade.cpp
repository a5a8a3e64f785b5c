// early_exit_cascade: run an edgevit early-exit cascade (manifest.json + per-segment/per-head graphs) from C++.
//
//   early_exit_cascade MANIFEST.json IMAGE [IMAGE ...] [--device CPU] [--threads N] [--precision f32|bf16|default]
//                      [--batch N] [--json FILE]
//
// The manifest is what `edgevit early-exit export --format openvino` (or onnx: OpenVINO reads ONNX too) writes:
// segments in order (segment 0: image -> tokens, ..., last: tokens -> logits), one exit head after every segment
// but the last, thresholds, criterion (confidence: max softmax > t; entropy: entropy / log(classes) < t; a threshold
// that never fires -- 1 for confidence, 0 for entropy -- skips its head) and the input spec used to preprocess
// images exactly like edgevit.data.preprocess (edgevit_ov.hpp). Images are run in batches of --batch (default: all
// at once); inside a batch the decision is per sample and exited samples leave the batch, as in Python's
// edgevit.early_exit.runtime.CascadeRuntime. Prints, per image, the exit index (K = final head), the block it left
// after and the predicted class; --json writes them with the logits.
// Exit status: 0 ok, 2 bad usage or input, 1 manifest/OpenVINO failure.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

#include "edgevit_ov.hpp"

namespace {

// ------------------------------------------------------------------------------------------ a minimal JSON reader
struct Json {
    enum Type { Null, Bool, Number, String, Array, Object } type = Null;
    bool b = false;
    double num = 0;
    std::string str;
    std::vector<Json> arr;
    std::vector<std::pair<std::string, Json>> obj;

    bool has(const std::string& key) const {
        for (const auto& kv : obj)
            if (kv.first == key) return true;
        return false;
    }
    const Json& at(const std::string& key) const {
        for (const auto& kv : obj)
            if (kv.first == key) return kv.second;
        throw std::runtime_error("manifest: missing key '" + key + "'");
    }
    double number() const {
        if (type != Number) throw std::runtime_error("manifest: expected a number");
        return num;
    }
    const std::string& string() const {
        if (type != String) throw std::runtime_error("manifest: expected a string");
        return str;
    }
};

class JsonParser {
public:
    explicit JsonParser(const std::string& text) : s_(text) {}
    Json parse() {
        Json v = value();
        ws();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    const std::string& s_;
    std::size_t i_ = 0;

    [[noreturn]] void fail(const std::string& what) {
        throw std::runtime_error("manifest is not valid JSON: " + what + " at byte " + std::to_string(i_));
    }
    void ws() {
        while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
    }
    bool lit(const char* word) {
        std::size_t n = std::char_traits<char>::length(word);
        if (s_.compare(i_, n, word) == 0) {
            i_ += n;
            return true;
        }
        return false;
    }
    Json value() {
        ws();
        if (i_ >= s_.size()) fail("unexpected end");
        Json v;
        char c = s_[i_];
        if (c == '{') {
            v.type = Json::Object;
            ++i_;
            ws();
            if (i_ < s_.size() && s_[i_] == '}') return ++i_, v;
            while (true) {
                ws();
                std::string key = string_lit();
                ws();
                if (i_ >= s_.size() || s_[i_] != ':') fail("expected ':'");
                ++i_;
                v.obj.emplace_back(key, value());
                ws();
                if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
                if (i_ < s_.size() && s_[i_] == '}') { ++i_; break; }
                fail("expected ',' or '}'");
            }
        } else if (c == '[') {
            v.type = Json::Array;
            ++i_;
            ws();
            if (i_ < s_.size() && s_[i_] == ']') return ++i_, v;
            while (true) {
                v.arr.push_back(value());
                ws();
                if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
                if (i_ < s_.size() && s_[i_] == ']') { ++i_; break; }
                fail("expected ',' or ']'");
            }
        } else if (c == '"') {
            v.type = Json::String;
            v.str = string_lit();
        } else if (lit("true")) {
            v.type = Json::Bool, v.b = true;
        } else if (lit("false")) {
            v.type = Json::Bool;
        } else if (lit("null")) {
            v.type = Json::Null;
        } else {
            const char* start = s_.c_str() + i_;
            char* end = nullptr;
            v.num = std::strtod(start, &end);
            if (end == start) fail("unexpected character");
            v.type = Json::Number;
            i_ += static_cast<std::size_t>(end - start);
        }
        return v;
    }
    std::string string_lit() {
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
        ++i_;
        std::string out;
        while (i_ < s_.size() && s_[i_] != '"') {
            char c = s_[i_++];
            if (c != '\\') { out.push_back(c); continue; }
            if (i_ >= s_.size()) fail("bad escape");
            char e = s_[i_++];
            switch (e) {
                case 'n': out.push_back('\n'); break;
                case 't': out.push_back('\t'); break;
                case 'r': out.push_back('\r'); break;
                case 'b': out.push_back('\b'); break;
                case 'f': out.push_back('\f'); break;
                case 'u': {
                    if (i_ + 4 > s_.size()) fail("bad \\u escape");
                    unsigned code = std::stoul(s_.substr(i_, 4), nullptr, 16);
                    i_ += 4;
                    out.push_back(code < 0x80 ? static_cast<char>(code) : '?');
                    break;
                }
                default: out.push_back(e);
            }
        }
        if (i_ >= s_.size()) fail("unterminated string");
        ++i_;
        return out;
    }
};

// ------------------------------------------------------------------------------------------ the cascade
struct Tensor {  // a row-major float tensor whose first axis is the batch
    std::vector<std::size_t> shape;
    std::vector<float> data;
    std::size_t row() const {
        std::size_t r = 1;
        for (std::size_t i = 1; i < shape.size(); ++i) r *= shape[i];
        return r;
    }
};

class Graph {
public:
    Graph(ov::Core& core, const std::string& path, const ov::AnyMap& config, const std::string& device) {
        compiled_ = core.compile_model(core.read_model(path), device, config);
        request_ = compiled_.create_infer_request();
    }
    Tensor run(const Tensor& x) {
        ov::Tensor in(ov::element::f32, ov::Shape(x.shape.begin(), x.shape.end()), const_cast<float*>(x.data.data()));
        request_.set_input_tensor(in);
        request_.infer();
        const ov::Tensor out = request_.get_output_tensor();
        Tensor y;
        for (auto d : out.get_shape()) y.shape.push_back(d);
        const float* p = out.data<const float>();
        y.data.assign(p, p + out.get_size());
        return y;
    }
    ov::CompiledModel& compiled() { return compiled_; }

private:
    ov::CompiledModel compiled_;
    ov::InferRequest request_;
};

// max softmax probability, or entropy / log(classes): the same float64 formula as edgevit.early_exit.thresholds
double score(const float* z, std::size_t n, bool confidence) {
    double m = z[0];
    for (std::size_t i = 1; i < n; ++i) m = std::max(m, static_cast<double>(z[i]));
    std::vector<double> e(n);
    double total = 0;
    for (std::size_t i = 0; i < n; ++i) total += (e[i] = std::exp(static_cast<double>(z[i]) - m));
    if (confidence) {
        double best = 0;
        for (double v : e) best = std::max(best, v / total);
        return best;
    }
    if (n < 2) return 0.0;
    double h = 0;
    for (double v : e) {
        double p = v / total;
        h -= p * std::log(std::max(p, 1e-300));
    }
    return h / std::log(static_cast<double>(n));
}

struct Options {
    std::string manifest, device = "CPU", precision = "f32", json;
    int threads = 0;
    std::size_t batch = 0;
    std::vector<std::string> images;
};

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

const char* kUsage =
    "usage: early_exit_cascade MANIFEST.json IMAGE [IMAGE ...] [--device CPU] [--threads N]\n"
    "                          [--precision f32|bf16|default] [--batch N] [--json FILE]\n";

Options parse(int argc, char** argv) {
    Options o;
    std::vector<std::string> pos;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw UsageError(a + " needs a value");
            return argv[++i];
        };
        auto positive = [&](const std::string& v) {
            try {
                std::size_t used = 0;
                int n = std::stoi(v, &used);
                if (used == v.size() && n > 0) return n;
            } catch (const std::exception&) {
            }
            throw UsageError(a + " expects a positive integer, got '" + v + "'");
        };
        if (a == "-h" || a == "--help") {
            std::cout << kUsage;
            std::exit(0);
        } else if (a == "--device") {
            o.device = value();
        } else if (a == "--threads") {
            o.threads = positive(value());
        } else if (a == "--precision") {
            o.precision = value();
        } else if (a == "--batch") {
            o.batch = static_cast<std::size_t>(positive(value()));
        } else if (a == "--json") {
            o.json = value();
        } else if (a.size() > 1 && a[0] == '-') {
            throw UsageError("unknown option " + a);
        } else {
            pos.push_back(a);
        }
    }
    if (pos.size() < 2) throw UsageError("need a manifest.json and at least one image");
    o.manifest = pos[0];
    o.images.assign(pos.begin() + 1, pos.end());
    return o;
}

std::string dir_of(const std::string& path) {
    auto p = path.find_last_of('/');
    return p == std::string::npos ? std::string(".") : path.substr(0, p);
}

bool file_exists(const std::string& p) { return static_cast<bool>(std::ifstream(p)); }

struct Result {
    std::string image;
    int exit = -1, block = 0, cls = -1;
    std::vector<float> logits;
};

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    try {
        opt = parse(argc, argv);
    } catch (const UsageError& e) {
        std::cerr << "early_exit_cascade: error: " << e.what() << "\n" << kUsage;
        return 2;
    }
    // ---- manifest
    Json m;
    edgevit::Spec spec;
    std::vector<std::string> seg_files, head_files;
    std::vector<double> thresholds;
    std::vector<int> exit_blocks;
    bool confidence = true;
    int depth = 0;
    try {
        std::ifstream in(opt.manifest);
        if (!in) throw std::runtime_error("cannot open manifest " + opt.manifest + "; export the cascade first "
                                          "(edgevit early-exit export RUN --format openvino --out DIR)");
        std::stringstream buf;
        buf << in.rdbuf();
        m = JsonParser(buf.str()).parse();
        if (!m.has("format") || m.at("format").string() != "edgevit-early-exit-cascade")
            throw std::runtime_error(opt.manifest + " is not an edgevit early-exit manifest");
        const Json& is = m.at("input_spec");
        const Json& size = is.at("input_size");
        spec.channels = static_cast<int>(size.arr.at(0).number());
        spec.height = static_cast<int>(size.arr.at(1).number());
        spec.width = static_cast<int>(size.arr.at(2).number());
        for (const Json& v : is.at("mean").arr) spec.mean.push_back(static_cast<float>(v.number()));
        for (const Json& v : is.at("std").arr) spec.std.push_back(static_cast<float>(v.number()));
        spec.interpolation = is.at("interpolation").string();
        spec.crop_pct = is.at("crop_pct").number();
        const std::string crit = m.at("criterion").string();
        if (crit != "confidence" && crit != "entropy") throw std::runtime_error("unknown criterion '" + crit + "'");
        confidence = crit == "confidence";
        depth = static_cast<int>(m.at("depth").number());
        const std::string base = dir_of(opt.manifest);
        for (const Json& s : m.at("segments").arr) {
            std::string f = base + "/" + s.at("file").string();
            if (!file_exists(f))
                throw std::runtime_error("the manifest names segment '" + s.at("name").string() + "' with file '" +
                                         s.at("file").string() + "', which does not exist in " + base +
                                         "; copy the whole export folder, or re-export");
            seg_files.push_back(f);
        }
        for (const Json& e : m.at("exits").arr) {
            std::string f = base + "/" + e.at("file").string();
            if (!file_exists(f))
                throw std::runtime_error("the manifest names exit head '" + e.at("name").string() + "' with file '" +
                                         e.at("file").string() + "', which does not exist in " + base);
            head_files.push_back(f);
            exit_blocks.push_back(static_cast<int>(e.at("block").number()));
        }
        for (const Json& t : m.at("thresholds").arr) {
            double v = t.number();
            if (!(v >= 0.0 && v <= 1.0)) throw std::runtime_error("threshold outside [0, 1] in the manifest");
            thresholds.push_back(v);
        }
        if (seg_files.size() != head_files.size() + 1 || thresholds.size() != head_files.size())
            throw std::runtime_error("the manifest needs K exits, K thresholds and K + 1 segments");
    } catch (const std::exception& e) {
        std::cerr << "early_exit_cascade: error: " << e.what() << "\n";
        return 1;
    }
    const std::size_t K = head_files.size();
    const double never = confidence ? 1.0 : 0.0;

    // ---- graphs
    ov::Core core;
    ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY)};
    if (opt.threads > 0) config.emplace(ov::inference_num_threads(opt.threads));
    if (opt.precision == "f32") config.emplace(ov::hint::inference_precision(ov::element::f32));
    else if (opt.precision == "bf16") config.emplace(ov::hint::inference_precision(ov::element::bf16));
    else if (opt.precision != "default") {
        std::cerr << "early_exit_cascade: error: unknown precision '" << opt.precision << "'\n";
        return 2;
    }
    std::vector<std::unique_ptr<Graph>> segs, heads;
    try {
        for (const auto& f : seg_files) segs.push_back(std::make_unique<Graph>(core, f, config, opt.device));
        for (std::size_t k = 0; k < K; ++k)
            heads.push_back(thresholds[k] != never ? std::make_unique<Graph>(core, head_files[k], config, opt.device)
                                                   : nullptr);
    } catch (const std::exception& e) {
        std::cerr << "early_exit_cascade: error: could not load the cascade graphs: " << e.what() << "\n";
        return 1;
    }

    // ---- images
    std::vector<Result> results(opt.images.size());
    std::vector<std::vector<float>> inputs;
    try {
        for (std::size_t i = 0; i < opt.images.size(); ++i) {
            results[i].image = opt.images[i];
            inputs.push_back(edgevit::preprocess(edgevit::read_pnm(opt.images[i]), spec));
        }
    } catch (const std::exception& e) {
        std::cerr << "early_exit_cascade: error: " << e.what() << "\n";
        return 2;
    }

    // ---- cascade, per-sample exit inside each batch
    const std::size_t bs = opt.batch ? opt.batch : opt.images.size();
    try {
        for (std::size_t b0 = 0; b0 < inputs.size(); b0 += bs) {
            const std::size_t n = std::min(bs, inputs.size() - b0);
            std::vector<std::size_t> idx(n);
            Tensor t;
            t.shape = {n, static_cast<std::size_t>(spec.channels), static_cast<std::size_t>(spec.height),
                       static_cast<std::size_t>(spec.width)};
            for (std::size_t i = 0; i < n; ++i) {
                idx[i] = b0 + i;
                t.data.insert(t.data.end(), inputs[b0 + i].begin(), inputs[b0 + i].end());
            }
            for (std::size_t k = 0; k <= K && !idx.empty(); ++k) {
                t = segs[k]->run(t);
                Tensor z = k < K ? (heads[k] ? heads[k]->run(t) : Tensor{}) : t;
                if (k < K && !heads[k]) continue;
                const std::size_t classes = z.row();
                std::vector<std::size_t> keep;
                for (std::size_t r = 0; r < idx.size(); ++r) {
                    const float* row = z.data.data() + r * classes;
                    bool leave = k == K;
                    if (!leave) {
                        double s = score(row, classes, confidence);
                        leave = confidence ? s > thresholds[k] : s < thresholds[k];
                    }
                    if (leave) {
                        Result& res = results[idx[r]];
                        res.exit = static_cast<int>(k);
                        res.block = k < K ? exit_blocks[k] : depth;
                        res.logits.assign(row, row + classes);
                        res.cls = static_cast<int>(std::max_element(row, row + classes) - row);
                    } else {
                        keep.push_back(r);
                    }
                }
                if (k == K || keep.size() == idx.size()) continue;
                Tensor rest;  // exited samples leave the batch
                rest.shape = t.shape;
                rest.shape[0] = keep.size();
                const std::size_t per = t.row();
                std::vector<std::size_t> next;
                for (std::size_t r : keep) {
                    rest.data.insert(rest.data.end(), t.data.begin() + r * per, t.data.begin() + (r + 1) * per);
                    next.push_back(idx[r]);
                }
                t = std::move(rest);
                idx = std::move(next);
            }
        }
    } catch (const std::exception& e) {
        std::cerr << "early_exit_cascade: error: inference failed: " << e.what() << "\n";
        return 1;
    }

    for (const Result& r : results)
        std::cout << r.image << "  exit " << r.exit << " (block " << r.block << ")  class " << r.cls << "\n";
    if (!opt.json.empty()) {
        std::ofstream o(opt.json);
        if (!o) {
            std::cerr << "early_exit_cascade: error: cannot write " << opt.json << "\n";
            return 2;
        }
        o << std::setprecision(9) << "{\n  \"manifest\": \"" << opt.manifest << "\",\n  \"device\": \"" << opt.device
          << "\",\n  \"criterion\": \"" << (confidence ? "confidence" : "entropy") << "\",\n  \"num_exits\": " << K
          << ",\n  \"results\": [\n";
        for (std::size_t i = 0; i < results.size(); ++i) {
            const Result& r = results[i];
            o << "    {\"image\": \"" << r.image << "\", \"exit\": " << r.exit << ", \"block\": " << r.block
              << ", \"class\": " << r.cls << ", \"logits\": [";
            for (std::size_t c = 0; c < r.logits.size(); ++c) o << (c ? ", " : "") << r.logits[c];
            o << "]}" << (i + 1 < results.size() ? "," : "") << "\n";
        }
        o << "  ]\n}\n";
    }
    return 0;
}
