# CUDA benchmarks (bench/cuda/): built only with the CUDA backend. Drivers with their own main
# that print tables and JSON lines; they never assert.
if(GSA_HAVE_CUDA)
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
  endif()
  add_executable(bench_cuda_attention
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/bench_cuda_attention.cpp
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/read_ceiling.cu)
  target_link_libraries(bench_cuda_attention PRIVATE gsa_backend gsa_flags CUDA::cudart)
  add_executable(bench_cuda_gemm
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/bench_cuda_gemm.cpp
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/read_ceiling.cu)
  target_link_libraries(bench_cuda_gemm PRIVATE gsa_backend gsa_flags CUDA::cudart)
endif()
