// Where gsa keeps fetched files: ~/.cache/gsa (models under models/, text under data/), with
// GSA_MODEL_DIR overriding the models directory. One definition for the CLI, tools and tests.
#pragma once

#include <string>

namespace gsa {

/// $HOME/.cache/gsa ("./.cache/gsa" without HOME).
std::string cache_dir();
/// $GSA_MODEL_DIR, or cache_dir() + "/models".
std::string model_dir();

}  // namespace gsa
