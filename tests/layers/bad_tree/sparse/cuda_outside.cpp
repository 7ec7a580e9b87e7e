// A sparse file that includes a CUDA header.
#include <cuda_runtime.h>
