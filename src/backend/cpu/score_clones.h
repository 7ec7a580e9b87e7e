// GSA_SCORE_CLONES: how the CPU selection's scoring loops are compiled (block_select.cpp,
// quant_score.cpp).
#pragma once

// Portable builds (no -march=native, e.g. the binaries sent to the GPU machine) still score with
// AVX2 where the CPU has it: the scoring loops are compiled twice and picked at load time. No
// FMA in either clone, so every score is bit-identical to the baseline (and to the CUDA
// kernel's). Off under the sanitizers, whose runtimes start after ifunc resolvers run.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define GSA_SCORE_CLONES __attribute__((target_clones("avx2", "default"), noinline))
#define GSA_SCORE_DISPATCH 1  // quant_scores_simd checks the CPU at run time
#else
#define GSA_SCORE_CLONES inline
#endif
