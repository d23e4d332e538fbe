/*
 * power_shim: the small, versioned C API between a3s-power and llama.cpp.
 *
 * Python never sees llama.h: it sees only the declarations between the CDEF
 * markers below, from which power/native.py derives its cffi cdef. Handles are
 * opaque; calls return integer status codes (PW_OK or a negative PW_E_*) and
 * leave a message for pw_last_error() on the calling thread.
 *
 * Threading: tokenize/detokenize/metadata (and pw_mtmd_tokenize) are safe from any thread. An engine
 * (one llama_context) must be driven by one thread at a time: pw_submit(_media),
 * pw_step, pw_cancel and pw_embed are not thread-safe with each other.
 *
 * The per-token work (batching, sampling, end-of-generation checks,
 * detokenising, UTF-8 hold-back) happens in pw_step, so the caller does a
 * constant amount of work per step, not per sampler stage.
 */
#ifndef POWER_SHIM_H
#define POWER_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PW_API __declspec(dllexport)
#else
#define PW_API __attribute__((visibility("default")))
#endif

/* CDEF-BEGIN */
enum pw_abi { PW_ABI_VERSION = 19 };

/* The most tokens a sequence drafts per step (prompt lookup, the draft model); pw_step's event buffer needs
 * room for n_seq * (1 + PW_DRAFT_MAX) events for every draft to be verified (fewer only limits drafting). */
enum pw_limits { PW_DRAFT_MAX = 64 };

enum pw_status {
    PW_OK = 0,
    PW_E_INVALID = -1,   /* bad argument */
    PW_E_LOAD = -2,      /* model or adapter failed to load */
    PW_E_NOMEM = -3,     /* allocation or KV space */
    PW_E_BUSY = -4,      /* no free sequence */
    PW_E_DECODE = -5,    /* llama_decode failed */
    PW_E_GRAMMAR = -6,   /* grammar did not parse */
    PW_E_TOOLONG = -7,   /* input longer than the context */
    PW_E_CANCELED = -8,  /* stopped by a callback */
    PW_E_INTERNAL = -9
};

enum pw_finish {
    PW_FINISH_NONE = 0,    /* still generating */
    PW_FINISH_STOP = 1,    /* end-of-generation token */
    PW_FINISH_LENGTH = 2,  /* n_predict reached */
    PW_FINISH_CONTEXT = 3, /* sequence filled its context */
    PW_FINISH_CANCEL = 4,  /* pw_cancel */
    PW_FINISH_ERROR = 5,   /* decode failed; see pw_last_error */
    PW_FINISH_GRAMMAR = 6  /* the grammar allows no next token; see pw_last_error */
};

typedef struct pw_model pw_model;
typedef struct pw_engine pw_engine;
typedef struct pw_mtmd pw_mtmd;     /* a multimodal projector bound to a model */
typedef struct pw_media pw_media;   /* a prompt tokenized with its images */

typedef void (*pw_log_fn)(int level, const char *text, void *user_data);
typedef bool (*pw_progress_fn)(float progress, void *user_data);

typedef struct pw_model_params {
    int32_t n_gpu_layers;   /* -1 = all */
    int32_t main_gpu;
    bool use_mmap;
    bool use_mlock;
    bool vocab_only;
    pw_progress_fn progress; /* may be NULL; return false to cancel */
    void *progress_data;
} pw_model_params;

typedef struct pw_model_info {
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_embd_out;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t n_vocab;
    int32_t n_swa;
    uint64_t size;      /* bytes of weights */
    uint64_t n_params;
    int32_t token_bos;
    int32_t token_eos;
    int32_t token_eot;
    int32_t token_sep;      /* -1 when the vocabulary has none */
    int32_t ftype;
    int32_t pooling;        /* the model's pooling type: -1 unspecified, 0 none, 1 mean, 2 cls, 3 last, 4 rank */
    int32_t n_cls_out;      /* outputs of a rank (classifier) head: the scores per sequence */
    bool add_bos;
    bool add_eos;
    bool add_sep;
    bool has_encoder;
    bool has_decoder;
    bool is_recurrent;
} pw_model_info;

typedef struct pw_engine_params {
    uint32_t n_ctx;        /* per sequence */
    uint32_t n_seq;        /* parallel sequences */
    uint32_t n_batch;
    uint32_t n_ubatch;
    int32_t n_threads;
    int32_t n_threads_batch;
    int32_t flash_attn;    /* -1 auto, 0 off, 1 on */
    int32_t type_k;        /* ggml_type: 1 f16, 8 q8_0, 2 q4_0 */
    int32_t type_v;
    bool embeddings;       /* an embedding engine (pw_embed only) */
    int32_t pooling;       /* -1 model default, 0 none, 1 mean, 2 cls, 3 last, 4 rank */
    uint64_t cache_ram;    /* bytes of host memory for saved prompt states; 0 = none */
    /* The speculation gate: 1 measures the costs (the default), 0 drafts whenever a request asks, 2 takes
     * them as given, for tests (microseconds: a target step spec_step_us + spec_row_us a row, a step of
     * the draft model spec_draft_us). */
    int32_t spec_gate;
    float spec_step_us, spec_row_us, spec_draft_us;
    /* Sample through llama.cpp's whole sampler chain, without the engine's shortcuts (greedy argmax, its own
     * top-k and penalties pass), to compare against. */
    bool reference_sampling;
    /* Level each step's batch for llama.cpp's split into ubatches (level.cpp; the default), or decode it as
     * it is, to compare against. */
    bool level_batch;
} pw_engine_params;

typedef struct pw_sampling {
    uint32_t seed;          /* 0xFFFFFFFF = random */
    int32_t top_k;          /* <= 0 off */
    float top_p;            /* >= 1 off */
    float min_p;            /* <= 0 off */
    float typical_p;        /* >= 1 off */
    float temperature;      /* <= 0 greedy */
    int32_t repeat_last_n;  /* 0 off, -1 = context */
    float repeat_penalty;   /* 1 off */
    float presence_penalty;
    float frequency_penalty;
    int32_t n_predict;      /* < 0 unlimited */
    int32_t n_logprobs;     /* -1 none; 0 chosen token only; 1..20 plus top */
    bool ignore_eos;
    const char *grammar;    /* GBNF or NULL */
    int32_t draft_max;      /* prompt lookup: draft up to this many tokens a step (at most PW_DRAFT_MAX); 0 off */
    int32_t draft_model_max;/* the engine's draft model (pw_engine_set_draft): draft up to this many tokens a step
                             * (at most PW_DRAFT_MAX) where prompt lookup finds none; 0 off */
    float draft_p_min;      /* a model draft stops at a token whose draft probability is below this */
} pw_sampling;

typedef struct pw_event {
    int32_t seq;
    int32_t token;          /* the sampled token, or -1 */
    int32_t finish;         /* enum pw_finish */
    int32_t text_off;       /* complete UTF-8 bytes in the step's text arena */
    int32_t text_len;
    float logprob;
    int32_t top_off;        /* entries in the step's top-logprob arena */
    int32_t n_top;
    int32_t n_prompt;       /* prompt tokens of the request */
    int32_t n_cached;       /* of which were not evaluated: kept, copied from another sequence or restored */
    int32_t n_gen;          /* tokens generated so far */
    int64_t t_prompt_us;    /* prompt evaluation time */
    int64_t t_gen_us;       /* generation time after the first token */
    int32_t n_drafted;      /* tokens the request drafted so far (prompt lookup), */
    int32_t n_accepted;     /* and of them those the model confirmed */
} pw_event;

typedef struct pw_top {
    int32_t token;
    float logprob;
} pw_top;

typedef struct pw_step_out {
    const char *text;       /* arena of this step's text, valid until the next call */
    const pw_top *top;
    int32_t n_events;
    int32_t n_active;       /* sequences still busy after this step */
    int32_t n_decoded;      /* tokens decoded in this step */
} pw_step_out;

typedef struct pw_stats {
    int32_t n_seq;
    int32_t n_active;
    uint32_t n_ctx;          /* whole context (all sequences) */
    uint32_t n_ctx_seq;
    int64_t kv_used;         /* cells holding tokens, all sequences */
    int64_t n_decode;        /* llama_decode calls */
    int64_t t_decode_us;
    int64_t n_prompt_tokens;
    int64_t n_gen_tokens;
    int64_t n_reused_tokens; /* prompt tokens not evaluated, from every tier */
    /* The prompt cache, per tier. KV: requests that reused cells (their own sequence's or copied from
     * another), or reused none; tokens copied across sequences; requests that waited for another's prefix. */
    int64_t kv_entries;      /* sequences holding cells */
    int64_t kv_hits;
    int64_t kv_misses;
    int64_t kv_shared_tokens;
    int64_t kv_copies;
    int64_t kv_waits;
    /* Host memory: the saved states' bytes and count, the bound, requests restored from a state or
     * finding none, tokens restored, states saved and states dropped to stay under the bound. */
    int64_t ram_bytes;
    int64_t ram_entries;
    int64_t ram_budget;
    int64_t ram_hits;
    int64_t ram_misses;
    int64_t ram_restored_tokens;
    int64_t ram_saves;
    int64_t ram_evictions;
    /* Disk: states found in the folder when the tier was opened (earlier engines'), the files' bytes and
     * count now, requests restored from one or finding none, tokens restored, states written and files
     * removed to stay under the bound. */
    int64_t disk_loaded;
    int64_t disk_bytes;
    int64_t disk_entries;
    int64_t disk_hits;
    int64_t disk_misses;
    int64_t disk_restored_tokens;
    int64_t disk_saves;
    int64_t disk_evictions;
    int64_t disk_loading;    /* sequences waiting for a file's state to be read (off the engine's thread) */
    /* Speculative decoding: tokens drafted (verified in the batch) and accepted. */
    int64_t n_draft_tokens;
    int64_t n_draft_accepted;
    /* Sequence steps whose draft the speculation gate left out (it would have cost more than it gains). */
    int64_t n_draft_skipped;
    /* The draft model: tokens its context evaluated to catch up with its sequences (prompts, rejected
     * drafts re-fed), and its cells copied from another sequence instead (stream copies, tokens they held). */
    int64_t n_draft_caught_up;
    int64_t n_draft_copies;
    int64_t n_draft_copied_tokens;
    /* Tokens decoded again (cut, then the same cells) so that a step's batch splits into fewer ubatches. */
    int64_t n_level_tokens;
} pw_stats;

typedef struct pw_mtmd_info {
    bool vision;
    bool audio;
    bool non_causal;        /* media must be decoded in one ubatch */
    bool mrope;             /* positions of media tokens are 2-D */
    int32_t n_embd;         /* projector output width (the text model's input width) */
} pw_mtmd_info;

typedef struct pw_device {
    char name[128];
    char description[256];
    int32_t type;           /* 0 cpu, 1 gpu, 2 igpu, 3 accel */
    uint64_t memory_free;
    uint64_t memory_total;
} pw_device;

PW_API int32_t pw_abi_version(void);
PW_API const char *pw_llama_commit(void);
PW_API const char *pw_system_info(void);
PW_API const char *pw_last_error(void);
PW_API void pw_init(const char *backend_dir);
PW_API void pw_set_log(pw_log_fn fn, void *user_data, int32_t min_level);
PW_API int32_t pw_device_count(void);
PW_API int32_t pw_device_get(int32_t index, pw_device *out);
PW_API bool pw_supports_gpu_offload(void);
/* ggml's RPC backend (rpc.cpp). pw_rpc_add_server connects to a running RPC server ("host:port"; it must
 * answer, or llama.cpp aborts the process: probe it first) and lists its devices beside the local ones, so
 * models loaded afterwards split their offloaded layers over them by free memory; returns how many devices
 * it has. pw_rpc_serve serves this machine's devices (the accelerators, else the CPU) on endpoint until the
 * process ends; mem_bytes > 0 caps the memory each reports; it returns only on failure. */
PW_API bool pw_supports_rpc(void);
PW_API int32_t pw_rpc_add_server(const char *endpoint);
PW_API int32_t pw_rpc_serve(const char *endpoint, int32_t n_threads, uint64_t mem_bytes, const char *cache_dir);

PW_API pw_model_params pw_model_default_params(void);
PW_API int32_t pw_model_load(const char *path, const pw_model_params *params, pw_model **out);
PW_API void pw_model_free(pw_model *model);
PW_API int32_t pw_model_get_info(const pw_model *model, pw_model_info *out);
PW_API int32_t pw_model_meta_count(const pw_model *model);
PW_API int32_t pw_model_meta_key(const pw_model *model, int32_t i, char *buf, int32_t size);
PW_API int32_t pw_model_meta_value(const pw_model *model, int32_t i, char *buf, int32_t size);
PW_API int32_t pw_model_meta_get(const pw_model *model, const char *key, char *buf, int32_t size);
PW_API int32_t pw_model_desc(const pw_model *model, char *buf, int32_t size);
PW_API const char *pw_model_chat_template(const pw_model *model, const char *name);
PW_API int32_t pw_tokenize(const pw_model *model, const char *text, int32_t len, int32_t *out, int32_t cap,
                           bool add_special, bool parse_special);
PW_API int32_t pw_detokenize(const pw_model *model, const int32_t *tokens, int32_t n, char *out, int32_t cap,
                             bool remove_special, bool unparse_special);
PW_API int32_t pw_token_piece(const pw_model *model, int32_t token, char *buf, int32_t size, bool special);
PW_API bool pw_token_is_eog(const pw_model *model, int32_t token);
/* 1 when the grammar takes the tokens as a whole text of it (an end-of-generation token ends it), else 0. */
PW_API int32_t pw_grammar_accepts(const pw_model *model, const char *grammar, const int32_t *tokens, int32_t n);
PW_API int32_t pw_quantize(const char *src, const char *dst, int32_t ftype, int32_t n_threads);

PW_API pw_engine_params pw_engine_default_params(void);
PW_API pw_sampling pw_sampling_default(void);
PW_API int32_t pw_engine_create(pw_model *model, const pw_engine_params *params, pw_engine **out);
PW_API void pw_engine_free(pw_engine *engine);
PW_API int32_t pw_engine_set_lora(pw_engine *engine, const char *path, float scale);
/* Give the engine a draft model for speculative decoding (borrowed: it must outlive the engine): its own
 * context with the engine's sequences, contexts and batch size. Its drafts are verified as prompt lookup's. */
PW_API int32_t pw_engine_set_draft(pw_engine *engine, pw_model *draft);
PW_API int32_t pw_submit(pw_engine *engine, const int32_t *tokens, int32_t n_tokens, const pw_sampling *sampling);
/* Queue another choice of the prompt of `leader`, a sequence submitted since the last pw_step (OpenAI's `n`):
 * it samples with its own settings, but evaluates none of the prompt: in the step that decodes the leader's
 * last prompt token it takes the leader's cells and that token's logits. Returns its sequence. A leader that
 * ends before its prompt is in leaves its choices to evaluate the prompt themselves. */
PW_API int32_t pw_submit_choice(pw_engine *engine, int32_t leader, const pw_sampling *sampling);
PW_API int32_t pw_cancel(pw_engine *engine, int32_t seq);
/* One decode for every active sequence. A sequence sampling with draft_max > 0 puts its next token and up to
 * draft_max drafted ones (what followed the latest earlier occurrence of its last tokens in its own prompt and
 * output) in the batch and keeps the drafts the model's own samples confirm: it may give several events, one
 * per token, in order; `cap` must be at least the engine's n_seq. */
PW_API int32_t pw_step(pw_engine *engine, pw_event *events, int32_t cap, pw_step_out *out);
/* Pooled output of each input, pw_engine_embd_dim floats each: an embedding (L2-normalised if asked), or
 * with rank pooling the classifier head's scores (never normalised). Up to n_seq inputs share a decode. */
PW_API int32_t pw_embed(pw_engine *engine, const int32_t *tokens, const int32_t *lengths, int32_t n_inputs,
                        float *out, int32_t n_out, bool normalize);
PW_API int32_t pw_engine_embd_dim(const pw_engine *engine);
PW_API int32_t pw_engine_stats(const pw_engine *engine, pw_stats *out);
/* Greedy sampling's argmax: for each of n_rows rows of n floats, the first index of the largest value
 * (NaN is never chosen; a row with no number > -inf gives 0), split over n_threads threads. */
PW_API void pw_argmax_rows(const float *const *rows, int32_t n_rows, int32_t n, int32_t *out, int32_t n_threads);
/* Top-k sampling's candidates: the k largest of n logits (NaN skipped), by logit descending and token id
 * ascending among equals, into ids/values (room for k each); returns how many. */
PW_API int32_t pw_top_k(const float *logits, int32_t n, int32_t k, int32_t *ids, float *values);
/* The same after llama.cpp's repeat/frequency/presence penalties over the last `last_n` of the n_history
 * tokens (oldest first), as the engine samples a sequence with penalties. */
PW_API int32_t pw_top_k_penalized(const float *logits, int32_t n, int32_t k, const int32_t *history,
                                  int32_t n_history, int32_t last_n, float repeat, float freq, float present,
                                  int32_t *ids, float *values);

/* Multimodal input (libmtmd). A prompt with media is tokenized into text
 * tokens and media chunks; in the token list a media chunk appears as a run of
 * negative placeholder ids (equal for equal media, so cached prefixes holding
 * the same image are reused). pw_submit_media copies what it needs: the media
 * handle may be freed after it returns. Tokenizing is safe from any thread. */
PW_API const char *pw_mtmd_marker(void);
PW_API int32_t pw_mtmd_load(pw_model *model, const char *path, int32_t n_threads, bool use_gpu, pw_mtmd **out);
PW_API void pw_mtmd_free(pw_mtmd *mtmd);
PW_API int32_t pw_mtmd_get_info(const pw_mtmd *mtmd, pw_mtmd_info *out);
PW_API int32_t pw_mtmd_tokenize(pw_mtmd *mtmd, const char *text, const unsigned char *const *data,
                                const size_t *sizes, int32_t n_media, bool add_special, pw_media **out);
PW_API int32_t pw_media_n_tokens(const pw_media *media);
PW_API int32_t pw_media_n_chunks(const pw_media *media);
PW_API int32_t pw_media_tokens(const pw_media *media, int32_t *out, int32_t cap);
PW_API void pw_media_free(pw_media *media);
PW_API int32_t pw_engine_set_mtmd(pw_engine *engine, pw_mtmd *mtmd);
PW_API int32_t pw_submit_media(pw_engine *engine, const pw_media *media, const pw_sampling *sampling);
PW_API int32_t pw_engine_clear(pw_engine *engine);

/* The prompt cache's disk tier. pw_cache_open gives an engine a folder of prompt states, one file each,
 * headed by `key` (what the states are valid for: model, llama.cpp commit, context parameters) and the
 * state's tokens, ending with a checksum, at most max_bytes in all (the least recently used go first). It
 * indexes the files by their heads, removing those of another key or of the wrong length; returns how
 * many it found. From then on a state that host memory lets go is written there (by a thread of the
 * engine's), and a request whose prompt a file's tokens begin restores it (a file whose key, tokens or
 * checksum does not match is removed, never loaded): its file is read by another thread of the engine's
 * while the other sequences go on decoding. pw_cache_save writes what the engine still holds (each
 * sequence's cells, host memory's states) that no file has yet, and waits for every write; returns how many
 * states it wrote. */
PW_API int32_t pw_cache_open(pw_engine *engine, const char *dir, const char *key, uint64_t max_bytes);
PW_API int32_t pw_cache_save(pw_engine *engine);
/* A test hook: while `hold` is nonzero, the disk tier's reads wait (the sequences restoring from it stay
 * waiting for their state, and the others go on). */
PW_API int32_t pw_cache_hold(pw_engine *engine, int32_t hold);
/* CDEF-END */

#ifdef __cplusplus
}
#endif

#endif /* POWER_SHIM_H */
