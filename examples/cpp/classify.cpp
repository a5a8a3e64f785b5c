// classify: run an edgevit-exported OpenVINO IR on PGM/PPM images; print top-k (with the class names the IR
// carries, if any) and the median latency.
//
//   classify MODEL.xml IMAGE.pgm [IMAGE ...] [--device CPU] [--threads N] [--hint latency|throughput]
//            [--precision file|f32|bf16|f16|default] [--top K] [--runs N] [--warmup N] [--json FILE]
//            [--dump-input FILE]
//
// Images are preprocessed exactly as edgevit.data.preprocess does for the model's input spec (read from the
// IR), so the logits match Python's OpenVINO runtime. Latency: median (and mean/min/p90) of --runs timed
// synchronous inferences of one preprocessed image (batch 1) after --warmup untimed ones, preprocessing excluded.
// Exit status: 0 ok, 2 bad usage or input, 1 OpenVINO failure.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <openvino/core/version.hpp>

#include "edgevit_ov.hpp"

namespace {

struct Args {
    std::string model;
    std::vector<std::string> images;
    edgevit::CompileOptions compile;
    int top = 5, runs = 20, warmup = 3;
    std::string json, dump_input;
};

const char* kUsage =
    "usage: classify MODEL.xml IMAGE [IMAGE ...] [--device CPU] [--threads N] [--hint latency|throughput]\n"
    "                [--precision file|f32|bf16|f16|default] [--top K] [--runs N] [--warmup N] [--json FILE]\n"
    "                [--dump-input FILE]\n"
    "IMAGE: binary or ASCII PGM (grey) / PPM (RGB); any size (resized like edgevit.data.preprocess).\n";

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

int to_int(const std::string& flag, const std::string& v, int min) {
    try {
        std::size_t used = 0;
        int n = std::stoi(v, &used);
        if (used == v.size() && n >= min) return n;
    } catch (const std::exception&) {
    }
    throw UsageError(flag + " expects an integer >= " + std::to_string(min) + ", got '" + v + "'");
}

Args parse(int argc, char** argv) {
    Args a;
    std::vector<std::string> pos;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw UsageError(arg + " needs a value");
            return argv[++i];
        };
        if (arg == "-h" || arg == "--help") {
            std::cout << kUsage;
            std::exit(0);
        } else if (arg == "--device") {
            a.compile.device = value();
        } else if (arg == "--threads") {
            a.compile.threads = to_int(arg, value(), 1);
        } else if (arg == "--hint") {
            a.compile.hint = value();
        } else if (arg == "--precision") {
            a.compile.precision = value();
        } else if (arg == "--top") {
            a.top = to_int(arg, value(), 1);
        } else if (arg == "--runs") {
            a.runs = to_int(arg, value(), 1);
        } else if (arg == "--warmup") {
            a.warmup = to_int(arg, value(), 0);
        } else if (arg == "--json") {
            a.json = value();
        } else if (arg == "--dump-input") {
            a.dump_input = value();
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw UsageError("unknown option " + arg);
        } else {
            pos.push_back(arg);
        }
    }
    if (pos.size() < 2) throw UsageError("need a model (.xml) and at least one image");
    a.model = pos[0];
    a.images.assign(pos.begin() + 1, pos.end());
    return a;
}

struct Latency {
    double median = 0, mean = 0, min = 0, p90 = 0;
    int runs = 0;
};

Latency time_runs(edgevit::Classifier& clf, const std::vector<float>& x, int warmup, int runs) {
    for (int i = 0; i < warmup; ++i) clf.infer(x, 1);
    std::vector<double> ms;
    ms.reserve(runs);
    for (int i = 0; i < runs; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        clf.infer(x, 1);
        const auto t1 = std::chrono::steady_clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    Latency l;
    l.runs = runs;
    l.median = s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
    l.min = s.front();
    for (double v : s) l.mean += v / static_cast<double>(s.size());
    l.p90 = s[std::min(s.size() - 1, static_cast<std::size_t>(0.9 * static_cast<double>(s.size() - 1) + 0.5))];
    return l;
}

std::string json_escape(const std::string& s) {
    std::ostringstream o;
    for (char c : s) {
        if (c == '"' || c == '\\') {
            o << '\\' << c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            o << "\\u" << std::hex << std::setw(4) << std::setfill('0') << static_cast<int>(c) << std::dec;
        } else {
            o << c;
        }
    }
    return o.str();
}

struct Result {
    std::string image;
    std::vector<float> logits, probs;
    std::vector<std::size_t> top;
    Latency latency;
};

void write_json(const std::string& path, const Args& a, edgevit::Classifier& clf, const std::vector<Result>& results) {
    std::ofstream o(path);
    if (!o) throw std::runtime_error("cannot write " + path);
    o << std::setprecision(9);
    o << "{\n  \"model\": \"" << json_escape(a.model) << "\",\n";
    o << "  \"openvino_version\": \"" << json_escape(ov::get_openvino_version().buildNumber) << "\",\n";
    o << "  \"device\": \"" << json_escape(clf.device()) << "\",\n";
    o << "  \"inference_precision\": \"" << clf.inference_precision() << "\",\n";
    o << "  \"threads\": " << clf.inference_threads() << ",\n";
    o << "  \"hint\": \"" << json_escape(clf.performance_hint()) << "\",\n";
    o << "  \"input_size\": [" << clf.spec().channels << ", " << clf.spec().height << ", " << clf.spec().width
      << "],\n";
    o << "  \"results\": [\n";
    for (std::size_t r = 0; r < results.size(); ++r) {
        const Result& res = results[r];
        o << "    {\"image\": \"" << json_escape(res.image) << "\", \"top\": [";
        for (std::size_t k = 0; k < res.top.size(); ++k) {
            o << (k ? ", " : "") << "{\"class\": " << res.top[k];
            const std::string name = clf.spec().class_name(res.top[k]);
            if (!name.empty()) o << ", \"name\": \"" << json_escape(name) << "\"";
            o << ", \"prob\": " << res.probs[res.top[k]] << "}";
        }
        o << "],\n     \"logits\": [";
        for (std::size_t k = 0; k < res.logits.size(); ++k) o << (k ? ", " : "") << res.logits[k];
        o << "],\n     \"latency_ms\": {\"median\": " << res.latency.median << ", \"mean\": " << res.latency.mean
          << ", \"min\": " << res.latency.min << ", \"p90\": " << res.latency.p90 << ", \"runs\": "
          << res.latency.runs << ", \"batch\": 1}}" << (r + 1 < results.size() ? "," : "") << "\n";
    }
    o << "  ]\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    try {
        a = parse(argc, argv);
    } catch (const UsageError& e) {
        std::cerr << "classify: error: " << e.what() << "\n" << kUsage;
        return 2;
    }
    std::unique_ptr<edgevit::Classifier> clf;
    try {
        clf = std::make_unique<edgevit::Classifier>(a.model, a.compile);
    } catch (const std::exception& e) {
        std::cerr << "classify: error: could not load " << a.model << ": " << e.what() << "\n";
        return 1;
    }
    std::vector<Result> results;
    std::ofstream dump;
    if (!a.dump_input.empty()) dump.open(a.dump_input, std::ios::binary);
    for (const std::string& path : a.images) {
        Result res;
        res.image = path;
        std::vector<float> x;
        try {
            x = edgevit::preprocess(edgevit::read_pnm(path), clf->spec());
        } catch (const std::exception& e) {
            std::cerr << "classify: error: " << e.what() << "\n";
            return 2;
        }
        if (dump) dump.write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.size() * 4));
        try {
            res.logits = clf->infer(x, 1);
            res.latency = time_runs(*clf, x, a.warmup, a.runs);
        } catch (const std::exception& e) {
            std::cerr << "classify: error: inference failed on " << path << ": " << e.what() << "\n";
            return 1;
        }
        res.probs = edgevit::softmax(res.logits.data(), res.logits.size());
        res.top = edgevit::top_k(res.probs, static_cast<std::size_t>(a.top));
        std::cout << path << "\n";
        for (std::size_t k = 0; k < res.top.size(); ++k) {
            const std::string name = clf->spec().class_name(res.top[k]);
            std::cout << "  " << (k + 1) << ". class " << res.top[k] << (name.empty() ? "" : " (" + name + ")")
                      << "  p=" << std::fixed << std::setprecision(4) << res.probs[res.top[k]] << "\n";
        }
        std::cout << "  latency: median " << std::setprecision(3) << res.latency.median << " ms (mean "
                  << res.latency.mean << ", p90 " << res.latency.p90 << ", " << res.latency.runs << " runs, batch 1, "
                  << clf->device() << " " << clf->inference_precision() << ")\n";
        std::cout.unsetf(std::ios::fixed);
        results.push_back(std::move(res));
    }
    if (!a.json.empty()) {
        try {
            write_json(a.json, a, *clf, results);
        } catch (const std::exception& e) {
            std::cerr << "classify: error: " << e.what() << "\n";
            return 2;
        }
    }
    return 0;
}
