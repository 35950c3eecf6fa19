// Real images for a ViT: an ImageNet-style folder DIR/<class>/*.jpg|jpeg|png, decoded
// (JPEG through libjpeg, PNG through stb_image), converted to RGB as Pillow's
// convert("RGB") does (alpha dropped, gray replicated, palette expanded), resized with
// Pillow's own resampling (its separable bilinear / bicubic filters, 8-bit fixed-point
// passes in the order of Pillow 13, or of Pillow 12 on request) and center-cropped, as the checkpoint's
// preprocessor_config.json says: the pixels transformers' ViT image processor (its Pillow
// backend) makes, within its float rounding.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "models/checkpoint.h"
#include "models/data.h"

namespace nmperm {

// One decoded image: height x width x 3 RGB bytes.
struct Rgb8 {
  int64_t h = 0, w = 0;
  std::vector<uint8_t> px;
};
Rgb8 decode_image(const std::string& path);
// Pillow's Image.resize(..., resample) for resample 2 (bilinear) or 3 (bicubic), as Pillow
// release `pillow` (12 or 13; see ImagePreprocess::pillow) computes it.
Rgb8 resize_like_pillow(const Rgb8& in, int64_t h, int64_t w, int resample, int pillow = 13);

// The images of a folder, in [0, 1] as (N, C, H, W) (C = channels: 3, or 1 for grayscale
// images only), labels from `classes` (label i = classes[i]; every class folder must be in
// it), or the sorted folder names when `classes` is empty. Images come out at the size the
// preprocessing makes (or as stored without do_resize, which must then be one size).
ImageSet load_image_folder(const std::string& dir, const ImagePreprocess& p, std::vector<std::string> classes,
                           int64_t channels);

}  // namespace nmperm
