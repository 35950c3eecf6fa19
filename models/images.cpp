#include "models/images.h"

#include <jpeglib.h>
#include <setjmp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_FAILURE_USERMSG
#include <stb/stb_image.h>

#include "core/error.h"

namespace nmperm {

namespace fs = std::filesystem;

namespace {

struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegError*>(c->err);
  (*c->err->format_message)(c, e->message);
  longjmp(e->jump, 1);
}

Rgb8 decode_jpeg(const std::string& bytes, const std::string& path) {
  jpeg_decompress_struct c;
  JpegError err;
  c.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  Rgb8 out;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&c);
    NMPERM_FAIL("'{}': corrupt JPEG: {}", path, err.message);
  }
  jpeg_create_decompress(&c);
  jpeg_mem_src(&c, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&c, TRUE);
  c.out_color_space = JCS_RGB;  // YCbCr converted by libjpeg, gray replicated, as Pillow does
  jpeg_start_decompress(&c);
  out.h = c.output_height, out.w = c.output_width;
  out.px.resize(size_t(out.h * out.w * 3));
  while (c.output_scanline < c.output_height) {
    JSAMPROW row = out.px.data() + size_t(c.output_scanline) * size_t(out.w) * 3;
    jpeg_read_scanlines(&c, &row, 1);
  }
  jpeg_finish_decompress(&c);
  jpeg_destroy_decompress(&c);
  return out;
}

Rgb8 decode_png(const std::string& bytes, const std::string& path) {
  auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  NMPERM_CHECK(!stbi_is_16_bit_from_memory(data, int(bytes.size())),
               "'{}': 16-bit PNGs are not supported (8-bit gray, RGB, RGBA and palette are)", path);
  int w, h, n;
  stbi_uc* px = stbi_load_from_memory(data, int(bytes.size()), &w, &h, &n, 3);
  NMPERM_CHECK(px, "'{}': corrupt PNG: {}", path, stbi_failure_reason());
  Rgb8 out{h, w, std::vector<uint8_t>(px, px + size_t(w) * size_t(h) * 3)};
  stbi_image_free(px);
  return out;
}

// Pillow's resampling (libImaging/Resample.c): filter support scaled when downsizing,
// weights normalised per output pixel, then 8-bit fixed point with 22 fractional bits.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear(double x) {
  x = std::abs(x);
  return x < 1 ? 1 - x : 0;
}
double bicubic(double x) {
  const double a = -0.5;
  x = std::abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

struct Coeffs {
  int64_t ksize;
  std::vector<int64_t> bounds;  // per output: first input, count
  std::vector<int32_t> k;       // per output: ksize fixed-point weights
};

Coeffs precompute(int64_t in_size, int64_t out_size, int resample) {
  double (*filter)(double) = resample == 2 ? bilinear : bicubic;
  double support0 = resample == 2 ? 1.0 : 2.0;
  double scale = double(in_size) / double(out_size), filterscale = std::max(scale, 1.0);
  double support = support0 * filterscale;
  Coeffs c;
  c.ksize = int64_t(std::ceil(support)) * 2 + 1;
  c.bounds.resize(size_t(out_size * 2));
  c.k.assign(size_t(out_size * c.ksize), 0);
  std::vector<double> w(size_t(c.ksize));
  for (int64_t xx = 0; xx < out_size; ++xx) {
    double center = (double(xx) + 0.5) * scale, ww = 0, ss = 1.0 / filterscale;
    int64_t xmin = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    int64_t xmax = std::min<int64_t>(int64_t(center + support + 0.5), in_size) - xmin;
    for (int64_t x = 0; x < xmax; ++x) {
      w[size_t(x)] = filter((double(x + xmin) - center + 0.5) * ss);
      ww += w[size_t(x)];
    }
    for (int64_t x = 0; x < xmax; ++x) {
      double v = ww != 0 ? w[size_t(x)] / ww : w[size_t(x)];
      c.k[size_t(xx * c.ksize + x)] = int32_t(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[size_t(2 * xx)] = xmin, c.bounds[size_t(2 * xx + 1)] = xmax;
  }
  return c;
}

uint8_t clip8(int64_t v) {
  if (v >= (int64_t(1) << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return uint8_t(v >> kPrecisionBits);
}

}  // namespace

Rgb8 decode_image(const std::string& path) {
  std::string bytes = read_file_maybe_gz(path);
  if (bytes.size() >= 3 && uint8_t(bytes[0]) == 0xFF && uint8_t(bytes[1]) == 0xD8) return decode_jpeg(bytes, path);
  if (bytes.size() >= 8 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) return decode_png(bytes, path);
  NMPERM_FAIL("'{}' is neither a JPEG nor a PNG image", path);
}

namespace {

// One pass of Pillow's resampling along rows (horizontal) or columns (vertical): output
// index o reads inputs bounds[2o] - first .. + bounds[2o+1] of `in`.
Rgb8 resample_pass(const Rgb8& in, const Coeffs& c, int64_t out_size, int64_t first, bool horizontal) {
  Rgb8 out = horizontal ? Rgb8{in.h, out_size, {}} : Rgb8{out_size, in.w, {}};
  out.px.resize(size_t(out.h * out.w * 3));
  for (int64_t y = 0; y < out.h; ++y)
    for (int64_t x = 0; x < out.w; ++x) {
      int64_t o = horizontal ? x : y, lo = c.bounds[size_t(2 * o)] - first, n = c.bounds[size_t(2 * o + 1)];
      const int32_t* k = &c.k[size_t(o * c.ksize)];
      for (int ch = 0; ch < 3; ++ch) {
        int64_t ss = int64_t(1) << (kPrecisionBits - 1);
        for (int64_t i = 0; i < n; ++i) {
          int64_t yy = horizontal ? y : lo + i, xx = horizontal ? lo + i : x;
          ss += int64_t(in.px[size_t((yy * in.w + xx) * 3 + ch)]) * k[i];
        }
        out.px[size_t((y * out.w + x) * 3 + ch)] = clip8(ss);
      }
    }
  return out;
}

// The rows (or columns) [lo, hi) of an image.
Rgb8 band(const Rgb8& in, int64_t lo, int64_t hi, bool rows) {
  if (lo == 0 && hi == (rows ? in.h : in.w)) return in;
  Rgb8 out = rows ? Rgb8{hi - lo, in.w, {}} : Rgb8{in.h, hi - lo, {}};
  for (int64_t y = 0; y < out.h; ++y)
    for (int64_t x = 0; x < out.w; ++x)
      for (int ch = 0; ch < 3; ++ch)
        out.px.push_back(in.px[size_t((((rows ? lo : 0) + y) * in.w + (rows ? 0 : lo) + x) * 3 + ch)]);
  return out;
}

}  // namespace

Rgb8 resize_like_pillow(const Rgb8& in, int64_t h, int64_t w, int resample, int pillow) {
  NMPERM_CHECK(resample == 2 || resample == 3, "resample {} is not supported (2 bilinear, 3 bicubic)", resample);
  NMPERM_CHECK(pillow == 12 || pillow == 13, "Pillow {}'s resize is not reproduced (12 or 13)", pillow);
  const bool horizontal = w != in.w, vertical = h != in.h;
  if (!horizontal && !vertical) return in;
  Coeffs cv = precompute(in.h, h, resample), ch = precompute(in.w, w, resample);
  if (!horizontal) return resample_pass(in, cv, h, 0, false);
  if (!vertical) return resample_pass(in, ch, w, 0, true);
  // Pillow 13 (Resample.c) runs the vertical pass first when the height shrinks by more
  // than twice the width's shrink (a negative width shrink is an enlargement).
  if (pillow >= 13 && in.h - h > 0 && in.h - h > (in.w - w) * 2)
    return resample_pass(resample_pass(in, cv, h, 0, false), ch, w, 0, true);
  // Otherwise horizontal, then vertical; the horizontal pass covers only the rows the
  // vertical one reads.
  int64_t y0 = cv.bounds[0], y1 = cv.bounds[size_t(2 * h - 2)] + cv.bounds[size_t(2 * h - 1)];
  return resample_pass(resample_pass(band(in, y0, y1, true), ch, w, 0, true), cv, h, y0, false);
}

ImageSet load_image_folder(const std::string& dir, const ImagePreprocess& p, std::vector<std::string> classes,
                           int64_t channels) {
  NMPERM_CHECK(fs::is_directory(dir), "image folder '{}' does not exist", dir);
  NMPERM_CHECK(channels == 1 || channels == 3, "image folders feed models of 1 or 3 channels, not {}", channels);
  std::vector<std::string> folders;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_directory()) folders.push_back(e.path().filename().string());
  std::sort(folders.begin(), folders.end());
  NMPERM_CHECK(!folders.empty(), "image folder '{}' has no class folders (DIR/<class>/*.jpg|png)", dir);
  if (classes.empty()) classes = folders;
  std::vector<std::pair<std::string, int64_t>> files;
  for (const std::string& f : folders) {
    auto it = std::find(classes.begin(), classes.end(), f);
    NMPERM_CHECK(it != classes.end(), "image folder '{}': class folder '{}' is not one of the model's classes", dir, f);
    std::vector<std::string> names;
    for (auto& e : fs::directory_iterator(fs::path(dir) / f)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
      if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png")) names.push_back(e.path().string());
    }
    std::sort(names.begin(), names.end());
    for (auto& n : names) files.emplace_back(n, int64_t(it - classes.begin()));
  }
  NMPERM_CHECK(!files.empty(), "image folder '{}' holds no .jpg, .jpeg or .png files", dir);
  ImageSet s;
  int64_t H = 0, W = 0, N = int64_t(files.size());
  std::vector<float> px;
  std::vector<int64_t> labels;
  for (auto& [path, label] : files) {
    Rgb8 im = decode_image(path);
    if (p.do_resize) im = resize_like_pillow(im, p.size_h, p.size_w, p.resample, p.pillow);
    int64_t top = 0, left = 0, h = im.h, w = im.w;
    if (p.do_center_crop) {
      NMPERM_CHECK(p.crop_h <= im.h && p.crop_w <= im.w, "'{}': {}x{} is smaller than crop_size {}x{}", path, im.h,
                   im.w, p.crop_h, p.crop_w);
      top = (im.h - p.crop_h) / 2, left = (im.w - p.crop_w) / 2, h = p.crop_h, w = p.crop_w;
    }
    if (H == 0) H = h, W = w;
    NMPERM_CHECK(h == H && w == W, "'{}' is {}x{}, the others {}x{}: without do_resize images must share one size",
                 path, h, w, H, W);
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const uint8_t* q = &im.px[size_t(((y + top) * im.w + x + left) * 3)];
          if (channels == 1)
            NMPERM_CHECK(q[0] == q[1] && q[1] == q[2], "'{}' is a colour image; the model reads one channel", path);
          px.push_back(float(q[c]) / 255.0f);
        }
    labels.push_back(label);
  }
  s.images = from_vector(px, {N, channels, H, W});
  s.labels = from_vector(labels, {N});
  return s;
}

}  // namespace nmperm
