// Models: loading a GGUF file, its metadata, and its vocabulary (tokenizing is safe from any thread).

#include "shim.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

using shim::clear_log_errors;
using shim::fail;
using shim::llama_reason;

// The pooling type the GGUF declares (llama.h has no getter for the model's own).
static int32_t model_pooling(const llama_model *m) {
    char arch[64] = {0}, key[128], val[32] = {0};
    if (llama_model_meta_val_str(m, "general.architecture", arch, sizeof arch) < 0) return -1;
    snprintf(key, sizeof key, "%s.pooling_type", arch);
    if (llama_model_meta_val_str(m, key, val, sizeof val) < 0) return -1;
    return (int32_t)strtol(val, nullptr, 10);
}

// Whether llama.cpp puts the output layer on a device: layers are offloaded from the last (the output layer)
// down, to the GPUs and RPC servers (both GPU-type devices; integrated GPUs too), when there is one.
static bool output_offloaded(int32_t n_gpu_layers) {
    if (n_gpu_layers == 0) return false;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        enum ggml_backend_dev_type t = ggml_backend_dev_type(ggml_backend_dev_get(i));
        if (t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU) return true;
    }
    return false;
}

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
    clear_log_errors();
    llama_model *m = llama_model_load_from_file(path, mp);
    if (!m) return fail(PW_E_LOAD, "failed to load model %s: %s", path, llama_reason().c_str());
    auto *pm = new (std::nothrow) pw_model;
    if (!pm) {
        llama_model_free(m);
        return fail(PW_E_NOMEM, "out of memory");
    }
    pm->model = m;
    pm->vocab = llama_model_get_vocab(m);
    pm->output_offloaded = output_offloaded(p.n_gpu_layers);
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
    out->token_sep = llama_vocab_sep(pm->vocab);
    out->ftype = (int32_t)llama_model_ftype(m);
    out->pooling = model_pooling(m);
    out->n_cls_out = (int32_t)llama_model_n_cls_out(m);
    out->add_bos = llama_vocab_get_add_bos(pm->vocab);
    out->add_eos = llama_vocab_get_add_eos(pm->vocab);
    out->add_sep = llama_vocab_get_add_sep(pm->vocab);
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

}  // extern "C"
