// Implementation of edgevit_ov.hpp. See that file for what each function does.
#include "edgevit_ov.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace edgevit {

// ------------------------------------------------------------------------------------------------ PNM files

namespace {

// Next header token of a PNM file, skipping whitespace and '#' comments.
std::string pnm_token(std::istream& in, const std::string& path) {
    std::string tok;
    int c;
    while ((c = in.get()) != EOF) {
        if (c == '#') {
            while ((c = in.get()) != EOF && c != '\n' && c != '\r') {
            }
            continue;
        }
        if (std::isspace(c)) {
            if (!tok.empty()) break;
            continue;
        }
        tok.push_back(static_cast<char>(c));
    }
    if (tok.empty()) throw std::runtime_error(path + ": truncated PNM header");
    return tok;
}

int pnm_int(std::istream& in, const std::string& path, const char* what) {
    std::string tok = pnm_token(in, path);
    try {
        std::size_t used = 0;
        int v = std::stoi(tok, &used);
        if (used != tok.size() || v <= 0) throw std::invalid_argument(tok);
        return v;
    } catch (const std::exception&) {
        throw std::runtime_error(path + ": bad PNM " + what + " '" + tok + "'");
    }
}

}  // namespace

Image read_pnm(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open image " + path);
    char magic[2] = {0, 0};
    in.read(magic, 2);
    if (!in || magic[0] != 'P' || (magic[1] != '2' && magic[1] != '3' && magic[1] != '5' && magic[1] != '6'))
        throw std::runtime_error(path + ": not a PGM/PPM file (expected magic P5, P6, P2 or P3); convert it with "
                                 "e.g. PIL: Image.open(f).save('x.pgm') (grey) or .save('x.ppm') (RGB)");
    Image img;
    img.channels = (magic[1] == '3' || magic[1] == '6') ? 3 : 1;
    img.width = pnm_int(in, path, "width");
    img.height = pnm_int(in, path, "height");
    img.maxval = pnm_int(in, path, "maxval");
    if (img.maxval > 65535) throw std::runtime_error(path + ": PNM maxval above 65535");
    const std::size_t n = static_cast<std::size_t>(img.width) * img.height * img.channels;
    img.data.resize(n);
    if (magic[1] == '5' || magic[1] == '6') {  // binary: exactly one whitespace byte after maxval (consumed above)
        const int bytes = img.maxval < 256 ? 1 : 2;
        std::vector<unsigned char> raw(n * bytes);
        in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
        if (static_cast<std::size_t>(in.gcount()) != raw.size())
            throw std::runtime_error(path + ": truncated PNM pixel data (" + std::to_string(in.gcount()) + " of " +
                                     std::to_string(raw.size()) + " bytes)");
        for (std::size_t i = 0; i < n; ++i)
            img.data[i] = bytes == 1 ? raw[i] : static_cast<unsigned short>((raw[2 * i] << 8) | raw[2 * i + 1]);
    } else {
        for (std::size_t i = 0; i < n; ++i) {
            int v = std::stoi(pnm_token(in, path));
            if (v < 0 || v > img.maxval) throw std::runtime_error(path + ": sample out of range");
            img.data[i] = static_cast<unsigned short>(v);
        }
    }
    return img;
}

// ------------------------------------------------------------------------------------------------ spec

namespace {

std::string rt_string(const std::shared_ptr<ov::Model>& model, const std::string& key, const std::string& where) {
    if (!model->has_rt_info("edgevit", "preprocess", key))
        throw std::runtime_error(where + " has no rt_info edgevit/preprocess/" + key +
                                 ": it was not exported by edgevit (or by an older version). Re-export it with "
                                 "`edgevit export openvino --model NAME --out DIR`.");
    return model->get_rt_info<std::string>("edgevit", "preprocess", key);
}

std::vector<float> floats(const std::string& text) {
    std::istringstream s(text);
    std::vector<float> out;
    double v;
    while (s >> v) out.push_back(static_cast<float>(v));
    return out;
}

}  // namespace

Spec load_spec(const std::shared_ptr<ov::Model>& model, const std::string& where) {
    Spec spec;
    spec.channels = std::stoi(rt_string(model, "channels", where));
    spec.height = std::stoi(rt_string(model, "height", where));
    spec.width = std::stoi(rt_string(model, "width", where));
    spec.mean = floats(rt_string(model, "mean", where));
    spec.std = floats(rt_string(model, "std", where));
    spec.interpolation = rt_string(model, "interpolation", where);
    spec.crop_pct = std::stod(rt_string(model, "crop_pct", where));
    spec.num_classes = std::stoi(rt_string(model, "num_classes", where));
    spec.input_name = rt_string(model, "input_name", where);
    spec.output_name = rt_string(model, "output_name", where);
    if (model->has_rt_info("edgevit", "preprocess", "class_names")) {  // optional: older IRs name no classes
        std::istringstream names(model->get_rt_info<std::string>("edgevit", "preprocess", "class_names"));
        for (std::string line; std::getline(names, line);) spec.class_names.push_back(line);
    }
    if (spec.channels <= 0 || spec.height <= 0 || spec.width <= 0 ||
        spec.mean.size() != static_cast<std::size_t>(spec.channels) || spec.std.size() != spec.mean.size())
        throw std::runtime_error(where + ": malformed edgevit/preprocess rt_info (channels/size/mean/std disagree); "
                                 "re-export the model");
    return spec;
}

// ------------------------------------------------------------------------------------------------ preprocess

std::optional<Geometry> resize_geometry(int height, int width, const Spec& spec) {
    const int h = spec.height, w = spec.width;
    if (height == h && width == w) return std::nullopt;
    const int sh = static_cast<int>(std::floor(h / spec.crop_pct)), sw = static_cast<int>(std::floor(w / spec.crop_pct));
    Geometry g;
    if (sh == sw) {  // torchvision Resize(int): the short side becomes sh, the long side int(sh * long / short)
        const bool tall = height > width;
        const int shorter = tall ? width : height, longer = tall ? height : width;
        const int new_long = static_cast<int>(static_cast<double>(static_cast<long long>(sh) * longer) / shorter);
        g.height = tall ? new_long : sh;
        g.width = tall ? sh : new_long;
    } else {  // timm ResizeKeepRatio; Python's round() is half-to-even, as nearbyint in the default rounding mode
        const double ratio = std::min(static_cast<double>(height) / sh, static_cast<double>(width) / sw);
        g.height = static_cast<int>(std::nearbyint(height / ratio));
        g.width = static_cast<int>(std::nearbyint(width / ratio));
    }
    if (g.height < h || g.width < w) {
        std::ostringstream msg;
        msg << "preprocess: crop_pct " << spec.crop_pct << " resizes a " << height << "x" << width << " image to "
            << g.height << "x" << g.width << ", smaller than the model's " << h << "x" << w << " input";
        throw std::runtime_error(msg.str());
    }
    g.top = static_cast<int>(std::nearbyint((g.height - h) / 2.0));  // torchvision CenterCrop
    g.left = static_cast<int>(std::nearbyint((g.width - w) / 2.0));
    return g;
}

namespace {

// Planar float image: c planes of h x w.
struct Planes {
    int c = 0, h = 0, w = 0;
    std::vector<float> v;
    float& at(int ch, int y, int x) { return v[(static_cast<std::size_t>(ch) * h + y) * w + x]; }
    float at(int ch, int y, int x) const { return v[(static_cast<std::size_t>(ch) * h + y) * w + x]; }
};

// ---- 8-bit images: PIL's Image.resize (Pillow src/libImaging/Resample.c and Geometry.c), bit for bit

constexpr double kPi = 3.14159265358979323846;

double pil_box(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }

double pil_bilinear(double x) {
    x = std::fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

double pil_hamming(double x) {
    x = std::fabs(x);
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * kPi;
    return std::sin(x) / x * (static_cast<double>(0.54f) + static_cast<double>(0.46f) * std::cos(x));
}

double pil_bicubic(double x) {  // a = -0.5 (Pillow's; torch's non-antialiased bicubic uses -0.75)
    const double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

double pil_sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * kPi;
    return std::sin(x) / x;
}

double pil_lanczos(double x) { return -3.0 <= x && x < 3.0 ? pil_sinc(x) * pil_sinc(x / 3) : 0.0; }

struct PilFilter {
    double (*fn)(double);
    double support;
};

// edgevit.data._PIL_FILTERS: an unknown name falls back to bilinear, as in Python.
PilFilter pil_filter(const std::string& name) {
    if (name == "bicubic") return {pil_bicubic, 2.0};
    if (name == "lanczos") return {pil_lanczos, 3.0};
    if (name == "box") return {pil_box, 0.5};
    if (name == "hamming") return {pil_hamming, 1.0};
    return {pil_bilinear, 1.0};
}

constexpr int kPrecisionBits = 32 - 8 - 2;

// Fixed-point taps of one axis: precompute_coeffs + normalize_coeffs_8bpc.
struct FixedTaps {
    int ksize = 0;
    std::vector<int> bounds;  // xmin, count per output position
    std::vector<std::int32_t> k;
};

FixedTaps pil_coeffs(int in_size, int out_size, const PilFilter& filter) {
    double scale = static_cast<double>(in_size) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = filter.support * filterscale;
    FixedTaps t;
    t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    t.bounds.resize(2 * static_cast<std::size_t>(out_size));
    t.k.assign(static_cast<std::size_t>(out_size) * t.ksize, 0);
    std::vector<double> k(t.ksize);
    for (int xx = 0; xx < out_size; ++xx) {
        const double center = 0.0 + (xx + 0.5) * scale;
        const double ss = 1.0 / filterscale;
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            const double w = filter.fn((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; ++x) {
            if (ww != 0.0) k[x] /= ww;
            const double v = k[x] * (1 << kPrecisionBits);
            t.k[static_cast<std::size_t>(xx) * t.ksize + x] = k[x] < 0 ? static_cast<int>(-0.5 + v) : static_cast<int>(0.5 + v);
        }
        t.bounds[2 * xx] = xmin;
        t.bounds[2 * xx + 1] = xmax;
    }
    return t;
}

std::uint8_t clip8(int ss) {
    const int v = ss >> kPrecisionBits;  // arithmetic shift, as Pillow's lookup table index
    return static_cast<std::uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// One 8-bit plane (h x w) resized to out_h x out_w like PIL's Image.resize(size, filter) on an "L" image
// (an "RGB" image is the same per band).
std::vector<std::uint8_t> pil_resize(const std::vector<std::uint8_t>& src, int h, int w, int out_h, int out_w,
                                     const std::string& interpolation) {
    if (h == out_h && w == out_w) return src;
    if (interpolation == "nearest") {  // ImagingScaleAffine: positions accumulated in double, COORD truncation
        auto table = [](int in_size, int out_size) {
            const double a = static_cast<double>(in_size) / out_size;
            std::vector<int> idx(out_size);
            double o = a * 0.5;
            for (int i = 0; i < out_size; ++i) {
                const int v = o < 0.0 ? -1 : static_cast<int>(o);
                idx[i] = std::min(std::max(v, 0), in_size - 1);
                o += a;
            }
            return idx;
        };
        const std::vector<int> xs = table(w, out_w), ys = table(h, out_h);
        std::vector<std::uint8_t> out(static_cast<std::size_t>(out_h) * out_w);
        for (int y = 0; y < out_h; ++y)
            for (int x = 0; x < out_w; ++x) out[static_cast<std::size_t>(y) * out_w + x] = src[static_cast<std::size_t>(ys[y]) * w + xs[x]];
        return out;
    }
    const PilFilter filter = pil_filter(interpolation);
    std::vector<std::uint8_t> cur = src;
    int cw = w;
    if (w != out_w) {  // horizontal pass first
        const FixedTaps t = pil_coeffs(w, out_w, filter);
        std::vector<std::uint8_t> out(static_cast<std::size_t>(h) * out_w);
        for (int y = 0; y < h; ++y)
            for (int xx = 0; xx < out_w; ++xx) {
                const int xmin = t.bounds[2 * xx], n = t.bounds[2 * xx + 1];
                const std::int32_t* k = &t.k[static_cast<std::size_t>(xx) * t.ksize];
                int ss = 1 << (kPrecisionBits - 1);
                for (int x = 0; x < n; ++x) ss += cur[static_cast<std::size_t>(y) * cw + xmin + x] * k[x];
                out[static_cast<std::size_t>(y) * out_w + xx] = clip8(ss);
            }
        cur = std::move(out);
        cw = out_w;
    }
    if (h != out_h) {  // then vertical
        const FixedTaps t = pil_coeffs(h, out_h, filter);
        std::vector<std::uint8_t> out(static_cast<std::size_t>(out_h) * cw);
        for (int yy = 0; yy < out_h; ++yy) {
            const int ymin = t.bounds[2 * yy], n = t.bounds[2 * yy + 1];
            const std::int32_t* k = &t.k[static_cast<std::size_t>(yy) * t.ksize];
            for (int x = 0; x < cw; ++x) {
                int ss = 1 << (kPrecisionBits - 1);
                for (int y = 0; y < n; ++y) ss += cur[static_cast<std::size_t>(ymin + y) * cw + x] * k[y];
                out[static_cast<std::size_t>(yy) * cw + x] = clip8(ss);
            }
        }
        cur = std::move(out);
    }
    return cur;
}

// ---- other bit depths: torch's antialiased F.interpolate on float images (edgevit.data.preprocess's float path)

float filter_bilinear(float x) {
    x = std::fabs(x);
    return x < 1.0f ? 1.0f - x : 0.0f;
}

float filter_bicubic(float x) {  // Keys' cubic convolution, a = -0.5 (torch's antialiased bicubic)
    const float a = -0.5f;
    x = std::fabs(x);
    if (x < 1.0f) return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f) return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
    return 0.0f;
}

// Source indices and weights of one output position along one axis, as torch's antialiased interpolation
// (aten/src/ATen/native/cpu/UpSampleKernel.cpp, _compute_indices_min_size_weights_aa) computes them.
struct Taps {
    int start = 0;
    std::vector<float> weights;
};

std::vector<Taps> aa_taps(int in_size, int out_size, const std::string& mode) {
    const bool cubic = mode == "bicubic";
    const float interp_size = cubic ? 4.0f : 2.0f;
    const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
    const float support = scale >= 1.0f ? interp_size * 0.5f * scale : interp_size * 0.5f;
    const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
    std::vector<Taps> taps(out_size);
    for (int i = 0; i < out_size; ++i) {
        const float center = scale * (static_cast<float>(i) + 0.5f);
        const int xmin = std::max(static_cast<int>(center - support + 0.5f), 0);
        const int xsize = std::min(static_cast<int>(center + support + 0.5f), in_size) - xmin;
        Taps& t = taps[i];
        t.start = xmin;
        t.weights.resize(std::max(xsize, 0));
        float total = 0.0f;
        for (int j = 0; j < xsize; ++j) {
            const float arg = (static_cast<float>(j + xmin) - center + 0.5f) * invscale;
            const float w = cubic ? filter_bicubic(arg) : filter_bilinear(arg);
            t.weights[j] = w;
            total += w;
        }
        if (total != 0.0f)
            for (float& w : t.weights) w /= total;
    }
    return taps;
}

// torch's nearest (mode="nearest") source index.
int nearest_index(int i, int in_size, int out_size) {
    if (in_size == out_size) return i;
    if (out_size == 2 * in_size) return i >> 1;
    const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
    return std::min(static_cast<int>(std::floor(static_cast<float>(i) * scale)), in_size - 1);
}

// Resize along width (horizontal) then height (vertical), like torch's separable kernel; a dimension whose size
// does not change is left alone. Python maps interpolations other than bicubic/nearest to bilinear here.
Planes torch_resize(const Planes& src, int out_h, int out_w, const std::string& interpolation) {
    const std::string mode = interpolation == "bicubic" || interpolation == "nearest" ? interpolation : "bilinear";
    Planes cur = src;
    if (mode == "nearest") {
        Planes out{src.c, out_h, out_w, std::vector<float>(static_cast<std::size_t>(src.c) * out_h * out_w)};
        for (int ch = 0; ch < src.c; ++ch)
            for (int y = 0; y < out_h; ++y)
                for (int x = 0; x < out_w; ++x)
                    out.at(ch, y, x) = src.at(ch, nearest_index(y, src.h, out_h), nearest_index(x, src.w, out_w));
        return out;
    }
    if (cur.w != out_w) {
        const std::vector<Taps> taps = aa_taps(cur.w, out_w, mode);
        Planes out{cur.c, cur.h, out_w, std::vector<float>(static_cast<std::size_t>(cur.c) * cur.h * out_w)};
        for (int ch = 0; ch < cur.c; ++ch)
            for (int y = 0; y < cur.h; ++y)
                for (int x = 0; x < out_w; ++x) {
                    const Taps& t = taps[x];
                    float acc = 0.0f;
                    for (std::size_t j = 0; j < t.weights.size(); ++j)
                        acc = j == 0 ? cur.at(ch, y, t.start) * t.weights[0]
                                     : acc + cur.at(ch, y, t.start + static_cast<int>(j)) * t.weights[j];
                    out.at(ch, y, x) = acc;
                }
        cur = std::move(out);
    }
    if (cur.h != out_h) {
        const std::vector<Taps> taps = aa_taps(cur.h, out_h, mode);
        Planes out{cur.c, out_h, cur.w, std::vector<float>(static_cast<std::size_t>(cur.c) * out_h * cur.w)};
        for (int ch = 0; ch < cur.c; ++ch)
            for (int y = 0; y < out_h; ++y) {
                const Taps& t = taps[y];
                for (int x = 0; x < cur.w; ++x) {
                    float acc = 0.0f;
                    for (std::size_t j = 0; j < t.weights.size(); ++j)
                        acc = j == 0 ? cur.at(ch, t.start, x) * t.weights[0]
                                     : acc + cur.at(ch, t.start + static_cast<int>(j), x) * t.weights[j];
                    out.at(ch, y, x) = acc;
                }
            }
        cur = std::move(out);
    }
    return cur;
}

}  // namespace

std::vector<float> preprocess(const Image& image, const Spec& spec) {
    if (image.channels != 1 && image.channels != 3)
        throw std::runtime_error("preprocess: images must have 1 or 3 channels, got " + std::to_string(image.channels));
    if (image.channels == 3 && spec.channels != 1 && spec.channels != 3)
        throw std::runtime_error("preprocess: cannot map 3-channel images to the model's " +
                                 std::to_string(spec.channels) + " channels");
    if (image.channels == 1 && spec.channels != 1 && spec.channels != 3)
        throw std::runtime_error("preprocess: cannot map 1-channel images to the model's " +
                                 std::to_string(spec.channels) + " channels");
    const std::optional<Geometry> geom = resize_geometry(image.height, image.width, spec);
    const std::size_t in_hw = static_cast<std::size_t>(image.height) * image.width;
    // 1. resize each channel of the original image and centre-crop to the model's size -> [0, 1] planes
    Planes p{image.channels, spec.height, spec.width,
             std::vector<float>(static_cast<std::size_t>(image.channels) * spec.height * spec.width)};
    if (image.maxval == 255) {  // uint8 images: PIL, then x / 255 (torch: x.float() / 255.0)
        for (int ch = 0; ch < image.channels; ++ch) {
            std::vector<std::uint8_t> plane(in_hw);
            for (std::size_t i = 0; i < in_hw; ++i)
                plane[i] = static_cast<std::uint8_t>(image.data[i * image.channels + ch]);
            int top = 0, left = 0, rw = image.width;
            if (geom) {
                plane = pil_resize(plane, image.height, image.width, geom->height, geom->width, spec.interpolation);
                top = geom->top;
                left = geom->left;
                rw = geom->width;
            }
            for (int y = 0; y < spec.height; ++y)
                for (int x = 0; x < spec.width; ++x)
                    p.at(ch, y, x) = static_cast<float>(plane[static_cast<std::size_t>(top + y) * rw + left + x]) / 255.0f;
        }
    } else {  // other bit depths: floats in [0, 1] through torch's antialiased resize, then clamped
        Planes f{image.channels, image.height, image.width,
                 std::vector<float>(static_cast<std::size_t>(image.channels) * in_hw)};
        const float maxval = static_cast<float>(image.maxval);
        for (int ch = 0; ch < image.channels; ++ch)
            for (std::size_t i = 0; i < in_hw; ++i)
                f.v[ch * in_hw + i] = static_cast<float>(image.data[i * image.channels + ch]) / maxval;
        if (!geom) {
            p = std::move(f);
        } else {
            const Planes r = torch_resize(f, geom->height, geom->width, spec.interpolation);
            for (int ch = 0; ch < r.c; ++ch)
                for (int y = 0; y < spec.height; ++y)
                    for (int x = 0; x < spec.width; ++x)
                        p.at(ch, y, x) = std::min(std::max(r.at(ch, geom->top + y, geom->left + x), 0.0f), 1.0f);
        }
    }
    // 2. channels: grey -> repeat to 3; RGB -> grey with ITU-R 601 weights
    if (p.c == 1 && spec.channels == 3) {
        std::vector<float> v(p.v.size() * 3);
        for (int ch = 0; ch < 3; ++ch) std::copy(p.v.begin(), p.v.end(), v.begin() + ch * p.v.size());
        p.v = std::move(v);
        p.c = 3;
    } else if (p.c == 3 && spec.channels == 1) {
        const std::size_t hw = static_cast<std::size_t>(p.h) * p.w;
        std::vector<float> v(hw);
        for (std::size_t i = 0; i < hw; ++i) {
            float acc = 0.0f;
            acc = acc + p.v[i] * 0.299f;
            acc = acc + p.v[hw + i] * 0.587f;
            acc = acc + p.v[2 * hw + i] * 0.114f;
            v[i] = acc;
        }
        p.v = std::move(v);
        p.c = 1;
    }
    // 3. normalise per channel
    const std::size_t hw = static_cast<std::size_t>(p.h) * p.w;
    for (int ch = 0; ch < p.c; ++ch)
        for (std::size_t i = 0; i < hw; ++i) p.v[ch * hw + i] = (p.v[ch * hw + i] - spec.mean[ch]) / spec.std[ch];
    return p.v;
}

// ------------------------------------------------------------------------------------------------ classifier

namespace {

bool is_virtual_device(const std::string& device) {
    const std::string head = device.substr(0, device.find(':'));
    return head == "AUTO" || head == "MULTI" || head == "HETERO" || head == "BATCH";
}

void check_device(ov::Core& core, const std::string& device) {
    if (is_virtual_device(device)) return;
    const std::vector<std::string> available = core.get_available_devices();
    const std::string base = device.substr(0, device.find('.'));
    for (const std::string& d : available)
        if (d == device || d.substr(0, d.find('.')) == base) return;
    std::string list;
    for (const std::string& d : available) list += (list.empty() ? "" : ", ") + d;
    throw std::runtime_error("device '" + device + "' is not available here; available OpenVINO devices: " +
                             (list.empty() ? "(none)" : list) + " (plus AUTO)");
}

}  // namespace

Classifier::Classifier(const std::string& xml_path, const CompileOptions& options) : options_(options) {
    ov::Core core;
    load(core, xml_path);
}

Classifier::Classifier(ov::Core& core, const std::string& xml_path, const CompileOptions& options)
    : options_(options) {
    load(core, xml_path);
}

void Classifier::load(ov::Core& core, const std::string& xml_path) {
    {
        std::ifstream xml(xml_path);
        if (!xml) throw std::runtime_error("cannot open " + xml_path + "; export the model first");
    }
    const std::string bin_path = xml_path.substr(0, xml_path.rfind('.')) + ".bin";
    {
        std::ifstream bin(bin_path);
        if (!bin)
            throw std::runtime_error(xml_path + " has no weights: " + bin_path +
                                     " is missing (an IR is .xml + .bin; copy both, or re-export)");
    }
    check_device(core, options_.device);
    std::shared_ptr<ov::Model> model = core.read_model(xml_path);
    spec_ = load_spec(model, xml_path);
    if (model->inputs().size() != 1 || model->outputs().empty())
        throw std::runtime_error(xml_path + ": expected one input and at least one output");

    ov::AnyMap config;
    if (options_.threads > 0) config.emplace(ov::inference_num_threads(options_.threads));
    if (options_.hint == "latency") {
        config.emplace(ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY));
    } else if (options_.hint == "throughput") {
        config.emplace(ov::hint::performance_mode(ov::hint::PerformanceMode::THROUGHPUT));
    } else if (!options_.hint.empty()) {
        throw std::runtime_error("unknown hint '" + options_.hint + "'; use latency or throughput");
    }
    std::string precision = options_.precision;
    if (precision == "file") {
        // edgevit quantize records the precision an INT8 IR was validated in (bf16 for the ops left in float when
        // its speed gate chose that); without a record the file computes in f32, like the Python runtime
        precision = "f32";
        if (model->has_rt_info("edgevit", "inference_precision"))
            precision = model->get_rt_info<std::string>("edgevit", "inference_precision");
    }
    if (precision == "f32") {
        config.emplace(ov::hint::inference_precision(ov::element::f32));
    } else if (precision == "bf16") {
        config.emplace(ov::hint::inference_precision(ov::element::bf16));
    } else if (precision == "f16") {
        config.emplace(ov::hint::inference_precision(ov::element::f16));
    } else if (!precision.empty() && precision != "default") {
        throw std::runtime_error("unknown precision '" + precision + "'; use file, f32, bf16, f16 or default");
    }
    compiled_ = core.compile_model(model, options_.device, config);
    request_ = compiled_.create_infer_request();
    const ov::PartialShape out_shape = compiled_.output(0).get_partial_shape();
    num_outputs_ = 1;
    for (std::size_t i = 1; i < static_cast<std::size_t>(out_shape.rank().get_length()); ++i)
        num_outputs_ *= static_cast<std::size_t>(out_shape[i].get_length());
}

std::vector<float> Classifier::infer(const std::vector<float>& input, std::size_t batch) {
    const std::size_t per = spec_.input_numel();
    if (input.size() != batch * per)
        throw std::runtime_error("infer: expected " + std::to_string(batch * per) + " floats for a batch of " +
                                 std::to_string(batch) + ", got " + std::to_string(input.size()));
    const ov::Shape shape{batch, static_cast<std::size_t>(spec_.channels), static_cast<std::size_t>(spec_.height),
                          static_cast<std::size_t>(spec_.width)};
    // wraps the caller's buffer (no copy); OpenVINO only reads it during infer()
    ov::Tensor tensor(ov::element::f32, shape, const_cast<float*>(input.data()));
    request_.set_input_tensor(tensor);
    request_.infer();
    const ov::Tensor out = request_.get_output_tensor();
    const float* data = out.data<const float>();
    return std::vector<float>(data, data + out.get_size());
}

std::string Classifier::inference_precision() const {
    return compiled_.get_property(ov::hint::inference_precision).get_type_name();
}

int Classifier::inference_threads() const {
    try {
        return compiled_.get_property(ov::inference_num_threads);
    } catch (const std::exception&) {
        return -1;  // not every device reports it
    }
}

std::string Classifier::performance_hint() const {
    std::ostringstream s;
    s << compiled_.get_property(ov::hint::performance_mode);
    return s.str();
}

// ------------------------------------------------------------------------------------------------ outputs

std::vector<float> softmax(const float* logits, std::size_t n) {
    std::vector<float> p(logits, logits + n);
    if (n == 0) return p;
    const float m = *std::max_element(p.begin(), p.end());
    double total = 0.0;
    for (float& v : p) {
        v = std::exp(v - m);
        total += v;
    }
    for (float& v : p) v = static_cast<float>(v / total);
    return p;
}

std::vector<std::size_t> top_k(const std::vector<float>& values, std::size_t k) {
    std::vector<std::size_t> idx(values.size());
    std::iota(idx.begin(), idx.end(), 0);
    k = std::min(k, idx.size());
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(),
                      [&](std::size_t a, std::size_t b) { return values[a] > values[b] || (values[a] == values[b] && a < b); });
    idx.resize(k);
    return idx;
}

}  // namespace edgevit
