// Augmentation on the GPU: the views of tsimcne-augment's `apply`, one block
// per view, from u8 images resident on the GPU. Compiled (build.rs) with
// fused multiply-adds off (--fmad=false), so that every float operation is
// rounded alone, as in the CPU's Rust, and the order of the operations is
// the CPU's: the same view parameters give the CPU's bits. tests/cuda_host.rs
// (tsimcne-model) checks that on the CPU with an emulation of the CUDA
// built-ins; kernels.cu's header says how.
//
// A view's parameters, as tsimcne_augment::pack_view writes them:
//   ints   [image, top, left, height, width, flip, grayscale, jitter,
//           order0, order1, order2, order3]           (VIEW_INTS)
//   floats [brightness, contrast, saturation, hue]    (VIEW_FLOATS)
// Ops: 0 brightness, 1 contrast, 2 saturation, 3 hue (in `order`).

#define THREADS 256
#define VIEW_INTS 12
#define VIEW_FLOATS 4

// Rust's f32::clamp(0, 1): NaN passes through.
__device__ float clamp01(float x) {
    if (x < 0.0f) x = 0.0f;
    if (x > 1.0f) x = 1.0f;
    return x;
}

__device__ float grey(float r, float g, float b) {
    return 0.2989f * r + 0.587f * g + 0.114f * b;
}

// The resampling window of output i when resizing in_size to out_size
// (tsimcne-augment ops.rs `axis`: PIL's triangle filter, widened when
// shrinking): its first input and its weights' f64 total; weight(j) gives
// the normalised f32 weight of input start + j.
struct Window {
    double center, invscale, total;
    int start, n;

    __device__ double raw(int j) const {
        double x = ((double)j + (double)start - center + 0.5) * invscale;
        double v = 1.0 - fabs(x);
        return v > 0.0 ? v : 0.0;
    }

    __device__ float weight(int j) const {
        float w = (float)raw(j);
        return total > 0.0 ? (float)((double)w / total) : w;
    }
};

__device__ Window window(int in_size, int out_size, int i) {
    Window a;
    double scale = (double)in_size / (double)out_size;
    double support = scale >= 1.0 ? scale : 1.0;
    a.invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    int taps = (int)ceil(support) * 2 + 1;
    a.center = scale * ((double)i + 0.5);
    long long lo = (long long)(a.center - support + 0.5);
    long long hi = (long long)(a.center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in_size) hi = in_size;
    a.start = (int)lo;
    a.n = hi > lo ? (int)(hi - lo) : 0;
    if (a.n > taps) a.n = taps;
    a.total = 0.0;
    for (int j = 0; j < a.n; j++) a.total += a.raw(j);
    return a;
}

// o = clamp(ratio * o + (1 - ratio) * other), over the whole view.
__device__ void blend(float* o, int len, float ratio, float other) {
    float keep = 1.0f - ratio;
    for (int e = threadIdx.x; e < len; e += THREADS) o[e] = clamp01(ratio * o[e] + keep * other);
}

// torchvision's _rgb2hsv, hue shift, _hsv2rgb for one pixel (ops.rs).
__device__ void shift_hue(float* r, float* g, float* b, float factor) {
    float maxc = fmaxf(fmaxf(*r, *g), *b);
    float minc = fminf(fminf(*r, *g), *b);
    bool eqc = maxc == minc;
    float cr = maxc - minc;
    float s = cr / (eqc ? 1.0f : maxc);
    float div = eqc ? 1.0f : cr;
    float rc = (maxc - *r) / div, gc = (maxc - *g) / div, bc = (maxc - *b) / div;
    float h;
    if (maxc == *r) h = bc - gc;
    else if (maxc == *g) h = 2.0f + rc - bc;
    else h = 4.0f + gc - rc;
    h = fmodf(h / 6.0f + 1.0f, 1.0f);
    float v = maxc;
    // (h + factor).rem_euclid(1.0)
    h = fmodf(h + factor, 1.0f);
    if (h < 0.0f) h = h + 1.0f;
    float i = floorf(h * 6.0f);
    float f = h * 6.0f - i;
    float p = clamp01(v * (1.0f - s));
    float q = clamp01(v * (1.0f - s * f));
    float t = clamp01(v * (1.0f - s * (1.0f - f)));
    int sector = (((int)i % 6) + 6) % 6;
    switch (sector) {
        case 0: *r = v; *g = t; *b = p; break;
        case 1: *r = q; *g = v; *b = p; break;
        case 2: *r = p; *g = v; *b = t; break;
        case 3: *r = p; *g = q; *b = v; break;
        case 4: *r = t; *g = p; *b = v; break;
        default: *r = v; *g = p; *b = q; break;
    }
}

// Grid (views): view blockIdx.x of images [*, h, w, c] (u8, HWC) into out
// [views, c, h, w] (f32, CHW); tmp holds as much, the horizontal pass.
// norm: per-channel mean and std after the augmentations, when has_norm.
extern "C" __global__ void augment_views(
    const unsigned char* images, int h, int w, int c,
    const int* vint, const float* vfloat,
    int has_norm, const float* mean, const float* std,
    float* tmp, float* out) {
    __shared__ float level;
    int v = blockIdx.x;
    const int* q = vint + (long long)v * VIEW_INTS;
    const float* fq = vfloat + (long long)v * VIEW_FLOATS;
    int plane = h * w, len = c * plane;
    const unsigned char* img = images + (long long)q[0] * len;
    int top = q[1], left = q[2], ch = q[3], cw = q[4];
    float* t = tmp + (long long)v * len;  // [c, ch, w]
    float* o = out + (long long)v * len;  // [c, h, w]

    // Crop and resize along the width: [ch, cw] → [ch, w] per channel.
    for (int e = threadIdx.x; e < c * ch * w; e += THREADS) {
        int k = e / (ch * w), y = (e / w) % ch, x = e % w;
        Window a = window(cw, w, x);
        const unsigned char* row = img + ((long long)(top + y) * w + left) * c;
        float acc = 0.0f;
        for (int j = 0; j < a.n; j++) acc = acc + ((float)row[(a.start + j) * c + k] / 255.0f) * a.weight(j);
        t[e] = acc;
    }
    __syncthreads();
    // Along the height: [ch, w] → [h, w], mirrored when flip.
    for (int e = threadIdx.x; e < len; e += THREADS) {
        int k = e / plane, y = (e / w) % h, x = e % w;
        Window a = window(ch, h, y);
        float acc = 0.0f;
        for (int j = 0; j < a.n; j++) {
            float wt = a.weight(j);
            if (wt != 0.0f) acc = acc + wt * t[((long long)k * ch + a.start + j) * w + x];
        }
        o[(k * h + y) * w + (q[5] ? w - 1 - x : x)] = acc;
    }
    __syncthreads();
    if (q[7]) {
        for (int s = 0; s < 4; s++) {
            int op = q[8 + s];
            if (op == 0) {
                blend(o, len, fq[0], 0.0f);
            } else if (op == 1) {
                // The mean grey level, summed in order as the CPU does.
                if (threadIdx.x == 0) {
                    if (c == 3) {
                        double sum = 0.0;
                        for (int p = 0; p < plane; p++)
                            sum += (double)grey(o[p], o[plane + p], o[2 * plane + p]);
                        level = (float)(sum / (double)plane);
                    } else {
                        float sum = 0.0f;
                        for (int e = 0; e < len; e++) sum += o[e];
                        level = sum / (float)len;
                    }
                }
                __syncthreads();
                blend(o, len, fq[1], level);
            } else if (op == 2 && c == 3) {
                float keep = 1.0f - fq[2];
                for (int p = threadIdx.x; p < plane; p += THREADS) {
                    float l = grey(o[p], o[plane + p], o[2 * plane + p]);
                    for (int k = 0; k < 3; k++) o[k * plane + p] = clamp01(fq[2] * o[k * plane + p] + keep * l);
                }
            } else if (op == 3 && c == 3) {
                for (int p = threadIdx.x; p < plane; p += THREADS)
                    shift_hue(&o[p], &o[plane + p], &o[2 * plane + p], fq[3]);
            }
            __syncthreads();
        }
    }
    if (q[6] && c == 3) {
        for (int p = threadIdx.x; p < plane; p += THREADS) {
            float l = grey(o[p], o[plane + p], o[2 * plane + p]);
            o[p] = l;
            o[plane + p] = l;
            o[2 * plane + p] = l;
        }
    }
    // Threads normalise other elements than the pixels they greyed.
    __syncthreads();
    if (has_norm) {
        for (int e = threadIdx.x; e < len; e += THREADS) {
            int k = e / plane;
            o[e] = (o[e] - mean[k]) / std[k];
        }
    }
}
