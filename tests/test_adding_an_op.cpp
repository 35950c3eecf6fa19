// The code of docs/adding-an-op.md, compiled and run: softplus composed from existing ops
// and softplus with its own kernel agree, and both have the right gradient. A second
// test checks that every code block of the document is in the file it names, verbatim,
// so the document cannot drift from the code.
#include <cmath>
#include <fstream>
#include <sstream>

#include "autograd/gradcheck.h"
#include "helpers.h"

namespace nmperm {
namespace {

// softplus(x) = log(1 + e^x) from ops that exist: exp, add and log bring their gradients.
Tensor softplus_composed(const Tensor& x) { return log(add(exp(x), 1.0)); }

TEST(AddingAnOp, ComposedAndKernelSoftplusAgreeWithTheirGradients) {
  Tensor x = test::randn64({7, 33}, 1);  // f64: gradcheck's central differences need it
  auto composed = [](const std::vector<Tensor>& in) { return softplus_composed(in[0]); };
  auto kernel = [](const std::vector<Tensor>& in) { return softplus(in[0]); };
  EXPECT_TRUE(gradcheck(composed, {x.set_requires_grad()}).ok);
  EXPECT_TRUE(gradcheck(kernel, {x}).ok);
  EXPECT_TRUE(test::all_close(softplus(x), softplus_composed(x), 1e-12, 1e-12));
  // Where the composed form overflows (e^100 in f32), the kernel is x itself.
  Tensor big = full({3}, 100.0);
  EXPECT_EQ(softplus(big).to_vector<float>(), big.to_vector<float>());
  EXPECT_TRUE(std::isinf(softplus_composed(big).to_vector<float>()[0]));
}

// Every ```cpp block of docs/adding-an-op.md opens with a comment line naming its file
// ("// kernels/elementwise.h"); the rest of the block must be in that file as written.
TEST(AddingAnOp, TheDocumentShowsTheCodeAsItIs) {
  auto read = [](const std::string& rel) {
    std::ifstream f(std::string(NMPERM_SOURCE_DIR) + "/" + rel);
    EXPECT_TRUE(f.good()) << rel;
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  std::istringstream doc(read("docs/adding-an-op.md"));
  std::string line, file, block;
  bool in_block = false;
  int blocks = 0;
  while (std::getline(doc, line)) {
    if (!in_block && line == "```cpp") {
      in_block = true, file.clear(), block.clear();
    } else if (in_block && line == "```") {
      in_block = false, ++blocks;
      EXPECT_FALSE(file.empty()) << "a code block that names no file:\n" << block;
      if (!file.empty()) {
        EXPECT_NE(read(file).find(block), std::string::npos) << file << " lacks:\n" << block;
      }
    } else if (in_block && file.empty() && block.empty() && line.rfind("// ", 0) == 0) {
      file = line.substr(3);
    } else if (in_block) {
      block += line + "\n";
    }
  }
  EXPECT_FALSE(in_block) << "an unclosed code block";
  EXPECT_GE(blocks, 6);
}

}  // namespace
}  // namespace nmperm
