// The shim's internal declarations: the structures behind power_shim.h's opaque handles and the helpers
// its files share. Python never sees this header (its cdef comes from power_shim.h only).
//
//   runtime.cpp   errors, logging, backends, devices
//   model.cpp     loading a model, metadata, tokens; quantize.cpp: quantizing
//   sampling.cpp  sampler chains, the argmax and top-k shortcuts, penalties, log-probabilities, grammars
//   engine.cpp    creating an engine (one llama_context), adapters, stats, embeddings
//   batch.cpp     continuous batching: submitting requests, one decode step for every sequence
//   level.cpp     a step's batch levelled for llama.cpp's split into ubatches (fewer passes)
//   cache.cpp     the prompt cache: prefixes shared across sequences, prompt states kept in host memory
//   disk.cpp      its disk tier: prompt states leaving host memory or left when an engine ends, in files
//                 indexed by their tokens, restored by this engine or the next one of the same key
//   media.cpp     multimodal prompts (libmtmd)
//   rpc.cpp       ggml's RPC backend: remote devices, and serving ours
#ifndef POWER_SHIM_INTERNAL_H
#define POWER_SHIM_INTERNAL_H

#include "power_shim.h"

#include "ggml-backend.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#ifndef POWER_LLAMA_COMMIT
#define POWER_LLAMA_COMMIT "unknown"
#endif

namespace shim {

// ---- errors (runtime.cpp) ----
// Set the calling thread's pw_last_error() message; returns code.
int32_t fail(int32_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Forget this thread's logged errors before a llama.cpp call whose failure is reported only in the log.
void clear_log_errors();
// The reason llama.cpp gave last on this thread (libllama logs the cause last).
std::string llama_reason();
// The first reason logged since clear_log_errors() (libmtmd logs the cause first and a generic failure last).
std::string first_reason();

struct sampler_deleter {
    void operator()(llama_sampler *s) const {
        if (s) llama_sampler_free(s);
    }
};
using sampler_ptr = std::unique_ptr<llama_sampler, sampler_deleter>;

struct chunk_deleter {
    void operator()(mtmd_input_chunk *c) const {
        if (c) mtmd_input_chunk_free(c);
    }
};
using chunk_ptr = std::unique_ptr<mtmd_input_chunk, chunk_deleter>;

// SLOT_WAIT: the request waits for another sequence to evaluate the prefix they share (or to read its state
// from the disk tier), then copies it.
// SLOT_FOLLOW: the request is another choice of a leader's prompt (OpenAI's `n`): it evaluates none of it,
// but takes the leader's cells and the logits of its last prompt token in the step that decodes that token.
// SLOT_LOAD: the request waits for its prefix's state to be read from a file of the disk tier (by the tier's
// reader thread, while the other sequences go on decoding), then restores it.
enum slot_state { SLOT_IDLE, SLOT_WAIT, SLOT_FOLLOW, SLOT_LOAD, SLOT_PROMPT, SLOT_GEN };

// A media chunk of a prompt: its placeholder run starts at `start`, holds
// n_tokens KV cells and advances positions by n_pos (fewer with M-RoPE).
struct media_span {
    size_t start = 0;
    size_t n_tokens = 0;
    llama_pos n_pos = 0;
    const mtmd_input_chunk *chunk = nullptr;  // owned by the prompt or the slot
};

// The speculation gate's estimates (gate.cpp): a target decode's cost by rows (buckets of powers of two) and
// the draft model's cost a step, per engine; per sequence and kind of draft, its accepted tokens a step and
// its state (reset for each request: what one text accepts says little about the next).
enum gate_kind { GATE_LOOKUP = 0, GATE_MODEL = 1 };

struct spec_est {
    // The chance that a drafted token is accepted where the ones before it were: from decayed counts of
    // the tokens accepted and of the drafts that ended in a rejected one (a geometric run's estimate).
    double acc = 0.0;
    double n_ok = 0.0, n_miss = 0.0;
    int32_t n_acc = 0;          // drafts judged
    bool on = false;            // it won last time (hysteresis)
    int32_t since = 0;          // steps since the last probe (off)
    int32_t probe_every = 0;
};

struct spec_gate {
    static constexpr int32_t kBuckets = 14;  // 1, 2, 3-4, ... up to 8192 rows
    double t_step[kBuckets] = {};
    double rows_step[kBuckets] = {};  // the rows of the steps measured, on average
    int32_t n_step[kBuckets] = {};
    int64_t at_step[kBuckets] = {};   // n_steps when each bucket was last measured
    int64_t n_steps = 0;              // steps measured
    double t_draft = 0.0;
    int32_t n_draft = 0;
    bool off = false;           // pw_engine_params.spec_gate 0: no gate
    bool fixed = false;         // spec_gate 2: costs given, not measured
    double fix_step_us = 0.0, fix_row_us = 0.0, fix_draft_us = 0.0;
};

struct disk_load;

struct slot {
    int32_t id = 0;
    slot_state state = SLOT_IDLE;
    std::vector<llama_token> cache;   // tokens whose KV cells this sequence holds
    std::vector<llama_token> prompt;  // the request's prompt
    size_t n_past = 0;                // prompt tokens already in the KV cache
    int32_t n_cached = 0;             // prompt tokens this request did not evaluate (reused from any tier)
    int32_t n_gen = 0;
    int32_t n_predict = -1;
    int32_t n_logprobs = -1;
    bool ignore_eos = false;
    bool argmax = false;              // greedy with nothing else in the chain: skip the candidate array
    const float *logits = nullptr;    // this step's output logits (valid while i_batch >= 0)
    llama_token greedy = -1;          // with argmax: the token of `logits`, found for all such rows at once
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
    // Prompt lookup (draft_max > 0): this step's drafted tokens, decoded after `last` with logits each, the
    // logits of those rows (rows[0] is last's), and the request's counts of drafted and accepted tokens.
    int32_t draft_max = 0;
    std::vector<llama_token> draft;
    std::vector<const float *> rows;
    int32_t n_drafted = 0, n_accepted = 0;
    // Drafting adapts, so that text with little to look up costs little: a draft is at most draft_len
    // tokens (two at first, one more than the last one accepted, doubling while all are), and after a draft with nothing
    // accepted the sequence drafts nothing for draft_skip steps (doubling up to kSkipMax while none are).
    int32_t draft_len = 0, draft_skip = 0, draft_backoff = 0;
    spec_est est[2];                  // the gate's estimates for this request, by gate_kind
    // The draft model (draft_model_max > 0): its drafts stop at a token below draft_p_min; draft_by_model
    // says this step's draft is the model's (lookup's adaptivity does not apply to it).
    // draft_room: this step's bound on a draft (the context's room, num_predict's).
    int32_t draft_model_max = 0, draft_room = 0;
    float draft_p_min = 0.0f;
    bool draft_by_model = false;
    size_t greedy_at = 0;             // with argmax: the index of rows[0]'s token in the step's greedy_toks
    int32_t i_batch = -1;             // batch index of this sequence's output
    bool in_batch = false;            // has tokens in the current step's batch
    bool cancel = false;
    sampler_ptr chain;
    sampler_ptr grammar;
    std::string pending;              // bytes of an incomplete UTF-8 character
    std::vector<media_span> media;    // the prompt's media, by placeholder start
    std::vector<chunk_ptr> media_own; // copies of their chunks
    std::vector<media_span> cached_media;  // media whose cells are in the cache
    int32_t wait_src = -1;            // SLOT_WAIT: the sequence evaluating our prefix (SLOT_FOLLOW: the leader),
    size_t wait_len = 0;              // and how many of our prompt's tokens it will hold
    bool copying = false;             // source or target of a stream copy that the next decode performs
    std::shared_ptr<disk_load> load;       // SLOT_LOAD: the read of the state it restores
    int64_t reused_kv = 0;            // this request's reuse, by tier: cells it kept or copied,
    int64_t reused_ram = 0;           // cells restored from host memory,
    int64_t reused_disk = 0;          // and cells restored from the disk tier
    int64_t t_start_us = 0;
    int64_t t_first_us = 0;
    int64_t t_last_used = 0;
};

// A sequence's saved KV state in host memory (llama_state_seq_get_data), with the tokens it holds.
struct ram_entry {
    std::vector<llama_token> tokens;
    std::vector<media_span> media;  // chunk pointers are null: only the spans matter for positions
    std::vector<uint8_t> state;
    // The draft context's cells of the first n_draft tokens, where the engine drafts with a model and its
    // draft sequence held them (else empty: the draft catches up on what it lacks, as for any prompt).
    size_t n_draft = 0;
    std::vector<uint8_t> dstate;
    size_t bytes() const { return state.size() + dstate.size() + tokens.size() * sizeof(llama_token); }
};

struct ram_cache {
    size_t budget = 0;              // bytes; 0 = off
    size_t bytes = 0;
    std::list<ram_entry> entries;   // most recently used first
};

// A file of the disk tier, as its index knows it: the tokens and media of its state (read from the file's
// head, never its state), its size; while its state waits for the writer, the state itself.
struct disk_entry {
    std::string name;
    std::vector<llama_token> tokens;
    std::vector<media_span> media;
    uint64_t bytes = 0;
    std::shared_ptr<const ram_entry> pending;
};

// A restore's read of a disk-tier file by the tier's reader thread: the file, the prompt tokens its state
// gives, and once done (under the tier's mu) the state, null when the file was bad or gone.
struct disk_load {
    std::string name;
    size_t len = 0;
    bool done = false;
    std::shared_ptr<const ram_entry> state;
};

// The disk tier (disk.cpp): its folder and key, its index, the thread that writes the states host memory
// lets go (a state of a long prompt is tens of MiB: the engine's thread only queues it) and the thread that
// reads the files restores need (the engine's goes on decoding meanwhile).
struct disk_tier {
    std::string dir, key;
    uint64_t budget = 0;
    std::mutex mu;                    // guards everything below
    std::condition_variable cv;
    std::list<disk_entry> entries;    // most recently used first
    uint64_t bytes = 0;
    std::deque<std::shared_ptr<const ram_entry>> queue;  // states to write, oldest first
    size_t queued_bytes = 0;
    bool writing = false;
    bool stop = false;
    std::condition_variable read_cv;  // reads queued (for the reader), a read done (for the engine)
    std::deque<std::shared_ptr<disk_load>> reads;  // oldest first
    std::vector<std::string> reading; // files of reads queued or under way: kept past the bound meanwhile
    bool hold_reads = false;          // pw_cache_hold: reads wait (a test hook)
    int64_t saves = 0, evictions = 0;
    int64_t last_use = 0;             // the latest modification time given to a file (file clock ticks)
    std::thread writer, reader;
    ~disk_tier();                     // writes what is queued, then ends both threads
};

}  // namespace shim

struct pw_model {
    llama_model *model = nullptr;
    const llama_vocab *vocab = nullptr;
    bool output_offloaded = false;  // the output layer (the logits) is computed on a GPU or an RPC server
    ~pw_model() {
        if (model) llama_model_free(model);
    }
};

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
    std::vector<shim::media_span> spans;
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
    std::vector<shim::slot> slots;
    std::vector<llama_token_data> cur;
    std::string arena;
    std::vector<pw_top> tops;
    std::vector<const float *> greedy_rows;  // per step: the logits of greedy sequences,
    std::vector<llama_token> greedy_toks;    // and their tokens (a slot's from its greedy_at)
    std::vector<shim::slot *> topk_slots;    // per step: the sequences sampled with top-k
    std::vector<shim::slot *> model_slots;   // per step: the sequences drafting with the draft model
    llama_adapter_lora *lora = nullptr;
    pw_mtmd *mtmd = nullptr;          // borrowed; outlives the engine
    bool can_share = false;           // cells can be cut and copied (not a recurrent model)
    shim::ram_cache ram;
    // A draft model: its own context with the same sequence ids, and the tokens each of its sequences holds
    // (kept right by comparing them with the target's tokens, whatever the prompt cache did meanwhile).
    pw_model *draft = nullptr;        // borrowed; outlives the engine
    llama_context *dctx = nullptr;
    llama_memory_t dmem = nullptr;
    llama_batch dbatch{};
    int32_t d_n_vocab = 0;
    std::vector<std::vector<llama_token>> dcache;
    // A draft stream copy is made by the draft context's next decode: until then a sequence's draft state is
    // neither read nor written (cache.cpp).
    bool dcopy_pending = false;
    std::unique_ptr<shim::disk_tier> disk;  // null: no disk tier
    int64_t tick = 0;
    shim::spec_gate gate;
    pw_stats stats{};

    ~pw_engine() {
        disk.reset();
        for (auto &s : slots) {
            s.chain.reset();
            s.grammar.reset();
        }
        if (batch.token) llama_batch_free(batch);
        if (dbatch.token) llama_batch_free(dbatch);
        if (dctx) llama_free(dctx);
        if (ctx) llama_free(ctx);
        if (lora) llama_adapter_lora_free(lora);
    }
};

namespace shim {

// ---- engines (engine.cpp) ----
// The llama_context parameters of an engine's parameters (the draft's context takes the same).
llama_context_params context_params(const pw_engine_params &p);

// ---- sampling (sampling.cpp) ----
int32_t penalty_window(const pw_engine *e, const pw_sampling &sp);
bool penalizes(const pw_engine *e, const pw_sampling &sp);
sampler_ptr build_chain(const pw_engine *e, const pw_sampling &sp, bool with_penalties);
void argmax_rows(const float *const *rows, int32_t n_rows, int32_t n, llama_token *out, int32_t n_threads);
// The threads for a step's scans over n_logits logits of `pm` in `ctx` (one where the logits came from a GPU
// or an RPC server: batch.cpp).
int32_t scan_threads(const pw_model *pm, llama_context *ctx, size_t n_logits);
void top_k_logits(const float *x, int32_t n, int32_t k, std::vector<llama_token_data> &out);
void pen_accept(slot &s, llama_token tok);
void top_k_penalized(const float *x, int32_t n, const slot &s, std::vector<llama_token_data> &out,
                     std::vector<llama_token> &ids);
// The token sampled for a sequence, or kGrammarStuck when its grammar allows no token at all here.
constexpr llama_token kGrammarStuck = -2;
llama_token sample(pw_engine *e, slot &s, const float *logits);
float logprobs(pw_engine *e, const float *logits, llama_token tok, int32_t n_top);
// Why a GBNF grammar cannot be used with this vocabulary, or "" when it can.
std::string grammar_problem(const char *src, const llama_vocab *vocab);

// ---- batching (batch.cpp) ----
void batch_add(llama_batch &b, llama_token tok, llama_pos pos, llama_seq_id seq, bool logits);
size_t common_prefix(const std::vector<llama_token> &a, const int32_t *b, size_t nb);
// Position of the cache's next cell: media with M-RoPE take fewer positions than cells.
llama_pos next_pos(const slot &s);
void slot_release(pw_engine *e, slot &s);
// Forget what a sequence holds, cells included.
void slot_clear(pw_engine *e, slot &s);
// Before a step's decode: the batch in sequence order, the shorter runs levelled with tokens decoded again
// where that makes fewer ubatches (level.cpp).
void level_batch(pw_engine *e);

// ---- the draft model (draft.cpp) ----
// Draft up to draft_model_max tokens into s.draft for each generating sequence in `want`, all together: the
// draft context first catches up on the tokens it lacks, then proposes its greedy tokens a batch per token.
void model_drafts(pw_engine *e, const std::vector<slot *> &want);

// ---- the speculation gate (gate.cpp) ----
void gate_init(spec_gate &g, const pw_engine_params &p);
// A new request's estimates: nothing accepted yet.
void gate_reset(spec_est (&est)[2]);
// A target decode of `rows` rows took `us`; the draft model's drafting for a step took `us`.
void gate_step_measured(spec_gate &g, int32_t rows, int64_t us);
void gate_draft_measured(spec_gate &g, int64_t us);
// A sequence drafted n_draft tokens with the kind of `k` in a step and got n_accepted of them accepted.
void gate_accepted(spec_est &k, int32_t n_draft, int32_t n_accepted);
// Whether a sequence drafts with `kind` (draft_rows rows) in a step of `rows` rows that yields `tokens`
// tokens without its draft; `pays_draft`: its draft would cost a draft model step (no other sequence's
// draft pays it in this step). It also keeps the sequence's hysteresis and re-probes.
bool gate_allows(spec_gate &g, spec_est &k, int kind, int32_t rows, double tokens, int32_t draft_rows,
                 bool pays_draft);
// The tokens a sequence's draft of draft_rows tokens of the kind of `k` is expected to add.
double gate_expected(const spec_est &k, int32_t draft_rows);
// How many of a lookup draft's n tokens to verify in a step of `rows` rows that yields `tokens` tokens without
// it: the length whose expected tokens per unit of time are highest (rows cost more as the batch grows).
int32_t gate_length(const spec_gate &g, const spec_est &k, int32_t rows, double tokens, int32_t n);

// ---- the prompt cache (cache.cpp) ----
// How many of the prompt's first tokens `held` gives the request of `s` (all but its last, media whole).
size_t usable(const std::vector<llama_token> &held, const slot &s);
// Give a queued request's sequence the longest prefix of its prompt that any tier holds (its own cells,
// another sequence's, a state in host memory), or make it wait for a sequence evaluating that prefix;
// the sequence's previous cells go to host memory first. Leaves the slot in SLOT_PROMPT or SLOT_WAIT.
void reuse_prefix(pw_engine *e, slot &s);
// Make a queued request another choice of `leader`'s prompt (SLOT_FOLLOW); its previous cells go to host
// memory first.
void follow(pw_engine *e, slot &s, slot &leader);
// Start the waiting sequences whose prefix is ready, and let the followers of a leader that is gone
// evaluate their prompts themselves (before each step and each submit).
void resolve_waits(pw_engine *e);
// After a decode: the followers of a leader whose last prompt token it decoded take the leader's cells and
// that token's logits (its batch index), and so sample their first token in this step.
void take_leaders(pw_engine *e);
// A sequence's cells as a state to save (false when they are too few, or being copied).
bool snapshot(pw_engine *e, const slot &s, ram_entry &out);
// Forget every state saved in host memory.
void ram_clear(pw_engine *e);

// ---- its disk tier (disk.cpp) ----
// Hand a state that leaves host memory to the disk tier (dropped when there is none).
void disk_put(pw_engine *e, ram_entry &&en);
// The disk tier's state holding the longest usable prefix of the request of `s`: its file's name (or its
// pending state) and how many tokens; 0 when none does.
struct disk_hit {
    std::string name;
    std::shared_ptr<const ram_entry> pending;
    size_t len = 0;
};
disk_hit disk_find(pw_engine *e, const slot &s);
// The state of a hit still waiting for the writer (no file read).
std::shared_ptr<const ram_entry> disk_pending(pw_engine *e, const disk_hit &hit);
// Have the reader thread read a hit's file (checking its key and checksum: a bad file is removed, and the
// load's state is null); the file stays until then, whatever the bound.
std::shared_ptr<disk_load> disk_load_start(pw_engine *e, const disk_hit &hit);
bool disk_load_done(pw_engine *e, const disk_load &load);
// Wait up to `us` microseconds for a sequence's load to be done.
void disk_wait(pw_engine *e, int64_t us);
// Forget the disk tier's states, files included.
void disk_clear(pw_engine *e);
// The disk tier's sizes and counts into `out`.
void disk_stats(const pw_engine *e, pw_stats &out);

}  // namespace shim

#endif  // POWER_SHIM_INTERNAL_H
