// Image folders against transformers' ViT image processor (its Pillow backend; fixtures from
// tools/make_image_fixtures.py, with Pillow 12.3 and 13.0): JPEG and PNG of several modes and
// sizes, resized bilinear and bicubic, rescaled and normalised, equal within float rounding.
#include <filesystem>
#include <fstream>

#include "core/safetensors.h"
#include "helpers.h"
#include "models/images.h"

namespace nmperm {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return std::string(NMPERM_FIXTURES) + "/images/" + name; }

TEST(Images, FolderPixelsEqualTransformersViTImageProcessor) {
  const std::vector<std::string> files = {"cat/a.jpg", "cat/b.jpeg", "cat/c.png", "cat/d.png",
                                          "dog/e.jpg", "dog/f.png",  "dog/g.png", "dog/h.JPG"};
  // Pillow 13 orders the two passes differently for images whose height shrinks most: the
  // references differ there (two of the portrait images), so each order is checked.
  SafeTensors ref12 = load_safetensors(fixture("reference_pillow12.safetensors"));
  SafeTensors ref13 = load_safetensors(fixture("reference_pillow13.safetensors"));
  int differing = 0;
  for (auto& [name, t] : ref12.tensors) differing += t.to_vector<float>() != ref13.at(name).to_vector<float>();
  EXPECT_EQ(differing, 3);
  for (auto [pillow, cfg] : {std::pair{12, "bilinear"}, {12, "bicubic"}, {13, "bilinear"}, {13, "bicubic"}}) {
    SCOPED_TRACE(fmt::format("Pillow {}, {}", pillow, cfg));
    const SafeTensors& ref = pillow == 12 ? ref12 : ref13;
    ImagePreprocess p = ImagePreprocess::from_json(
        nlohmann::json::parse(std::ifstream(fixture(std::string(cfg) + "/preprocessor_config.json"))));
    EXPECT_EQ(p.pillow, 13);  // the default: today's Pillow
    p.pillow = pillow;
    ImageSet s = load_image_folder(fixture("folder"), p, {}, 3);
    ASSERT_EQ(s.size(), int64_t(files.size()));
    EXPECT_EQ(s.labels.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1}));  // sorted folders
    Tensor x = p.apply(s.images);
    for (size_t i = 0; i < files.size(); ++i) {
      auto ours = narrow(x, 0, int64_t(i), 1).to_vector<double>();
      auto want = ref.at(std::string(cfg) + "/" + files[i]).to_vector<double>();
      ASSERT_EQ(ours.size(), want.size());
      // Differences in pixel levels (1/255 before normalising by std).
      size_t plane = want.size() / 3, off_by_one = 0;
      double worst = 0;
      for (size_t k = 0; k < want.size(); ++k) {
        double levels = std::abs(ours[k] - want[k]) * p.image_std[k / plane] * 255.0;
        worst = std::max(worst, levels);
        off_by_one += levels > 0.01;
      }
      // Decoding (libjpeg, as Pillow's), resampling and normalisation equal Pillow's and
      // transformers' to float rounding: no pixel is off by a level.
      EXPECT_LE(worst, 1e-3) << files[i];
      EXPECT_EQ(off_by_one, 0u) << files[i];
    }
  }
}

TEST(Images, ClassListsAndBadFoldersAreClear) {
  ImagePreprocess p;
  p.do_resize = true, p.size_h = p.size_w = 8;
  ImageSet s = load_image_folder(fixture("folder"), p, {"dog", "cat"}, 3);  // label 0 = dog
  EXPECT_EQ(s.labels.to_vector<int64_t>()[0], 1);
  EXPECT_THROW_MSG(load_image_folder(fixture("folder"), p, {"dog", "bird"}, 3),
                   "class folder 'cat' is not one of the model's classes");
  EXPECT_THROW_MSG(load_image_folder(fixture("folder"), p, {}, 1), "is a colour image; the model reads one channel");
  ImagePreprocess no_resize;
  EXPECT_THROW_MSG(load_image_folder(fixture("folder"), no_resize, {}, 3), "without do_resize images must share one size");
  fs::path bad = test::scratch_path("bad_images") / "x";
  fs::create_directories(bad);
  std::ofstream(bad / "broken.jpg") << "\xff\xd8\xff\xe0 not really";
  EXPECT_THROW_MSG(load_image_folder(bad.parent_path().string(), p, {}, 3), "corrupt JPEG");
  fs::remove_all(bad.parent_path());
  EXPECT_THROW_MSG(ImagePreprocess::from_json({{"do_resize", true}, {"size", {{"shortest_edge", 224}}}}),
                   "size {\"shortest_edge\":224} is not supported");
  EXPECT_THROW_MSG(ImagePreprocess::from_json({{"do_resize", true}, {"size", 8}, {"resample", 1}}),
                   "resample 1 is not supported");
}

}  // namespace
}  // namespace nmperm
