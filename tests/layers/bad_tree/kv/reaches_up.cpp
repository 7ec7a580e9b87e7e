// A kv file that reaches up to the engine: check-layers must refuse it.
#include "engine/engine.h"
