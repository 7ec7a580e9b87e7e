// The CUDA factory in a build without the CUDA backend.
#include "backend/backend.h"

namespace gsa::backend {

bool cuda_available() { return false; }

Result<std::unique_ptr<Backend>> make_cuda_backend(int) {
  return unsupported("this gsa build has no CUDA backend (configure with nvcc present or -DGSA_CUDA=ON)");
}

}  // namespace gsa::backend
