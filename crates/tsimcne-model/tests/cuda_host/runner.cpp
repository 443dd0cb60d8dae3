// Runs the kernels of src/cuda/kernels.cu on CPU threads (cuda_shim.h) for
// tests/cuda_host.rs. It reads a script from stdin, one command a line:
//   f32 NAME LEN        then LEN little-endian f32 as raw bytes: a buffer
//   f64 NAME LEN        a buffer of LEN zeros
//   u8 NAME LEN, i32 NAME LEN   as f32, with LEN bytes or LEN i32
//   bf16 NAME LEN       as f32, with LEN bfloat16 (u16)
//   i64 NAME LEN        as f32, with LEN i64
//   table NAME TOK...   an i64 buffer of TOKs: an f32 buffer's name (its
//                       pointer) or l:LONG
//   run KERNEL GX GY ARG...   launch over (GX, GY) blocks of THREADS threads;
//                       an ARG is a buffer's NAME, or i:INT, u:UNSIGNED, l:LONG,
//                       f:FLOAT, d:DOUBLE for a scalar
//   get NAME            write f32 buffer NAME's bytes to stdout (a bf16
//                       buffer's widened to f32, exactly)
//   reverse             run each block's threads in reverse order from now on
//                       (cuda_shim.h: a race shows as another result)
// and exits non-zero with a message on stderr at the first bad command.
#include "cuda_shim.h"

#include "../../src/cuda/kernels.cu"
#include "../../src/cuda/augment.cu"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <tuple>
#include <utility>

struct Memory {
    std::map<std::string, std::vector<float>> f32;
    std::map<std::string, std::vector<double>> f64;
    std::map<std::string, std::vector<unsigned char>> u8;
    std::map<std::string, std::vector<int>> i32;
    std::map<std::string, std::vector<unsigned short>> bf16;
    std::map<std::string, std::vector<long long>> i64;
};

[[noreturn]] static void fail(const std::string& why) {
    std::cerr << "cuda_host runner: " << why << "\n";
    std::exit(2);
}

template <class V>
static V& find(std::map<std::string, V>& m, const std::string& name) {
    auto it = m.find(name);
    if (it == m.end()) fail("no buffer " + name);
    return it->second;
}

static std::string scalar(const std::string& tok, const char* prefix) {
    if (tok.rfind(prefix, 0) != 0) fail("argument " + tok + " is not " + prefix + "...");
    return tok.substr(2);
}

template <class T> struct Arg;
template <> struct Arg<int> {
    static int get(const std::string& t, Memory&) { return std::stoi(scalar(t, "i:")); }
};
template <> struct Arg<unsigned int> {
    static unsigned int get(const std::string& t, Memory&) {
        unsigned long v = std::stoul(scalar(t, "u:"));
        if (v > 0xFFFFFFFFul) fail("argument " + t + " is over 32 bits");
        return (unsigned int)v;
    }
};
template <> struct Arg<long long> {
    static long long get(const std::string& t, Memory&) { return std::stoll(scalar(t, "l:")); }
};
template <> struct Arg<float> {
    static float get(const std::string& t, Memory&) { return std::stof(scalar(t, "f:")); }
};
template <> struct Arg<double> {
    static double get(const std::string& t, Memory&) { return std::stod(scalar(t, "d:")); }
};
template <> struct Arg<float*> {
    static float* get(const std::string& t, Memory& m) { return find(m.f32, t).data(); }
};
template <> struct Arg<const float*> {
    static const float* get(const std::string& t, Memory& m) { return find(m.f32, t).data(); }
};
template <> struct Arg<const unsigned char*> {
    static const unsigned char* get(const std::string& t, Memory& m) { return find(m.u8, t).data(); }
};
template <> struct Arg<const int*> {
    static const int* get(const std::string& t, Memory& m) { return find(m.i32, t).data(); }
};
template <> struct Arg<const unsigned short*> {
    static const unsigned short* get(const std::string& t, Memory& m) { return find(m.bf16, t).data(); }
};
template <> struct Arg<unsigned short*> {
    static unsigned short* get(const std::string& t, Memory& m) { return find(m.bf16, t).data(); }
};
template <> struct Arg<const long long*> {
    static const long long* get(const std::string& t, Memory& m) { return find(m.i64, t).data(); }
};
template <> struct Arg<double*> {
    static double* get(const std::string& t, Memory& m) { return find(m.f64, t).data(); }
};
template <> struct Arg<const double*> {
    static const double* get(const std::string& t, Memory& m) { return find(m.f64, t).data(); }
};

// LEN elements' raw little-endian bytes from stdin, after the command's line.
template <class T>
static void read(std::vector<T>& v, std::size_t len, const std::string& name) {
    v.resize(len);
    if (!std::cin.read(reinterpret_cast<char*>(v.data()), (std::streamsize)(len * sizeof(T))))
        fail("short data for " + name);
}

using Launcher = std::function<void(dim3, const std::vector<std::string>&, Memory&)>;

template <class... A, std::size_t... I>
static std::tuple<A...> args(const std::vector<std::string>& t, Memory& m, std::index_sequence<I...>) {
    return std::tuple<A...>(Arg<A>::get(t[I], m)...);
}

template <class... A>
static Launcher kernel(void (*k)(A...)) {
    return [k](dim3 grid, const std::vector<std::string>& t, Memory& m) {
        if (t.size() != sizeof...(A))
            fail("wants " + std::to_string(sizeof...(A)) + " arguments, got " + std::to_string(t.size()));
        auto a = args<A...>(t, m, std::index_sequence_for<A...>{});
        emulate_launch(grid, THREADS, [&] { std::apply(k, a); });
    };
}

#define KERNEL(name) {#name, kernel(name)}

int main() {
    std::map<std::string, Launcher> kernels = {
        KERNEL(bn_stats_part), KERNEL(bn_stats_finish), KERNEL(bn_eval_coef),
        KERNEL(bn_apply), KERNEL(bn_running), KERNEL(bn_bwd_part),
        KERNEL(bn_bwd_finish), KERNEL(bn_bwd_dx), KERNEL(avg_pool),
        KERNEL(avg_pool_bwd), KERNEL(sgd_step), KERNEL(augment_views),
        KERNEL(bn_stats_part_fast), KERNEL(bn_apply_fast), KERNEL(bn_bwd_part_fast),
        KERNEL(bn_bwd_dx_fast), KERNEL(bn_stats_part_bf16), KERNEL(bn_stats_part_fast_bf16),
        KERNEL(bn_apply_bf16), KERNEL(bn_apply_fast_bf16), KERNEL(bn_bwd_part_bf16),
        KERNEL(bn_bwd_part_fast_bf16), KERNEL(bn_bwd_dx_bf16), KERNEL(bn_bwd_dx_fast_bf16),
        KERNEL(avg_pool_bf16), KERNEL(avg_pool_bwd_bf16), KERNEL(to_bf16), KERNEL(from_bf16),
        KERNEL(bn_stats_part_nhwc), KERNEL(bn_stats_part_nhwc_bf16), KERNEL(bn_apply_nhwc),
        KERNEL(bn_apply_nhwc_fast), KERNEL(bn_apply_nhwc_bf16), KERNEL(bn_apply_nhwc_fast_bf16),
        KERNEL(bn_bwd_part_nhwc), KERNEL(bn_bwd_part_nhwc_bf16), KERNEL(bn_bwd_dx_nhwc),
        KERNEL(bn_bwd_dx_nhwc_fast), KERNEL(bn_bwd_dx_nhwc_bf16), KERNEL(bn_bwd_dx_nhwc_fast_bf16),
        KERNEL(avg_pool_nhwc), KERNEL(avg_pool_nhwc_bf16), KERNEL(avg_pool_bwd_nhwc),
        KERNEL(avg_pool_bwd_nhwc_bf16), KERNEL(to_nhwc), KERNEL(to_nhwc_bf16), KERNEL(from_nhwc),
        KERNEL(from_nhwc_bf16), KERNEL(nce_cauchy_rows), KERNEL(nce_cauchy_grad),
        KERNEL(fixed_scale_fwd), KERNEL(fixed_scale_bwd), KERNEL(bn_stats_finish_running),
    };
    Memory mem;
    std::string line;
    while (std::getline(std::cin, line)) {
        std::vector<std::string> tok;
        std::size_t at = 0;
        while (at < line.size()) {
            std::size_t end = line.find(' ', at);
            if (end == std::string::npos) end = line.size();
            if (end > at) tok.push_back(line.substr(at, end - at));
            at = end + 1;
        }
        if (tok.empty()) continue;
        const std::string& cmd = tok[0];
        if ((cmd == "f32" || cmd == "f64" || cmd == "u8" || cmd == "i32" || cmd == "bf16" ||
             cmd == "i64") &&
            tok.size() == 3) {
            std::size_t len = std::stoull(tok[2]);
            if (cmd == "f64") {
                mem.f64[tok[1]] = std::vector<double>(len, 0.0);
            } else if (cmd == "f32") {
                read(mem.f32[tok[1]], len, tok[1]);
            } else if (cmd == "bf16") {
                read(mem.bf16[tok[1]], len, tok[1]);
            } else if (cmd == "i64") {
                read(mem.i64[tok[1]], len, tok[1]);
            } else if (cmd == "u8") {
                read(mem.u8[tok[1]], len, tok[1]);
            } else {
                read(mem.i32[tok[1]], len, tok[1]);
            }
        } else if (cmd == "run" && tok.size() >= 4) {
            auto k = kernels.find(tok[1]);
            if (k == kernels.end()) fail("no kernel " + tok[1]);
            dim3 grid{(unsigned)std::stoul(tok[2]), (unsigned)std::stoul(tok[3]), 1};
            k->second(grid, std::vector<std::string>(tok.begin() + 4, tok.end()), mem);
        } else if (cmd == "table" && tok.size() >= 2) {
            std::vector<long long> table;
            for (std::size_t k = 2; k < tok.size(); k++) {
                if (tok[k].rfind("l:", 0) == 0)
                    table.push_back(Arg<long long>::get(tok[k], mem));
                else
                    table.push_back(reinterpret_cast<long long>(find(mem.f32, tok[k]).data()));
            }
            mem.i64[tok[1]] = table;
        } else if (cmd == "reverse" && tok.size() == 1) {
            shim::reverse = true;
        } else if (cmd == "get" && tok.size() == 2 && mem.bf16.count(tok[1])) {
            for (unsigned short h : mem.bf16[tok[1]]) {
                float v = __uint_as_float((unsigned int)h << 16);
                std::fwrite(&v, 4, 1, stdout);
            }
        } else if (cmd == "get" && tok.size() == 2) {
            auto& v = find(mem.f32, tok[1]);
            std::fwrite(v.data(), 4, v.size(), stdout);
        } else {
            fail("bad command: " + line);
        }
    }
    return 0;
}
