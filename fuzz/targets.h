// The readers of outside data, each as a function of raw bytes, for libFuzzer (fuzz/main.cpp)
// and for the regression test that replays fuzz/corpus and fuzz/regressions
// (tests/test_fuzz_inputs.cpp). A target may throw nmperm::Error (bad input, named); any
// other exception, a crash, a sanitizer report, a hang or an outsized allocation is a bug.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace nmperm::fuzz {

using Target = void (*)(const uint8_t* data, size_t size);

struct NamedTarget {
  std::string name;  // fuzz/corpus/<name>, fuzz/regressions/<name>
  Target run;
};

const std::vector<NamedTarget>& targets();
Target find_target(const std::string& name);  // throws for unknown names

}  // namespace nmperm::fuzz
