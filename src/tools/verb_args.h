// Command-line parsing shared by the verb-style tools (l2l-data, l2l-ckpt):
// `tool VERB [--flag value | --flag=value]... [POSITIONAL]...`. Every flag
// takes a value; unknown flags are errors naming the flag, the verb and the
// tool, so the user gets one line that says what to fix.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "l2l/core/status.h"

namespace l2l::tools {

struct VerbArgs {
  std::map<std::string, std::string> flags;
  std::vector<std::string> positional;
};

inline StatusOr<VerbArgs> ParseVerbArgs(const std::string& tool, const std::string& verb,
                                        const std::vector<std::string>& argv,
                                        const std::set<std::string>& known_flags) {
  VerbArgs args;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.rfind("--", 0) != 0) {
      args.positional.push_back(a);
      continue;
    }
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    if (!known_flags.count(name)) {
      return InvalidArgument("unknown flag " + name + " for '" + verb + "'; run " + tool +
                             " --help");
    }
    if (eq != std::string::npos) {
      args.flags[name] = a.substr(eq + 1);
    } else if (i + 1 < argv.size()) {
      args.flags[name] = argv[++i];
    } else {
      return InvalidArgument("flag " + name + " needs a value");
    }
  }
  return args;
}

}  // namespace l2l::tools
