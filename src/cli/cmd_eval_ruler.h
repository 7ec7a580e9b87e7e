// `gsa eval ruler`: the RULER-style long-context suite (cases from eval/ruler/gen_ruler.py).
// Declared here so cmd_eval.cpp can register it under `eval` beside niah.
#pragma once

#include "cli/common.h"

namespace gsa::cli {

/// Adds the `ruler` subcommand to `eval`; its run() is valid once the command line is parsed.
Command add_eval_ruler(CLI::App& eval);

}  // namespace gsa::cli
