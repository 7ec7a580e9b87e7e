// libgsa's public entry point for embedders: the engine (requests, steps, sampling), its
// configuration including every GSA knob, and the Status/Result error types. The sparse core
// (representations, selection, sparse attention) is reachable on its own through
// sparse/selector.h and backend/ops_sparse.h for engines that bring their own model code.
#pragma once

#include "core/status.h"
#include "engine/engine.h"
#include "sparse/selector.h"
#include "sparse/sparse_config.h"
