// The CUDA kernels of the GPU backbone (crate::cuda), compiled once per
// process with NVRTC. Activations are NCHW: element (n, c, i) of a
// [N, C, HW] tensor sits at (n * C + c) * HW + i.
//
// Batch statistics are summed in double, one block per channel, in a fixed
// order (per-thread strided sums, then a tree in shared memory): the same
// input gives the same bits on the same GPU, as on the CPU path, whose sums
// are also double (tsimcne-ops bn.rs).

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

// The sums over channel blockIdx.x of the two terms that `terms(k)` gives
// for element k (its flat index), in the fixed order: per-thread strided
// sums, then block_sum2. Thread 0 ends with them in s1[0] and s2[0].
template <typename Terms>
__device__ void channel_sums2(int n, int c, int hw, Terms terms, double* s1, double* s2) {
    int ch = blockIdx.x;
    long long m = (long long)n * hw;
    double a = 0.0, b = 0.0;
    for (long long j = threadIdx.x; j < m; j += THREADS) {
        long long row = j / hw, i = j - row * hw;
        double2 t = terms((row * c + ch) * hw + i);
        a += t.x;
        b += t.y;
    }
    s1[threadIdx.x] = a;
    s2[threadIdx.x] = b;
    block_sum2(s1, s2);
}

// Training-mode statistics of channel blockIdx.x: mean and biased variance,
// and the affine form y = x * scale + shift of the normalisation.
extern "C" __global__ void bn_stats(
    const float* x, int n, int c, int hw,
    const float* gamma, const float* beta, double eps,
    float* mean, float* var, float* scale, float* shift) {
    __shared__ double s1[THREADS];
    __shared__ double s2[THREADS];
    int ch = blockIdx.x;
    long long m = (long long)n * hw;
    channel_sums2(n, c, hw, [&](long long k) {
        double v = (double)x[k];
        return make_double2(v, v * v);
    }, s1, s2);
    if (threadIdx.x == 0) {
        double cnt = m > 0 ? (double)m : 1.0;
        double mu = s1[0] / cnt;
        double v = s2[0] / cnt - mu * mu;
        if (v < 0.0) v = 0.0;
        float meanf = (float)mu, varf = (float)v;
        float invstd = (float)(1.0 / sqrt((double)varf + eps));
        float sc = gamma[ch] * invstd;
        mean[ch] = meanf;
        var[ch] = varf;
        scale[ch] = sc;
        shift[ch] = beta[ch] - meanf * sc;
    }
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

// Backward of y = relu(bn(x) + res), per channel: the parameter gradients
// and the coefficients of dx = a * g - b * x + d.
extern "C" __global__ void bn_bwd_sums(
    const float* x, const float* y, const float* dy, int has_y,
    int n, int c, int hw, const float* gamma, const float* mean, const float* var,
    double eps, float* ca, float* cb, float* cd, float* dgamma, float* dbeta) {
    __shared__ double s1[THREADS];
    __shared__ double s2[THREADS];
    int ch = blockIdx.x;
    long long m = (long long)n * hw;
    channel_sums2(n, c, hw, [&](long long k) {
        double g = (double)masked(y, dy, has_y, k);
        return make_double2(g, g * (double)x[k]);
    }, s1, s2);
    if (threadIdx.x == 0) {
        double sg = s1[0], sgx = s2[0];
        double mu = (double)mean[ch];
        double is = (double)(float)(1.0 / sqrt((double)var[ch] + eps));
        double sum_gxhat = is * (sgx - mu * sg);
        double aj = (double)gamma[ch] * is;
        double bj = aj * is * sum_gxhat / (double)m;
        dgamma[ch] = (float)sum_gxhat;
        dbeta[ch] = (float)sg;
        ca[ch] = (float)aj;
        cb[ch] = (float)bj;
        cd[ch] = (float)(bj * mu - aj * sg / (double)m);
    }
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
