// The prompt cache's disk tier: a folder of prompt states, one file each, bounded in bytes (the least
// recently used go first). States come from host memory's LRU as it lets them go (written by the tier's own
// thread: the engine's only queues them) and, when an engine ends, from what it still holds; a request whose
// prompt a file's tokens begin restores it, in this engine or the next one of the same key. The tier keeps
// an index of its files' tokens, read from their heads, so a lookup reads no file and a restore reads one.
//
// Every file starts with a key naming what its state is valid for (the caller's: model, llama.cpp commit,
// context parameters) and ends with a checksum; a file whose key, length, tokens or checksum does not match
// is removed, never loaded.
//
// File: "PWKV" u32 version | u32 key length, key | u64 n, n tokens (i32) | u64 m, m media spans
// (u64 start, u64 cells, i32 positions) | u64 state length | u64 draft tokens d (the first d of the n),
// u64 draft state length (both 0 without one) | state | draft state | u64 checksum of all before it.

#include "shim.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

namespace fs = std::filesystem;

namespace shim {

namespace {

constexpr char kMagic[4] = {'P', 'W', 'K', 'V'};
constexpr uint32_t kVersion = 3;  // 2: the checksum takes 8 bytes at a time; 3: the draft model's state
constexpr const char *kSuffix = ".pwkv";
constexpr uint64_t kSeed = 1469598103934665603ull;
// States queued beyond this many bytes make the engine wait for the writer.
constexpr size_t kMaxQueued = size_t(256) << 20;
// A temporary file older than this was left by a writer that died.
constexpr auto kStaleTmp = std::chrono::minutes(1);

// FNV-1a over 8-byte words (a byte at a time costs ~25 ms on a 20 MiB state). Each step is a bijection
// of the running value, so any one changed word changes the sum.
uint64_t checksum(uint64_t h, const void *data, size_t n) {
    const auto *p = static_cast<const uint8_t *>(data);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        h = (h ^ w) * 1099511628211ull;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

std::string file_name(const std::vector<llama_token> &tokens) {
    char name[48];
    snprintf(name, sizeof name, "%016llx-%zu%s",
             (unsigned long long)checksum(kSeed, tokens.data(), tokens.size() * sizeof(llama_token)),
             tokens.size(), kSuffix);
    return name;
}

struct head {
    std::vector<llama_token> tokens;
    std::vector<media_span> media;
    uint64_t state_len = 0, n_draft = 0, dstate_len = 0;
    std::string raw;  // its bytes, for the checksum
};

std::string encode_head(const std::string &key, const ram_entry &en) {
    std::string b;
    auto put = [&b](const void *p, size_t n) { b.append(static_cast<const char *>(p), n); };
    const uint32_t klen = (uint32_t)key.size();
    const uint64_t n = en.tokens.size(), m = en.media.size(), slen = en.state.size(), nd = en.n_draft,
                   dlen = en.dstate.size();
    put(kMagic, 4);
    put(&kVersion, 4);
    put(&klen, 4);
    put(key.data(), key.size());
    put(&n, 8);
    put(en.tokens.data(), n * sizeof(llama_token));
    put(&m, 8);
    for (const auto &sp : en.media) {
        const uint64_t start = sp.start, cells = sp.n_tokens;
        const int32_t pos = sp.n_pos;
        put(&start, 8);
        put(&cells, 8);
        put(&pos, 4);
    }
    put(&slen, 8);
    put(&nd, 8);
    put(&dlen, 8);
    return b;
}

// Read a file's head; false when the file is not one of ours for this key, or not of its declared length.
bool read_head(std::istream &f, const std::string &key, uint64_t file_size, head &h) {
    auto get = [&f, &h](void *p, size_t n) {
        if (!f.read(static_cast<char *>(p), (std::streamsize)n)) return false;
        h.raw.append(static_cast<const char *>(p), n);
        return true;
    };
    char magic[4];
    uint32_t version = 0, klen = 0;
    if (!get(magic, 4) || std::memcmp(magic, kMagic, 4) != 0 || !get(&version, 4) || version != kVersion ||
        !get(&klen, 4) || klen != key.size())
        return false;
    std::string k(klen, '\0');
    uint64_t n = 0, m = 0;
    if (!get(k.data(), klen) || k != key || !get(&n, 8) || n > file_size / sizeof(llama_token)) return false;
    h.tokens.resize((size_t)n);
    if (!get(h.tokens.data(), (size_t)n * sizeof(llama_token)) || !get(&m, 8) || m > n) return false;
    for (uint64_t i = 0; i < m; i++) {
        uint64_t start = 0, cells = 0;
        int32_t pos = 0;
        if (!get(&start, 8) || !get(&cells, 8) || !get(&pos, 4) || start + cells > n) return false;
        media_span sp;
        sp.start = (size_t)start;
        sp.n_tokens = (size_t)cells;
        sp.n_pos = pos;
        h.media.push_back(sp);
    }
    return get(&h.state_len, 8) && h.state_len > 0 && get(&h.n_draft, 8) && get(&h.dstate_len, 8) &&
           h.n_draft <= n && (h.n_draft == 0) == (h.dstate_len == 0) &&
           h.raw.size() + h.state_len + h.dstate_len + 8 == file_size;
}

// Write a state under its name (a reader never sees half a file under it); its size, or 0 on failure.
uint64_t write_file(const disk_tier &d, const ram_entry &en, const std::string &name) {
    const std::string hd = encode_head(d.key, en);
    const uint64_t sum = checksum(checksum(checksum(kSeed, hd.data(), hd.size()), en.state.data(), en.state.size()),
                                  en.dstate.data(), en.dstate.size());
    const fs::path path = fs::path(d.dir) / name;
    fs::path tmp = path;
    tmp += ".tmp";
    std::error_code ec;
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        f.write(hd.data(), (std::streamsize)hd.size());
        f.write(reinterpret_cast<const char *>(en.state.data()), (std::streamsize)en.state.size());
        f.write(reinterpret_cast<const char *>(en.dstate.data()), (std::streamsize)en.dstate.size());
        f.write(reinterpret_cast<const char *>(&sum), sizeof sum);
        f.close();
        if (!f) {
            fs::remove(tmp, ec);
            return 0;
        }
    }
    fs::rename(tmp, path, ec);
    if (ec) {
        fs::remove(tmp, ec);
        return 0;
    }
    return hd.size() + en.state.size() + en.dstate.size() + sizeof sum;
}

// Mark a file the most recently used (under d.mu). The next engine orders files by modification time,
// which the tier sets itself, strictly increasing: the kernel's is coarse, and files written within one tick
// would tie.
void touch(disk_tier &d, const std::string &name) {
    const int64_t now = fs::file_time_type::clock::now().time_since_epoch().count();
    d.last_use = std::max(now, d.last_use + 1);
    std::error_code ec;
    fs::last_write_time(fs::path(d.dir) / name, fs::file_time_type(fs::file_time_type::duration(d.last_use)), ec);
}

// Remove an entry and its file (under d.mu).
void drop(disk_tier &d, std::list<disk_entry>::iterator it) {
    std::error_code ec;
    if (!it->pending) fs::remove(fs::path(d.dir) / it->name, ec);
    d.bytes -= it->bytes;
    d.entries.erase(it);
}

bool being_read(const disk_tier &d, const std::string &name) {  // under d.mu
    return std::find(d.reading.begin(), d.reading.end(), name) != d.reading.end();
}

// Past the bound, the least recently used written files go, but not those a restore is reading (under d.mu).
void trim(disk_tier &d) {
    for (auto it = d.entries.end(); d.bytes > d.budget && it != d.entries.begin();) {
        auto victim = std::prev(it);
        if (victim->pending || being_read(d, victim->name)) {
            it = victim;
            continue;
        }
        drop(d, victim);
        d.evictions++;
    }
}

void write_queued(disk_tier *d) {
    std::unique_lock<std::mutex> lk(d->mu);
    for (;;) {
        d->cv.wait(lk, [d] { return d->stop || !d->queue.empty(); });
        if (d->queue.empty()) return;
        std::shared_ptr<const ram_entry> en = d->queue.front();
        d->queue.pop_front();
        d->writing = true;
        const std::string name = file_name(en->tokens);
        lk.unlock();
        const uint64_t size = write_file(*d, *en, name);
        lk.lock();
        d->writing = false;
        d->queued_bytes -= en->bytes();
        auto it = std::find_if(d->entries.begin(), d->entries.end(),
                               [&en](const disk_entry &x) { return x.pending == en; });
        if (it == d->entries.end()) {  // forgotten meanwhile (disk_clear)
            std::error_code ec;
            if (size) fs::remove(fs::path(d->dir) / name, ec);
        } else if (size == 0) {
            d->entries.erase(it);
        } else {
            it->pending.reset();
            it->bytes = size;
            touch(*d, name);
            d->bytes += size;
            d->saves++;
            for (auto o = d->entries.begin(); o != d->entries.end();) {  // a state this one extends adds nothing
                auto next = std::next(o);
                const size_t n = o->tokens.size();
                if (o != it && !o->pending && !being_read(*d, o->name) &&
                    common_prefix(o->tokens, it->tokens.data(), it->tokens.size()) == n)
                    drop(*d, o);
                o = next;
            }
            trim(*d);
        }
        d->cv.notify_all();
    }
}

std::list<disk_entry>::iterator entry_named(disk_tier &d, const std::string &name) {  // under d.mu
    return std::find_if(d.entries.begin(), d.entries.end(), [&name](const disk_entry &x) { return x.name == name; });
}

// The state in a file, checked against the key, its length and its checksum; null when it does not match.
std::shared_ptr<const ram_entry> read_state(const disk_tier &d, const std::string &name) {
    const fs::path path = fs::path(d.dir) / name;
    std::error_code ec;
    const uint64_t size = fs::file_size(path, ec);
    std::ifstream f(path, std::ios::binary);
    head h;
    auto en = std::make_shared<ram_entry>();
    uint64_t sum = 0;
    bool ok = !ec && f && read_head(f, d.key, size, h);
    if (ok) {
        en->state.resize((size_t)h.state_len);
        en->dstate.resize((size_t)h.dstate_len);
        ok = f.read(reinterpret_cast<char *>(en->state.data()), (std::streamsize)h.state_len) &&
             f.read(reinterpret_cast<char *>(en->dstate.data()), (std::streamsize)h.dstate_len) &&
             f.read(reinterpret_cast<char *>(&sum), sizeof sum) &&
             sum == checksum(checksum(checksum(kSeed, h.raw.data(), h.raw.size()), en->state.data(),
                                      en->state.size()), en->dstate.data(), en->dstate.size());
    }
    if (!ok) return nullptr;
    en->n_draft = (size_t)h.n_draft;
    en->tokens = std::move(h.tokens);
    en->media = std::move(h.media);
    return en;
}

// The reader thread: each queued load's file is read and checked; a bad one is removed (damaged since it was
// indexed, or gone), a good one becomes the most recently used.
void read_queued(disk_tier *d) {
    std::unique_lock<std::mutex> lk(d->mu);
    for (;;) {
        d->read_cv.wait(lk, [d] { return d->stop || (!d->reads.empty() && !d->hold_reads); });
        if (d->stop) return;
        std::shared_ptr<disk_load> load = d->reads.front();
        d->reads.pop_front();
        lk.unlock();
        std::shared_ptr<const ram_entry> state = read_state(*d, load->name);
        lk.lock();
        d->reading.erase(std::find(d->reading.begin(), d->reading.end(), load->name));
        auto it = entry_named(*d, load->name);
        if (!state) {
            if (it != d->entries.end() && !it->pending) drop(*d, it);
            std::error_code ec;
            fs::remove(fs::path(d->dir) / load->name, ec);
        } else if (it != d->entries.end()) {
            d->entries.splice(d->entries.begin(), d->entries, it);
            if (!it->pending) touch(*d, it->name);
        }
        trim(*d);  // what waited for this read to end
        load->state = std::move(state);
        load->done = true;
        d->read_cv.notify_all();
    }
}

}  // namespace

disk_tier::~disk_tier() {
    {
        std::lock_guard<std::mutex> lk(mu);
        stop = true;
    }
    cv.notify_all();
    read_cv.notify_all();
    if (writer.joinable()) writer.join();
    if (reader.joinable()) reader.join();
}

void disk_put(pw_engine *e, ram_entry &&en) {
    if (!e->disk) return;
    disk_tier &d = *e->disk;
    std::unique_lock<std::mutex> lk(d.mu);
    for (auto it = d.entries.begin(); it != d.entries.end(); ++it) {
        if (common_prefix(en.tokens, it->tokens.data(), it->tokens.size()) == en.tokens.size()) {
            d.entries.splice(d.entries.begin(), d.entries, it);  // a file holds it already
            if (!it->pending) touch(d, it->name);
            return;
        }
    }
    if (en.bytes() > d.budget) return;
    d.cv.wait(lk, [&d] { return d.queued_bytes < kMaxQueued; });
    auto p = std::make_shared<const ram_entry>(std::move(en));
    disk_entry de;
    de.name = file_name(p->tokens);
    de.tokens = p->tokens;
    de.media = p->media;
    de.pending = p;
    d.entries.push_front(std::move(de));
    d.queue.push_back(p);
    d.queued_bytes += p->bytes();
    d.cv.notify_all();
}

disk_hit disk_find(pw_engine *e, const slot &s) {
    disk_hit hit;
    if (!e->disk) return hit;
    disk_tier &d = *e->disk;
    std::lock_guard<std::mutex> lk(d.mu);
    for (const auto &x : d.entries) {
        size_t n = usable(x.tokens, s);
        if (n > hit.len) {
            hit.len = n;
            hit.name = x.name;
            hit.pending = x.pending;
        }
    }
    return hit;
}

std::shared_ptr<const ram_entry> disk_pending(pw_engine *e, const disk_hit &hit) {
    disk_tier &d = *e->disk;
    std::lock_guard<std::mutex> lk(d.mu);
    auto it = entry_named(d, hit.name);
    if (it != d.entries.end()) d.entries.splice(d.entries.begin(), d.entries, it);
    return hit.pending;
}

std::shared_ptr<disk_load> disk_load_start(pw_engine *e, const disk_hit &hit) {
    disk_tier &d = *e->disk;
    auto load = std::make_shared<disk_load>();
    load->name = hit.name;
    load->len = hit.len;
    std::lock_guard<std::mutex> lk(d.mu);
    d.reading.push_back(hit.name);
    d.reads.push_back(load);
    d.read_cv.notify_all();
    return load;
}

bool disk_load_done(pw_engine *e, const disk_load &load) {
    std::lock_guard<std::mutex> lk(e->disk->mu);
    return load.done;
}

void disk_wait(pw_engine *e, int64_t us) {
    if (!e->disk) return;
    disk_tier &d = *e->disk;
    std::unique_lock<std::mutex> lk(d.mu);
    d.read_cv.wait_for(lk, std::chrono::microseconds(us), [e] {
        for (const auto &s : e->slots)
            if (s.state == SLOT_LOAD && s.load && s.load->done) return true;
        return false;
    });
}

void disk_clear(pw_engine *e) {
    if (!e->disk) return;
    disk_tier &d = *e->disk;
    std::lock_guard<std::mutex> lk(d.mu);
    for (const auto &p : d.queue) d.queued_bytes -= p->bytes();
    d.queue.clear();
    while (!d.entries.empty()) drop(d, d.entries.begin());
    d.cv.notify_all();
}

void disk_stats(const pw_engine *e, pw_stats &out) {
    if (!e->disk) return;
    disk_tier &d = *e->disk;
    std::lock_guard<std::mutex> lk(d.mu);
    out.disk_bytes = (int64_t)d.bytes;
    out.disk_entries = (int64_t)d.entries.size();
    out.disk_saves = d.saves;
    out.disk_evictions = d.evictions;
    for (const auto &s : e->slots) out.disk_loading += s.state == SLOT_LOAD;
}

}  // namespace shim

using namespace shim;

extern "C" {

int32_t pw_cache_open(pw_engine *e, const char *dir, const char *key, uint64_t max_bytes) {
    if (!e || !dir || !key) return fail(PW_E_INVALID, "null argument");
    if (e->disk) return fail(PW_E_INVALID, "the engine's disk tier is open already");
    if (!e->can_share || e->params.embeddings || max_bytes == 0) return 0;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return fail(PW_E_INVALID, "cannot create %s: %s", dir, ec.message().c_str());
    auto d = std::make_unique<disk_tier>();
    d->dir = dir;
    d->key = key;
    d->budget = max_bytes;
    std::vector<std::pair<fs::file_time_type, disk_entry>> found;
    const auto now = fs::file_time_type::clock::now();
    for (const auto &f : fs::directory_iterator(dir, ec)) {
        const fs::path &p = f.path();
        std::error_code fe;
        const auto mtime = fs::last_write_time(p, fe);
        if (p.extension() == ".tmp" && !fe && now - mtime > kStaleTmp) fs::remove(p, fe);
        if (p.extension() != kSuffix) continue;
        const uint64_t size = fs::file_size(p, fe);
        std::ifstream in(p, std::ios::binary);
        head h;
        if (fe || !in || !read_head(in, d->key, size, h)) {
            fs::remove(p, fe);  // another model's, another commit's, or damaged
            continue;
        }
        disk_entry de;
        de.name = p.filename().string();
        de.tokens = std::move(h.tokens);
        de.media = std::move(h.media);
        de.bytes = size;
        d->last_use = std::max(d->last_use, (int64_t)mtime.time_since_epoch().count());
        found.emplace_back(mtime, std::move(de));
    }
    std::stable_sort(found.begin(), found.end(), [](const auto &a, const auto &b) { return a.first > b.first; });
    for (auto &f : found) {
        d->bytes += f.second.bytes;
        d->entries.push_back(std::move(f.second));
    }
    trim(*d);
    const int32_t n = (int32_t)d->entries.size();
    e->stats.disk_loaded = n;
    d->writer = std::thread(write_queued, d.get());
    d->reader = std::thread(read_queued, d.get());
    e->disk = std::move(d);
    return n;
}

int32_t pw_cache_hold(pw_engine *e, int32_t hold) {
    if (!e) return fail(PW_E_INVALID, "null argument");
    if (!e->disk) return fail(PW_E_INVALID, "the engine has no disk tier");
    {
        std::lock_guard<std::mutex> lk(e->disk->mu);
        e->disk->hold_reads = hold != 0;
    }
    e->disk->read_cv.notify_all();
    return PW_OK;
}

int32_t pw_cache_save(pw_engine *e) {
    if (!e) return fail(PW_E_INVALID, "null argument");
    if (!e->disk) return 0;
    disk_tier &d = *e->disk;
    int64_t before;
    {
        std::lock_guard<std::mutex> lk(d.mu);
        before = d.saves;
    }
    // Host memory's states move to disk, the oldest first, then each sequence's cells, the least recently
    // used first: the most recent are the newest files.
    for (auto it = e->ram.entries.rbegin(); it != e->ram.entries.rend(); ++it) disk_put(e, std::move(*it));
    ram_clear(e);
    std::vector<slot *> order;
    for (auto &s : e->slots) order.push_back(&s);
    std::sort(order.begin(), order.end(), [](const slot *a, const slot *b) { return a->t_last_used < b->t_last_used; });
    for (slot *s : order) {
        ram_entry en;
        if (snapshot(e, *s, en)) disk_put(e, std::move(en));
    }
    std::unique_lock<std::mutex> lk(d.mu);
    d.cv.wait(lk, [&d] { return d.queue.empty() && !d.writing; });
    return (int32_t)(d.saves - before);
}

}  // extern "C"
