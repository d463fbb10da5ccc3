// dsv4-bench: every kernel at V4-Flash shapes, per tier and thread count. Standard
// Google Benchmark flags (--benchmark_filter, --benchmark_format=json, ...).
// DSV4_ISA restricts the run to one tier; DSV4_BENCH_THREADS overrides "all threads".
#include <benchmark/benchmark.h>

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
