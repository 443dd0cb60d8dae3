// The CUDA built-ins that src/cuda/kernels.cu uses, emulated on the CPU, so
// that tests/cuda_host.rs can run those kernels without a GPU. A launch
// runs its blocks one after another; a block's threads are fibers
// (ucontext) on one OS thread, run in turn from one __syncthreads() to the
// next, which is the barrier's meaning. A barrier that some threads of a
// block skip (undefined on a GPU) stops the run with a message. __shared__
// arrays are function statics, shared by the threads of the block that
// runs. Within a round the threads run in index order, or in reverse
// order when shim::reverse is set: a kernel whose threads race (one reads
// what another writes between the same two barriers) gives different
// results in the two orders. Not emulated: warps, atomics, concurrent blocks, and the GPU's
// floating point (it contracts a * b + c into one fused multiply-add where
// the host rounds twice), so results agree with the GPU's within rounding.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

struct double2 {
    double x, y;
};

inline double2 make_double2(double x, double y) { return {x, y}; }

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace shim {
struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    bool done = false;
};
inline ucontext_t scheduler;
inline std::vector<Fiber> fibers;
inline const std::function<void()>* body = nullptr;
inline unsigned current = 0;
inline bool reverse = false;

inline void entry() {
    (*body)();
    fibers[current].done = true;
}
}  // namespace shim

inline void __syncthreads() {
    if (shim::body == nullptr) {
        std::fprintf(stderr, "__syncthreads outside a kernel\n");
        std::exit(3);
    }
    swapcontext(&shim::fibers[shim::current].ctx, &shim::scheduler);
}

// Correctly rounded float arithmetic, which the host's is (the test
// compiles with -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }

// A float's bits and back.
inline unsigned int __float_as_uint(float v) {
    unsigned int u;
    std::memcpy(&u, &v, 4);
    return u;
}
inline float __uint_as_float(unsigned int u) {
    float v;
    std::memcpy(&v, &u, 4);
    return v;
}

// The high 32 bits of the 64-bit product of two unsigned ints.
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

// Runs `body` as a kernel over `grid` blocks of `threads` threads.
inline void emulate_launch(dim3 grid, unsigned threads, const std::function<void()>& body) {
    gridDim = grid;
    blockDim = {threads, 1, 1};
    shim::body = &body;
    shim::fibers.resize(threads);
    for (auto& f : shim::fibers) f.stack.resize(256 * 1024);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = {x, y, z};
                for (auto& f : shim::fibers) {
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = &shim::scheduler;
                    f.done = false;
                    makecontext(&f.ctx, shim::entry, 0);
                }
                // One round: every thread runs to its next barrier or its end.
                for (;;) {
                    unsigned done = 0;
                    for (unsigned u = 0; u < threads; u++) {
                        unsigned t = shim::reverse ? threads - 1 - u : u;
                        shim::current = t;
                        threadIdx = {t, 0, 0};
                        swapcontext(&shim::scheduler, &shim::fibers[t].ctx);
                        done += shim::fibers[t].done;
                    }
                    if (done == threads) break;
                    if (done != 0) {
                        std::fprintf(stderr, "a __syncthreads that %u of %u threads skipped\n",
                                     done, threads);
                        std::exit(3);
                    }
                }
            }
    shim::body = nullptr;
}
