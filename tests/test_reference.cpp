// Forward values of the non-trivial kernels against PyTorch (fixtures written by
// tools/make_fixtures.py with Debian's python3-torch). Computed here in f64 and in f32.
#include "core/safetensors.h"
#include "helpers.h"

namespace nmperm {
namespace {

using test::all_close;

const SafeTensors& ref() {
  static SafeTensors s = load_safetensors(std::string(NMPERM_FIXTURES) + "/ops_reference.safetensors");
  return s;
}
Tensor R(const char* name) { return ref().at(name); }

// f64 must match to rounding; f32 to float precision.
void both_precisions(const std::function<Tensor(DType)>& fn, const Tensor& expected, double f32_tol = 2e-5) {
  EXPECT_TRUE(all_close(fn(DType::F64), expected, 1e-10, 1e-9)) << "f64";
  EXPECT_TRUE(all_close(fn(DType::F32), expected, f32_tol, f32_tol)) << "f32";
}
Tensor as(const char* name, DType t) { return R(name).to(t); }

TEST(Reference, Softmax) {
  both_precisions([](DType t) { return softmax(as("softmax.x", t), -1); }, R("softmax.y_last"));
  both_precisions([](DType t) { return softmax(as("softmax.x", t), 0); }, R("softmax.y_dim0"));
  both_precisions([](DType t) { return log_softmax(as("softmax.x", t), -1); }, R("log_softmax.y_last"));
}

TEST(Reference, Activations) {
  both_precisions([](DType t) { return gelu(as("gelu.x", t)); }, R("gelu.y_erf"));
  both_precisions([](DType t) { return gelu(as("gelu.x", t), true); }, R("gelu.y_tanh"));
  both_precisions([](DType t) { return silu(as("gelu.x", t)); }, R("silu.y"));
}

TEST(Reference, LayerNorm) {
  both_precisions(
      [](DType t) { return layer_norm(as("layer_norm.x", t), as("layer_norm.w", t), as("layer_norm.b", t), 1e-5); },
      R("layer_norm.y"), 5e-5);
}

TEST(Reference, RmsNorm) {
  both_precisions([](DType t) { return rms_norm(as("rms_norm.x", t), as("rms_norm.w", t), 1e-6); }, R("rms_norm.y"));
}

TEST(Reference, RopeBothConventions) {
  using kernels::RopeStyle;
  both_precisions([](DType t) { return rope(as("rope.x", t), 3, 10000.0, RopeStyle::RotateHalf); },
                  R("rope.y_rotate_half"));
  both_precisions([](DType t) { return rope(as("rope.x", t), 3, 10000.0, RopeStyle::Interleaved); },
                  R("rope.y_interleaved"));
}

TEST(Reference, Attention) {
  auto run = [](const char* p, bool causal, double scale) {
    return [=](DType t) {
      std::string s(p);
      return scaled_dot_product_attention(as((s + ".q").c_str(), t), as((s + ".k").c_str(), t),
                                          as((s + ".v").c_str(), t), causal, scale);
    };
  };
  both_precisions(run("attn", false, -1), R("attn.y_full"));
  both_precisions(run("attn", true, -1), R("attn.y_causal"));
  both_precisions(run("attn_gqa", true, 0.25), R("attn_gqa.y_causal"));
  both_precisions(run("attn_gqa", false, 0.25), R("attn_gqa.y_full"));
}

TEST(Reference, CrossEntropy) {
  Tensor target = R("ce.target");
  both_precisions([&](DType t) { return cross_entropy(as("ce.logits", t), target); }, R("ce.loss_plain"));
  both_precisions([&](DType t) { return cross_entropy(as("ce.logits", t), target, -100, 0.1); }, R("ce.loss_smooth"));
  both_precisions([&](DType t) { return cross_entropy(as("ce.logits", t), target, -100, 0.1, Reduction::None); },
                  R("ce.loss_none"));
  both_precisions([&](DType t) { return cross_entropy(as("ce.logits", t), target, -100, 0.0, Reduction::Sum); },
                  R("ce.loss_sum"), 1e-4);
}

}  // namespace
}  // namespace nmperm
