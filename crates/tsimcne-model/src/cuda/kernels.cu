// The CUDA kernels of the GPU backbone (crate::cuda), compiled by nvcc at
// build time (tsimcne-model's build.rs). Activations are NCHW, element
// (n, c, i) of a [N, C, HW] tensor at (n * C + c) * HW + i, or
// channels-last (NHWC, the *_nhwc kernels), element (n, i, c) of
// [N, HW, C] at (n * HW + i) * C + c.
//
// Batch statistics are summed in double, in a fixed order. NCHW: each
// channel's n * hw elements are cut into gridDim.y equal parts (one block
// each: per-thread strided sums, then a tree in shared memory). NHWC: the
// n * hw rows are cut into gridDim.y equal parts, and a block sums one part
// of TILE channels (a warp reads TILE neighbours of a row; the block's
// warps take every 8th row, then their sums are added in warp order). Then
// the parts' sums are added in part order. The order depends on the shape
// and the part count only, so the same input gives the same bits on the
// same GPU, as on the CPU path, whose sums are also double (tsimcne-ops
// bn.rs). With one part an NCHW channel is one block's sum.
//
// The kernels are plain C++ apart from the CUDA built-ins, so that
// tests/cuda_host (tsimcne-model) can run them on CPU threads.

#define THREADS 256

// n / d for 0 <= n < 2^31 as a multiply-high, an add and a shift
// (Granlund & Montgomery 1994, PyTorch's IntDivider); the host computes mul
// and shift for each d (tsimcne_model::FastDiv, which tests the formula).
__device__ __forceinline__ unsigned int fast_div(unsigned int n, unsigned int mul, unsigned int shift) {
    return (__umulhi(n, mul) + n) >> shift;
}

// Index arithmetic of an NCHW tensor [N, C, HW]: the channel of flat
// element k, and the row (image) of a channel's element j (j = row * HW +
// i). WideIndex divides in 64 bits, for any size; FastIndex (the *_fast
// kernels) by multiply and shift, for tensors under 2^31 elements. Both
// give the same integers, so the same results bit for bit.
struct WideIndex {
    int c, hw;
    __device__ int channel(long long k) const { return (int)((k / hw) % c); }
    __device__ long long row(long long j) const { return j / hw; }
};

struct FastIndex {
    unsigned int c, c_mul, c_shift, hw, hw_mul, hw_shift;
    __device__ int channel(long long k) const {
        unsigned int q = fast_div((unsigned int)k, hw_mul, hw_shift);
        return (int)(q - fast_div(q, c_mul, c_shift) * c);
    }
    __device__ long long row(long long j) const {
        return fast_div((unsigned int)j, hw_mul, hw_shift);
    }
};

// The channel of flat element k of a channels-last tensor [N, HW, C]:
// k % C, in 64 bits (LastIndex) or by multiply and shift (LastFastIndex,
// under 2^31 elements). The elementwise kernels need nothing else.
struct LastIndex {
    int c;
    __device__ int channel(long long k) const { return (int)(k % c); }
};

struct LastFastIndex {
    unsigned int c, c_mul, c_shift;
    __device__ int channel(long long k) const {
        unsigned int u = (unsigned int)k;
        return (int)(u - fast_div(u, c_mul, c_shift) * c);
    }
};

// The arguments of a kernel's index: `c, hw` (wide) or the six of
// FastIndex (fast), in the kernels' signatures below; channels-last `c`, or
// the three of LastFastIndex.
#define WIDE_INDEX int c, int hw
#define FAST_INDEX unsigned int c, unsigned int c_mul, unsigned int c_shift, \
    unsigned int hw, unsigned int hw_mul, unsigned int hw_shift
#define WIDE_INDEX_OF WideIndex{c, hw}
#define FAST_INDEX_OF FastIndex{c, c_mul, c_shift, hw, hw_mul, hw_shift}
#define LAST_INDEX int c
#define LAST_FAST_INDEX unsigned int c, unsigned int c_mul, unsigned int c_shift
#define LAST_INDEX_OF LastIndex{c}
#define LAST_FAST_INDEX_OF LastFastIndex{c, c_mul, c_shift}

// Activations are stored as float or as bfloat16 (the *_bf16 kernels),
// whose 16 bits are the high half of a float's; the arithmetic is float
// (sums double) either way. The conversions are written out rather than
// taken from cuda_bf16.h, so that the CPU emulation needs no CUDA
// header: widening is exact, narrowing rounds to nearest even (as
// __float2bfloat16_rn) and keeps a NaN a NaN.
typedef unsigned short bf16;

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(bf16 v) { return __uint_as_float((unsigned int)v << 16); }

template <typename T> __device__ T narrow(float v);
template <> __device__ __forceinline__ float narrow<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 narrow<bf16>(float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
    return (bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// The four kernels of a batch-norm body: float or bf16 storage, each with
// either index. NAME(T, INDEX) declares a kernel's parameters from its
// storage type and index arguments; CALL passes them on.
#define BN_KERNELS(NAME, PARAMS, CALL) \
    extern "C" __global__ void NAME PARAMS(float, WIDE_INDEX) { CALL(WIDE_INDEX_OF); } \
    extern "C" __global__ void NAME##_fast PARAMS(float, FAST_INDEX) { CALL(FAST_INDEX_OF); } \
    extern "C" __global__ void NAME##_bf16 PARAMS(bf16, WIDE_INDEX) { CALL(WIDE_INDEX_OF); } \
    extern "C" __global__ void NAME##_fast_bf16 PARAMS(bf16, FAST_INDEX) { CALL(FAST_INDEX_OF); }

// The four channels-last kernels of an elementwise batch-norm body.
#define BN_KERNELS_NHWC(NAME, PARAMS, CALL) \
    extern "C" __global__ void NAME##_nhwc PARAMS(float, LAST_INDEX) { CALL(LAST_INDEX_OF); } \
    extern "C" __global__ void NAME##_nhwc_fast PARAMS(float, LAST_FAST_INDEX) { CALL(LAST_FAST_INDEX_OF); } \
    extern "C" __global__ void NAME##_nhwc_bf16 PARAMS(bf16, LAST_INDEX) { CALL(LAST_INDEX_OF); } \
    extern "C" __global__ void NAME##_nhwc_fast_bf16 PARAMS(bf16, LAST_FAST_INDEX) { CALL(LAST_FAST_INDEX_OF); }

// Tree reduction of two doubles over the block; thread 0 ends with the sums.
__device__ void block_sum2(double* s1, double* s2) {
    int t = threadIdx.x;
    for (int step = THREADS / 2; step > 0; step >>= 1) {
        __syncthreads();
        if (t < step) {
            s1[t] += s1[t + step];
            s2[t] += s2[t + step];
        }
    }
    __syncthreads();
}

// Part blockIdx.y of channel blockIdx.x: the sums of the two terms that
// `terms(k)` gives for element k (its flat index) over the part's elements,
// written to part[2 * (ch * parts + p)] and the double after it.
template <typename Index, typename Terms>
__device__ void channel_part_sums2(int n, Index ix, Terms terms, double* part) {
    __shared__ double s1[THREADS];
    __shared__ double s2[THREADS];
    int ch = blockIdx.x, p = blockIdx.y, parts = gridDim.y;
    long long hw = ix.hw, c = ix.c;
    long long m = (long long)n * hw;
    long long lo = m * p / parts, hi = m * (p + 1) / parts;
    double a = 0.0, b = 0.0;
    for (long long j = lo + threadIdx.x; j < hi; j += THREADS) {
        long long row = ix.row(j), i = j - row * hw;
        double2 t = terms((row * c + ch) * hw + i);
        a += t.x;
        b += t.y;
    }
    s1[threadIdx.x] = a;
    s2[threadIdx.x] = b;
    block_sum2(s1, s2);
    if (threadIdx.x == 0) {
        long long at = 2 * ((long long)ch * parts + p);
        part[at] = s1[0];
        part[at + 1] = s2[0];
    }
}

#define TILE 32

// Part blockIdx.y of the rows of channels [TILE * blockIdx.x, + TILE) of a
// channels-last tensor of m rows and c channels: the sums of the two terms
// that `terms(k)` gives for element k (its flat index) over the part's
// rows, written as channel_part_sums2 writes them.
template <typename Terms>
__device__ void tile_part_sums2(long long m, int c, Terms terms, double* part) {
    __shared__ double s1[THREADS];
    __shared__ double s2[THREADS];
    const int warps = THREADS / TILE;
    int lane = threadIdx.x % TILE, r = threadIdx.x / TILE;
    int ch = blockIdx.x * TILE + lane, p = blockIdx.y, parts = gridDim.y;
    long long lo = m * p / parts, hi = m * (p + 1) / parts;
    double a = 0.0, b = 0.0;
    if (ch < c) {
        for (long long row = lo + r; row < hi; row += warps) {
            double2 t = terms(row * c + ch);
            a += t.x;
            b += t.y;
        }
    }
    s1[threadIdx.x] = a;
    s2[threadIdx.x] = b;
    __syncthreads();
    if (r == 0 && ch < c) {
        for (int q = 1; q < warps; q++) {
            a += s1[q * TILE + lane];
            b += s2[q * TILE + lane];
        }
        long long at = 2 * ((long long)ch * parts + p);
        part[at] = a;
        part[at + 1] = b;
    }
}

// The two sums of channel ch: its parts added in part order.
__device__ double2 channel_total2(const double* part, int parts, int ch) {
    const double* q = part + 2 * (long long)ch * parts;
    double a = q[0], b = q[1];
    for (int p = 1; p < parts; p++) {
        a += q[2 * p];
        b += q[2 * p + 1];
    }
    return make_double2(a, b);
}

// Grid (c, parts): the partial sums of x and x^2 per channel.
template <typename Index, typename T>
__device__ void bn_stats_part_at(const T* x, int n, Index ix, double* part) {
    channel_part_sums2(n, ix, [&](long long k) {
        double v = (double)widen(x[k]);
        return make_double2(v, v * v);
    }, part);
}
#define BN_STATS_PART(T, INDEX) (const T* x, int n, INDEX, double* part)
#define BN_STATS_PART_CALL(IX) bn_stats_part_at(x, n, IX, part)
BN_KERNELS(bn_stats_part, BN_STATS_PART, BN_STATS_PART_CALL)

// Grid (ceil(c / TILE), parts), channels-last: as bn_stats_part.
template <typename T>
__device__ void bn_stats_part_nhwc_at(const T* x, int n, int c, int hw, double* part) {
    tile_part_sums2((long long)n * hw, c, [&](long long k) {
        double v = (double)widen(x[k]);
        return make_double2(v, v * v);
    }, part);
}
extern "C" __global__ void bn_stats_part_nhwc(const float* x, int n, int c, int hw, double* part) {
    bn_stats_part_nhwc_at(x, n, c, hw, part);
}
extern "C" __global__ void bn_stats_part_nhwc_bf16(const bf16* x, int n, int c, int hw, double* part) {
    bn_stats_part_nhwc_at(x, n, c, hw, part);
}

// Channel ch's training-mode statistics from the partial sums, mean and
// biased variance, and the affine form y = x * scale + shift of the
// normalisation, to mean, var, scale and shift.
__device__ __forceinline__ void stats_finish_at(
    int ch, const double* part, int parts, int n, int hw,
    const float* gamma, const float* beta, double eps,
    float* mean, float* var, float* scale, float* shift) {
    double2 s = channel_total2(part, parts, ch);
    long long m = (long long)n * hw;
    double cnt = m > 0 ? (double)m : 1.0;
    double mu = s.x / cnt;
    double v = s.y / cnt - mu * mu;
    if (v < 0.0) v = 0.0;
    float meanf = (float)mu, varf = (float)v;
    float invstd = (float)(1.0 / sqrt((double)varf + eps));
    float sc = gamma[ch] * invstd;
    mean[ch] = meanf;
    var[ch] = varf;
    scale[ch] = sc;
    shift[ch] = beta[ch] - meanf * sc;
}

// running = running * keep + batch * w (w: momentum for the mean, momentum
// times rows / (rows - 1) for the variance), as the CPU path computes it.
__device__ __forceinline__ void running_at(
    int ch, const float* rmean, const float* rvar, const float* mean, const float* var,
    float keep, float wm, float wv, float* new_mean, float* new_var) {
    float m = rmean[ch] * keep + mean[ch] * wm;
    float v = rvar[ch] * keep + var[ch] * wv;
    new_mean[ch] = m;
    new_var[ch] = v;
}

// One thread per channel: stats_finish_at.
extern "C" __global__ void bn_stats_finish(
    const double* part, int parts, int n, int c, int hw,
    const float* gamma, const float* beta, double eps,
    float* mean, float* var, float* scale, float* shift) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    stats_finish_at(ch, part, parts, n, hw, gamma, beta, eps, mean, var, scale, shift);
}

// One thread per channel: bn_stats_finish, then the running statistics
// rmean and rvar updated in place as bn_running updates them (one launch
// and no copies instead of two launches and the copies back; the same bits).
extern "C" __global__ void bn_stats_finish_running(
    const double* part, int parts, int n, int c, int hw,
    const float* gamma, const float* beta, double eps,
    float keep, float wm, float wv, float* rmean, float* rvar,
    float* mean, float* var, float* scale, float* shift) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    stats_finish_at(ch, part, parts, n, hw, gamma, beta, eps, mean, var, scale, shift);
    running_at(ch, rmean, rvar, mean, var, keep, wm, wv, rmean, rvar);
}

// Evaluation-mode affine form from the running statistics.
extern "C" __global__ void bn_eval_coef(
    const float* gamma, const float* beta, const float* rmean, const float* rvar,
    double eps, int c, float* scale, float* shift) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float invstd = (float)(1.0 / sqrt((double)rvar[ch] + eps));
    float sc = gamma[ch] * invstd;
    scale[ch] = sc;
    shift[ch] = beta[ch] - rmean[ch] * sc;
}

// out = x * scale + shift (+ res), then ReLU if relu.
template <typename Index, typename T>
__device__ void bn_apply_at(
    const T* x, const float* scale, const float* shift, const T* res,
    int has_res, int relu, Index ix, long long total, T* out) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= total) return;
    int ch = ix.channel(k);
    float v = widen(x[k]) * scale[ch] + shift[ch];
    if (has_res) v += widen(res[k]);
    if (relu) v = fmaxf(v, 0.0f);
    out[k] = narrow<T>(v);
}
#define BN_APPLY(T, INDEX) \
    (const T* x, const float* scale, const float* shift, const T* res, \
     int has_res, int relu, INDEX, long long total, T* out)
#define BN_APPLY_CALL(IX) bn_apply_at(x, scale, shift, res, has_res, relu, IX, total, out)
BN_KERNELS(bn_apply, BN_APPLY, BN_APPLY_CALL)
BN_KERNELS_NHWC(bn_apply, BN_APPLY, BN_APPLY_CALL)

// One thread per channel: running_at into new buffers.
extern "C" __global__ void bn_running(
    const float* rmean, const float* rvar, const float* mean, const float* var,
    float keep, float wm, float wv, int c, float* new_mean, float* new_var) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    running_at(ch, rmean, rvar, mean, var, keep, wm, wv, new_mean, new_var);
}

// g = dy where the fused ReLU passed (y > 0), else 0; dy without ReLU.
template <typename T>
__device__ __forceinline__ float masked(const T* y, const T* dy, int has_y, long long k) {
    float d = widen(dy[k]);
    return (has_y && !(widen(y[k]) > 0.0f)) ? 0.0f : d;
}

// Grid (c, parts): the partial sums of g and g * x per channel for the
// backward of y = relu(bn(x) + res).
template <typename Index, typename T>
__device__ void bn_bwd_part_at(
    const T* x, const T* y, const T* dy, int has_y,
    int n, Index ix, double* part) {
    channel_part_sums2(n, ix, [&](long long k) {
        double g = (double)masked(y, dy, has_y, k);
        return make_double2(g, g * (double)widen(x[k]));
    }, part);
}
#define BN_BWD_PART(T, INDEX) \
    (const T* x, const T* y, const T* dy, int has_y, int n, INDEX, double* part)
#define BN_BWD_PART_CALL(IX) bn_bwd_part_at(x, y, dy, has_y, n, IX, part)
BN_KERNELS(bn_bwd_part, BN_BWD_PART, BN_BWD_PART_CALL)

// Grid (ceil(c / TILE), parts), channels-last: as bn_bwd_part.
template <typename T>
__device__ void bn_bwd_part_nhwc_at(
    const T* x, const T* y, const T* dy, int has_y, int n, int c, int hw, double* part) {
    tile_part_sums2((long long)n * hw, c, [&](long long k) {
        double g = (double)masked(y, dy, has_y, k);
        return make_double2(g, g * (double)widen(x[k]));
    }, part);
}
extern "C" __global__ void bn_bwd_part_nhwc(
    const float* x, const float* y, const float* dy, int has_y, int n, int c, int hw, double* part) {
    bn_bwd_part_nhwc_at(x, y, dy, has_y, n, c, hw, part);
}
extern "C" __global__ void bn_bwd_part_nhwc_bf16(
    const bf16* x, const bf16* y, const bf16* dy, int has_y, int n, int c, int hw, double* part) {
    bn_bwd_part_nhwc_at(x, y, dy, has_y, n, c, hw, part);
}

// One thread per channel: the parameter gradients and the coefficients of
// dx = a * g - b * x + d from the partial sums.
extern "C" __global__ void bn_bwd_finish(
    const double* part, int parts, int n, int c, int hw,
    const float* gamma, const float* mean, const float* var, double eps,
    float* ca, float* cb, float* cd, float* dgamma, float* dbeta) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double2 s = channel_total2(part, parts, ch);
    double m = (double)((long long)n * hw);
    double sg = s.x, sgx = s.y;
    double mu = (double)mean[ch];
    double is = (double)(float)(1.0 / sqrt((double)var[ch] + eps));
    double sum_gxhat = is * (sgx - mu * sg);
    double aj = (double)gamma[ch] * is;
    double bj = aj * is * sum_gxhat / m;
    dgamma[ch] = (float)sum_gxhat;
    dbeta[ch] = (float)sg;
    ca[ch] = (float)aj;
    cb[ch] = (float)bj;
    cd[ch] = (float)(bj * mu - aj * sg / m);
}

// dx = a * g - b * x + d, and the residual's gradient g when has_dres.
template <typename Index, typename T>
__device__ void bn_bwd_dx_at(
    const T* x, const T* y, const T* dy, int has_y,
    const float* ca, const float* cb, const float* cd,
    Index ix, long long total, T* dx, T* dres, int has_dres) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= total) return;
    int ch = ix.channel(k);
    float g = masked(y, dy, has_y, k);
    dx[k] = narrow<T>(ca[ch] * g - cb[ch] * widen(x[k]) + cd[ch]);
    if (has_dres) dres[k] = narrow<T>(g);
}
#define BN_BWD_DX(T, INDEX) \
    (const T* x, const T* y, const T* dy, int has_y, \
     const float* ca, const float* cb, const float* cd, \
     INDEX, long long total, T* dx, T* dres, int has_dres)
#define BN_BWD_DX_CALL(IX) bn_bwd_dx_at(x, y, dy, has_y, ca, cb, cd, IX, total, dx, dres, has_dres)
BN_KERNELS(bn_bwd_dx, BN_BWD_DX, BN_BWD_DX_CALL)
BN_KERNELS_NHWC(bn_bwd_dx, BN_BWD_DX, BN_BWD_DX_CALL)

// Global average pool: [rows, hw] → [rows] (rows = N * C), in float.
template <typename T>
__device__ void avg_pool_at(const T* x, int rows, int hw, float* out) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    double s = 0.0;
    for (int i = 0; i < hw; i++) s += (double)widen(x[(long long)r * hw + i]);
    out[r] = (float)(s / (double)hw);
}
extern "C" __global__ void avg_pool(const float* x, int rows, int hw, float* out) {
    avg_pool_at(x, rows, hw, out);
}
extern "C" __global__ void avg_pool_bf16(const bf16* x, int rows, int hw, float* out) {
    avg_pool_at(x, rows, hw, out);
}

// Its backward: dx[r, i] = d[r] / hw.
template <typename T>
__device__ void avg_pool_bwd_at(const float* d, int hw, long long total, T* dx) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= total) return;
    dx[k] = narrow<T>(d[k / hw] * (1.0f / (float)hw));
}
extern "C" __global__ void avg_pool_bwd(const float* d, int hw, long long total, float* dx) {
    avg_pool_bwd_at(d, hw, total, dx);
}
extern "C" __global__ void avg_pool_bwd_bf16(const float* d, int hw, long long total, bf16* dx) {
    avg_pool_bwd_at(d, hw, total, dx);
}

// Channels-last global average pool: [n, hw, c] → [n * c], each mean summed
// in the order of avg_pool (so the same bits as NCHW's).
template <typename T>
__device__ void avg_pool_nhwc_at(const T* x, int rows, int c, int hw, float* out) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    long long b = r / c;
    int ch = r % c;
    double s = 0.0;
    for (int i = 0; i < hw; i++) s += (double)widen(x[(b * hw + i) * c + ch]);
    out[r] = (float)(s / (double)hw);
}
extern "C" __global__ void avg_pool_nhwc(const float* x, int rows, int c, int hw, float* out) {
    avg_pool_nhwc_at(x, rows, c, hw, out);
}
extern "C" __global__ void avg_pool_nhwc_bf16(const bf16* x, int rows, int c, int hw, float* out) {
    avg_pool_nhwc_at(x, rows, c, hw, out);
}

// Its backward: dx[b, i, ch] = d[b, ch] / hw.
template <typename T>
__device__ void avg_pool_bwd_nhwc_at(const float* d, int c, int hw, long long total, T* dx) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= total) return;
    long long b = k / ((long long)hw * c);
    dx[k] = narrow<T>(d[b * c + k % c] * (1.0f / (float)hw));
}
extern "C" __global__ void avg_pool_bwd_nhwc(const float* d, int c, int hw, long long total, float* dx) {
    avg_pool_bwd_nhwc_at(d, c, hw, total, dx);
}
extern "C" __global__ void avg_pool_bwd_nhwc_bf16(const float* d, int c, int hw, long long total, bf16* dx) {
    avg_pool_bwd_nhwc_at(d, c, hw, total, dx);
}

// NCHW float [N, C, HW] to channels-last [N, HW, C] in T: the images, and
// each step's convolution weights ([cout, cin, k * k] to [cout, k * k, cin],
// cuDNN's NHWC filter layout). One thread per output element.
template <typename T>
__device__ void to_nhwc_at(const float* x, int c, int hw, long long total, T* y) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= total) return;
    long long rest = k / c;
    long long i = rest % hw, b = rest / hw;
    y[k] = narrow<T>(x[(b * c + k % c) * hw + i]);
}
extern "C" __global__ void to_nhwc(const float* x, int c, int hw, long long total, float* y) {
    to_nhwc_at(x, c, hw, total, y);
}
extern "C" __global__ void to_nhwc_bf16(const float* x, int c, int hw, long long total, bf16* y) {
    to_nhwc_at(x, c, hw, total, y);
}

// Back: channels-last T to NCHW float (the weight gradients).
template <typename T>
__device__ void from_nhwc_at(const T* x, int c, int hw, long long total, float* y) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= total) return;
    long long rest = k / hw;
    long long i = k % hw, ch = rest % c, b = rest / c;
    y[k] = widen(x[(b * hw + i) * c + ch]);
}
extern "C" __global__ void from_nhwc(const float* x, int c, int hw, long long total, float* y) {
    from_nhwc_at(x, c, hw, total, y);
}
extern "C" __global__ void from_nhwc_bf16(const bf16* x, int c, int hw, long long total, float* y) {
    from_nhwc_at(x, c, hw, total, y);
}

// float to bf16 (the images, the convolution weights of each step) and
// back (the weight gradients).
extern "C" __global__ void to_bf16(const float* x, long long len, bf16* y) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < len) y[k] = narrow<bf16>(x[k]);
}
extern "C" __global__ void from_bf16(const bf16* x, long long len, float* y) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < len) y[k] = widen(x[k]);
}

// One SGD step of `count` parameters in one launch, in place, in
// tsimcne-train's order (sgd.rs): g = clamp(g, -clip, clip) when has_clip;
// g += w * wd when wd is not 0; with momentum (has_buf) buf = first ? g :
// buf * mu + g, and the update is buf, else g; w -= update * lr. Each
// multiply and add is rounded alone (__fmul_rn, __fadd_rn: no fused
// multiply-add), so the GPU gives the bits of the CPU's loop.
// The parameters are described by one table (one upload a step), 5 *
// count + 1 values: the pointers to their values w[t], gradients g[t] and
// momentum buffers buf[t] (unused without momentum), then start[t] for t
// in 0..=count (parameter t is elements [start[t], start[t + 1]) of the
// launch), then first[t], 1 while t's buffer holds no history.
extern "C" __global__ void sgd_step(
    const long long* table, int count,
    int has_clip, float clip, float wd, int has_buf, float mu, float lr) {
    const long long* start = table + 3 * count;
    const long long* first = start + count + 1;
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= start[count]) return;
    // The parameter that holds k: the last t with start[t] <= k (an empty
    // parameter shares its start with the next one).
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (start[mid] <= k) lo = mid;
        else hi = mid - 1;
    }
    long long i = k - start[lo];
    float* wt = (float*)table[lo];
    float d = ((const float*)table[count + lo])[i];
    float wk = wt[i];
    if (has_clip) d = fminf(fmaxf(d, -clip), clip);
    if (wd != 0.0f) d = __fadd_rn(d, __fmul_rn(wk, wd));
    if (has_buf) {
        float* b = (float*)table[2 * count + lo];
        d = first[lo] ? d : __fadd_rn(__fmul_rn(b[i], mu), d);
        b[i] = d;
    }
    wt[i] = __fsub_rn(wk, __fmul_rn(d, lr));
}

// ---- The loss: InfoNCE with the Cauchy kernel (tsimcne-ops contrastive.rs,
// info_nce_cauchy and fixed_scale_*), forward and backward in two launches
// (four with a map scale) instead of candle's graph (some twenty ops and
// their backward). The views z are [rows, dim] row-major, the first
// rows / 2 then their partners: view i's partner is (i + rows / 2) % rows.
// Every sum runs in a fixed order, so the same input gives the same bits
// on the same GPU.

// Tree sum of one double over the block; every thread returns the sum.
__device__ double block_sum1(double* s, double v) {
    int t = threadIdx.x;
    s[t] = v;
    for (int step = THREADS / 2; step > 0; step >>= 1) {
        __syncthreads();
        if (t < step) s[t] += s[t + step];
    }
    __syncthreads();
    double total = s[0];
    __syncthreads();
    return total;
}

// Grid (rows): block i. The squared distances d2(i, j) = sum_d (z_i - z_j)^2
// to every view, the kernel q = 1 / (1 + d2) summed over j != i, and then
// a[i * rows + j] = dL/dd2(i, j) through row i's term of the loss,
// -(q / sum q - [j = partner]) * q / rows (0 for j = i); row i's term
// log sum q + log(1 + d2(i, partner)) to row_loss[i].
extern "C" __global__ void nce_cauchy_rows(
    const float* z, int rows, int dim, float* a, double* row_loss) {
    __shared__ double s[THREADS];
    __shared__ float d2_partner;
    int i = blockIdx.x, partner = (i + rows / 2) % rows;
    const float* zi = z + (long long)i * dim;
    float* ai = a + (long long)i * rows;
    double part = 0.0;
    for (int j = threadIdx.x; j < rows; j += THREADS) {
        const float* zj = z + (long long)j * dim;
        float d2 = 0.0f;
        for (int d = 0; d < dim; d++) {
            float e = zi[d] - zj[d];
            d2 += e * e;
        }
        ai[j] = d2;
        if (j == partner) d2_partner = d2;
        if (j != i) part += (double)(1.0f / (d2 + 1.0f));
    }
    double total = block_sum1(s, part);
    double scale = 1.0 / (double)rows;
    for (int j = threadIdx.x; j < rows; j += THREADS) {
        float v = ai[j];
        if (j == i || v <= 0.0f) {
            ai[j] = 0.0f;
            continue;
        }
        double q = (double)(1.0f / (v + 1.0f));
        double g = (q / total - (j == partner ? 1.0 : 0.0)) * scale;
        ai[j] = (float)(-g * q);
    }
    if (threadIdx.x == 0) row_loss[i] = log(total) + log((double)(d2_partner + 1.0f));
}

// Grid (rows): block i, after nce_cauchy_rows. d2(i, j) enters the loss
// through rows i and j, so with w_ij = a_ij + a_ji the gradient is
// grad_i = 2 (sum_j w_ij z_i - sum_j w_ij z_j): a tile of THREADS w's in
// shared memory at a time, thread t summing coordinate d0 + t. Block 0
// also writes the loss, the mean of row_loss in row order, to loss[0].
extern "C" __global__ void nce_cauchy_grad(
    const float* z, const float* a, const double* row_loss, int rows, int dim,
    float* grad, float* loss) {
    __shared__ float w[THREADS];
    int i = blockIdx.x, t = threadIdx.x;
    for (int d0 = 0; d0 < dim; d0 += THREADS) {
        int d = d0 + t;
        float acc = 0.0f, wsum = 0.0f;
        for (int j0 = 0; j0 < rows; j0 += THREADS) {
            int j = j0 + t;
            __syncthreads();
            w[t] = j < rows ? a[(long long)i * rows + j] + a[(long long)j * rows + i] : 0.0f;
            __syncthreads();
            int tile = rows - j0 < THREADS ? rows - j0 : THREADS;
            for (int k = 0; k < tile; k++) {
                float wk = w[k];
                wsum += wk;
                if (d < dim) acc += wk * z[(long long)(j0 + k) * dim + d];
            }
        }
        if (d < dim) {
            long long at = (long long)i * dim + d;
            grad[at] = 2.0f * (wsum * z[at] - acc);
        }
    }
    if (i == 0 && t == 0) {
        double total = 0.0;
        for (int r = 0; r < rows; r++) total += row_loss[r];
        loss[0] = (float)(total / (double)rows);
    }
}

// One block: --map-scale's fixed spread, y = (z - mean) / rms * scale with
// rms = sqrt(mean((z - mean)^2) + 1e-12), in double. The column means
// (thread d sums column d in row order, as the CPU) to st[0..dim) and rms
// to st[dim], for fixed_scale_bwd.
extern "C" __global__ void fixed_scale_fwd(
    const float* z, int rows, int dim, double scale, double* st, float* y) {
    __shared__ double s[THREADS];
    int t = threadIdx.x;
    long long count = (long long)rows * dim;
    for (int d = t; d < dim; d += THREADS) {
        double m = 0.0;
        for (int r = 0; r < rows; r++) m += (double)z[(long long)r * dim + d];
        st[d] = m / (double)(rows > 0 ? rows : 1);
    }
    __syncthreads();
    double part = 0.0;
    for (long long k = t; k < count; k += THREADS) {
        double c = (double)z[k] - st[k % dim];
        part += c * c;
    }
    double rms = sqrt(block_sum1(s, part) / (double)count + 1e-12);
    for (long long k = t; k < count; k += THREADS)
        y[k] = (float)(((double)z[k] - st[k % dim]) / rms * scale);
    if (t == 0) st[dim] = rms;
}

// One block, after fixed_scale_fwd: the gradient by z of a loss whose
// gradient by y is dy. With c = z - mean and gc = sum dy * c,
// dc = s dy / rms - s gc c / (rms^3 count), and dz = dc - its column mean
// (to st[dim + 1 ..), column d summed by thread d in row order).
extern "C" __global__ void fixed_scale_bwd(
    const float* z, const float* dy, int rows, int dim, double scale, double* st, float* dz) {
    __shared__ double s[THREADS];
    int t = threadIdx.x;
    long long count = (long long)rows * dim;
    double rms = st[dim];
    double part = 0.0;
    for (long long k = t; k < count; k += THREADS)
        part += (double)dy[k] * ((double)z[k] - st[k % dim]);
    double gc = block_sum1(s, part);
    double b = scale * gc / (rms * rms);
    double n = (double)count;
    for (int d = t; d < dim; d += THREADS) {
        double m = 0.0;
        for (int r = 0; r < rows; r++) {
            long long k = (long long)r * dim + d;
            m += scale * (double)dy[k] / rms - b * ((double)z[k] - st[d]) / (n * rms);
        }
        st[dim + 1 + d] = m / (double)(rows > 0 ? rows : 1);
    }
    __syncthreads();
    for (long long k = t; k < count; k += THREADS) {
        double c = (double)z[k] - st[k % dim];
        double dc = scale * (double)dy[k] / rms - b * c / (n * rms);
        dz[k] = (float)(dc - st[dim + 1 + k % dim]);
    }
}
