/* SPDX-License-Identifier: MIT */
/* heapsites: which allocations an idle connection keeps, by call stack.
 *
 * An LD_PRELOAD library for any benchmark server of PROTOCOL.md (issue
 * #12). It wraps malloc and friends, remembers every live block with the
 * call stack that allocated it, and writes the live blocks grouped by
 * stack to a file when the server reports its Nth established connection
 * (the one-byte "c" that bench_ctl_notify() writes to the control pipe).
 * heapsites.py, beside it, turns a dump into bytes per connection by
 * allocation site and compares two dumps (README.md: "Where an idle
 * connection's memory goes").
 *
 *   cc -O2 -shared -fPIC -o heapsites.so tests/bench/heapsites.c -ldl
 *   HEAPSITES_AT=1100 LD_PRELOAD=$PWD/heapsites.so \
 *       build/tests/bench/tether_bench --scenario conns --transport tls --conns 1100
 *
 * HEAPSITES_AT=N[,M]: dump at the Nth (and Mth) established connection.
 * HEAPSITES_OUT=PREFIX: dump to PREFIX.PID.N (default /tmp/heapsites).
 *
 * Sizes are counted twice: as requested, and as glibc chunks (usable
 * size plus the 8-byte header), which is what the heap grows by. The
 * tables are mmap()ed outside the heap, so they do not disturb its
 * layout, but a server runs some ten times slower under the library (one
 * backtrace() per allocation), and its RSS figure means nothing then.
 * One lock serialises the bookkeeping; the servers are single-threaded. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <link.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t n);

#define DEPTH 16          /* frames kept per stack */
#define BLOCKS (1u << 23) /* open-addressing table of live blocks */
#define SITES (1u << 17)  /* distinct stacks */
#define TOMB ((void *)1)

struct block {
    void *p; /* NULL: never used; TOMB: freed */
    uint32_t site;
    uint32_t size;
};

struct site {
    uint64_t hash; /* 0: slot unused */
    int nframes;
    void *frames[DEPTH];
    long count; /* live blocks */
    long bytes; /* requested */
    long chunk; /* glibc chunks */
};

static struct block *g_blocks;
static struct site *g_sites;
static int g_ready;
static int g_lock;
static __thread int t_inside; /* our own allocations (backtrace, stdio) are not tracked */
static long g_notes;
static long g_at[2] = {-1, -1};
/* This library's code: its frames are not the caller's. */
static uintptr_t g_self_lo;
static uintptr_t g_self_hi;

static void lock(void)
{
    while (__atomic_exchange_n(&g_lock, 1, __ATOMIC_ACQUIRE)) {
    }
}

static void unlock(void)
{
    __atomic_store_n(&g_lock, 0, __ATOMIC_RELEASE);
}

static void *map(size_t len)
{
    void *p =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static int self_range(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    if (info->dlpi_addr != g_self_lo) {
        return 0;
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t end = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
        if (ph->p_type == PT_LOAD && end > g_self_hi) {
            g_self_hi = end;
        }
    }
    return 1;
}

static void init(void)
{
    t_inside++;
    g_blocks = map(sizeof(struct block) * BLOCKS);
    g_sites = map(sizeof(struct site) * SITES);
    void *warm[2];
    backtrace(warm, 2); /* loads libgcc_s now, outside any tracked call */
    Dl_info di;
    if (dladdr(&g_self_lo, &di) != 0) { /* any address of this library */
        g_self_lo = (uintptr_t)di.dli_fbase;
        dl_iterate_phdr(self_range, NULL);
    }
    const char *at = getenv("HEAPSITES_AT");
    if (at != NULL) {
        sscanf(at, "%ld,%ld", &g_at[0], &g_at[1]);
    }
    g_ready = g_blocks != NULL && g_sites != NULL;
    t_inside--;
}

static bool is_self(void *frame)
{
    return (uintptr_t)frame >= g_self_lo && (uintptr_t)frame < g_self_hi;
}

/* The site of the allocation being tracked: its stack from the caller of
 * malloc() (or calloc(), ...) on, without the frames of this library. */
static uint32_t site_of_caller(void)
{
    void *all[DEPTH + 4];
    int n = backtrace(all, DEPTH + 4);
    int skip = 0;
    while (skip < n && skip < 4 && is_self(all[skip])) {
        skip++;
    }
    void **f = all + skip;
    n = n - skip > DEPTH ? DEPTH : n - skip;
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        h = (h ^ (uintptr_t)f[i]) * 1099511628211ull;
    }
    h |= 1;
    uint32_t i = (uint32_t)(h >> 7) & (SITES - 1);
    while (g_sites[i].hash != 0 && g_sites[i].hash != h) {
        i = (i + 1) & (SITES - 1);
    }
    if (g_sites[i].hash == 0) {
        g_sites[i].hash = h;
        g_sites[i].nframes = n;
        memcpy(g_sites[i].frames, f, (size_t)n * sizeof f[0]);
    }
    return i;
}

static uint32_t slot_hash(const void *p)
{
    return (uint32_t)(((uintptr_t)p >> 4) * 2654435761u) & (BLOCKS - 1);
}

static void track(void *p, size_t n)
{
    if (p == NULL || t_inside || !g_ready) {
        return;
    }
    t_inside++;
    lock();
    uint32_t s = site_of_caller();
    uint32_t i = slot_hash(p);
    while (g_blocks[i].p != NULL && g_blocks[i].p != TOMB) {
        i = (i + 1) & (BLOCKS - 1);
    }
    g_blocks[i] = (struct block){.p = p, .site = s, .size = (uint32_t)n};
    g_sites[s].count++;
    g_sites[s].bytes += (long)n;
    g_sites[s].chunk += (long)malloc_usable_size(p) + 8;
    unlock();
    t_inside--;
}

static void untrack(void *p)
{
    if (p == NULL || t_inside || !g_ready) {
        return; /* (inside: one of our own blocks, from stdio or backtrace) */
    }
    lock();
    for (uint32_t i = slot_hash(p); g_blocks[i].p != NULL; i = (i + 1) & (BLOCKS - 1)) {
        if (g_blocks[i].p == p) {
            struct site *s = &g_sites[g_blocks[i].site];
            s->count--;
            s->bytes -= g_blocks[i].size;
            s->chunk -= (long)malloc_usable_size(p) + 8;
            g_blocks[i].p = TOMB;
            break;
        }
    }
    unlock();
}

static void ensure_init(void)
{
    if (!g_ready && !t_inside) {
        init();
    }
}

void *malloc(size_t n)
{
    ensure_init();
    void *p = __libc_malloc(n);
    track(p, n);
    return p;
}

void *calloc(size_t n, size_t size)
{
    ensure_init();
    void *p = __libc_calloc(n, size);
    track(p, n * size);
    return p;
}

void *realloc(void *old, size_t n)
{
    ensure_init();
    untrack(old);
    void *p = __libc_realloc(old, n);
    if (p != NULL) {
        track(p, n);
    } else if (old != NULL && n != 0) {
        track(old, 0); /* failed: the old block lives on (its size is lost) */
    }
    return p;
}

void free(void *p)
{
    untrack(p);
    __libc_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    ensure_init();
    void *p = __libc_memalign(align, n);
    if (p == NULL) {
        return 12; /* ENOMEM */
    }
    track(p, n);
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
    ensure_init();
    void *p = __libc_memalign(align, n);
    track(p, n);
    return p;
}

void *memalign(size_t align, size_t n)
{
    ensure_init();
    void *p = __libc_memalign(align, n);
    track(p, n);
    return p;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s != NULL ? s + 1 : path;
}

/* "S hash count bytes chunk", then one frame a line: "  sym+0xoff (lib)"
 * where the address is inside an exported symbol, else "  [lib+0xoff]";
 * last, glibc's own view of the heap ("M ..."). */
static void dump(long n)
{
    t_inside++;
    lock();
    char path[256];
    const char *prefix = getenv("HEAPSITES_OUT");
    snprintf(path, sizeof path, "%s.%d.%ld", prefix != NULL ? prefix : "/tmp/heapsites",
             (int)getpid(), n);
    FILE *f = fopen(path, "w");
    for (uint32_t i = 0; f != NULL && i < SITES; i++) {
        const struct site *s = &g_sites[i];
        if (s->hash == 0 || s->count == 0) {
            continue;
        }
        fprintf(f, "S %016llx %ld %ld %ld\n", (unsigned long long)s->hash, s->count, s->bytes,
                s->chunk);
        for (int k = 0; k < s->nframes; k++) {
            Dl_info di;
            if (dladdr(s->frames[k], &di) == 0 || di.dli_fname == NULL) {
                fprintf(f, "  [%p]\n", s->frames[k]);
            } else if (di.dli_sname != NULL) {
                fprintf(f, "  %s+%#lx (%s)\n", di.dli_sname,
                        (unsigned long)((char *)s->frames[k] - (char *)di.dli_saddr),
                        base_name(di.dli_fname));
            } else {
                fprintf(f, "  [%s+%#lx]\n", base_name(di.dli_fname),
                        (unsigned long)((char *)s->frames[k] - (char *)di.dli_fbase));
            }
        }
    }
    if (f != NULL) {
        struct mallinfo2 mi = mallinfo2();
        fprintf(f, "M arena %zu in_use %zu free %zu mmapped %zu top_free %zu\n", mi.arena,
                mi.uordblks, mi.fordblks, mi.hblkhd, mi.keepcost);
        fclose(f);
    }
    unlock();
    t_inside--;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real_write)(int, const void *, size_t);
    if (real_write == NULL) {
        *(void **)&real_write = dlsym(RTLD_NEXT, "write"); /* POSIX: data to function */
    }
    ssize_t r = real_write(fd, buf, n);
    if (n == 1 && ((const char *)buf)[0] == 'c' && g_ready) {
        g_notes++; /* bench_ctl_notify(): one more connection established */
        if (g_notes == g_at[0] || g_notes == g_at[1]) {
            dump(g_notes);
        }
    }
    return r;
}
