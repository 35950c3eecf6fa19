// libFuzzer entry point; NMPERM_FUZZ_TARGET (a name from fuzz/targets.cpp) is set per
// executable by CMake. Bad input must end in nmperm::Error; anything else is a finding.
#include "core/error.h"
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nmperm::fuzz::Target target = nmperm::fuzz::find_target(NMPERM_FUZZ_TARGET);
  try {
    target(data, size);
  } catch (const nmperm::Error&) {
  }
  return 0;
}
