// The CUDA kernels of the GPU backbone (crate::cuda), compiled once per
// process with NVRTC. Activations are NCHW: element (n, c, i) of a
// [N, C, HW] tensor sits at (n * C + c) * HW + i.
//
// Batch statistics are summed in double, in a fixed order: each channel's
// n * hw elements are cut into gridDim.y equal parts (one block each:
// per-thread strided sums, then a tree in shared memory), and the parts'
// sums are added in part order. The order depends on the shape and the part
// count only, so the same input gives the same bits on the same GPU, as on
// the CPU path, whose sums are also double (tsimcne-ops bn.rs). With one
// part a channel is one block's sum.
//
// The kernels are plain C++ apart from the CUDA built-ins, so that
// tests/cuda_host (tsimcne-model) can run them on CPU threads.

#define THREADS 256

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
template <typename Terms>
__device__ void channel_part_sums2(int n, int c, int hw, Terms terms, double* part) {
    __shared__ double s1[THREADS];
    __shared__ double s2[THREADS];
    int ch = blockIdx.x, p = blockIdx.y, parts = gridDim.y;
    long long m = (long long)n * hw;
    long long lo = m * p / parts, hi = m * (p + 1) / parts;
    double a = 0.0, b = 0.0;
    for (long long j = lo + threadIdx.x; j < hi; j += THREADS) {
        long long row = j / hw, i = j - row * hw;
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
extern "C" __global__ void bn_stats_part(const float* x, int n, int c, int hw, double* part) {
    channel_part_sums2(n, c, hw, [&](long long k) {
        double v = (double)x[k];
        return make_double2(v, v * v);
    }, part);
}

// One thread per channel: training-mode statistics from the partial sums,
// mean and biased variance, and the affine form y = x * scale + shift of
// the normalisation.
extern "C" __global__ void bn_stats_finish(
    const double* part, int parts, int n, int c, int hw,
    const float* gamma, const float* beta, double eps,
    float* mean, float* var, float* scale, float* shift) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
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
extern "C" __global__ void bn_apply(
    const float* x, const float* scale, const float* shift, const float* res,
    int has_res, int relu, int c, int hw, long long total, float* out) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= total) return;
    int ch = (int)((k / hw) % c);
    float v = x[k] * scale[ch] + shift[ch];
    if (has_res) v += res[k];
    if (relu) v = fmaxf(v, 0.0f);
    out[k] = v;
}

// running = running * keep + batch * w (w: momentum for the mean, momentum
// times rows / (rows - 1) for the variance), as the CPU path computes it.
extern "C" __global__ void bn_running(
    const float* rmean, const float* rvar, const float* mean, const float* var,
    float keep, float wm, float wv, int c, float* new_mean, float* new_var) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    new_mean[ch] = rmean[ch] * keep + mean[ch] * wm;
    new_var[ch] = rvar[ch] * keep + var[ch] * wv;
}

// g = dy where the fused ReLU passed (y > 0), else 0; dy without ReLU.
__device__ __forceinline__ float masked(const float* y, const float* dy, int has_y, long long k) {
    float d = dy[k];
    return (has_y && !(y[k] > 0.0f)) ? 0.0f : d;
}

// Grid (c, parts): the partial sums of g and g * x per channel for the
// backward of y = relu(bn(x) + res).
extern "C" __global__ void bn_bwd_part(
    const float* x, const float* y, const float* dy, int has_y,
    int n, int c, int hw, double* part) {
    channel_part_sums2(n, c, hw, [&](long long k) {
        double g = (double)masked(y, dy, has_y, k);
        return make_double2(g, g * (double)x[k]);
    }, part);
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
extern "C" __global__ void bn_bwd_dx(
    const float* x, const float* y, const float* dy, int has_y,
    const float* ca, const float* cb, const float* cd,
    int c, int hw, long long total, float* dx, float* dres, int has_dres) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= total) return;
    int ch = (int)((k / hw) % c);
    float g = masked(y, dy, has_y, k);
    dx[k] = ca[ch] * g - cb[ch] * x[k] + cd[ch];
    if (has_dres) dres[k] = g;
}

// Global average pool: [rows, hw] → [rows] (rows = N * C).
extern "C" __global__ void avg_pool(const float* x, int rows, int hw, float* out) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    double s = 0.0;
    for (int i = 0; i < hw; i++) s += (double)x[(long long)r * hw + i];
    out[r] = (float)(s / (double)hw);
}

// Its backward: dx[r, i] = d[r] / hw.
extern "C" __global__ void avg_pool_bwd(const float* d, int hw, long long total, float* dx) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= total) return;
    dx[k] = d[k / hw] * (1.0f / (float)hw);
}

// One SGD step over len parameters, in place, in tsimcne-train's order
// (sgd.rs): g = clamp(g, -clip, clip) when has_clip; g += w * wd when wd is
// not 0; with momentum (has_buf) buf = first ? g : buf * mu + g, and the
// update is buf, else g; w -= update * lr. Each multiply and add is rounded
// alone (__fmul_rn, __fadd_rn: no fused multiply-add), so the GPU gives the
// bits of the CPU's loop.
extern "C" __global__ void sgd_step(
    float* w, const float* g, float* buf, long long len,
    int has_clip, float clip, float wd, int has_buf, float mu, int first, float lr) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= len) return;
    float d = g[k];
    float wk = w[k];
    if (has_clip) d = fminf(fmaxf(d, -clip), clip);
    if (wd != 0.0f) d = __fadd_rn(d, __fmul_rn(wk, wd));
    if (has_buf) {
        d = first ? d : __fadd_rn(__fmul_rn(buf[k], mu), d);
        buf[k] = d;
    }
    w[k] = __fsub_rn(wk, __fmul_rn(d, lr));
}
