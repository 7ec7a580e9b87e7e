// Allowed: core includes only itself.
#include "core/status.h"
