// Fuzz target: the config loader and the --set parser (config::ParseConfig),
// then what the trainer derives from a config it accepted (model dimensions,
// the checkpoint's layer index, the world-size check).
//
// Input: the YAML text, then each --set override, separated by NUL bytes.
// Properties: no crash, no sanitizer report, no CHECK; an accepted config
// prints (ToYaml) to text that parses back to the same config.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "l2l/config/config.h"
#include "l2l/model/config_dims.h"
#include "l2l/model/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string_view yaml = in.substr(0, nul);
  std::vector<std::string> overrides;
  for (size_t at = nul; at != std::string_view::npos && at < in.size();) {
    const size_t next = in.find('\0', at + 1);
    overrides.emplace_back(
        in.substr(at + 1, next == std::string_view::npos ? next : next - at - 1));
    at = next;
  }
  l2l::StatusOr<l2l::config::Config> c = l2l::config::ParseConfig(yaml, "fuzz.yaml", overrides);
  if (!c.ok()) return 0;

  const std::string printed = l2l::config::ToYaml(*c);
  l2l::StatusOr<l2l::config::Config> again = l2l::config::ParseConfig(printed, "fuzz.yaml", {});
  if (!again.ok() || !(*again == *c)) {
    std::fprintf(stderr, "config_fuzz: ToYaml does not parse back to the same config:\n%s\n%s\n",
                 printed.c_str(), again.ok() ? "(differs)" : again.status().ToString().c_str());
    std::abort();
  }
  // The layouts of the embedding, the first block and the head: where sizes
  // multiply (vocab x hidden, hidden x ffn). Every block has the same layout,
  // so a deep model need not be laid out whole.
  const l2l::model::ModelDims dims = l2l::model::DimsFromConfig(c->model);
  const int n = l2l::model::NumLayers(dims);
  int64_t elems = 0;
  for (int l : {0, 1, n - 1}) elems += l2l::model::LayoutForLayer(dims, l).size_elems();
  if (elems <= 0) {
    std::fprintf(stderr, "config_fuzz: an accepted config lays out %lld elements\n",
                 static_cast<long long>(elems));
    std::abort();
  }
  for (int world : {1, 2, 3, 8}) (void)l2l::config::ValidateForWorld(*c, world);
  return 0;
}
