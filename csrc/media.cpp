// Multimodal prompts (libmtmd): loading a projector, tokenizing text with images or audio into text
// tokens and media chunks (safe from any thread), and binding a projector to an engine.

#include "shim.h"

#include <algorithm>
#include <cstring>
#include <new>

using namespace shim;

extern "C" {

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
        clear_log_errors();
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
