/* SPDX-License-Identifier: MIT */
/* Resources bounded by design: input buffers that grow with what arrives
 * (not with what a header claims), the per-listener connection limit, the
 * per-loop memory budget, peer addresses kept from accept(), and the
 * tls:// hint for a plain client that dialled a TLS server. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif
#define CERT(name) TETHER_CERTS_DIR "/" name

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* ---- a server that records what happens ---------------------------------- */

struct srv {
    tether_listener *l;
    long msgs;
    bool echo;
    bool check_big; /* messages carry th_fill(seed 7) */
    bool bad;
    size_t last_len;
    int closed;
    int errors;
    int last_error;
    char last_error_msg[TETHER_ERROR_MSG_MAX];
    tether_conn *conns[8];
    int nconns;
};

static struct srv S;

static void srv_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    if (S.nconns < 8) {
        S.conns[S.nconns++] = c;
    }
}

static void srv_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    S.msgs++;
    S.last_len = len;
    if (S.check_big && len > 1000 && !th_check(data, len, 7)) {
        S.bad = true;
    }
    if (S.echo) {
        ck_assert_int_eq(tether_conn_send(c, data, len), TETHER_OK);
    }
}

static void srv_close(tether_conn *c, int reason, void *ud)
{
    (void)reason;
    (void)ud;
    S.closed++;
    for (int i = 0; i < S.nconns; i++) {
        if (S.conns[i] == c) {
            S.conns[i] = NULL;
        }
    }
}

static void srv_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l;
    (void)ud;
    S.errors++;
    S.last_error = err;
    snprintf(S.last_error_msg, sizeof S.last_error_msg, "%s", detail);
}

static tether_listener *start_server(const char *url, tether_conn_opts *co, tether_listen_opts *lo)
{
    tether_conn_opts o;
    if (co != NULL) {
        o = *co;
    } else {
        tether_conn_opts_init(&o);
    }
    o.on_message = srv_message;
    o.on_close = srv_close;
    tether_listen_opts l2;
    if (lo != NULL) {
        l2 = *lo;
    } else {
        tether_listen_opts_init(&l2);
    }
    l2.on_accept = srv_accept;
    l2.on_error = srv_error;
    l2.conn_opts = &o;
    tether_error err;
    tether_listener *l = NULL;
    int rv = tether_listen(&l, th_loop, url, &l2, &err);
    ck_assert_msg(rv == TETHER_OK, "listen %s: %s", url, err.message);
    S.l = l;
    return l;
}

static void reset_state(void)
{
    memset(&S, 0, sizeof S);
}

static tether_mem_stats mem_stats(void)
{
    tether_mem_stats st;
    ck_assert_int_eq(tether_loop_get_mem_stats(th_loop, &st), TETHER_OK);
    return st;
}

/* ---- raw sockets ----------------------------------------------------------- */

/* Writes len bytes to a non-blocking socket in chunks of varying size,
 * running the loop in between, so that the server sees the message in
 * many small reads. Returns the bytes written before stop() held or the
 * deadline passed. */
static size_t raw_trickle(int fd, const uint8_t *p, size_t len, size_t chunk_max, int ms,
                          bool (*stop)(void))
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    size_t off = 0;
    uint32_t x = 1;
    while (off < len && th_now_ms() < deadline && (stop == NULL || !stop())) {
        x = x * 1103515245u + 12345u;
        size_t n = 1 + (x >> 8) % chunk_max;
        if (n > len - off) {
            n = len - off;
        }
        ssize_t w = send(fd, p + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else {
            ck_assert_msg(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "send: %s",
                          strerror(errno));
            tether_loop_run_once(th_loop, 5);
            continue;
        }
        tether_loop_run_once(th_loop, 0);
    }
    return off;
}

/* The realloc() calls of the library and this test: the test is linked
 * with -Wl,--wrap=realloc (tests/CMakeLists.txt). */
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
static unsigned long realloc_calls;

void *__wrap_realloc(void *p, size_t n)
{
    realloc_calls++;
    return __real_realloc(p, n);
}

/* Virtual memory size of this process in KiB (/proc/self/status VmSize). */
static long vm_size_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "VmSize: %ld kB", &kib) == 1) {
            break;
        }
    }
    fclose(f);
    ck_assert_int_gt(kib, 0);
    return kib;
}

/* ---- input buffers grow with what arrives ---------------------------------- */

#define HDR_ONLY_CONNS 200

static bool all_headers_buffered(void *arg)
{
    (void)arg;
    tether_mem_stats st = mem_stats();
    /* Every connection holds its header (at least 256 bytes of buffer). */
    return st.conns == HDR_ONLY_CONNS && st.input_bytes >= HDR_ONLY_CONNS * 256u;
}

static void header_only_connections(tether_framing_kind framing, const uint8_t *hdr, size_t hlen)
{
    reset_state();
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.framing = framing;
    tether_listener *l = start_server("tcp://127.0.0.1:0", &co, NULL);
    int port = tether_listener_port(l);
    long vm0 = vm_size_kib();
    int fds[HDR_ONLY_CONNS];
    for (int i = 0; i < HDR_ONLY_CONNS; i++) {
        fds[i] = th_raw_connect(port);
        th_raw_write(fds[i], hdr, hlen);
        tether_loop_run_once(th_loop, 0);
    }
    ck_assert(th_run_until_pred(all_headers_buffered, NULL, 20000));
    tether_mem_stats st = mem_stats();
    /* 16 MiB announced by each: a reservation would show as 3.2 GB. */
    ck_assert_msg(st.input_bytes <= HDR_ONLY_CONNS * 1024u, "input buffers hold %zu bytes",
                  st.input_bytes);
    long grown_kib = vm_size_kib() - vm0;
#ifndef UNDER_ASAN
    /* The whole process, not just what the library counts (the issue's
     * bound is 64 MiB for 10 000 connections; these are 200). */
    ck_assert_msg(grown_kib < 16 * 1024, "VmSize grew by %ld KiB", grown_kib);
#else
    (void)grown_kib; /* ASan's allocator reserves address space in its own way */
#endif
    for (int i = 0; i < HDR_ONLY_CONNS; i++) {
        close(fds[i]);
    }
    tether_listener_close(l);
}

START_TEST(len32_header_only_connections_reserve_nothing)
{
    const uint8_t hdr[4] = {0x01, 0x00, 0x00, 0x00}; /* 16 MiB, the default limit */
    header_only_connections(TETHER_FRAMING_LEN32, hdr, sizeof hdr);
}
END_TEST

START_TEST(varint_header_only_connections_reserve_nothing)
{
    const uint8_t hdr[4] = {0x80, 0x80, 0x80, 0x08}; /* 2^24 = 16 MiB */
    header_only_connections(TETHER_FRAMING_VARINT, hdr, sizeof hdr);
}
END_TEST

static bool got_one(void *arg)
{
    (void)arg;
    return S.msgs >= 1;
}

/* A 15 MiB message trickled in chunks of at most chunk bytes arrives
 * intact, and the input buffer is gone once it is delivered. The buffer
 * grows geometrically and, once it has the frame's size, is not resized
 * again: some 25 resizes, not one per read (thousands in small steps, each
 * a copy of up to 15 MiB where realloc() does not resize in place). */
static void big_message_in_steps(tether_framing_kind framing, size_t chunk)
{
    reset_state();
    S.check_big = true;
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.framing = framing;
    tether_listener *l = start_server("tcp://127.0.0.1:0", &co, NULL);
    const size_t len = 15u * 1024u * 1024u;
    uint8_t *m = malloc(len + 8);
    ck_assert_ptr_nonnull(m);
    size_t hl;
    if (framing == TETHER_FRAMING_LEN32) {
        m[0] = (uint8_t)(len >> 24);
        m[1] = (uint8_t)(len >> 16);
        m[2] = (uint8_t)(len >> 8);
        m[3] = (uint8_t)len;
        hl = 4;
    } else {
        size_t v = len;
        hl = 0;
        while (v >= 0x80) {
            m[hl++] = (uint8_t)(v | 0x80);
            v >>= 7;
        }
        m[hl++] = (uint8_t)v;
    }
    th_fill(m + hl, len, 7);
    int fd = th_raw_connect(tether_listener_port(l));
    realloc_calls = 0;
    size_t sent = raw_trickle(fd, m, hl + len, chunk, 60000, NULL);
    ck_assert_uint_eq(sent, hl + len);
    ck_assert(th_run_until_pred(got_one, NULL, 20000));
    unsigned long resizes = realloc_calls;
    printf("15 MiB in steps of at most %zu bytes: %lu realloc() calls\n", chunk, resizes);
    ck_assert_uint_le(resizes, 40);
    ck_assert_int_eq(S.msgs, 1);
    ck_assert_uint_eq(S.last_len, len);
    ck_assert(!S.bad);
    ck_assert_uint_eq(mem_stats().input_bytes, 0);
    close(fd);
    free(m);
    tether_listener_close(l);
}

START_TEST(len32_15mib_message_in_small_steps)
{
    big_message_in_steps(TETHER_FRAMING_LEN32, 9000);
}
END_TEST

START_TEST(varint_15mib_message_in_large_steps)
{
    big_message_in_steps(TETHER_FRAMING_VARINT, 300000);
}
END_TEST

static bool input_settled(void *arg)
{
    (void)arg;
    return S.msgs >= 1 && mem_stats().input_bytes > 0;
}

START_TEST(buffer_of_a_finished_frame_is_not_kept_for_a_header)
{
    /* A 1 MiB message and one byte of the next header in the same write:
     * the 1 MiB buffer must not stay behind for that byte. */
    reset_state();
    S.check_big = true;
    tether_listener *l = start_server("tcp://127.0.0.1:0", NULL, NULL);
    const size_t len = 1024u * 1024u;
    uint8_t *m = malloc(len + 5);
    ck_assert_ptr_nonnull(m);
    m[0] = 0;
    m[1] = 0x10; /* 1 MiB */
    m[2] = 0;
    m[3] = 0;
    th_fill(m + 4, len, 7);
    m[len + 4] = 0;
    int fd = th_raw_connect(tether_listener_port(l));
    ck_assert_uint_eq(raw_trickle(fd, m, len + 5, 300000, 20000, NULL), len + 5);
    ck_assert(th_run_until_pred(input_settled, NULL, 10000));
    ck_assert(!S.bad);
    ck_assert_msg(mem_stats().input_bytes <= 1024, "%zu bytes kept for a 1-byte header",
                  mem_stats().input_bytes);
    close(fd);
    free(m);
    tether_listener_close(l);
}
END_TEST

static bool got_53_and_idle(void *arg)
{
    (void)arg;
    return S.msgs >= 53 && mem_stats().input_bytes == 0;
}

START_TEST(large_frames_back_to_back_then_small_ones)
{
    /* Three 300 KiB messages back to back, then fifty small ones, in
     * large writes: the large frames are read in place into the frame
     * buffer, which then takes what follows them; every message arrives
     * intact and in order, and no input buffer is left afterwards. */
    reset_state();
    S.check_big = true;
    tether_listener *l = start_server("tcp://127.0.0.1:0", NULL, NULL);
    const size_t big = 300u * 1024u;
    const size_t total = 3 * (4 + big) + 50 * (4 + 10);
    uint8_t *m = malloc(total);
    ck_assert_ptr_nonnull(m);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        m[off] = 0;
        m[off + 1] = (uint8_t)(big >> 16);
        m[off + 2] = (uint8_t)(big >> 8);
        m[off + 3] = (uint8_t)big;
        th_fill(m + off + 4, big, 7);
        off += 4 + big;
    }
    for (int i = 0; i < 50; i++) {
        static const uint8_t small[14] = {0,   0,   0,   10,  's', 'm', 'a',
                                          'l', 'l', '.', '.', '.', '.', '!'};
        memcpy(m + off, small, sizeof small);
        off += sizeof small;
    }
    ck_assert_uint_eq(off, total);
    int fd = th_raw_connect(tether_listener_port(l));
    ck_assert_uint_eq(raw_trickle(fd, m, total, 200000, 20000, NULL), total);
    ck_assert(th_run_until_pred(got_53_and_idle, NULL, 10000));
    ck_assert_int_eq(S.msgs, 53);
    ck_assert_uint_eq(S.last_len, 10);
    ck_assert(!S.bad);
    close(fd);
    free(m);
    tether_listener_close(l);
}
END_TEST

/* ---- a tether client ------------------------------------------------------ */

struct cli {
    tether_conn *c;
    bool connected;
    bool closed;
    int close_reason;
    char detail[TETHER_ERROR_MSG_MAX];
    long got;
    size_t got_len;
    bool bad;
    int drains;
};

static void cli_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    struct cli *k = ud;
    k->connected = status == TETHER_OK;
}

static void cli_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    struct cli *k = ud;
    k->got++;
    k->got_len = len;
    if (len > 1000 && !th_check(data, len, 7)) {
        k->bad = true;
    }
}

static void cli_drain(tether_conn *c, void *ud)
{
    (void)c;
    struct cli *k = ud;
    k->drains++;
}

static void cli_close(tether_conn *c, int reason, void *ud)
{
    struct cli *k = ud;
    k->closed = true;
    k->close_reason = reason;
    snprintf(k->detail, sizeof k->detail, "%s", tether_conn_last_error(c));
    k->c = NULL;
}

static void cli_dial(struct cli *k, const char *url, tether_conn_opts *o)
{
    o->userdata = k;
    o->on_connect = cli_connect;
    o->on_message = cli_message;
    o->on_drain = cli_drain;
    o->on_close = cli_close;
    th_dial(&k->c, url, o);
}

static bool cli_got(void *arg)
{
    struct cli *k = arg;
    return k->got > 0 || k->closed;
}

static bool cli_closed(void *arg)
{
    return ((struct cli *)arg)->closed;
}

START_TEST(echo_15mib_between_tether_peers)
{
    reset_state();
    S.echo = true;
    S.check_big = true;
    tether_listener *l = start_server("tcp://127.0.0.1:0", NULL, NULL);
    struct cli k = {0};
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    cli_dial(&k, th_url_of(l), &o);
    const size_t len = 15u * 1024u * 1024u;
    uint8_t *m = malloc(len);
    ck_assert_ptr_nonnull(m);
    th_fill(m, len, 7);
    ck_assert_int_eq(tether_conn_send(k.c, m, len), TETHER_OK);
    ck_assert(th_run_until_pred(cli_got, &k, 30000));
    ck_assert_int_eq(k.got, 1);
    ck_assert_uint_eq(k.got_len, len);
    ck_assert(!S.bad);
    ck_assert(!k.bad);
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 10000));
    ck_assert_uint_eq(mem_stats().input_bytes, 0);
    free(m);
    tether_listener_close(l);
}
END_TEST

/* ---- maximum connections per listener ------------------------------------ */

static tether_listener_stats lstats(const tether_listener *l)
{
    tether_listener_stats st;
    ck_assert_int_eq(tether_listener_get_stats(l, &st), TETHER_OK);
    return st;
}

static bool three_accepted(void *arg)
{
    tether_listener_stats st = lstats(arg);
    return st.active == 3 && S.nconns == 3;
}

static bool four_accepted(void *arg)
{
    return lstats(arg).accepted == 4 && S.nconns == 4;
}

static bool active_is_two(void *arg)
{
    return lstats(arg).active == 2;
}

START_TEST(max_conns_rejects_and_recovers)
{
    reset_state();
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    ck_assert_uint_eq(lo.max_conns, TETHER_MAX_CONNS_DEFAULT);
    lo.max_conns = 3;
    tether_listener *l = start_server("tcp://127.0.0.1:0", NULL, &lo);
    int port = tether_listener_port(l);
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = th_raw_connect(port);
    }
    ck_assert(th_run_until_pred(three_accepted, l, 5000));
    /* Two more: accepted and closed at once, reported once. */
    int x1 = th_raw_connect(port);
    int x2 = th_raw_connect(port);
    ck_assert(th_raw_wait_eof(x1, 5000));
    ck_assert(th_raw_wait_eof(x2, 5000));
    tether_listener_stats st = lstats(l);
    ck_assert_uint_eq(st.rejected, 2);
    ck_assert_uint_eq(st.accepted, 3);
    ck_assert_uint_eq(st.active, 3);
    ck_assert_int_eq(S.errors, 1);
    ck_assert_int_eq(S.last_error, TETHER_EAGAIN);
    ck_assert_msg(strstr(S.last_error_msg, "at the limit of 3 connections (max_conns)") != NULL,
                  "%s", S.last_error_msg);
    close(x1);
    close(x2);
    /* The accepted ones are still served. */
    th_raw_write(fds[0], "\0\0\0\2hi", 6);
    ck_assert(th_run_until_pred(got_one, NULL, 5000));
    /* One leaves: a new client is accepted again. */
    close(fds[1]);
    ck_assert(th_run_until_pred(active_is_two, l, 5000));
    int y = th_raw_connect(port);
    ck_assert(th_run_until_pred(four_accepted, l, 5000));
    ck_assert_uint_eq(lstats(l).active, 3);
    /* And the next episode is reported again. */
    int z = th_raw_connect(port);
    ck_assert(th_raw_wait_eof(z, 5000));
    ck_assert_uint_eq(lstats(l).rejected, 3);
    ck_assert_int_eq(S.errors, 2);
    close(z);
    close(y);
    close(fds[0]);
    close(fds[2]);
    tether_listener_close(l);
}
END_TEST

START_TEST(listener_stats_bad_arguments)
{
    tether_listener_stats st;
    ck_assert_int_eq(tether_listener_get_stats(NULL, &st), TETHER_EINVAL);
    ck_assert_int_eq(tether_loop_get_mem_stats(NULL, (tether_mem_stats *)NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_loop_set_mem_limit(NULL, 1), TETHER_EINVAL);
    tether_mem_stats ms = mem_stats();
    ck_assert_uint_eq(ms.limit, TETHER_MEM_LIMIT_DEFAULT);
    ck_assert(!ms.over);
}
END_TEST

/* ---- the per-loop memory budget -------------------------------------------- */

static bool budget_paused_someone(void)
{
    tether_mem_stats st = mem_stats();
    return st.pauses > 0;
}

START_TEST(budget_stops_reading_the_heaviest_and_resumes)
{
    reset_state();
    S.echo = true;
    S.check_big = true;
    ck_assert_int_eq(tether_loop_set_mem_limit(th_loop, 1024 * 1024), TETHER_OK);
    tether_listener *l = start_server("tcp://127.0.0.1:0", NULL, NULL);
    /* A light client, to show that it is still served. */
    struct cli k = {0};
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    cli_dial(&k, th_url_of(l), &o);
    ck_assert(th_run_until(&k.connected, 5000));

    /* A heavy peer: one 6 MiB message, as fast as the server takes it. */
    const size_t len = 6u * 1024u * 1024u;
    uint8_t *m = malloc(len + 4);
    ck_assert_ptr_nonnull(m);
    m[0] = (uint8_t)(len >> 24);
    m[1] = (uint8_t)(len >> 16);
    m[2] = (uint8_t)(len >> 8);
    m[3] = (uint8_t)len;
    th_fill(m + 4, len, 7);
    int fd = th_raw_connect(tether_listener_port(l));
    size_t sent = raw_trickle(fd, m, len + 4, 65536, 10000, budget_paused_someone);
    ck_assert(budget_paused_someone());
    ck_assert_uint_lt(sent, len + 4);
    /* Keep writing: the server no longer reads, so this stops at the
     * socket buffers' size while the server holds at most about twice the
     * limit. */
    sent += raw_trickle(fd, m + sent, len + 4 - sent, 65536, 500, NULL);
    tether_mem_stats st = mem_stats();
    ck_assert(st.over);
    ck_assert_msg(st.input_bytes <= 2u * 1024u * 1024u, "input %zu", st.input_bytes);
    ck_assert_int_eq(S.msgs, 0);

    /* The light client still gets its echo. */
    ck_assert_int_eq(tether_conn_send(k.c, "ping", 4), TETHER_OK);
    ck_assert(th_run_until_pred(cli_got, &k, 5000));
    ck_assert_int_eq(k.got, 1);

    /* Lifting the limit resumes the heavy peer; its message is intact. */
    ck_assert_int_eq(tether_loop_set_mem_limit(th_loop, 0), TETHER_OK);
    sent += raw_trickle(fd, m + sent, len + 4 - sent, 65536, 30000, NULL);
    ck_assert_uint_eq(sent, len + 4);
    ck_assert(th_run_until_pred(got_one, NULL, 20000));
    /* msgs counts the light client's ping too. */
    ck_assert(!S.bad);
    ck_assert(!mem_stats().over);
    close(fd);
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    free(m);
    tether_listener_close(l);
}
END_TEST

START_TEST(budget_refuses_sends_then_drains)
{
    reset_state();
    ck_assert_int_eq(tether_loop_set_mem_limit(th_loop, 1024 * 1024), TETHER_OK);
    /* A raw server that does not read until told to. */
    int port;
    int ls = th_raw_listen(4, &port);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);

    struct cli k = {0};
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.send_hwm = 64u * 1024u * 1024u; /* so that the budget is what refuses */
    cli_dial(&k, url, &o);
    ck_assert(th_run_until(&k.connected, 5000));
    int peer = accept(ls, NULL, NULL);
    ck_assert_int_ge(peer, 0);

    static uint8_t chunk[256 * 1024];
    int rv = TETHER_OK;
    int n = 0;
    for (; n < 200 && rv == TETHER_OK; n++) {
        rv = tether_conn_send(k.c, chunk, sizeof chunk);
        tether_loop_run_once(th_loop, 0);
    }
    ck_assert_int_eq(rv, TETHER_EAGAIN);
    tether_mem_stats st = mem_stats();
    ck_assert(st.over);
    ck_assert_uint_ge(st.refusals, 1);
    ck_assert_uint_lt(tether_conn_queued(k.c), o.send_hwm);
    ck_assert_int_eq(k.drains, 0);

    /* The peer reads: the queue drains, usage falls and on_drain runs. */
    uint64_t deadline = th_now_ms() + 20000;
    static uint8_t sink[65536];
    while (k.drains == 0 && th_now_ms() < deadline) {
        while (recv(peer, sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
        tether_loop_run_once(th_loop, 5);
    }
    ck_assert_int_eq(k.drains, 1);
    ck_assert(!mem_stats().over);
    ck_assert_int_eq(tether_conn_send(k.c, chunk, sizeof chunk), TETHER_OK);
    tether_conn_abort(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    close(peer);
    close(ls);
}
END_TEST

/* ---- peer addresses and the tls:// hint ------------------------------------ */

static tether_tls_config *server_tls(void)
{
    tether_tls_opts o;
    tether_tls_opts_init(&o);
    o.cert_file = CERT("server.pem");
    o.key_file = CERT("server.key");
    tether_tls_config *cfg = NULL;
    tether_error err;
    ck_assert_msg(tether_tls_config_new(&cfg, &o, &err) == TETHER_OK, "tls: %s", err.message);
    return cfg;
}

static tether_listener *start_tls_server(void)
{
    tether_tls_config *cfg = server_tls();
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.tls = cfg;
    tether_listener *l = start_server("tls://127.0.0.1:0", &co, NULL);
    tether_tls_config_unref(cfg);
    return l;
}

static bool srv_reported(void *arg)
{
    (void)arg;
    return S.errors > 0;
}

START_TEST(budget_pause_and_resume_over_tls)
{
    /* The budget holds a TLS connection back and lets it go again. TLS may
     * also hold decrypted input that epoll cannot see: a connection the
     * budget holds back must not be retried from the pending queue on
     * every iteration (whether OpenSSL holds such input at the moment of
     * the pause depends on record boundaries, so this may not catch a
     * spin every time). */
    reset_state();
    S.check_big = true;
    ck_assert_int_eq(tether_loop_set_mem_limit(th_loop, 1024 * 1024), TETHER_OK);
    tether_listener *l = start_tls_server();
    tether_tls_opts to;
    tether_tls_opts_init(&to);
    to.ca_file = CERT("ca.pem");
    tether_tls_config *ccfg = NULL;
    tether_error err;
    ck_assert_msg(tether_tls_config_new(&ccfg, &to, &err) == TETHER_OK, "%s", err.message);
    struct cli k = {0};
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.tls = ccfg;
    char url[64];
    snprintf(url, sizeof url, "tls://127.0.0.1:%d", tether_listener_port(l));
    cli_dial(&k, url, &o);
    tether_tls_config_unref(ccfg);
    const size_t len = 6u * 1024u * 1024u;
    uint8_t *m = malloc(len);
    ck_assert_ptr_nonnull(m);
    th_fill(m, len, 7);
    ck_assert_int_eq(tether_conn_send(k.c, m, len), TETHER_OK);
    uint64_t deadline = th_now_ms() + 20000;
    while (mem_stats().pauses == 0 && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_uint_ge(mem_stats().pauses, 1);
    for (int i = 0; i < 20; i++) {
        tether_loop_run_once(th_loop, 10); /* let the socket buffers fill */
    }
    int spins = 0;
    uint64_t end = th_now_ms() + 500;
    while (th_now_ms() < end) {
        tether_loop_run_once(th_loop, 100);
        spins++;
    }
    /* Waiting 100 ms at a time, half a second is about 5 iterations. */
    ck_assert_msg(spins < 50, "%d loop iterations in 0.5 s", spins);
    ck_assert_int_eq(S.msgs, 0);
    ck_assert_int_eq(tether_loop_set_mem_limit(th_loop, 0), TETHER_OK);
    ck_assert(th_run_until_pred(got_one, NULL, 20000));
    ck_assert_uint_eq(S.last_len, len);
    ck_assert(!S.bad);
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 10000));
    free(m);
    tether_listener_close(l);
}
END_TEST

START_TEST(reset_during_handshake_names_the_peer)
{
    reset_state();
    tether_listener *l = start_tls_server();
    int fd = th_raw_connect(tether_listener_port(l));
    char me[64];
    th_local_name(fd, me, sizeof me);
    /* The first 11 bytes of a ClientHello of 512 bytes, then a reset. */
    const uint8_t half[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
    th_raw_write(fd, half, sizeof half);
    for (int i = 0; i < 20; i++) {
        tether_loop_run_once(th_loop, 5); /* let the server read it */
    }
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
    ck_assert(th_run_until_pred(srv_reported, NULL, 10000));
    ck_assert_msg(strstr(S.last_error_msg, me) != NULL, "'%s' does not name %s", S.last_error_msg,
                  me);
    ck_assert(strstr(S.last_error_msg, "unknown peer") == NULL);
    tether_listener_close(l);
}
END_TEST

START_TEST(plain_client_to_tls_server_suggests_tls)
{
    reset_state();
    tether_listener *l = start_tls_server();
    struct cli k = {0};
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tether_listener_port(l));
    cli_dial(&k, url, &o);
    ck_assert_int_eq(tether_conn_send(k.c, "hello", 5), TETHER_OK);
    ck_assert(th_run_until_pred(cli_closed, &k, 20000));
    char want[80];
    snprintf(want, sizeof want, "if it speaks TLS, dial tls://127.0.0.1:%d",
             tether_listener_port(l));
    ck_assert_msg(strstr(k.detail, want) != NULL, "%s: %s", tether_err_name(k.close_reason),
                  k.detail);
    tether_listener_close(l);
}
END_TEST

START_TEST(tls_record_from_raw_server_suggests_tls)
{
    /* A server that answers with a TLS alert, as OpenSSL does to a
     * ClientHello it cannot parse. */
    reset_state();
    int port;
    int ls = th_raw_listen(4, &port);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    struct cli k = {0};
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    cli_dial(&k, url, &o);
    ck_assert(th_run_until(&k.connected, 5000));
    int peer = accept(ls, NULL, NULL);
    ck_assert_int_ge(peer, 0);
    const uint8_t alert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46};
    th_raw_write(peer, alert, sizeof alert);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.close_reason, TETHER_EMSGSIZE);
    ck_assert_msg(strstr(k.detail, "looks like a TLS record") != NULL, "%s", k.detail);
    ck_assert_msg(strstr(k.detail, "tls://127.0.0.1:") != NULL, "%s", k.detail);
    close(peer);
    close(ls);
}
END_TEST

Suite *limits_suite(void)
{
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("limits");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, len32_header_only_connections_reserve_nothing);
    tcase_add_test(tc, varint_header_only_connections_reserve_nothing);
    tcase_add_test(tc, len32_15mib_message_in_small_steps);
    tcase_add_test(tc, varint_15mib_message_in_large_steps);
    tcase_add_test(tc, echo_15mib_between_tether_peers);
    tcase_add_test(tc, buffer_of_a_finished_frame_is_not_kept_for_a_header);
    tcase_add_test(tc, large_frames_back_to_back_then_small_ones);
    tcase_add_test(tc, max_conns_rejects_and_recovers);
    tcase_add_test(tc, listener_stats_bad_arguments);
    tcase_add_test(tc, budget_stops_reading_the_heaviest_and_resumes);
    tcase_add_test(tc, budget_refuses_sends_then_drains);
    tcase_add_test(tc, budget_pause_and_resume_over_tls);
    tcase_add_test(tc, reset_during_handshake_names_the_peer);
    tcase_add_test(tc, plain_client_to_tls_server_suggests_tls);
    tcase_add_test(tc, tls_record_from_raw_server_suggests_tls);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(limits_suite());
}
