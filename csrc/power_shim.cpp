// power_shim: the C API a3s-power loads with cffi (see power_shim.h).
//
// One engine = one llama_context serving up to n_seq sequences with
// continuous batching: every pw_step builds one llama_batch holding one token
// for every generating sequence plus prompt chunks of new ones, decodes it,
// then samples, detokenises and checks end-of-generation for each sequence in
// C. Idle sequences keep their KV cells so that a new request can reuse the
// longest cached prefix.

#include "power_shim.h"

#include "ggml-backend.h"
#include "llama-grammar.h"  // internal: the parser, for its error message
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#ifndef POWER_LLAMA_COMMIT
#define POWER_LLAMA_COMMIT "unknown"
#endif

// ---- errors and logging ----------------------------------------------------

static thread_local std::string g_error;
static thread_local std::string g_last_log_error;
static thread_local std::string g_first_log_error;  // since the last clear_log_errors()

static int32_t fail(int32_t code, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_error = buf;
    return code;
}

static std::mutex g_log_mutex;
static pw_log_fn g_log_fn = nullptr;
static void *g_log_data = nullptr;
static int32_t g_log_min = GGML_LOG_LEVEL_WARN;

static void log_trampoline(enum ggml_log_level level, const char *text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR && text) {
        // llama.cpp reports most failures only through the log: keep the
        // latest error line of this thread for pw_last_error().
        std::string line(text);
        while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
        if (!line.empty()) {
            g_last_log_error = line;
            if (g_first_log_error.empty()) g_first_log_error = line;
        }
    }
    pw_log_fn fn;
    void *data;
    int32_t min_level;
    {
        std::lock_guard<std::mutex> lock(g_log_mutex);
        fn = g_log_fn;
        data = g_log_data;
        min_level = g_log_min;
    }
    if (fn && (int32_t)level >= min_level && level != GGML_LOG_LEVEL_CONT) fn((int)level, text, data);
}

// The reason llama.cpp gave last on this thread, for messages of our own.
static std::string llama_reason() {
    std::string r = g_last_log_error;
    g_last_log_error.clear();
    return r.empty() ? std::string("see the log for details") : r;
}

// libmtmd logs the cause first and a generic failure last.
static void clear_log_errors() {
    g_last_log_error.clear();
    g_first_log_error.clear();
}

static std::string first_reason() {
    std::string r = g_first_log_error.empty() ? g_last_log_error : g_first_log_error;
    clear_log_errors();
    return r.empty() ? std::string("see the log for details") : r;
}

extern "C" {

int32_t pw_abi_version(void) { return PW_ABI_VERSION; }
const char *pw_llama_commit(void) { return POWER_LLAMA_COMMIT; }
const char *pw_system_info(void) { return llama_print_system_info(); }
const char *pw_last_error(void) { return g_error.c_str(); }

void pw_set_log(pw_log_fn fn, void *user_data, int32_t min_level) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_log_fn = fn;
    g_log_data = user_data;
    g_log_min = min_level;
}

void pw_init(const char *backend_dir) {
    static std::once_flag once;
    std::string dir = backend_dir ? backend_dir : "";
    std::call_once(once, [&dir] {
        llama_log_set(log_trampoline, nullptr);
        mtmd_helper_log_set(log_trampoline, nullptr);
        if (!dir.empty()) ggml_backend_load_all_from_path(dir.c_str());
        llama_backend_init();
    });
}

int32_t pw_device_count(void) { return (int32_t)ggml_backend_dev_count(); }

int32_t pw_device_get(int32_t index, pw_device *out) {
    if (!out || index < 0 || (size_t)index >= ggml_backend_dev_count()) return fail(PW_E_INVALID, "no device %d", index);
    ggml_backend_dev_t dev = ggml_backend_dev_get((size_t)index);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", ggml_backend_dev_name(dev));
    snprintf(out->description, sizeof out->description, "%s", ggml_backend_dev_description(dev));
    switch (ggml_backend_dev_type(dev)) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: out->type = 0; break;
        case GGML_BACKEND_DEVICE_TYPE_GPU: out->type = 1; break;
        case GGML_BACKEND_DEVICE_TYPE_IGPU: out->type = 2; break;
        default: out->type = 3; break;
    }
    size_t free_b = 0, total_b = 0;
    ggml_backend_dev_memory(dev, &free_b, &total_b);
    out->memory_free = free_b;
    out->memory_total = total_b;
    return PW_OK;
}

bool pw_supports_gpu_offload(void) { return llama_supports_gpu_offload(); }

}  // extern "C"

// ---- model -------------------------------------------------------------------

struct pw_model {
    llama_model *model = nullptr;
    const llama_vocab *vocab = nullptr;
    ~pw_model() {
        if (model) llama_model_free(model);
    }
};

extern "C" {

pw_model_params pw_model_default_params(void) {
    pw_model_params p;
    memset(&p, 0, sizeof p);
    p.n_gpu_layers = -1;
    p.main_gpu = 0;
    p.use_mmap = true;
    return p;
}

int32_t pw_model_load(const char *path, const pw_model_params *params, pw_model **out) {
    if (!path || !out) return fail(PW_E_INVALID, "model path is required");
    *out = nullptr;
    pw_init(nullptr);
    pw_model_params p = params ? *params : pw_model_default_params();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = p.n_gpu_layers;
    mp.main_gpu = p.main_gpu;
    if (p.use_mmap && p.use_mlock) mp.load_mode = LLAMA_LOAD_MODE_MMAP_MLOCK;
    else if (p.use_mmap) mp.load_mode = LLAMA_LOAD_MODE_MMAP;
    else if (p.use_mlock) mp.load_mode = LLAMA_LOAD_MODE_MLOCK;
    else mp.load_mode = LLAMA_LOAD_MODE_NONE;
    mp.vocab_only = p.vocab_only;
    mp.progress_callback = p.progress;
    mp.progress_callback_user_data = p.progress_data;
    FILE *f = fopen(path, "rb");
    if (!f) return fail(PW_E_LOAD, "cannot open model file %s", path);
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got != 4 || memcmp(magic, "GGUF", 4) != 0) return fail(PW_E_LOAD, "%s is not a GGUF file", path);
    g_last_log_error.clear();
    llama_model *m = llama_model_load_from_file(path, mp);
    if (!m) return fail(PW_E_LOAD, "failed to load model %s: %s", path, llama_reason().c_str());
    auto *pm = new (std::nothrow) pw_model;
    if (!pm) {
        llama_model_free(m);
        return fail(PW_E_NOMEM, "out of memory");
    }
    pm->model = m;
    pm->vocab = llama_model_get_vocab(m);
    *out = pm;
    return PW_OK;
}

void pw_model_free(pw_model *model) { delete model; }

int32_t pw_model_get_info(const pw_model *pm, pw_model_info *out) {
    if (!pm || !out) return fail(PW_E_INVALID, "null model");
    const llama_model *m = pm->model;
    memset(out, 0, sizeof *out);
    out->n_ctx_train = llama_model_n_ctx_train(m);
    out->n_embd = llama_model_n_embd(m);
    out->n_embd_out = llama_model_n_embd_out(m);
    out->n_layer = llama_model_n_layer(m);
    if (out->n_layer > 0) {  // a vocabulary-only model has no layers, and these would abort
        out->n_head = llama_model_n_head(m);
        out->n_head_kv = llama_model_n_head_kv(m);
    }
    out->n_vocab = llama_vocab_n_tokens(pm->vocab);
    out->n_swa = llama_model_n_swa(m);
    out->size = llama_model_size(m);
    out->n_params = llama_model_n_params(m);
    out->token_bos = llama_vocab_bos(pm->vocab);
    out->token_eos = llama_vocab_eos(pm->vocab);
    out->token_eot = llama_vocab_eot(pm->vocab);
    out->ftype = (int32_t)llama_model_ftype(m);
    out->add_bos = llama_vocab_get_add_bos(pm->vocab);
    out->add_eos = llama_vocab_get_add_eos(pm->vocab);
    out->has_encoder = llama_model_has_encoder(m);
    out->has_decoder = llama_model_has_decoder(m);
    out->is_recurrent = llama_model_is_recurrent(m);
    return PW_OK;
}

int32_t pw_model_meta_count(const pw_model *pm) { return pm ? llama_model_meta_count(pm->model) : 0; }

int32_t pw_model_meta_key(const pw_model *pm, int32_t i, char *buf, int32_t size) {
    if (!pm) return -1;
    return llama_model_meta_key_by_index(pm->model, i, buf, (size_t)size);
}

int32_t pw_model_meta_value(const pw_model *pm, int32_t i, char *buf, int32_t size) {
    if (!pm) return -1;
    return llama_model_meta_val_str_by_index(pm->model, i, buf, (size_t)size);
}

int32_t pw_model_meta_get(const pw_model *pm, const char *key, char *buf, int32_t size) {
    if (!pm || !key) return -1;
    return llama_model_meta_val_str(pm->model, key, buf, (size_t)size);
}

int32_t pw_model_desc(const pw_model *pm, char *buf, int32_t size) {
    if (!pm) return -1;
    return llama_model_desc(pm->model, buf, (size_t)size);
}

const char *pw_model_chat_template(const pw_model *pm, const char *name) {
    return pm ? llama_model_chat_template(pm->model, name) : nullptr;
}

int32_t pw_tokenize(const pw_model *pm, const char *text, int32_t len, int32_t *out, int32_t cap, bool add_special,
                    bool parse_special) {
    if (!pm || (!text && len > 0)) return fail(PW_E_INVALID, "null argument");
    int32_t n = llama_tokenize(pm->vocab, text, len, out, cap, add_special, parse_special);
    if (n == INT32_MIN) return fail(PW_E_TOOLONG, "text too long to tokenize");
    return n;  // negative = -(tokens needed)
}

int32_t pw_detokenize(const pw_model *pm, const int32_t *tokens, int32_t n, char *out, int32_t cap,
                      bool remove_special, bool unparse_special) {
    if (!pm || (!tokens && n > 0)) return fail(PW_E_INVALID, "null argument");
    const int32_t n_vocab = llama_vocab_n_tokens(pm->vocab);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab) return fail(PW_E_INVALID, "token %d out of range", tokens[i]);
    return llama_detokenize(pm->vocab, tokens, n, out, cap, remove_special, unparse_special);
}

int32_t pw_token_piece(const pw_model *pm, int32_t token, char *buf, int32_t size, bool special) {
    if (!pm || token < 0 || token >= llama_vocab_n_tokens(pm->vocab)) return fail(PW_E_INVALID, "bad token");
    return llama_token_to_piece(pm->vocab, token, buf, size, 0, special);
}

bool pw_token_is_eog(const pw_model *pm, int32_t token) { return pm && llama_vocab_is_eog(pm->vocab, token); }

int32_t pw_quantize(const char *src, const char *dst, int32_t ftype, int32_t n_threads) {
    if (!src || !dst) return fail(PW_E_INVALID, "source and destination are required");
    pw_init(nullptr);
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = (llama_ftype)ftype;
    qp.nthread = n_threads;
    g_last_log_error.clear();
    uint32_t rc = llama_model_quantize(src, dst, &qp);
    if (rc != 0) return fail(PW_E_LOAD, "quantization failed: %s", llama_reason().c_str());
    return PW_OK;
}

}  // extern "C"

// ---- engine -------------------------------------------------------------------

namespace {

struct sampler_deleter {
    void operator()(llama_sampler *s) const {
        if (s) llama_sampler_free(s);
    }
};
using sampler_ptr = std::unique_ptr<llama_sampler, sampler_deleter>;

enum slot_state { SLOT_IDLE, SLOT_PROMPT, SLOT_GEN };

struct chunk_deleter {
    void operator()(mtmd_input_chunk *c) const {
        if (c) mtmd_input_chunk_free(c);
    }
};
using chunk_ptr = std::unique_ptr<mtmd_input_chunk, chunk_deleter>;

// A media chunk of a prompt: its placeholder run starts at `start`, holds
// n_tokens KV cells and advances positions by n_pos (fewer with M-RoPE).
struct media_span {
    size_t start = 0;
    size_t n_tokens = 0;
    llama_pos n_pos = 0;
    const mtmd_input_chunk *chunk = nullptr;  // owned by the prompt or the slot
};

struct slot {
    int32_t id = 0;
    slot_state state = SLOT_IDLE;
    std::vector<llama_token> cache;   // tokens whose KV cells this sequence holds
    std::vector<llama_token> prompt;  // the request's prompt
    size_t n_past = 0;                // prompt tokens already in the KV cache
    int32_t n_cached = 0;
    int32_t n_gen = 0;
    int32_t n_predict = -1;
    int32_t n_logprobs = -1;
    bool ignore_eos = false;
    bool argmax = false;              // greedy with nothing else in the chain: skip the candidate array
    const float *logits = nullptr;    // this step's output logits (valid while i_batch >= 0)
    llama_token greedy = -1;          // with argmax: this step's token, found for all such slots at once
    int32_t top_k = 0;                // > 0: the chain starts with top-k; its candidates come from top_k_logits
    std::vector<llama_token_data> cand;  // with top_k: this step's candidates
    std::vector<llama_token> cand_ids;   // scratch for top_k_penalized
    // With top_k and penalties, the penalties are kept here rather than in the chain (which would visit
    // the whole vocabulary): the last pen_n tokens and their counts, as llama.cpp's penalties sampler.
    int32_t pen_n = 0;
    float pen_repeat = 1.0f, pen_freq = 0.0f, pen_present = 0.0f;
    std::deque<llama_token> pen_prev;
    std::unordered_map<llama_token, int32_t> pen_count;
    llama_token last = -1;            // sampled, not yet decoded
    int32_t i_batch = -1;             // batch index of this sequence's output
    bool in_batch = false;            // has tokens in the current step's batch
    bool cancel = false;
    sampler_ptr chain;
    sampler_ptr grammar;
    std::string pending;              // bytes of an incomplete UTF-8 character
    std::vector<media_span> media;    // the prompt's media, by placeholder start
    std::vector<chunk_ptr> media_own; // copies of their chunks
    std::vector<media_span> cached_media;  // media whose cells are in the cache
    int64_t t_start_us = 0;
    int64_t t_first_us = 0;
    int64_t t_last_used = 0;
};

// Length of the longest prefix of s made of complete UTF-8 characters.
size_t utf8_complete_prefix(const std::string &s) {
    size_t n = s.size();
    // Look back at most 3 bytes for the start of the last character.
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue;  // continuation byte
        size_t need = 1;
        if ((c & 0xE0) == 0xC0) need = 2;
        else if ((c & 0xF0) == 0xE0) need = 3;
        else if ((c & 0xF8) == 0xF0) need = 4;
        return back >= need ? n : n - back;
    }
    return n;  // invalid sequence: let the caller replace it
}

// Position of the cache's next cell: media with M-RoPE take fewer positions than cells.
llama_pos next_pos(const slot &s) {
    llama_pos p = (llama_pos)s.cache.size();
    for (const auto &m : s.cached_media) p -= (llama_pos)m.n_tokens - m.n_pos;
    return p;
}

}  // namespace

struct pw_mtmd {
    mtmd_context *ctx = nullptr;
    pw_model *pm = nullptr;
    ~pw_mtmd() {
        if (ctx) mtmd_free(ctx);
    }
};

struct pw_media {
    mtmd_input_chunks *chunks = nullptr;
    std::vector<llama_token> tokens;  // text ids; media as runs of placeholders
    std::vector<media_span> spans;
    ~pw_media() {
        if (chunks) mtmd_input_chunks_free(chunks);
    }
};

struct pw_engine {
    pw_model *pm = nullptr;
    llama_context *ctx = nullptr;
    llama_memory_t mem = nullptr;
    llama_batch batch{};
    pw_engine_params params{};
    uint32_t n_ctx_seq = 0;
    int32_t n_vocab = 0;
    std::vector<slot> slots;
    std::vector<llama_token_data> cur;
    std::string arena;
    std::vector<pw_top> tops;
    std::vector<const float *> greedy_rows;  // per step: the logits of greedy sequences,
    std::vector<slot *> greedy_slots;        // their slots,
    std::vector<llama_token> greedy_toks;    // and their tokens
    std::vector<slot *> topk_slots;          // per step: the sequences sampled with top-k
    llama_adapter_lora *lora = nullptr;
    pw_mtmd *mtmd = nullptr;          // borrowed; outlives the engine
    int64_t tick = 0;
    pw_stats stats{};

    ~pw_engine() {
        for (auto &s : slots) {
            s.chain.reset();
            s.grammar.reset();
        }
        if (batch.token) llama_batch_free(batch);
        if (ctx) llama_free(ctx);
        if (lora) llama_adapter_lora_free(lora);
    }
};

namespace {

void slot_release(pw_engine *e, slot &s) {
    s.state = SLOT_IDLE;
    s.prompt.clear();
    s.media.clear();
    s.media_own.clear();
    s.chain.reset();
    s.grammar.reset();
    s.pending.clear();
    s.cancel = false;
    s.i_batch = -1;
    s.last = -1;
    s.t_last_used = ++e->tick;
}

int32_t penalty_window(const pw_engine *e, const pw_sampling &sp) {
    return sp.repeat_last_n < 0 ? (int32_t)e->n_ctx_seq : sp.repeat_last_n;
}

bool penalizes(const pw_engine *e, const pw_sampling &sp) {
    return penalty_window(e, sp) > 0 &&
           (sp.repeat_penalty != 1.0f || sp.presence_penalty != 0.0f || sp.frequency_penalty != 0.0f);
}

sampler_ptr build_chain(const pw_engine *e, const pw_sampling &sp, bool with_penalties) {
    llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    llama_sampler *ch = llama_sampler_chain_init(cp);
    int32_t last_n = penalty_window(e, sp);
    if (with_penalties && penalizes(e, sp))
        llama_sampler_chain_add(ch, llama_sampler_init_penalties(e->n_vocab, last_n, sp.repeat_penalty,
                                                                 sp.frequency_penalty, sp.presence_penalty));
    if (sp.temperature <= 0.0f) {
        llama_sampler_chain_add(ch, llama_sampler_init_greedy());
        return sampler_ptr(ch);
    }
    if (sp.top_k > 0) llama_sampler_chain_add(ch, llama_sampler_init_top_k(sp.top_k));
    if (sp.typical_p < 1.0f && sp.typical_p > 0.0f) llama_sampler_chain_add(ch, llama_sampler_init_typical(sp.typical_p, 1));
    if (sp.top_p < 1.0f && sp.top_p > 0.0f) llama_sampler_chain_add(ch, llama_sampler_init_top_p(sp.top_p, 1));
    if (sp.min_p > 0.0f) llama_sampler_chain_add(ch, llama_sampler_init_min_p(sp.min_p, 1));
    llama_sampler_chain_add(ch, llama_sampler_init_temp(sp.temperature));
    llama_sampler_chain_add(ch, llama_sampler_init_dist(sp.seed));
    return sampler_ptr(ch);
}

void fill_candidates(pw_engine *e, const float *logits, llama_token_data_array &arr) {
    e->cur.resize((size_t)e->n_vocab);
    for (int32_t t = 0; t < e->n_vocab; t++) e->cur[(size_t)t] = llama_token_data{t, logits[t], 0.0f};
    arr = llama_token_data_array{e->cur.data(), e->cur.size(), -1, false};
}

// Greedy sampling is an argmax over the vocabulary (262k logits for Gemma 3, 16 MB for 16 sequences per
// step), the only per-token work of ours that grows with the vocabulary. One pass: the maxima of
// 1024-logit blocks vectorise (no index tracking, no early exit), then only the winning block is scanned
// again for the first position of its maximum. NaN logits are never chosen.
struct best_logit {
    float v;
    int32_t at;
};

float block_max(const float *x) {
    float m[16];
    for (float &v : m) v = -INFINITY;
    for (int32_t i = 0; i < 1024; i += 16)
        for (int j = 0; j < 16; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    float best = m[0];
    for (int j = 1; j < 16; j++) best = m[j] > best ? m[j] : best;
    return best;
}

best_logit argmax_range(const float *x, int32_t lo, int32_t hi) {
    best_logit b{-INFINITY, lo};
    int32_t i = lo, block = -1;
    for (; i + 1024 <= hi; i += 1024) {
        float m = block_max(x + i);
        if (m > b.v) {
            b.v = m;
            block = i;
        }
    }
    for (int32_t k = i; k < hi; k++)
        if (x[k] > b.v) {
            b.v = x[k];
            b.at = k;
            block = -1;
        }
    if (block >= 0)
        for (int32_t k = block; k < block + 1024; k++)
            if (x[k] == b.v) {
                b.at = k;
                break;
            }
    return b;
}

// The argmax of each row, split over the decode threads: with OpenMP these are the threads ggml's
// graph just ran on, still spinning, so the scans start at once.
void argmax_rows(const float *const *rows, int32_t n_rows, int32_t n, llama_token *out, int32_t n_threads) {
    if (n_rows <= 0) return;
    const int32_t parts = std::max(1, n_threads / n_rows);
    const int32_t chunk = ((n + parts - 1) / parts + 1023) / 1024 * 1024;
    const int32_t n_tasks = n_rows * parts;
    std::vector<best_logit> res((size_t)n_tasks);
#ifdef _OPENMP
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n_tasks > 1 && n_threads > 1)
#endif
    for (int32_t t = 0; t < n_tasks; t++) {
        const int32_t lo = (t % parts) * chunk, hi = std::min(n, lo + chunk);
        res[(size_t)t] = lo < hi ? argmax_range(rows[t / parts], lo, hi) : best_logit{-INFINITY, lo};
    }
    for (int32_t r = 0; r < n_rows; r++) {
        best_logit b = res[(size_t)r * parts];
        for (int32_t p = 1; p < parts; p++)
            if (res[(size_t)(r * parts + p)].v > b.v) b = res[(size_t)(r * parts + p)];
        out[r] = b.at;
    }
}

// Top-k sampling (Ollama's default, k = 40) over a large vocabulary: llama.cpp's chain would copy every
// logit into a candidate array and partially sort it. The k largest logits are found here in one pass
// instead: blocks whose maximum cannot enter the current top k are skipped after a vectorised scan, the
// rest go through a k-entry heap. The result is what llama.cpp's top-k keeps, sorted by logit (ties by
// token id), so the rest of the chain runs on k candidates exactly as it would after its own top-k.
bool ranks_higher(const llama_token_data &a, const llama_token_data &b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

void top_k_logits(const float *x, int32_t n, int32_t k, std::vector<llama_token_data> &out) {
    out.clear();
    int32_t i = 0;
    for (; i < n && (int32_t)out.size() < k; i++) {
        if (std::isnan(x[i])) continue;
        out.push_back(llama_token_data{i, x[i], 0.0f});
        std::push_heap(out.begin(), out.end(), ranks_higher);  // the lowest-ranked on top
    }
    if ((int32_t)out.size() == k) {
        float least = out.front().logit;
        auto take = [&](int32_t t) {
            std::pop_heap(out.begin(), out.end(), ranks_higher);
            out.back() = llama_token_data{t, x[t], 0.0f};
            std::push_heap(out.begin(), out.end(), ranks_higher);
            least = out.front().logit;
        };
        for (; i < n && i % 1024 != 0; i++)
            if (x[i] > least) take(i);  // an equal logit has a larger id: it ranks lower
        for (; i + 1024 <= n; i += 1024)
            if (block_max(x + i) > least)
                for (int32_t t = i; t < i + 1024; t++)
                    if (x[t] > least) take(t);
        for (; i < n; i++)
            if (x[i] > least) take(i);
    }
    std::sort(out.begin(), out.end(), ranks_higher);
}

// llama.cpp's penalties sampler, for one token's logit and its count in the window.
float penalized(const slot &s, float logit, int32_t count) {
    logit = logit <= 0 ? logit * s.pen_repeat : logit / s.pen_repeat;
    return logit - float(count) * s.pen_freq - float(count > 0) * s.pen_present;
}

void pen_accept(slot &s, llama_token tok) {
    s.pen_count[tok]++;
    if ((int32_t)s.pen_prev.size() >= s.pen_n) {
        llama_token old = s.pen_prev.front();
        s.pen_prev.pop_front();
        if (--s.pen_count[old] == 0) s.pen_count.erase(old);
    }
    s.pen_prev.push_back(tok);
}

// Top-k after penalties, touching only the penalised tokens: at most m = |window| tokens change, so the
// k best unpenalised tokens are among the k + m best raw logits; the penalised ones are added by hand.
void top_k_penalized(const float *x, int32_t n, const slot &s, std::vector<llama_token_data> &out,
                     std::vector<llama_token> &ids) {
    top_k_logits(x, n, s.top_k + (int32_t)s.pen_count.size(), out);
    ids.clear();
    for (auto &c : out) {
        ids.push_back(c.id);
        auto it = s.pen_count.find(c.id);
        if (it != s.pen_count.end()) c.logit = penalized(s, c.logit, it->second);
    }
    std::sort(ids.begin(), ids.end());
    for (const auto &[tok, count] : s.pen_count) {
        if (tok < 0 || tok >= n || std::isnan(x[tok]) || std::binary_search(ids.begin(), ids.end(), tok)) continue;
        out.push_back(llama_token_data{tok, penalized(s, x[tok], count), 0.0f});
    }
    std::sort(out.begin(), out.end(), ranks_higher);
    if ((int32_t)out.size() > s.top_k) out.resize((size_t)s.top_k);
}

// Every token as a candidate, with the slot's own penalties applied (the chain then has none).
void full_candidates(pw_engine *e, const slot &s, const float *logits, llama_token_data_array &arr) {
    fill_candidates(e, logits, arr);
    if (s.pen_n <= 0) return;
    for (const auto &[tok, count] : s.pen_count)
        if (tok >= 0 && tok < e->n_vocab) arr.data[tok].logit = penalized(s, arr.data[tok].logit, count);
}

// Sample with the chain; check only the chosen token against the grammar and
// resample with the grammar applied when it is rejected (grammars are slow on
// large vocabularies).
llama_token sample(pw_engine *e, slot &s, const float *logits) {
    if (s.argmax) return s.greedy;  // found for all greedy sequences before sampling
    llama_token_data_array arr;
    if (s.top_k > 0 && !s.cand.empty())
        arr = llama_token_data_array{s.cand.data(), s.cand.size(), -1, true};
    else
        full_candidates(e, s, logits, arr);
    llama_sampler_apply(s.chain.get(), &arr);
    llama_token tok = arr.data[arr.selected].id;
    if (s.grammar) {
        llama_token_data one{tok, 1.0f, 0.0f};
        llama_token_data_array single{&one, 1, -1, false};
        llama_sampler_apply(s.grammar.get(), &single);
        if (std::isinf(one.logit) && one.logit < 0) {
            full_candidates(e, s, logits, arr);
            llama_sampler_apply(s.grammar.get(), &arr);
            llama_sampler_apply(s.chain.get(), &arr);
            tok = arr.data[arr.selected].id;
        }
        llama_sampler_accept(s.grammar.get(), tok);
    }
    llama_sampler_accept(s.chain.get(), tok);
    if (s.pen_n > 0) pen_accept(s, tok);
    return tok;
}

// Log-probability of tok under the model's raw distribution, and the top n.
float logprobs(pw_engine *e, const float *logits, llama_token tok, int32_t n_top) {
    float mx = -INFINITY;
    for (int32_t t = 0; t < e->n_vocab; t++) mx = std::max(mx, logits[t]);
    double sum = 0.0;
    for (int32_t t = 0; t < e->n_vocab; t++) sum += std::exp((double)(logits[t] - mx));
    const float lse = mx + (float)std::log(sum);
    if (n_top > 0) {
        std::vector<llama_token> idx((size_t)e->n_vocab);
        for (int32_t t = 0; t < e->n_vocab; t++) idx[(size_t)t] = t;
        int32_t k = std::min(n_top, e->n_vocab);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                          [logits](llama_token a, llama_token b) { return logits[a] > logits[b]; });
        for (int32_t j = 0; j < k; j++) e->tops.push_back(pw_top{idx[(size_t)j], logits[idx[(size_t)j]] - lse});
    }
    return logits[tok] - lse;
}

size_t common_prefix(const std::vector<llama_token> &a, const int32_t *b, size_t nb) {
    size_t n = std::min(a.size(), nb), i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

void batch_add(llama_batch &b, llama_token tok, llama_pos pos, llama_seq_id seq, bool logits) {
    int32_t i = b.n_tokens++;
    b.token[i] = tok;
    b.pos[i] = pos;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = seq;
    b.logits[i] = logits;
}

}  // namespace

extern "C" {

pw_engine_params pw_engine_default_params(void) {
    pw_engine_params p;
    memset(&p, 0, sizeof p);
    p.n_ctx = 4096;
    p.n_seq = 1;
    p.n_batch = 512;
    p.n_ubatch = 512;
    p.n_threads = 0;
    p.n_threads_batch = 0;
    p.flash_attn = -1;
    p.type_k = GGML_TYPE_F16;
    p.type_v = GGML_TYPE_F16;
    p.pooling = -1;
    return p;
}

pw_sampling pw_sampling_default(void) {
    pw_sampling s;
    memset(&s, 0, sizeof s);
    s.seed = 0xFFFFFFFFu;
    s.top_k = 40;
    s.top_p = 0.9f;
    s.min_p = 0.0f;
    s.typical_p = 1.0f;
    s.temperature = 0.8f;
    s.repeat_last_n = 64;
    s.repeat_penalty = 1.0f;
    s.n_predict = -1;
    s.n_logprobs = -1;
    return s;
}

int32_t pw_engine_create(pw_model *pm, const pw_engine_params *params, pw_engine **out) {
    if (!pm || !out) return fail(PW_E_INVALID, "null argument");
    *out = nullptr;
    pw_engine_params p = params ? *params : pw_engine_default_params();
    if (p.n_seq < 1 || p.n_seq > llama_max_parallel_sequences())
        return fail(PW_E_INVALID, "parallel sequences must be 1..%zu", llama_max_parallel_sequences());
    if (p.n_ctx < 8) p.n_ctx = 8;
    if (p.n_batch < 1) p.n_batch = 512;
    if (p.n_ubatch < 1 || p.n_ubatch > p.n_batch) p.n_ubatch = p.n_batch;
    if (p.embeddings) p.n_ubatch = p.n_batch;  // non-causal models need the whole input in one ubatch
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = p.n_ctx * p.n_seq;
    cp.n_seq_max = p.n_seq;
    cp.n_batch = p.n_batch;
    cp.n_ubatch = p.n_ubatch;
    int32_t nt = p.n_threads > 0 ? p.n_threads : (int32_t)cp.n_threads;
    cp.n_threads = nt;
    cp.n_threads_batch = p.n_threads_batch > 0 ? p.n_threads_batch : nt;
    cp.flash_attn_type = (enum llama_flash_attn_type)p.flash_attn;
    cp.type_k = (ggml_type)p.type_k;
    cp.type_v = (ggml_type)p.type_v;
    cp.embeddings = p.embeddings;
    cp.pooling_type = (enum llama_pooling_type)p.pooling;
    cp.kv_unified = false;  // each sequence gets its own num_ctx, as Ollama sizes it
    cp.swa_full = true;     // keep SWA cells so prefixes can be reused
    cp.no_perf = true;
    g_last_log_error.clear();
    llama_context *ctx = llama_init_from_model(pm->model, cp);
    if (!ctx) return fail(PW_E_NOMEM, "failed to create context: %s", llama_reason().c_str());
    auto *e = new (std::nothrow) pw_engine;
    if (!e) {
        llama_free(ctx);
        return fail(PW_E_NOMEM, "out of memory");
    }
    e->pm = pm;
    e->ctx = ctx;
    e->mem = llama_get_memory(ctx);
    e->params = p;
    e->n_ctx_seq = std::min(llama_n_ctx_seq(ctx), p.n_ctx);  // cells are padded; num_ctx is the limit
    e->n_vocab = llama_vocab_n_tokens(pm->vocab);
    e->batch = llama_batch_init((int32_t)p.n_batch, 0, 1);
    e->slots.resize(p.n_seq);
    for (uint32_t i = 0; i < p.n_seq; i++) e->slots[i].id = (int32_t)i;
    e->stats.n_seq = (int32_t)p.n_seq;
    e->stats.n_ctx = llama_n_ctx(ctx);
    e->stats.n_ctx_seq = e->n_ctx_seq;
    *out = e;
    return PW_OK;
}

void pw_engine_free(pw_engine *e) { delete e; }

int32_t pw_engine_set_lora(pw_engine *e, const char *path, float scale) {
    if (!e || !path) return fail(PW_E_INVALID, "null argument");
    g_last_log_error.clear();
    llama_adapter_lora *a = llama_adapter_lora_init(e->pm->model, path);
    if (!a) return fail(PW_E_LOAD, "failed to load adapter %s: %s", path, llama_reason().c_str());
    float scales[1] = {scale};
    if (llama_set_adapters_lora(e->ctx, &a, 1, scales) != 0) {
        llama_adapter_lora_free(a);
        return fail(PW_E_LOAD, "failed to apply adapter %s", path);
    }
    if (e->lora) llama_adapter_lora_free(e->lora);
    e->lora = a;
    llama_memory_clear(e->mem, true);
    for (auto &s : e->slots) {
        s.cache.clear();
        s.cached_media.clear();
    }
    return PW_OK;
}

}  // extern "C"

// Why a GBNF grammar does not parse, or "" when it does. llama.cpp's own parse()
// writes the reason to stderr and returns false; the same steps here keep it.
static std::string grammar_problem(const char *src) {
    llama_grammar_parser parser;
    try {
        const char *pos = src;
        for (;;) {
            while (*pos == ' ' || *pos == '\t' || *pos == '\r' || *pos == '\n') pos++;
            if (*pos != '#') break;
            while (*pos && *pos != '\n') pos++;
        }
        while (*pos) pos = parser.parse_rule(pos);
        for (const auto &kv : parser.symbol_ids) {
            if (kv.second >= parser.rules.size() || parser.rules[kv.second].empty())
                return "rule '" + kv.first + "' is used but not defined";
        }
    } catch (const std::exception &err) {
        std::string msg = err.what();
        if (msg.size() > 160) msg = msg.substr(0, 157) + "...";
        return msg.empty() ? std::string("syntax error") : msg;
    }
    return std::string();
}

// Queue a prompt (text ids, and media placeholders described by `media`) into
// the idle sequence sharing its longest cached prefix, else the least recently used.
static int32_t submit(pw_engine *e, const int32_t *tokens, int32_t n, const std::vector<media_span> &media,
                      const pw_sampling *sp) {
    if (e->params.embeddings) return fail(PW_E_INVALID, "this engine serves embeddings only");
    if ((uint32_t)n >= e->n_ctx_seq)
        return fail(PW_E_TOOLONG, "prompt of %d tokens does not fit the context of %u", n, e->n_ctx_seq);
    slot *best = nullptr;
    size_t best_lcp = 0;
    for (auto &s : e->slots) {
        if (s.state != SLOT_IDLE) continue;
        size_t lcp = common_prefix(s.cache, tokens, (size_t)n);
        if (!best || lcp > best_lcp || (lcp == best_lcp && s.t_last_used < best->t_last_used)) {
            best = &s;
            best_lcp = lcp;
        }
    }
    if (!best) return fail(PW_E_BUSY, "all %u sequences are busy", e->params.n_seq);
    slot &s = *best;
    sampler_ptr grammar;
    if (sp->grammar && sp->grammar[0]) {
        std::string problem = grammar_problem(sp->grammar);
        if (!problem.empty()) return fail(PW_E_GRAMMAR, "invalid grammar: %s", problem.c_str());
        g_last_log_error.clear();
        grammar.reset(llama_sampler_init_grammar(e->pm->vocab, sp->grammar, "root"));
        if (!grammar) return fail(PW_E_GRAMMAR, "invalid grammar: %s", llama_reason().c_str());
    }
    std::vector<chunk_ptr> own;
    std::vector<media_span> spans = media;
    for (auto &m : spans) {
        own.emplace_back(mtmd_input_chunk_copy(m.chunk));
        if (!own.back()) return fail(PW_E_NOMEM, "out of memory");
        m.chunk = own.back().get();
    }
    // At least the last prompt token is evaluated again to get its logits, and
    // a media chunk is reused whole or not at all.
    size_t keep = std::min(best_lcp, (size_t)n - 1);
    for (const auto &m : spans)
        if (m.start < keep && keep < m.start + m.n_tokens) keep = m.start;
    // Cells are removed by position: after an M-RoPE image, positions run behind cell counts.
    s.cache.resize(keep);
    while (!s.cached_media.empty() && s.cached_media.back().start >= keep) s.cached_media.pop_back();
    if (!llama_memory_seq_rm(e->mem, s.id, next_pos(s), -1)) {
        llama_memory_seq_rm(e->mem, s.id, -1, -1);
        keep = 0;
        s.cache.clear();
        s.cached_media.clear();
    }
    s.prompt.assign(tokens, tokens + n);
    s.media = std::move(spans);
    s.media_own = std::move(own);
    s.n_past = keep;
    s.n_cached = (int32_t)keep;
    s.n_gen = 0;
    s.n_predict = sp->n_predict;
    s.n_logprobs = sp->n_logprobs > 20 ? 20 : sp->n_logprobs;
    s.ignore_eos = sp->ignore_eos;
    // Top-k of at most 1024 candidates is found by the shim (top_k_logits), penalties then kept by the slot.
    // A3S_POWER_REFERENCE_SAMPLING=1 leaves all sampling to llama.cpp's chain, for comparisons.
    const char *reference = std::getenv("A3S_POWER_REFERENCE_SAMPLING");
    const bool shortcuts = !(reference && *reference && std::strcmp(reference, "0") != 0);
    s.top_k = shortcuts && sp->temperature > 0.0f && sp->top_k > 0 && sp->top_k <= 1024 ? sp->top_k : 0;
    s.pen_n = s.top_k > 0 && penalizes(e, *sp) ? penalty_window(e, *sp) : 0;
    s.pen_repeat = sp->repeat_penalty;
    s.pen_freq = sp->frequency_penalty;
    s.pen_present = sp->presence_penalty;
    s.pen_prev.clear();
    s.pen_count.clear();
    s.chain = build_chain(e, *sp, s.pen_n == 0);
    s.grammar = std::move(grammar);
    s.argmax = shortcuts && sp->temperature <= 0.0f && !s.grammar && llama_sampler_chain_n(s.chain.get()) == 1;
    // Penalties see the prompt's text, as in llama-server.
    for (int32_t i = 0; i < n; i++) {
        if (tokens[i] < 0) continue;
        llama_sampler_accept(s.chain.get(), tokens[i]);
        if (s.pen_n > 0) pen_accept(s, tokens[i]);
    }
    s.pending.clear();
    s.cancel = false;
    s.last = -1;
    s.i_batch = -1;
    s.t_start_us = llama_time_us();
    s.t_first_us = 0;
    s.t_last_used = ++e->tick;
    s.state = SLOT_PROMPT;
    e->stats.n_reused_tokens += (int64_t)keep;
    return s.id;
}

extern "C" {

int32_t pw_submit(pw_engine *e, const int32_t *tokens, int32_t n, const pw_sampling *sp) {
    if (!e || !tokens || n <= 0 || !sp) return fail(PW_E_INVALID, "a request needs at least one token");
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= e->n_vocab) return fail(PW_E_INVALID, "token %d out of range", tokens[i]);
    return submit(e, tokens, n, {}, sp);
}

int32_t pw_submit_media(pw_engine *e, const pw_media *m, const pw_sampling *sp) {
    if (!e || !m || !sp || m->tokens.empty()) return fail(PW_E_INVALID, "a request needs at least one token");
    if (!e->mtmd) return fail(PW_E_INVALID, "this model has no projector for images");
    if (m->tokens.back() < 0) return fail(PW_E_INVALID, "a prompt cannot end with an image");
    for (const auto &sp_ : m->spans) {
        if (sp_.n_tokens > e->params.n_ubatch && mtmd_decode_use_non_causal(e->mtmd->ctx, sp_.chunk))
            return fail(PW_E_TOOLONG, "an image of %zu tokens needs num_batch of at least %zu (it is %u)",
                        sp_.n_tokens, sp_.n_tokens, e->params.n_ubatch);
    }
    return submit(e, m->tokens.data(), (int32_t)m->tokens.size(), m->spans, sp);
}

int32_t pw_cancel(pw_engine *e, int32_t seq) {
    if (!e || seq < 0 || (size_t)seq >= e->slots.size()) return fail(PW_E_INVALID, "no sequence %d", seq);
    if (e->slots[(size_t)seq].state != SLOT_IDLE) e->slots[(size_t)seq].cancel = true;
    return PW_OK;
}

static void emit(pw_engine *e, slot &s, pw_event *ev, llama_token tok, int32_t finish, const std::string &text,
                 float lp, int32_t top_off, int32_t n_top) {
    ev->seq = s.id;
    ev->token = tok;
    ev->finish = finish;
    ev->text_off = (int32_t)e->arena.size();
    ev->text_len = (int32_t)text.size();
    e->arena += text;
    ev->logprob = lp;
    ev->top_off = top_off;
    ev->n_top = n_top;
    ev->n_prompt = (int32_t)s.prompt.size();
    ev->n_cached = s.n_cached;
    ev->n_gen = s.n_gen;
    int64_t now = llama_time_us();
    ev->t_prompt_us = (s.t_first_us ? s.t_first_us : now) - s.t_start_us;
    ev->t_gen_us = s.t_first_us ? now - s.t_first_us : 0;
}

// Encode the media chunk at the sequence's next prompt position and decode its
// embeddings into the sequence's cells, in decode calls of its own.
static bool eval_media(pw_engine *e, slot &s) {
    auto it = std::find_if(s.media.begin(), s.media.end(), [&s](const media_span &m) { return m.start == s.n_past; });
    if (it == s.media.end()) {
        fail(PW_E_INTERNAL, "no media chunk at prompt position %zu", s.n_past);
        return false;
    }
    llama_pos pos = next_pos(s), new_pos = pos;
    g_last_log_error.clear();
    int64_t t0 = llama_time_us();
    int32_t rc = mtmd_helper_eval_chunk_single(e->mtmd->ctx, e->ctx, it->chunk, pos, s.id,
                                               (int32_t)e->params.n_batch, false, &new_pos);
    e->stats.t_decode_us += llama_time_us() - t0;
    e->stats.n_decode++;
    if (rc != 0) {
        fail(PW_E_DECODE, "image evaluation failed (%d): %s", rc, llama_reason().c_str());
        return false;
    }
    media_span done = *it;
    done.n_pos = new_pos - pos;
    done.chunk = nullptr;
    s.cached_media.push_back(done);
    s.cache.insert(s.cache.end(), s.prompt.begin() + (long)s.n_past, s.prompt.begin() + (long)(s.n_past + done.n_tokens));
    s.n_past += done.n_tokens;
    e->stats.n_prompt_tokens += (int64_t)done.n_tokens;
    return true;
}

// End a sequence with an error; its cells are dropped, as they may be half written.
static void fail_slot(pw_engine *e, slot &s, pw_event *ev) {
    emit(e, s, ev, -1, PW_FINISH_ERROR, std::string(), 0.0f, 0, 0);
    llama_memory_seq_rm(e->mem, s.id, -1, -1);
    s.cache.clear();
    s.cached_media.clear();
    slot_release(e, s);
}

int32_t pw_step(pw_engine *e, pw_event *events, int32_t cap, pw_step_out *out) {
    if (!e || !events || !out || cap < (int32_t)e->slots.size()) return fail(PW_E_INVALID, "event buffer too small");
    e->arena.clear();
    e->tops.clear();
    int32_t n_ev = 0;
    llama_batch &b = e->batch;
    b.n_tokens = 0;
    const int32_t n_batch = (int32_t)e->params.n_batch;
    for (auto &s : e->slots) s.in_batch = false;

    // Cancelled sequences end now, before they cost another decode.
    for (auto &s : e->slots) {
        if (s.state != SLOT_IDLE && s.cancel) {
            emit(e, s, &events[n_ev++], -1, PW_FINISH_CANCEL, s.pending, 0.0f, 0, 0);
            slot_release(e, s);
        }
    }
    // Generating sequences first: one token each.
    for (auto &s : e->slots) {
        if (s.state != SLOT_GEN) continue;
        s.i_batch = b.n_tokens;
        s.in_batch = true;
        batch_add(b, s.last, next_pos(s), s.id, true);
        s.cache.push_back(s.last);
    }
    // Prompt chunks fill the rest of the batch; media are evaluated on their own first.
    for (auto &s : e->slots) {
        if (s.state != SLOT_PROMPT) continue;
        bool media_ok = true;
        while (media_ok && s.n_past < s.prompt.size() && s.prompt[s.n_past] < 0 && b.n_tokens < n_batch)
            media_ok = eval_media(e, s);
        if (!media_ok) {
            fail_slot(e, s, &events[n_ev++]);
            continue;
        }
        const int32_t n_before = b.n_tokens;
        llama_pos pos = next_pos(s);
        while (s.n_past < s.prompt.size() && s.prompt[s.n_past] >= 0 && b.n_tokens < n_batch) {
            bool is_last = s.n_past + 1 == s.prompt.size();
            if (is_last) s.i_batch = b.n_tokens;
            batch_add(b, s.prompt[s.n_past], pos++, s.id, is_last);
            s.cache.push_back(s.prompt[s.n_past]);
            s.n_past++;
            e->stats.n_prompt_tokens++;
        }
        s.in_batch = b.n_tokens > n_before;
    }
    out->n_decoded = b.n_tokens;
    if (b.n_tokens > 0) {
        int64_t t0 = llama_time_us();
        int32_t rc = llama_decode(e->ctx, b);
        e->stats.t_decode_us += llama_time_us() - t0;
        e->stats.n_decode++;
        if (rc != 0) {
            fail(PW_E_DECODE, "llama_decode failed (%d): %s", rc, llama_reason().c_str());
            // The batch's sequences end with an error; their cells are dropped.
            for (auto &s : e->slots) {
                if (s.state == SLOT_IDLE || !s.in_batch) continue;
                fail_slot(e, s, &events[n_ev++]);
            }
            out->text = e->arena.data();
            out->top = e->tops.data();
            out->n_events = n_ev;
            out->n_active = 0;
            for (auto &s : e->slots) out->n_active += s.state != SLOT_IDLE;
            return n_ev;
        }
    }
    // Each output's logits, fetched once (llama_get_logits_ith is not thread-safe). Greedy argmax scans
    // and top-k candidates come first, all sequences together on the decode threads.
    e->greedy_rows.clear();
    e->greedy_slots.clear();
    e->topk_slots.clear();
    for (auto &s : e->slots) {
        s.greedy = -1;
        if (s.state == SLOT_IDLE || s.i_batch < 0) continue;
        s.logits = llama_get_logits_ith(e->ctx, s.i_batch);
        if (s.argmax) {
            e->greedy_rows.push_back(s.logits);
            e->greedy_slots.push_back(&s);
        } else if (s.top_k > 0) {
            e->topk_slots.push_back(&s);
        }
    }
    const int32_t n_threads = (int32_t)llama_n_threads(e->ctx);
    if (!e->greedy_rows.empty()) {
        e->greedy_toks.resize(e->greedy_rows.size());
        argmax_rows(e->greedy_rows.data(), (int32_t)e->greedy_rows.size(), e->n_vocab, e->greedy_toks.data(),
                    n_threads);
        for (size_t i = 0; i < e->greedy_slots.size(); i++) e->greedy_slots[i]->greedy = e->greedy_toks[i];
    }
    const int32_t n_topk = (int32_t)e->topk_slots.size();
#ifdef _OPENMP
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (n_topk > 1 && n_threads > 1)
#endif
    for (int32_t i = 0; i < n_topk; i++) {  // a sequence per thread
        slot &s = *e->topk_slots[(size_t)i];
        if (s.pen_n > 0)
            top_k_penalized(s.logits, e->n_vocab, s, s.cand, s.cand_ids);
        else
            top_k_logits(s.logits, e->n_vocab, s.top_k, s.cand);
    }
    // Sample for every sequence that produced logits.
    char piece[256];
    for (auto &s : e->slots) {
        if (s.state == SLOT_IDLE || s.i_batch < 0) continue;
        const float *logits = s.logits;
        s.i_batch = -1;
        if (s.state == SLOT_PROMPT) {
            s.state = SLOT_GEN;
            s.t_first_us = llama_time_us();
        }
        llama_token tok = sample(e, s, logits);
        float lp = 0.0f;
        int32_t top_off = (int32_t)e->tops.size(), n_top = 0;
        if (s.n_logprobs >= 0) {
            lp = logprobs(e, logits, tok, s.n_logprobs);
            n_top = (int32_t)e->tops.size() - top_off;
        }
        s.n_gen++;
        e->stats.n_gen_tokens++;
        int32_t finish = PW_FINISH_NONE;
        if (!s.ignore_eos && llama_vocab_is_eog(e->pm->vocab, tok)) {
            finish = PW_FINISH_STOP;
        } else {
            int32_t n = llama_token_to_piece(e->pm->vocab, tok, piece, sizeof piece, 0, false);
            if (n > 0) s.pending.append(piece, (size_t)n);
            if (s.n_predict >= 0 && s.n_gen >= s.n_predict) finish = PW_FINISH_LENGTH;
            else if (s.cache.size() + 1 >= e->n_ctx_seq) finish = PW_FINISH_CONTEXT;
        }
        std::string text;
        if (finish != PW_FINISH_NONE) {
            text.swap(s.pending);
        } else {
            size_t ok = utf8_complete_prefix(s.pending);
            text = s.pending.substr(0, ok);
            s.pending.erase(0, ok);
        }
        emit(e, s, &events[n_ev++], tok, finish, text, lp, top_off, n_top);
        if (finish != PW_FINISH_NONE) {
            // The last token was never decoded: the cache ends before it.
            slot_release(e, s);
        } else {
            s.last = tok;
        }
    }
    out->text = e->arena.data();
    out->top = e->tops.data();
    out->n_events = n_ev;
    out->n_active = 0;
    for (auto &s : e->slots) out->n_active += s.state != SLOT_IDLE;
    return n_ev;
}

int32_t pw_embed(pw_engine *e, const int32_t *tokens, const int32_t *lengths, int32_t n_inputs, float *out,
                 int32_t n_out, bool normalize) {
    if (!e || !tokens || !lengths || !out || n_inputs < 0) return fail(PW_E_INVALID, "null argument");
    if (!e->params.embeddings) return fail(PW_E_INVALID, "this engine was not created for embeddings");
    const int32_t dim = llama_model_n_embd_out(e->pm->model);
    if (n_out < dim * n_inputs) return fail(PW_E_INVALID, "output buffer too small");
    const int32_t n_batch = (int32_t)e->params.n_batch;
    const int32_t n_seq = (int32_t)e->params.n_seq;
    std::vector<int32_t> offsets((size_t)n_inputs + 1, 0);
    for (int32_t i = 0; i < n_inputs; i++) {
        if (lengths[i] <= 0) return fail(PW_E_INVALID, "input %d is empty", i);
        if ((uint32_t)lengths[i] > e->n_ctx_seq || lengths[i] > n_batch)
            return fail(PW_E_TOOLONG, "input %d has %d tokens, more than the context of %u", i, lengths[i],
                        std::min(e->n_ctx_seq, (uint32_t)n_batch));
        offsets[(size_t)i + 1] = offsets[(size_t)i] + lengths[i];
    }
    llama_batch &b = e->batch;
    int32_t i = 0;
    while (i < n_inputs) {
        if (e->mem) llama_memory_clear(e->mem, true);
        b.n_tokens = 0;
        int32_t first = i;
        while (i < n_inputs && i - first < n_seq && b.n_tokens + lengths[i] <= n_batch) {
            for (int32_t j = 0; j < lengths[i]; j++)
                batch_add(b, tokens[offsets[(size_t)i] + j], j, i - first, j == lengths[i] - 1);
            i++;
        }
        g_last_log_error.clear();
        int64_t t0 = llama_time_us();
        int32_t rc = llama_decode(e->ctx, b);
        e->stats.t_decode_us += llama_time_us() - t0;
        e->stats.n_decode++;
        e->stats.n_prompt_tokens += b.n_tokens;
        if (rc != 0) return fail(PW_E_DECODE, "embedding decode failed (%d): %s", rc, llama_reason().c_str());
        for (int32_t k = first; k < i; k++) {
            const float *v = llama_get_embeddings_seq(e->ctx, k - first);
            if (!v) v = llama_get_embeddings_ith(e->ctx, offsets[(size_t)k + 1] - offsets[(size_t)first] - 1);
            if (!v) return fail(PW_E_INTERNAL, "model produced no embedding");
            float *dst = out + (size_t)k * (size_t)dim;
            double norm = 0.0;
            for (int32_t d = 0; d < dim; d++) norm += (double)v[d] * v[d];
            float scale = (normalize && norm > 0.0) ? (float)(1.0 / std::sqrt(norm)) : 1.0f;
            for (int32_t d = 0; d < dim; d++) dst[d] = v[d] * scale;
        }
    }
    if (e->mem) llama_memory_clear(e->mem, true);
    return dim;
}

void pw_argmax_rows(const float *const *rows, int32_t n_rows, int32_t n, int32_t *out, int32_t n_threads) {
    if (!rows || !out || n <= 0) return;
    argmax_rows(rows, n_rows, n, out, std::max(1, n_threads));
}

int32_t pw_top_k(const float *logits, int32_t n, int32_t k, int32_t *ids, float *values) {
    if (!logits || !ids || !values || n <= 0 || k <= 0) return 0;
    std::vector<llama_token_data> cand;
    top_k_logits(logits, n, k, cand);
    for (size_t i = 0; i < cand.size(); i++) {
        ids[i] = cand[i].id;
        values[i] = cand[i].logit;
    }
    return (int32_t)cand.size();
}

int32_t pw_top_k_penalized(const float *logits, int32_t n, int32_t k, const int32_t *history,
                           int32_t n_history, int32_t last_n, float repeat, float freq, float present,
                           int32_t *ids, float *values) {
    if (!logits || !ids || !values || n <= 0 || k <= 0 || last_n <= 0 || (n_history > 0 && !history)) return 0;
    slot s;
    s.top_k = k;
    s.pen_n = last_n;
    s.pen_repeat = repeat;
    s.pen_freq = freq;
    s.pen_present = present;
    for (int32_t i = 0; i < n_history; i++) pen_accept(s, history[i]);
    top_k_penalized(logits, n, s, s.cand, s.cand_ids);
    for (size_t i = 0; i < s.cand.size(); i++) {
        ids[i] = s.cand[i].id;
        values[i] = s.cand[i].logit;
    }
    return (int32_t)s.cand.size();
}

int32_t pw_engine_stats(const pw_engine *e, pw_stats *out) {
    if (!e || !out) return fail(PW_E_INVALID, "null argument");
    *out = e->stats;
    out->n_active = 0;
    out->kv_used = 0;
    for (auto &s : e->slots) {
        out->n_active += s.state != SLOT_IDLE;
        out->kv_used += (int64_t)s.cache.size();
    }
    return PW_OK;
}

int32_t pw_engine_clear(pw_engine *e) {
    if (!e) return fail(PW_E_INVALID, "null argument");
    for (auto &s : e->slots)
        if (s.state != SLOT_IDLE) return fail(PW_E_BUSY, "sequences are active");
    if (e->mem) llama_memory_clear(e->mem, true);
    for (auto &s : e->slots) {
        s.cache.clear();
        s.cached_media.clear();
    }
    return PW_OK;
}

// ---- multimodal input ---------------------------------------------------------

const char *pw_mtmd_marker(void) { return mtmd_default_marker(); }

int32_t pw_mtmd_load(pw_model *pm, const char *path, int32_t n_threads, bool use_gpu, pw_mtmd **out) {
    if (!pm || !path || !out) return fail(PW_E_INVALID, "null argument");
    *out = nullptr;
    mtmd_context_params mp = mtmd_context_params_default();
    mp.use_gpu = use_gpu;
    mp.print_timings = false;
    if (n_threads > 0) mp.n_threads = n_threads;
    clear_log_errors();
    mtmd_context *ctx = mtmd_init_from_file(path, pm->model, mp);
    if (!ctx) return fail(PW_E_LOAD, "failed to load projector %s: %s", path, first_reason().c_str());
    auto *m = new (std::nothrow) pw_mtmd;
    if (!m) {
        mtmd_free(ctx);
        return fail(PW_E_NOMEM, "out of memory");
    }
    m->ctx = ctx;
    m->pm = pm;
    *out = m;
    return PW_OK;
}

void pw_mtmd_free(pw_mtmd *m) { delete m; }

int32_t pw_mtmd_get_info(const pw_mtmd *m, pw_mtmd_info *out) {
    if (!m || !out) return fail(PW_E_INVALID, "null argument");
    memset(out, 0, sizeof *out);
    out->vision = mtmd_support_vision(m->ctx);
    out->audio = mtmd_support_audio(m->ctx);
    out->non_causal = mtmd_decode_use_non_causal(m->ctx, nullptr);
    out->mrope = mtmd_decode_use_mrope(m->ctx);
    out->n_embd = llama_model_n_embd_inp(m->pm->model);
    return PW_OK;
}

// Placeholder id of a media chunk: negative, and equal for chunks with equal ids
// (mtmd names a bitmap by the SHA-256 of its pixels).
static llama_token media_placeholder(const mtmd_input_chunk *c, uint32_t fallback) {
    const char *id = mtmd_input_chunk_get_id(c);
    uint32_t h = 2166136261u;
    if (id && id[0]) {
        for (const char *p = id; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    } else {
        h ^= fallback * 2654435761u;
    }
    return -2 - (llama_token)(h & 0x3FFFFFFF);
}

int32_t pw_mtmd_tokenize(pw_mtmd *m, const char *text, const unsigned char *const *data, const size_t *sizes,
                         int32_t n_media, bool add_special, pw_media **out) {
    if (!m || !text || !out || n_media < 0 || (n_media > 0 && (!data || !sizes)))
        return fail(PW_E_INVALID, "null argument");
    *out = nullptr;
    std::vector<mtmd::bitmap> bitmaps;
    for (int32_t i = 0; i < n_media; i++) {
        g_last_log_error.clear();
        mtmd_helper_bitmap_wrapper w =
            mtmd_helper_bitmap_init_from_buf(m->ctx, data[i], sizes[i], false, mtmd_helper_init_opt_default());
        if (w.video_ctx) {
            mtmd_helper_video_free(w.video_ctx);
            if (w.bitmap) mtmd_bitmap_free(w.bitmap);
            return fail(PW_E_INVALID, "image %d is a video, which is not supported", i);
        }
        if (!w.bitmap) return fail(PW_E_INVALID, "image %d could not be decoded", i);
        bitmaps.emplace_back(w.bitmap);
        bool audio = mtmd_bitmap_is_audio(w.bitmap);
        if (audio ? !mtmd_support_audio(m->ctx) : !mtmd_support_vision(m->ctx))
            return fail(PW_E_INVALID, "input %d is %s, which this projector does not take", i,
                        audio ? "audio" : "an image");
    }
    auto media = std::make_unique<pw_media>();
    media->chunks = mtmd_input_chunks_init();
    if (!media->chunks) return fail(PW_E_NOMEM, "out of memory");
    mtmd_input_text in{text, strlen(text), add_special, true};
    std::vector<const mtmd_bitmap *> ptrs;
    for (auto &b : bitmaps) ptrs.push_back(b.ptr.get());
    clear_log_errors();
    int32_t rc = mtmd_tokenize(m->ctx, media->chunks, &in, ptrs.data(), ptrs.size());
    if (rc == 1) return fail(PW_E_INVALID, "the prompt marks a different number of images than the %d given", n_media);
    if (rc != 0) return fail(PW_E_INVALID, "image preprocessing failed: %s", first_reason().c_str());
    size_t n_chunks = mtmd_input_chunks_size(media->chunks);
    for (size_t i = 0; i < n_chunks; i++) {
        const mtmd_input_chunk *c = mtmd_input_chunks_get(media->chunks, i);
        if (mtmd_input_chunk_get_type(c) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t n = 0;
            const llama_token *t = mtmd_input_chunk_get_tokens_text(c, &n);
            media->tokens.insert(media->tokens.end(), t, t + n);
            continue;
        }
        media_span sp;
        sp.start = media->tokens.size();
        sp.n_tokens = mtmd_input_chunk_get_n_tokens(c);
        sp.n_pos = mtmd_input_chunk_get_n_pos(c);
        sp.chunk = c;
        media->tokens.insert(media->tokens.end(), sp.n_tokens, media_placeholder(c, (uint32_t)i));
        media->spans.push_back(sp);
    }
    *out = media.release();
    return PW_OK;
}

int32_t pw_media_n_tokens(const pw_media *m) { return m ? (int32_t)m->tokens.size() : 0; }

int32_t pw_media_n_chunks(const pw_media *m) { return m ? (int32_t)m->spans.size() : 0; }

int32_t pw_media_tokens(const pw_media *m, int32_t *out, int32_t cap) {
    if (!m || !out) return fail(PW_E_INVALID, "null argument");
    if (cap < (int32_t)m->tokens.size()) return fail(PW_E_INVALID, "buffer too small");
    std::copy(m->tokens.begin(), m->tokens.end(), out);
    return (int32_t)m->tokens.size();
}

void pw_media_free(pw_media *m) { delete m; }

int32_t pw_engine_set_mtmd(pw_engine *e, pw_mtmd *m) {
    if (!e) return fail(PW_E_INVALID, "null argument");
    if (m && m->pm != e->pm) return fail(PW_E_INVALID, "the projector was loaded for another model");
    e->mtmd = m;
    return PW_OK;
}

}  // extern "C"
