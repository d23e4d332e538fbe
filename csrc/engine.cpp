// Engines: one llama_context serving n_seq sequences (each its own KV stream of n_ctx cells), its LoRA
// adapter, its counters, and pooled embeddings for embedding engines.

#include "shim.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

using namespace shim;

static const int32_t POOL_TOKENS = 512;

namespace shim {

llama_context_params context_params(const pw_engine_params &p) {
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
    // Each sequence gets its own num_ctx, as Ollama sizes it. A unified cache would make a prefix copy a tag
    // instead of a stream copy, but measured (Gemma 3 270M, 4 sequences of 2,048, a 1,000-token prefix) the
    // copy costs a few ms against seconds for the prefix it saves, and decoding costs the same or more
    // (unified attention spans every sequence's cells).
    cp.kv_unified = false;
    cp.swa_full = true;     // keep SWA cells so prefixes can be reused
    cp.no_perf = true;
    return cp;
}

}  // namespace shim

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
    p.spec_gate = 1;
    p.level_batch = true;
    return p;
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
    llama_context_params cp = context_params(p);
    clear_log_errors();
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
    e->can_share = e->mem && !llama_model_is_recurrent(pm->model) && !llama_model_is_hybrid(pm->model);
    e->ram.budget = e->can_share && !p.embeddings ? (size_t)p.cache_ram : 0;
    e->n_ctx_seq = std::min(llama_n_ctx_seq(ctx), p.n_ctx);  // cells are padded; num_ctx is the limit
    e->n_vocab = llama_vocab_n_tokens(pm->vocab);
    e->batch = llama_batch_init((int32_t)p.n_batch, 0, 1);
    e->slots.resize(p.n_seq);
    for (uint32_t i = 0; i < p.n_seq; i++) e->slots[i].id = (int32_t)i;
    e->stats.n_seq = (int32_t)p.n_seq;
    e->stats.n_ctx = llama_n_ctx(ctx);
    e->stats.n_ctx_seq = e->n_ctx_seq;
    gate_init(e->gate, p);
    *out = e;
    return PW_OK;
}

void pw_engine_free(pw_engine *e) { delete e; }

int32_t pw_engine_set_lora(pw_engine *e, const char *path, float scale) {
    if (!e || !path) return fail(PW_E_INVALID, "null argument");
    clear_log_errors();
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
    ram_clear(e);
    return PW_OK;
}

int32_t pw_embed(pw_engine *e, const int32_t *tokens, const int32_t *lengths, int32_t n_inputs, float *out,
                 int32_t n_out, bool normalize) {
    if (!e || !tokens || !lengths || !out || n_inputs < 0) return fail(PW_E_INVALID, "null argument");
    if (!e->params.embeddings) return fail(PW_E_INVALID, "this engine was not created for embeddings");
    const bool rank = llama_pooling_type(e->ctx) == LLAMA_POOLING_TYPE_RANK;
    if (rank) normalize = false;  // scores, not vectors
    const int32_t dim = pw_engine_embd_dim(e);
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
        // Inputs share a decode up to POOL_TOKENS: attention over one ubatch is quadratic in its tokens, so
        // packing long inputs together costs more than it saves; a longer input goes alone.
        while (i < n_inputs && i - first < n_seq &&
               (b.n_tokens == 0 || b.n_tokens + lengths[i] <= std::min(n_batch, POOL_TOKENS))) {
            for (int32_t j = 0; j < lengths[i]; j++)  // pooling reads every token: all are outputs
                batch_add(b, tokens[offsets[(size_t)i] + j], j, i - first, true);
            i++;
        }
        clear_log_errors();
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

int32_t pw_engine_embd_dim(const pw_engine *e) {
    if (!e) return fail(PW_E_INVALID, "null argument");
    if (llama_pooling_type(e->ctx) == LLAMA_POOLING_TYPE_RANK) return (int32_t)llama_model_n_cls_out(e->pm->model);
    return llama_model_n_embd_out(e->pm->model);
}

int32_t pw_engine_stats(const pw_engine *e, pw_stats *out) {
    if (!e || !out) return fail(PW_E_INVALID, "null argument");
    *out = e->stats;
    out->n_active = 0;
    out->kv_used = 0;
    out->kv_entries = 0;
    for (auto &s : e->slots) {
        out->n_active += s.state != SLOT_IDLE;
        out->kv_used += (int64_t)s.cache.size();
        out->kv_entries += !s.cache.empty();
    }
    out->ram_bytes = (int64_t)e->ram.bytes;
    out->ram_entries = (int64_t)e->ram.entries.size();
    out->ram_budget = (int64_t)e->ram.budget;
    disk_stats(e, *out);
    return PW_OK;
}

int32_t pw_engine_clear(pw_engine *e) {
    if (!e) return fail(PW_E_INVALID, "null argument");
    for (auto &s : e->slots)
        if (s.state != SLOT_IDLE) return fail(PW_E_BUSY, "sequences are active");
    if (e->mem) llama_memory_clear(e->mem, true);
    if (e->dmem) llama_memory_clear(e->dmem, true);
    for (auto &d : e->dcache) d.clear();
    for (auto &s : e->slots) {
        s.cache.clear();
        s.cached_media.clear();
    }
    ram_clear(e);
    disk_clear(e);
    return PW_OK;
}

}  // extern "C"
