/* SPDX-License-Identifier: MIT */
/* The tether end of the WebSocket interoperability test against Node's ws
 * package (tests/interop/node/ws_interop.sh).
 *
 *   ws_peer server URL CERTS_DIR
 *       Listens on URL (ws:// or wss://, port 0), prints "listening on
 *       URL", and echoes every message with its type. A text message
 *       "close:CODE:REASON" is answered by tether_ws_close(CODE, REASON),
 *       "burst:N" by N small messages sent with tether_conn_send_batch()
 *       (burst_fill()).
 *       Heartbeats every 100 ms (1000 misses allowed: a busy peer is not judged). For every
 * connection it prints "accept path=... origin=... protocol=..." and "close reason=NAME code=N
 *       pongs=N msgs=N detail=...". Runs until SIGTERM.
 *
 *   ws_peer client URL CERTS_DIR
 *       Dials URL (a Node echo server that echoes with the same type),
 *       sends binary and text messages of 0 B to 16 MiB, then a burst of
 *       small ones with tether_conn_send_batch(), checks every echo
 *       (order, length, type, bytes), waits for a pong to one of its
 *       heartbeat pings, then sends "close:4002:bye from node", expects
 *       the server to close with 4002 and that reason, and exits 0 (1 on
 *       any failure, with the reason on stderr). Bounded by 120 s. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tether/tether.h>

static tether_loop *loop;
static int failed;
static char certs[512];

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "ws_peer: " __VA_ARGS__);                                                  \
        fputc('\n', stderr);                                                                       \
        failed = 1;                                                                                \
    } while (0)

static tether_tls_config *tls_cfg(bool server)
{
    char cert[600];
    char key[600];
    char ca[600];
    snprintf(cert, sizeof cert, "%s/server.pem", certs);
    snprintf(key, sizeof key, "%s/server.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    tether_tls_opts o;
    tether_tls_opts_init(&o);
    o.ca_file = ca;
    if (server) {
        o.cert_file = cert;
        o.key_file = key;
    }
    tether_tls_config *c = NULL;
    tether_error err;
    if (tether_tls_config_new(&c, &o, &err) != TETHER_OK) {
        fprintf(stderr, "ws_peer: TLS: %s\n", err.message);
        exit(1);
    }
    return c;
}

/* ---- bursts: tether_conn_send_batch() --------------------------------- */

/* Message j of a burst of n: j % 260 bytes (both length forms of a small
 * frame), binary in the first half and text in the second, its bytes as
 * ws_peer.mjs's pattern(len, j, text) makes them. */
#define BURST 2000

static size_t burst_len(size_t j)
{
    return j % 260;
}

static void burst_fill(uint8_t *b, size_t j, bool text)
{
    for (size_t i = 0; i < burst_len(j); i++) {
        b[i] = text ? (uint8_t)('a' + (i + j) % 26) : (uint8_t)((i * 31 + j) & 0xFF);
    }
}

static bool burst_check(const uint8_t *p, size_t n, size_t j, bool text)
{
    uint8_t b[260];
    burst_fill(b, j, text);
    return n == burst_len(j) && memcmp(p, b, n) == 0;
}

/* Sends a burst of n: two batches, the binary half and the text half. */
static void send_burst(tether_conn *c, size_t n)
{
    uint8_t *buf = malloc(n * 260 + 1);
    tether_batch_msg *m = malloc((n + 1) * sizeof *m);
    if (buf == NULL || m == NULL) {
        FAIL("out of memory for a burst of %zu", n);
        free(buf);
        free(m);
        return;
    }
    size_t half = n / 2;
    for (size_t j = 0; j < n; j++) {
        burst_fill(buf + j * 260, j, j >= half);
        m[j].data = buf + j * 260;
        m[j].len = burst_len(j);
    }
    for (int part = 0; part < 2; part++) {
        size_t from = part == 0 ? 0 : half;
        size_t cnt = part == 0 ? half : n - half;
        size_t k = 0;
        int rv = tether_ws_set_text(c, part == 1);
        if (rv == TETHER_OK) {
            rv = tether_conn_send_batch(c, m + from, cnt, &k);
        }
        if (rv != TETHER_OK || k != cnt) {
            FAIL("burst: %zu of %zu sent: %s", k, cnt, tether_strerror(rv));
        }
    }
    free(buf);
    free(m);
}

/* ---- server ------------------------------------------------------------ */

static void srv_msg(tether_conn *c, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    bool text = tether_ws_msg_is_text(c);
    if (text && n > 6 && memcmp(p, "close:", 6) == 0) {
        char buf[200];
        snprintf(buf, sizeof buf, "%.*s", (int)(n < 199 ? n : 199), (const char *)p);
        int code = atoi(buf + 6);
        const char *reason = strchr(buf + 6, ':');
        int rv = tether_ws_close(c, code, reason != NULL ? reason + 1 : NULL);
        if (rv != TETHER_OK) {
            FAIL("tether_ws_close(%d): %s", code, tether_strerror(rv));
        }
        return;
    }
    if (text && n > 6 && n < 16 && memcmp(p, "burst:", 6) == 0) {
        char buf[16];
        snprintf(buf, sizeof buf, "%.*s", (int)n, (const char *)p);
        send_burst(c, (size_t)atoi(buf + 6));
        return;
    }
    if (tether_ws_set_text(c, text) != TETHER_OK) {
        FAIL("set_text failed");
    }
    int rv = tether_conn_send(c, p, n);
    if (rv != TETHER_OK) {
        FAIL("echo of %zu bytes: %s", n, tether_strerror(rv));
        tether_conn_abort(c);
    }
}

static void srv_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    tether_stats st;
    tether_conn_get_stats(c, &st);
    printf("close reason=%s code=%d pongs=%llu msgs=%llu detail=%s\n", tether_err_name(reason),
           tether_ws_close_code(c), (unsigned long long)st.pongs_received,
           (unsigned long long)st.msgs_in, tether_conn_last_error(c));
    fflush(stdout);
}

static void srv_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    const char *o = tether_ws_origin(c);
    const char *p = tether_ws_protocol(c);
    printf("accept path=%s origin=%s protocol=%s\n", tether_ws_path(c), o != NULL ? o : "-",
           p != NULL ? p : "-");
    fflush(stdout);
}

static void srv_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l;
    (void)ud;
    printf("listener error=%s detail=%s\n", tether_err_name(err), detail);
    fflush(stdout);
}

static tether_listener *srv_l; /* NULL once tether_listener_shutdown() took it */

static void on_shutdown(tether_loop *lp, int status, void *ud)
{
    (void)ud;
    printf("shutdown status=%s\n", tether_err_name(status));
    fflush(stdout);
    tether_loop_stop(lp);
}

static void on_signal(tether_signal *s, int signum, void *ud)
{
    (void)s;
    (void)ud;
    if (signum == SIGUSR1 && srv_l != NULL) {
        /* Drain: a ws client cannot answer a GOAWAY, so it gets close
         * 1001 at once, well before this 60 s deadline. */
        if (tether_listener_shutdown(srv_l, 60000, on_shutdown, NULL) == TETHER_OK) {
            srv_l = NULL;
            return;
        }
    }
    tether_loop_stop(loop);
}

static int run_server(const char *url)
{
    static const char *const protos[] = {"echo.v1", NULL};
    static const char *const origins[] = {"http://interop.test", NULL};
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    w.protocols = protos;
    w.allowed_origins = origins;
    w.health_path = "/health";
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = srv_msg;
    co.on_close = srv_close;
    co.ws = &w;
    co.heartbeat_ms = 100;
    co.heartbeat_misses = 1000; /* pings to see pongs, not to judge a busy peer */
    co.send_hwm = 256u << 20;   /* an echo server: take whole 16 MiB messages */
    co.tls = strncmp(url, "wss:", 4) == 0 ? tls_cfg(true) : NULL;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = srv_accept;
    lo.on_error = srv_error;
    lo.conn_opts = &co;
    tether_listener *l = NULL;
    tether_error err;
    if (tether_listen(&l, loop, url, &lo, &err) != TETHER_OK) {
        fprintf(stderr, "ws_peer: listen: %s\n", err.message);
        return 1;
    }
    tether_tls_config_unref(co.tls);
    printf("listening on %s://127.0.0.1:%d\n", strncmp(url, "wss:", 4) == 0 ? "wss" : "ws",
           tether_listener_port(l));
    fflush(stdout);
    srv_l = l;
    tether_signal *sig = NULL, *usr = NULL;
    tether_signal_new(&sig, loop);
    tether_signal_start(sig, SIGTERM, on_signal, NULL, NULL);
    tether_signal_new(&usr, loop);
    tether_signal_start(usr, SIGUSR1, on_signal, NULL, NULL);
    tether_loop_run(loop);
    tether_signal_free(sig);
    tether_signal_free(usr);
    if (srv_l != NULL) {
        tether_listener_close(srv_l);
    }
    tether_loop_close_all(loop);
    tether_loop_run(loop);
    return failed;
}

/* ---- client ------------------------------------------------------------ */

static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 1u << 20, 16u << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])
static size_t next_echo; /* index into the 2 * NSIZES messages */
static bool close_sent;
static tether_timer *tick;
static bool done;

static void fill(uint8_t *b, size_t n, size_t i, bool text)
{
    for (size_t k = 0; k < n; k++) {
        b[k] = text ? (uint8_t)('a' + (k + i) % 26) : (uint8_t)((k * 7 + i) & 0xFF);
    }
}

static void zc_free(void *data, void *ud)
{
    (void)ud;
    free(data);
}

static void cli_msg(tether_conn *c, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    if (next_echo >= 2 * NSIZES && next_echo < 2 * NSIZES + BURST) {
        size_t j = next_echo - 2 * NSIZES;
        bool text = j >= BURST / 2;
        if (tether_ws_msg_is_text(c) != text || !burst_check(p, n, j, text)) {
            FAIL("burst echo %zu: %zu bytes %s, expected %zu bytes %s", j, n,
                 tether_ws_msg_is_text(c) ? "text" : "binary", burst_len(j),
                 text ? "text" : "binary");
            tether_conn_abort(c);
            return;
        }
        next_echo++;
        return;
    }
    if (next_echo >= 2 * NSIZES) {
        FAIL("unexpected message of %zu bytes", n);
        return;
    }
    size_t i = next_echo / 2;
    bool text = next_echo % 2 == 1;
    if (n != sizes[i] || tether_ws_msg_is_text(c) != text) {
        FAIL("echo %zu: %zu bytes %s, expected %zu bytes %s", next_echo, n,
             tether_ws_msg_is_text(c) ? "text" : "binary", sizes[i], text ? "text" : "binary");
        tether_conn_abort(c);
        return;
    }
    uint8_t *want = malloc(n + 1);
    fill(want, n, i, text);
    if (memcmp(want, p, n) != 0) {
        FAIL("echo %zu: content differs", next_echo);
    }
    free(want);
    next_echo++;
}

static void cli_tick(tether_timer *t, void *ud)
{
    tether_conn *c = ud;
    tether_stats st;
    tether_conn_get_stats(c, &st);
    if (next_echo == 2 * NSIZES + BURST && st.pongs_received > 0 && !close_sent) {
        close_sent = true;
        tether_ws_set_text(c, true);
        const char *m = "close:4002:bye from node";
        if (tether_conn_send(c, m, strlen(m)) != TETHER_OK) {
            FAIL("send close request");
        }
        printf("echoes ok: %zu messages; pongs=%llu rtt_us=%lld\n", (size_t)(2 * NSIZES),
               (unsigned long long)st.pongs_received, (long long)st.rtt_us);
        printf("batch echoes ok: %d messages\n", BURST);
        fflush(stdout);
    }
    (void)t;
}

static void cli_connect(tether_conn *c, int st, void *ud)
{
    (void)ud;
    if (st != TETHER_OK) {
        FAIL("connect: %s", tether_conn_last_error(c));
        return;
    }
    const char *p = tether_ws_protocol(c);
    printf("connected protocol=%s\n", p != NULL ? p : "-");
    for (size_t i = 0; i < NSIZES; i++) {
        for (int text = 0; text < 2; text++) {
            uint8_t *b = malloc(sizes[i] + 1);
            fill(b, sizes[i], i, text);
            tether_ws_set_text(c, text);
            /* Large binary messages zero-copy (masked on their way out,
             * a chunk at a time), the others copied (masked as queued). */
            int rv;
            if (!text && sizes[i] >= 65536) {
                rv = tether_conn_send_zc(c, b, sizes[i], zc_free, NULL);
            } else {
                rv = tether_conn_send(c, b, sizes[i]);
                free(b);
            }
            if (rv != TETHER_OK) {
                FAIL("send %zu bytes: %s", sizes[i], tether_strerror(rv));
            }
        }
    }
    send_burst(c, BURST);
    tether_timer_start(tick, 50, 50, cli_tick, c);
}

static void cli_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    int code = tether_ws_close_code(c);
    const char *d = tether_conn_last_error(c);
    printf("close reason=%s code=%d detail=%s\n", tether_err_name(reason), code, d);
    if (!close_sent) {
        FAIL("closed before the test finished: %s", d);
    } else if (reason != TETHER_EOF || code != 4002 || strstr(d, "bye from node") == NULL) {
        FAIL("expected EOF with 4002 \"bye from node\", got %s %d %s", tether_err_name(reason),
             code, d);
    }
    done = true;
    tether_timer_stop(tick);
    tether_loop_stop(loop);
}

static void cli_deadline(tether_timer *t, void *ud)
{
    (void)t;
    (void)ud;
    FAIL("deadline: %zu of %zu echoes after 120 s", next_echo, 2 * NSIZES + BURST);
    tether_loop_stop(loop);
}

static int run_client(const char *url)
{
    static const char *const protos[] = {"x.v0", "echo.v1", NULL};
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    w.protocols = protos;
    w.origin = "http://interop.test";
    w.headers = "X-Interop: tether\r\n";
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = cli_msg;
    co.on_close = cli_close;
    co.on_connect = cli_connect;
    co.ws = &w;
    co.heartbeat_ms = 100;
    co.heartbeat_misses = 1000; /* (as the server's) */
    co.send_hwm = 256u << 20;
    co.tls = strncmp(url, "wss:", 4) == 0 ? tls_cfg(false) : NULL;
    tether_timer *deadline = NULL;
    tether_timer_new(&deadline, loop);
    tether_timer_new(&tick, loop);
    tether_timer_start(deadline, 120000, 0, cli_deadline, NULL);
    tether_conn *c = NULL;
    tether_error err;
    if (tether_conn_dial(&c, loop, url, &co, &err) != TETHER_OK) {
        fprintf(stderr, "ws_peer: dial: %s\n", err.message);
        return 1;
    }
    tether_tls_config_unref(co.tls);
    tether_loop_run(loop);
    if (!done) {
        tether_conn_abort(c);
    }
    tether_timer_free(deadline);
    tether_timer_free(tick);
    tether_loop_close_all(loop);
    tether_loop_run(loop);
    if (!failed) {
        printf("client ok\n");
    }
    return failed;
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "server") != 0 && strcmp(argv[1], "client") != 0)) {
        fprintf(stderr, "usage: ws_peer server|client URL CERTS_DIR\n");
        return 2;
    }
    snprintf(certs, sizeof certs, "%s", argv[3]);
    if (tether_loop_new(&loop, NULL) != TETHER_OK) {
        return 1;
    }
    int rv = strcmp(argv[1], "server") == 0 ? run_server(argv[2]) : run_client(argv[2]);
    tether_loop_free(loop);
    return rv;
}
