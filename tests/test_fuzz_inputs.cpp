// Replays every fuzz seed (fuzz/corpus/<target>) and every input a fuzzer once broke the
// code with (fuzz/regressions/<target>) through the same target functions libFuzzer
// drives: each must end normally or with nmperm::Error. Under `./setup.sh test-asan` the
// sanitizers watch these replays too.
#include <filesystem>
#include <fstream>
#include <iterator>

#include "fuzz/targets.h"
#include "helpers.h"

namespace nmperm {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

TEST(FuzzInputs, EverySeedAndRegressionEndsCleanly) {
  for (auto& [name, run] : fuzz::targets()) {
    int seeds = 0;
    for (const char* kind : {"corpus", "regressions"}) {
      fs::path dir = fs::path(NMPERM_FUZZ_DIR) / kind / name;
      if (!fs::exists(dir)) continue;
      for (auto& e : fs::directory_iterator(dir)) {
        std::vector<uint8_t> bytes = read_bytes(e.path());
        try {
          run(bytes.data(), bytes.size());
        } catch (const Error&) {
        } catch (const std::exception& ex) {
          ADD_FAILURE() << e.path() << ": escaped as " << typeid(ex).name() << ": " << ex.what();
        }
        seeds += std::string(kind) == "corpus";
      }
    }
    EXPECT_GT(seeds, 0) << "no seeds for fuzz target " << name;
  }
}

}  // namespace
}  // namespace nmperm
