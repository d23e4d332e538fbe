// The prompt cache's disk tier: when an engine ends, the prompt states it holds (host memory's, and each idle
// sequence's cells) are written to a folder, one file each; the next engine of the same model and context
// reads them back into host memory. Every file starts with a key naming what its state is valid for (the
// caller's: model, llama.cpp commit, context parameters) and ends with a checksum; a file whose key, length
// or checksum does not match is removed, never loaded.
//
// File: "PWKV" u32 version | u32 key length, key | u64 n, n tokens (i32) | u64 m, m media spans
// (u64 start, u64 cells, i32 positions) | u64 state length, state | u64 FNV-1a of everything before.

#include "shim.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

namespace fs = std::filesystem;
using namespace shim;

namespace {

constexpr char kMagic[4] = {'P', 'W', 'K', 'V'};
constexpr uint32_t kVersion = 1;
constexpr const char *kSuffix = ".pwkv";

uint64_t fnv(uint64_t h, const void *data, size_t n) {
    const auto *p = static_cast<const uint8_t *>(data);
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

struct writer {
    std::string buf;
    template <typename T> void put(const T &v) { buf.append(reinterpret_cast<const char *>(&v), sizeof v); }
    void put_bytes(const void *p, size_t n) { buf.append(static_cast<const char *>(p), n); }
};

struct reader {
    const std::string &buf;
    size_t at = 0;
    bool ok = true;
    template <typename T> T get() {
        T v{};
        if (at + sizeof v > buf.size()) {
            ok = false;
            return v;
        }
        std::memcpy(&v, buf.data() + at, sizeof v);
        at += sizeof v;
        return v;
    }
    const char *take(uint64_t n) {
        if (n > buf.size() - std::min(at, buf.size())) {
            ok = false;
            return nullptr;
        }
        const char *p = buf.data() + at;
        at += (size_t)n;
        return p;
    }
};

std::string encode(const std::string &key, const std::vector<llama_token> &tokens,
                   const std::vector<media_span> &media, const std::vector<uint8_t> &state) {
    writer w;
    w.put_bytes(kMagic, 4);
    w.put(kVersion);
    w.put((uint32_t)key.size());
    w.put_bytes(key.data(), key.size());
    w.put((uint64_t)tokens.size());
    w.put_bytes(tokens.data(), tokens.size() * sizeof(llama_token));
    w.put((uint64_t)media.size());
    for (const auto &m : media) {
        w.put((uint64_t)m.start);
        w.put((uint64_t)m.n_tokens);
        w.put((int32_t)m.n_pos);
    }
    w.put((uint64_t)state.size());
    w.put_bytes(state.data(), state.size());
    w.put(fnv(1469598103934665603ull, w.buf.data(), w.buf.size()));
    return std::move(w.buf);
}

// The entry a file holds, or false when it is not one of ours for this key, or damaged.
bool decode(const std::string &buf, const std::string &key, ram_entry &out) {
    if (buf.size() < 4 + 4 + 4 + 8 || std::memcmp(buf.data(), kMagic, 4) != 0) return false;
    reader r{buf, 4};
    if (r.get<uint32_t>() != kVersion) return false;
    uint32_t klen = r.get<uint32_t>();
    const char *k = r.take(klen);
    if (!r.ok || std::string(k, klen) != key) return false;
    uint64_t n = r.get<uint64_t>();
    if (!r.ok || n > (buf.size() / sizeof(llama_token))) return false;
    const char *toks = r.take(n * sizeof(llama_token));
    if (!r.ok) return false;
    out.tokens.resize((size_t)n);
    std::memcpy(out.tokens.data(), toks, (size_t)n * sizeof(llama_token));
    uint64_t m = r.get<uint64_t>();
    if (!r.ok || m > n) return false;
    for (uint64_t i = 0; i < m; i++) {
        media_span sp;
        sp.start = (size_t)r.get<uint64_t>();
        sp.n_tokens = (size_t)r.get<uint64_t>();
        sp.n_pos = r.get<int32_t>();
        if (!r.ok || sp.start + sp.n_tokens > n) return false;
        out.media.push_back(sp);
    }
    uint64_t slen = r.get<uint64_t>();
    const char *state = r.take(slen);
    if (!r.ok || slen == 0) return false;
    out.state.assign(state, state + slen);
    const size_t body = r.at;
    uint64_t sum = r.get<uint64_t>();
    return r.ok && r.at == buf.size() && sum == fnv(1469598103934665603ull, buf.data(), body);
}

bool read_file(const fs::path &p, std::string &out) {
    std::ifstream f(p, std::ios::binary);
    if (!f) return false;
    out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return !f.bad();
}

}  // namespace

extern "C" {

int32_t pw_cache_save(pw_engine *e, const char *dir, const char *key, uint64_t max_bytes) {
    if (!e || !dir || !key) return fail(PW_E_INVALID, "null argument");
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return fail(PW_E_INVALID, "cannot create %s: %s", dir, ec.message().c_str());
    for (const auto &f : fs::directory_iterator(dir, ec))  // this engine's states replace the last one's
        if (f.path().extension() == kSuffix) fs::remove(f.path(), ec);
    // The sequences' own cells first (the most recent), then host memory's states, most recently used first.
    std::vector<ram_entry> own;
    for (auto &s : e->slots) {
        if (s.cache.size() < 16 || s.copying) continue;
        ram_entry en;
        en.tokens = s.cache;
        en.media = s.cached_media;
        en.state.resize(llama_state_seq_get_size(e->ctx, s.id));
        size_t got = en.state.empty() ? 0 : llama_state_seq_get_data(e->ctx, en.state.data(), en.state.size(), s.id);
        if (got == 0) continue;
        en.state.resize(got);
        own.push_back(std::move(en));
    }
    std::vector<const ram_entry *> all;
    for (const auto &en : own) all.push_back(&en);
    for (const auto &en : e->ram.entries) all.push_back(&en);
    uint64_t used = 0;
    int32_t written = 0;
    std::vector<const ram_entry *> done;
    for (const ram_entry *en : all) {
        // a state another one extends adds nothing
        bool covered = std::any_of(done.begin(), done.end(), [en](const ram_entry *d) {
            return common_prefix(en->tokens, d->tokens.data(), d->tokens.size()) == en->tokens.size();
        });
        if (covered) continue;
        std::string buf = encode(key, en->tokens, en->media, en->state);
        if (used + buf.size() > max_bytes) continue;
        char name[40];  // the most recently used first, by name
        snprintf(name, sizeof name, "%04d-%016llx%s", written,
                 (unsigned long long)fnv(1469598103934665603ull, en->tokens.data(), en->tokens.size() * 4), kSuffix);
        fs::path path = fs::path(dir) / name;
        fs::path tmp = path;
        tmp += ".tmp";
        {
            std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
            f.write(buf.data(), (std::streamsize)buf.size());
            if (!f) {
                fs::remove(tmp, ec);
                continue;
            }
        }
        fs::rename(tmp, path, ec);  // a reader never sees half a file under the real name
        if (ec) continue;
        used += buf.size();
        done.push_back(en);
        written++;
    }
    return written;
}

int32_t pw_cache_load(pw_engine *e, const char *dir, const char *key) {
    if (!e || !dir || !key) return fail(PW_E_INVALID, "null argument");
    std::error_code ec;
    std::vector<fs::path> files;
    for (const auto &f : fs::directory_iterator(dir, ec))
        if (f.path().extension() == kSuffix) files.push_back(f.path());
    std::sort(files.begin(), files.end());  // the most recently used first
    int32_t loaded = 0;
    std::string buf;
    for (const auto &path : files) {
        ram_entry en;
        if (!read_file(path, buf) || !decode(buf, key, en)) {
            fs::remove(path, ec);  // another model's, another commit's, or damaged
            continue;
        }
        if (e->ram.bytes + en.bytes() > e->ram.budget) continue;
        en.from_disk = true;
        e->ram.bytes += en.bytes();
        e->ram.entries.push_back(std::move(en));
        e->stats.disk_loaded++;
        loaded++;
    }
    return loaded;
}

}  // extern "C"
