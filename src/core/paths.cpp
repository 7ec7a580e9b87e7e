// Cache and model directory lookup.
#include "core/paths.h"

#include <cstdlib>

namespace gsa {

std::string cache_dir() {
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/gsa";
}

std::string model_dir() {
  if (const char* d = std::getenv("GSA_MODEL_DIR"); d && *d) return d;
  return cache_dir() + "/models";
}

}  // namespace gsa
