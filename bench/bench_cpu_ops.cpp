// CPU kernel benchmarks (in progress).
#include <benchmark/benchmark.h>
BENCHMARK_MAIN();
