/* SPDX-License-Identifier: MIT */
/* TLS over loopback: echo with the event and blocking APIs, every failure
 * reason with its own code and text, mutual TLS, ALPN, versions, session
 * resumption, certificate reload, SNI, peers that do not speak TLS,
 * handshake deadlines, close_notify against truncation, SIGPIPE, the
 * write path under back-pressure, and OpenSSL's buffers released once a
 * connection is idle. Certificates come from certs/ (see
 * certs/README.md). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "conn.h" /* private: a connection's transport, for tether__tls_holds_buffers() */
#include "helpers.h"
#include "tls.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

#define CERT(name) TETHER_CERTS_DIR "/" name

/* ---- configurations ------------------------------------------------------ */

typedef void (*opts_tweak)(tether_tls_opts *o);

static tether_tls_config *mk_cfg_t(const char *cert, const char *key, const char *ca,
                                   opts_tweak tweak)
{
    tether_tls_opts o;
    tether_tls_opts_init(&o);
    o.cert_file = cert;
    o.key_file = key;
    o.ca_file = ca;
    if (tweak != NULL) {
        tweak(&o);
    }
    tether_tls_config *cfg = NULL;
    tether_error err;
    int rv = tether_tls_config_new(&cfg, &o, &err);
    ck_assert_msg(rv == TETHER_OK, "tls config: %s", err.message);
    return cfg;
}

static tether_tls_config *server_cfg(const char *name, opts_tweak tweak)
{
    char cert[512];
    char key[512];
    snprintf(cert, sizeof cert, "%s/%s.pem", TETHER_CERTS_DIR, name);
    snprintf(key, sizeof key, "%s/%s.key", TETHER_CERTS_DIR, name);
    return mk_cfg_t(cert, key, CERT("ca.pem"), tweak);
}

static tether_tls_config *client_cfg(opts_tweak tweak)
{
    return mk_cfg_t(NULL, NULL, CERT("ca.pem"), tweak);
}

static tether_tls_config *client_cert_cfg(const char *name, opts_tweak tweak)
{
    return server_cfg(name, tweak); /* the same fields: our certificate and the CA */
}

static void tw_tls12(tether_tls_opts *o)
{
    o->max_version = TETHER_TLS_VERSION_1_2;
}

static void tw_tls13(tether_tls_opts *o)
{
    o->min_version = TETHER_TLS_VERSION_1_3;
}

static void tw_require(tether_tls_opts *o)
{
    o->client_auth = TETHER_TLS_CLIENT_AUTH_REQUIRED;
}

static void tw_require12(tether_tls_opts *o)
{
    o->client_auth = TETHER_TLS_CLIENT_AUTH_REQUIRED;
    o->max_version = TETHER_TLS_VERSION_1_2;
}

static void tw_optional(tether_tls_opts *o)
{
    o->client_auth = TETHER_TLS_CLIENT_AUTH_OPTIONAL;
}

static void tw_insecure(tether_tls_opts *o)
{
    o->insecure_skip_verify = true;
}

static void tw_short_hs(tether_tls_opts *o)
{
    o->handshake_timeout_ms = 300;
}

static void tw_no_resume(tether_tls_opts *o)
{
    o->no_resumption = true;
}

/* ---- a TLS echo server on th_loop ---------------------------------------- */

struct srv {
    tether_listener *l;
    int port;
    int accepted;
    int closed;
    int errors;
    int last_error;
    char error_detail[TETHER_ERROR_MSG_MAX];
    int last_close;
    char close_detail[TETHER_ERROR_MSG_MAX];
    bool echo;
    bool abort_on_accept;
    bool close_on_accept;
    bool pause_on_accept;
    long msgs;
    tether_conn *last;
    tether_tls_info info;
    int info_rv;
    bool msg_held; /* tether__tls_holds_buffers() in the last on_message */
};

static struct srv S;

static void srv_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    S.accepted++;
    S.last = c;
    S.info_rv = tether_conn_tls_info(c, &S.info);
    if (S.pause_on_accept) {
        tether_conn_pause(c);
    }
    if (S.abort_on_accept) {
        tether_conn_abort(c);
    } else if (S.close_on_accept) {
        tether_conn_close(c);
    }
}

static void srv_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    S.msgs++;
    S.msg_held = tether__tls_holds_buffers(c->tr);
    if (S.echo) {
        ck_assert_int_eq(tether_conn_send(c, data, len), TETHER_OK);
    }
}

static void srv_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    S.closed++;
    S.last_close = reason;
    snprintf(S.close_detail, sizeof S.close_detail, "%s", tether_conn_last_error(c));
    if (S.last == c) {
        S.last = NULL;
    }
}

static void srv_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l;
    (void)ud;
    S.errors++;
    S.last_error = err;
    snprintf(S.error_detail, sizeof S.error_detail, "%s", detail);
}

static void srv_reset(void)
{
    memset(&S, 0, sizeof S);
    S.echo = true;
}

/* Listens on tls://127.0.0.1:0 with cfg (the listener takes its own reference). */
static tether_listener *srv_start(tether_tls_config *cfg)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.on_message = srv_message;
    o.on_close = srv_close;
    o.tls = cfg;
    o.send_hwm = 64u * 1024u * 1024u;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = srv_accept;
    lo.on_error = srv_error;
    lo.conn_opts = &o;
    tether_error err;
    tether_listener *l = NULL;
    int rv = tether_listen(&l, th_loop, "tls://127.0.0.1:0", &lo, &err);
    ck_assert_msg(rv == TETHER_OK, "listen: %s", err.message);
    ck_assert(strncmp(tether_listener_url(l), "tls://", 6) == 0);
    S.l = l;
    S.port = tether_listener_port(l);
    return l;
}

/* A fresh server state listening with certificate NAME (see server_cfg());
 * returns the configuration, which srv_down() releases. */
static tether_tls_config *srv_up(const char *name, opts_tweak tweak)
{
    srv_reset();
    tether_tls_config *cfg = server_cfg(name, tweak);
    srv_start(cfg);
    return cfg;
}

static void srv_down(tether_tls_config *cfg)
{
    tether_listener_close(S.l);
    tether_tls_config_unref(cfg);
}

static const char *url_for(const char *host, int port)
{
    static char buf[128];
    if (strchr(host, ':') != NULL) {
        snprintf(buf, sizeof buf, "tls://[%s]:%d", host, port);
    } else {
        snprintf(buf, sizeof buf, "tls://%s:%d", host, port);
    }
    return buf;
}

/* ---- a client on th_loop -------------------------------------------------- */

struct cli {
    tether_conn *c;
    bool connected;
    bool connect_done;
    int connect_status;
    char connect_detail[TETHER_ERROR_MSG_MAX];
    bool closed;
    int close_reason;
    char close_detail[TETHER_ERROR_MSG_MAX];
    long got;
    long bad;
    size_t bytes;
    tether_tls_info info;
    int info_rv;
    size_t send_on_connect; /* bytes to send from on_connect */
};

static void cli_connect(tether_conn *c, int status, void *ud)
{
    struct cli *k = ud;
    k->connect_done = true;
    k->connect_status = status;
    snprintf(k->connect_detail, sizeof k->connect_detail, "%s", tether_conn_last_error(c));
    if (status == TETHER_OK) {
        k->connected = true;
        k->info_rv = tether_conn_tls_info(c, &k->info);
        size_t left = k->send_on_connect;
        static uint8_t chunk[64 * 1024];
        while (left > 0) {
            size_t n = left < sizeof chunk ? left : sizeof chunk;
            if (tether_conn_send(c, chunk, n) != TETHER_OK) {
                break;
            }
            left -= n;
        }
    }
}

static void cli_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    struct cli *k = ud;
    k->got++;
    k->bytes += len;
    if (len >= 4) {
        uint32_t seed;
        memcpy(&seed, data, 4);
        if (!th_check(data + 4, len - 4, seed)) {
            k->bad++;
        }
    }
}

static void cli_close(tether_conn *c, int reason, void *ud)
{
    struct cli *k = ud;
    k->closed = true;
    k->close_reason = reason;
    snprintf(k->close_detail, sizeof k->close_detail, "%s", tether_conn_last_error(c));
    k->c = NULL;
}

static void cli_init_opts(tether_conn_opts *o, struct cli *k, tether_tls_config *cfg)
{
    memset(k, 0, sizeof *k);
    tether_conn_opts_init(o);
    o->userdata = k;
    o->on_connect = cli_connect;
    o->on_message = cli_message;
    o->on_close = cli_close;
    o->tls = cfg;
    o->connect_timeout_ms = 10000;
    o->send_hwm = 64u * 1024u * 1024u;
}

static void cli_dial_opts(struct cli *k, const char *url, const tether_conn_opts *o)
{
    th_dial(&k->c, url, o);
}

static void cli_dial(struct cli *k, const char *url, tether_tls_config *cfg)
{
    tether_conn_opts o;
    cli_init_opts(&o, k, cfg);
    cli_dial_opts(k, url, &o);
}

/* Dials and waits for the outcome; returns the status. */
static int cli_dial_wait(struct cli *k, const char *url, tether_tls_config *cfg)
{
    cli_dial(k, url, cfg);
    ck_assert_msg(th_run_until(&k->connect_done, 10000), "no connect outcome for %s", url);
    return k->connect_status;
}

/* Sends one message carrying its own seed, for cli_message to check. */
static void send_checked(tether_conn *c, size_t len, uint32_t seed)
{
    uint8_t *b = malloc(len + 4);
    ck_assert_ptr_nonnull(b);
    memcpy(b, &seed, 4);
    th_fill(b + 4, len, seed);
    ck_assert_int_eq(tether_conn_send(c, b, len + 4), TETHER_OK);
    free(b);
}

/* Runs until k has received n messages. */
static void wait_msgs(struct cli *k, long n, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    while (k->got < n && !k->closed && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 20);
    }
    ck_assert_msg(k->got == n, "got %ld of %ld messages (closed %d: %s)", k->got, n, k->closed,
                  k->close_detail);
    ck_assert_int_eq(k->bad, 0);
}

/* Closes a client and waits for its on_close. */
static void cli_finish(struct cli *k)
{
    if (k->c != NULL) {
        tether_conn_close(k->c);
    }
    ck_assert(th_run_until(&k->closed, 10000));
}

static bool accepted_at_least(void *arg)
{
    return S.accepted >= *(int *)arg;
}

/* The server's on_accept may run after the client's on_connect (with TLS
 * 1.3 the client finishes first). */
static void wait_accepted(int n)
{
    ck_assert_msg(th_run_until_pred(accepted_at_least, &n, 10000), "accepted %d, want %d",
                  S.accepted, n);
}

static bool errors_at_least(void *arg)
{
    return S.errors >= *(int *)arg;
}

static void wait_server_errors(int n)
{
    ck_assert_msg(th_run_until_pred(errors_at_least, &n, 10000),
                  "server reported %d errors, want %d", S.errors, n);
}

#define ASSERT_HAS(str, sub)                                                                       \
    ck_assert_msg(strstr((str), (sub)) != NULL, "'%s' does not contain '%s'", (str), (sub))

/* ---- echo ----------------------------------------------------------------- */

START_TEST(echo_event_api_with_details)
{
    srv_reset();
    tether_tls_config *scfg = server_cfg("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    tether_listener *l = srv_start(scfg);
    tether_tls_config_unref(scfg); /* the listener holds its own reference */

    struct cli k;
    cli_dial(&k, url_for("localhost", S.port), ccfg);
    /* Nothing to read before the handshake. */
    ck_assert_int_eq(tether_conn_tls_info(k.c, &k.info), TETHER_ENOTCONN);
    ck_assert(th_run_until(&k.connect_done, 10000));
    ck_assert_int_eq(k.connect_status, TETHER_OK);
    ck_assert_int_eq(k.info_rv, TETHER_OK);
    ck_assert_str_eq(k.info.version, "TLSv1.3");
    ck_assert(k.info.peer_verified);
    ck_assert(k.info.has_peer_cert);
    ck_assert(!k.info.resumed);
    ck_assert_str_eq(k.info.peer_common_name, "localhost");
    ASSERT_HAS(k.info.peer_subject, "CN=localhost");
    ASSERT_HAS(k.info.peer_issuer, "CN=tether test CA");
    ASSERT_HAS(k.info.peer_sans, "DNS:localhost");
    ASSERT_HAS(k.info.peer_sans, "IP:127.0.0.1");
    ASSERT_HAS(k.info.peer_sans, "IP:::1");
    ck_assert_str_eq(k.info.server_name, "localhost");
    ck_assert_str_eq(k.info.alpn, "");
    ck_assert(strlen(k.info.cipher) > 0);
    /* OpenSSL 3's first default group, on both sides. */
    ck_assert_str_eq(k.info.group, "X25519");

    /* Mixed sizes, including empty, one record, many records, 1 MiB. */
    static const size_t sizes[] = {0, 1, 60, 1000, 16379, 16380, 16381, 40000, 65536, 1u << 20};
    long n = 0;
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            send_checked(k.c, sizes[i], (uint32_t)(round * 100 + i));
            n++;
        }
    }
    wait_msgs(&k, n, 20000);
    ck_assert_int_eq(S.accepted, 1);
    ck_assert_int_eq(S.info_rv, TETHER_OK);
    ck_assert_str_eq(S.info.server_name, "localhost");
    ck_assert(!S.info.has_peer_cert);
    cli_finish(&k);
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    tether_listener_close(l);
    tether_tls_config_unref(ccfg);
}
END_TEST

START_TEST(echo_ipv6_and_default_config_errors)
{
    /* The default client configuration trusts the system store, which does
     * not know the test CA: verification must fail, never be skipped. */
    tether_tls_config *scfg = srv_up("server", NULL);
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("127.0.0.1", S.port), NULL), TETHER_ECERT);
    ASSERT_HAS(k.connect_detail, "unknown CA");
    ck_assert(th_run_until(&k.closed, 5000));
    ck_assert_int_eq(k.close_reason, TETHER_ECERT);
    tether_listener_close(S.l);

    /* IPv6 literal: the certificate's IP:::1 entry is checked. */
    srv_reset();
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.on_message = srv_message;
    o.tls = scfg;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &o;
    lo.on_error = srv_error;
    tether_listener *l = NULL;
    tether_error err;
    if (tether_listen(&l, th_loop, "tls://[::1]:0", &lo, &err) == TETHER_OK) {
        tether_tls_config *ccfg = client_cfg(NULL);
        ck_assert_int_eq(cli_dial_wait(&k, url_for("::1", tether_listener_port(l)), ccfg),
                         TETHER_OK);
        ck_assert(k.info.peer_verified);
        send_checked(k.c, 100, 7);
        wait_msgs(&k, 1, 5000);
        cli_finish(&k);
        tether_listener_close(l);
        tether_tls_config_unref(ccfg);
    }
    tether_tls_config_unref(scfg);
}
END_TEST

/* The blocking API needs a server running on another thread. */
struct thr_srv {
    tether_loop *loop;
    tether_listener *l;
    pthread_t th;
    int port;
};

static void thr_msg(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    tether_conn_send(c, data, len);
}

static void *thr_main(void *arg)
{
    struct thr_srv *t = arg;
    tether_loop_run(t->loop);
    return NULL;
}

static void thr_stop_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    struct thr_srv *t = ud;
    tether_listener_close(t->l);
}

static void thr_start(struct thr_srv *t, tether_tls_config *cfg)
{
    ck_assert_int_eq(tether_loop_new(&t->loop, NULL), TETHER_OK);
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.on_message = thr_msg;
    o.tls = cfg;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &o;
    tether_error err;
    ck_assert_int_eq(tether_listen(&t->l, t->loop, "tls://127.0.0.1:0", &lo, &err), TETHER_OK);
    t->port = tether_listener_port(t->l);
    ck_assert_int_eq(pthread_create(&t->th, NULL, thr_main, t), 0);
}

static void thr_stop(struct thr_srv *t)
{
    ck_assert_int_eq(tether_loop_post(t->loop, thr_stop_cb, t), TETHER_OK);
    pthread_join(t->th, NULL);
    ck_assert_int_eq(tether_loop_free(t->loop), TETHER_OK);
}

START_TEST(echo_blocking_api)
{
    tether_tls_config *scfg = server_cfg("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    struct thr_srv t;
    thr_start(&t, scfg);

    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.tls = ccfg;
    tether_sync *s = NULL;
    tether_error err;
    int rv = tether_sync_connect(&s, url_for("127.0.0.1", t.port), &o, 10000, &err);
    ck_assert_msg(rv == TETHER_OK, "sync connect: %s", err.message);
    for (int i = 0; i < 50; i++) {
        size_t len = (size_t)i * 997u;
        uint8_t *b = malloc(len + 1);
        th_fill(b, len, (uint32_t)i);
        ck_assert_int_eq(tether_sync_send(s, b, len, 5000), TETHER_OK);
        tether_msg m;
        ck_assert_int_eq(tether_sync_recv(s, &m, 5000), TETHER_OK);
        ck_assert_uint_eq(m.len, len);
        ck_assert(th_check(m.data, m.len, (uint32_t)i));
        tether_msg_free(&m);
        free(b);
    }
    ck_assert_int_eq(tether_sync_close(s), TETHER_OK);

    /* A failure through the blocking API keeps its code and reason. */
    tether_conn_opts_init(&o);
    o.tls = ccfg;
    tether_tls_config *bad = mk_cfg_t(NULL, NULL, CERT("other-ca.pem"), NULL);
    o.tls = bad;
    rv = tether_sync_connect(&s, url_for("localhost", t.port), &o, 10000, &err);
    ck_assert_int_eq(rv, TETHER_ECERT);
    ASSERT_HAS(err.message, "unknown CA");
    tether_tls_config_unref(bad);

    thr_stop(&t);
    tether_tls_config_unref(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

/* One configuration shared by connections on several threads: its session
 * cache and reference count are used concurrently. */
struct thr_cli {
    pthread_t th;
    tether_tls_config *cfg;
    int port;
    int ok;
    char err[TETHER_ERROR_MSG_MAX];
};

static void *thr_cli_main(void *arg)
{
    struct thr_cli *t = arg;
    char url[64]; /* not url_for(): its buffer is shared */
    snprintf(url, sizeof url, "tls://127.0.0.1:%d", t->port);
    for (int i = 0; i < 30; i++) {
        tether_conn_opts o;
        tether_conn_opts_init(&o);
        o.tls = t->cfg;
        tether_sync *s = NULL;
        tether_error err;
        if (tether_sync_connect(&s, url, &o, 10000, &err) != TETHER_OK) {
            snprintf(t->err, sizeof t->err, "%s", err.message);
            return NULL;
        }
        tether_msg m;
        if (tether_sync_send(s, "ping", 4, 5000) == TETHER_OK &&
            tether_sync_recv(s, &m, 5000) == TETHER_OK) {
            t->ok++;
            tether_msg_free(&m);
        }
        tether_sync_close(s);
    }
    return NULL;
}

START_TEST(config_shared_across_threads)
{
    tether_tls_config *scfg = server_cfg("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    struct thr_srv srv;
    thr_start(&srv, scfg);
    struct thr_cli c[4];
    for (int i = 0; i < 4; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].cfg = ccfg;
        c[i].port = srv.port;
        ck_assert_int_eq(pthread_create(&c[i].th, NULL, thr_cli_main, &c[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(c[i].th, NULL);
        ck_assert_msg(c[i].ok == 30, "thread %d: %d of 30 echoes (%s)", i, c[i].ok, c[i].err);
    }
    thr_stop(&srv);
    tether_tls_config_unref(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

/* ---- certificate failures --------------------------------------------------- */

/* Dials a server presenting certificate `name` and checks the client's
 * code and text and that the server heard about the refusal. */
static void expect_client_failure(const char *name, const char *host, opts_tweak ctw, int code,
                                  const char *text1, const char *text2)
{
    tether_tls_config *scfg = srv_up(name, NULL);
    tether_tls_config *ccfg = client_cfg(ctw);
    struct cli k;
    int rv = cli_dial_wait(&k, url_for(host, S.port), ccfg);
    ck_assert_msg(rv == code, "%s: got %s (%s), want %s", name, tether_err_name(rv),
                  k.connect_detail, tether_err_name(code));
    ASSERT_HAS(k.connect_detail, text1);
    if (text2 != NULL) {
        ASSERT_HAS(k.connect_detail, text2);
    }
    ASSERT_HAS(k.connect_detail, url_for(host, S.port));
    ck_assert(th_run_until(&k.closed, 5000));
    ck_assert_int_eq(k.close_reason, code);
    ck_assert_str_eq(k.close_detail, k.connect_detail);
    /* The server sees our alert: its handshake fails too, never reaching
     * on_accept. */
    wait_server_errors(1);
    ck_assert_int_eq(S.accepted, 0);
    ck_assert_int_eq(S.last_error, TETHER_ECERT);
    ASSERT_HAS(S.error_detail, "TLS handshake with 127.0.0.1:");
    ASSERT_HAS(S.error_detail, "rejected our certificate");
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}

START_TEST(unknown_ca)
{
    expect_client_failure("untrusted", "localhost", NULL, TETHER_ECERT, "unknown CA",
                          "tether untrusted CA");
}
END_TEST

START_TEST(expired_certificate)
{
    expect_client_failure("expired", "localhost", NULL, TETHER_ECERT, "has expired", "2001");
}
END_TEST

START_TEST(not_yet_valid_certificate)
{
    expect_client_failure("future", "localhost", NULL, TETHER_ECERT, "not yet valid", "2090");
}
END_TEST

START_TEST(host_name_mismatch)
{
    expect_client_failure("wronghost", "localhost", NULL, TETHER_ECERT,
                          "host name mismatch: the server certificate is not valid for "
                          "'localhost'",
                          "DNS:wrong.example");
}
END_TEST

START_TEST(ip_address_mismatch)
{
    expect_client_failure("wronghost", "127.0.0.1", NULL, TETHER_ECERT, "IP address mismatch",
                          "'127.0.0.1'");
}
END_TEST

static void tw_name_wrong(tether_tls_opts *o)
{
    o->server_name = "wrong.example";
}

static void tw_name_alt(tether_tls_opts *o)
{
    o->server_name = "alt.localhost";
}

START_TEST(server_name_override_and_insecure)
{
    tether_tls_config *scfg = srv_up("wronghost", NULL);
    /* --servername: the name checked (and sent) is the override. */
    tether_tls_config *ccfg = client_cfg(tw_name_wrong);
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("127.0.0.1", S.port), ccfg), TETHER_OK);
    ck_assert(k.info.peer_verified);
    ck_assert_str_eq(k.info.server_name, "wrong.example");
    cli_finish(&k);
    tether_tls_config_unref(ccfg);
    srv_down(scfg);

    /* The explicitly insecure option accepts an untrusted certificate, and
     * says that it was not verified. */
    scfg = srv_up("untrusted", NULL);
    ccfg = client_cfg(tw_insecure);
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    ck_assert(!k.info.peer_verified);
    ck_assert(k.info.has_peer_cert);
    send_checked(k.c, 10, 1);
    wait_msgs(&k, 1, 5000);
    cli_finish(&k);
    tether_tls_config_unref(ccfg);
    srv_down(scfg);
}
END_TEST

/* ---- mutual TLS ----------------------------------------------------------- */

START_TEST(mtls_required_and_present)
{
    tether_tls_config *scfg = srv_up("server", tw_require);
    tether_tls_config *ccfg = client_cert_cfg("client", NULL);
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    send_checked(k.c, 100, 3);
    wait_msgs(&k, 1, 5000);
    ck_assert_int_eq(S.accepted, 1);
    ck_assert_int_eq(S.info_rv, TETHER_OK);
    ck_assert(S.info.has_peer_cert);
    ck_assert(S.info.peer_verified);
    ck_assert_str_eq(S.info.peer_common_name, "alice");
    ASSERT_HAS(S.info.peer_subject, "CN=alice");
    ck_assert_int_eq(S.errors, 0);
    cli_finish(&k);
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

START_TEST(mtls_required_and_missing_tls13)
{
    tether_tls_config *scfg = srv_up("server", tw_require);
    tether_tls_config *ccfg = client_cfg(NULL);
    struct cli k;
    /* TLS 1.3: our side of the handshake completes before the server has
     * judged it, so the client waits for the server's verdict: the
     * refusal fails the connect, as with TLS 1.2. */
    int st = cli_dial_wait(&k, url_for("localhost", S.port), ccfg);
    ck_assert_msg(st == TETHER_ECERTREQUIRED, "got %s: %s", tether_err_name(st), k.connect_detail);
    ASSERT_HAS(k.connect_detail, "the server requires a client certificate");
    ck_assert(th_run_until(&k.closed, 10000));
    ck_assert_int_eq(k.close_reason, TETHER_ECERTREQUIRED);
    wait_server_errors(1);
    ck_assert_int_eq(S.last_error, TETHER_ECERTREQUIRED);
    ASSERT_HAS(S.error_detail, "client certificate required");
    ASSERT_HAS(S.error_detail, "127.0.0.1:");
    ck_assert_int_eq(S.accepted, 0);
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

START_TEST(mtls_required_and_missing_tls12)
{
    tether_tls_config *scfg = srv_up("server", tw_require12);
    tether_tls_config *ccfg = client_cfg(NULL);
    struct cli k;
    /* TLS 1.2: the refusal is part of the handshake. */
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_ECERTREQUIRED);
    ASSERT_HAS(k.connect_detail, "the server requires a client certificate");
    wait_server_errors(1);
    ck_assert_int_eq(S.last_error, TETHER_ECERTREQUIRED);
    ASSERT_HAS(S.error_detail, "client certificate required");
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

START_TEST(mtls_untrusted_client_certificate)
{
    tether_tls_config *scfg = srv_up("server", tw_require);
    tether_tls_config *ccfg =
        mk_cfg_t(CERT("untrusted-client.pem"), CERT("untrusted-client.key"), CERT("ca.pem"), NULL);
    struct cli k;
    /* The default version is TLS 1.3: the connect itself fails. */
    int st = cli_dial_wait(&k, url_for("localhost", S.port), ccfg);
    ck_assert_msg(st == TETHER_ECERT, "got %s: %s", tether_err_name(st), k.connect_detail);
    ASSERT_HAS(k.connect_detail, "the server rejected our certificate (alert 'unknown CA')");
    ck_assert(th_run_until(&k.closed, 10000));
    ck_assert_int_eq(k.close_reason, TETHER_ECERT);
    wait_server_errors(1);
    ck_assert_int_eq(S.last_error, TETHER_ECERT);
    ASSERT_HAS(S.error_detail, "unknown CA: the client certificate 'CN=mallory");
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

START_TEST(mtls_optional)
{
    tether_tls_config *scfg = srv_up("server", tw_optional);
    /* Without a certificate: accepted, nothing to verify. */
    tether_tls_config *ccfg = client_cfg(NULL);
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    send_checked(k.c, 10, 1);
    wait_msgs(&k, 1, 5000);
    ck_assert_int_eq(S.accepted, 1);
    ck_assert(!S.info.has_peer_cert);
    ck_assert(!S.info.peer_verified);
    cli_finish(&k);
    tether_tls_config_unref(ccfg);
    /* With one: verified. */
    ccfg = client_cert_cfg("client", NULL);
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    send_checked(k.c, 10, 1);
    wait_msgs(&k, 1, 5000);
    ck_assert_int_eq(S.accepted, 2);
    ck_assert(S.info.has_peer_cert);
    ck_assert(S.info.peer_verified);
    ck_assert_str_eq(S.info.peer_common_name, "alice");
    cli_finish(&k);
    ck_assert_int_eq(S.errors, 0);
    tether_tls_config_unref(ccfg);
    srv_down(scfg);
}
END_TEST

/* ---- ALPN and versions --------------------------------------------------- */

static void tw_alpn_srv(tether_tls_opts *o)
{
    o->alpn = "chat/2,chat/1";
}

static void tw_alpn_cli(tether_tls_opts *o)
{
    o->alpn = "chat/1,chat/0";
}

static void tw_alpn_other(tether_tls_opts *o)
{
    o->alpn = "smtp";
}

START_TEST(alpn_agreement_and_mismatch)
{
    tether_tls_config *scfg = srv_up("server", tw_alpn_srv);
    tether_tls_config *ccfg = client_cfg(tw_alpn_cli);
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    ck_assert_str_eq(k.info.alpn, "chat/1");
    send_checked(k.c, 10, 1);
    wait_msgs(&k, 1, 5000);
    ck_assert_str_eq(S.info.alpn, "chat/1");
    cli_finish(&k);
    tether_tls_config_unref(ccfg);

    /* A client without ALPN is still served. */
    ccfg = client_cfg(NULL);
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    ck_assert_str_eq(k.info.alpn, "");
    cli_finish(&k);
    tether_tls_config_unref(ccfg);

    /* Nothing in common. */
    ccfg = client_cfg(tw_alpn_other);
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_EALPN);
    ASSERT_HAS(k.connect_detail, "ALPN mismatch");
    ASSERT_HAS(k.connect_detail, "smtp");
    wait_server_errors(1);
    ck_assert_int_eq(S.last_error, TETHER_EALPN);
    ASSERT_HAS(S.error_detail, "ALPN mismatch");
    ASSERT_HAS(S.error_detail, "chat/2,chat/1");
    srv_down(scfg);

    /* A server without ALPN: a client that requires a protocol refuses. */
    scfg = srv_up("server", NULL);
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_EALPN);
    ASSERT_HAS(k.connect_detail, "the server selected none of our protocols");
    ck_assert(th_run_until(&k.closed, 5000));
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

static void check_version(opts_tweak stw, opts_tweak ctw, const char *want)
{
    tether_tls_config *scfg = srv_up("server", stw);
    tether_tls_config *ccfg = client_cfg(ctw);
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    ck_assert_str_eq(k.info.version, want);
    send_checked(k.c, 50000, 9);
    wait_msgs(&k, 1, 5000);
    wait_accepted(1);
    ck_assert_str_eq(S.info.version, want);
    cli_finish(&k);
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}

static void check_no_version(opts_tweak stw, opts_tweak ctw)
{
    tether_tls_config *scfg = srv_up("server", stw);
    tether_tls_config *ccfg = client_cfg(ctw);
    struct cli k;
    int rv = cli_dial_wait(&k, url_for("localhost", S.port), ccfg);
    ck_assert_msg(rv == TETHER_ENOSHARED, "got %s: %s", tether_err_name(rv), k.connect_detail);
    ASSERT_HAS(k.connect_detail, "no TLS version in common");
    wait_server_errors(1);
    ck_assert_int_eq(S.last_error, TETHER_ENOSHARED);
    ASSERT_HAS(S.error_detail, "no TLS version in common");
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}

START_TEST(versions_and_mismatch)
{
    check_version(tw_tls12, NULL, "TLSv1.2");
    check_version(NULL, tw_tls12, "TLSv1.2");
    check_version(tw_tls13, NULL, "TLSv1.3");
    check_version(NULL, tw_tls13, "TLSv1.3");
    check_no_version(tw_tls13, tw_tls12);
    check_no_version(tw_tls12, tw_tls13);
}
END_TEST

static void tw_cipher_a(tether_tls_opts *o)
{
    o->max_version = TETHER_TLS_VERSION_1_2;
    o->ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256";
}

static void tw_cipher_b(tether_tls_opts *o)
{
    o->max_version = TETHER_TLS_VERSION_1_2;
    o->ciphers = "ECDHE-ECDSA-CHACHA20-POLY1305";
}

START_TEST(no_shared_cipher)
{
    tether_tls_config *scfg = srv_up("server", tw_cipher_a);
    tether_tls_config *ccfg = client_cfg(tw_cipher_b);
    struct cli k;
    int rv = cli_dial_wait(&k, url_for("localhost", S.port), ccfg);
    ck_assert_msg(rv == TETHER_ENOSHARED, "got %s: %s", tether_err_name(rv), k.connect_detail);
    ASSERT_HAS(k.connect_detail, "no cipher suite in common");
    wait_server_errors(1);
    ck_assert_int_eq(S.last_error, TETHER_ENOSHARED);
    ASSERT_HAS(S.error_detail, "no cipher suite in common");
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

/* ---- resumption, reload, SNI ---------------------------------------------- */

/* Connects, echoes one message (which also brings TLS 1.3 tickets in), and
 * returns whether the session was resumed. */
static bool connect_once(tether_tls_config *ccfg, const char *host)
{
    struct cli k;
    int accepted = S.accepted;
    ck_assert_int_eq(cli_dial_wait(&k, url_for(host, S.port), ccfg), TETHER_OK);
    bool resumed = k.info.resumed;
    send_checked(k.c, 100, 5);
    wait_msgs(&k, 1, 5000);
    wait_accepted(accepted + 1);
    ck_assert_int_eq(S.info.resumed, resumed);
    cli_finish(&k);
    return resumed;
}

static void check_resumption(opts_tweak stw)
{
    tether_tls_config *scfg = srv_up("server", stw);
    tether_tls_config *ccfg = client_cfg(NULL);
    ck_assert(!connect_once(ccfg, "localhost"));
    ck_assert(connect_once(ccfg, "localhost"));
    ck_assert(connect_once(ccfg, "localhost"));
    /* Another target (here another name for the same server) starts fresh. */
    ck_assert(!connect_once(ccfg, "127.0.0.1"));
    ck_assert(connect_once(ccfg, "127.0.0.1"));
    tether_tls_config_unref(ccfg);
    /* Off: never resumed. */
    ccfg = client_cfg(tw_no_resume);
    ck_assert(!connect_once(ccfg, "localhost"));
    ck_assert(!connect_once(ccfg, "localhost"));
    tether_tls_config_unref(ccfg);
    srv_down(scfg);
}

START_TEST(resumption_tls13)
{
    check_resumption(NULL);
}
END_TEST

START_TEST(resumption_tls12)
{
    check_resumption(tw_tls12);
}
END_TEST

START_TEST(certificate_reload)
{
    tether_tls_config *scfg = srv_up("server", NULL);
    tether_tls_config *ccfg = client_cfg(tw_no_resume);
    struct cli a;
    ck_assert_int_eq(cli_dial_wait(&a, url_for("localhost", S.port), ccfg), TETHER_OK);
    ck_assert_str_eq(a.info.peer_common_name, "localhost");

    tether_error err;
    /* A failed reload changes nothing. */
    ck_assert_int_eq(tether_tls_config_reload(scfg, CERT("server2.pem"), CERT("server.key"), &err),
                     TETHER_ECERT);
    ASSERT_HAS(err.message, "does not match");
    ck_assert_int_eq(tether_tls_config_reload(scfg, CERT("nonexistent.pem"), NULL, &err),
                     TETHER_ECERT);
    ASSERT_HAS(err.message, "No such file");
    struct cli b;
    ck_assert_int_eq(cli_dial_wait(&b, url_for("localhost", S.port), ccfg), TETHER_OK);
    ck_assert_str_eq(b.info.peer_common_name, "localhost");
    cli_finish(&b);

    ck_assert_int_eq(tether_tls_config_reload(scfg, CERT("server2.pem"), CERT("server2.key"), &err),
                     TETHER_OK);
    ck_assert_int_eq(cli_dial_wait(&b, url_for("localhost", S.port), ccfg), TETHER_OK);
    ck_assert_str_eq(b.info.peer_common_name, "tether test server 2");
    send_checked(b.c, 1000, 2);
    wait_msgs(&b, 1, 5000);
    ck_assert_str_eq(S.info.version, "TLSv1.3");
    /* The connection made before the reload keeps working. */
    send_checked(a.c, 100000, 1);
    wait_msgs(&a, 1, 5000);
    cli_finish(&a);
    cli_finish(&b);
    ck_assert_int_eq(a.close_reason, TETHER_OK);
    /* Reloading the same files again (NULL, NULL) works too. */
    ck_assert_int_eq(tether_tls_config_reload(scfg, NULL, NULL, &err), TETHER_OK);
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

START_TEST(sni_selects_certificate)
{
    srv_reset();
    tether_tls_config *scfg = server_cfg("server", NULL);
    tether_error err;
    ck_assert_int_eq(tether_tls_config_add_cert(scfg, CERT("alt.pem"), CERT("alt.key"), &err),
                     TETHER_OK);
    srv_start(scfg);
    tether_tls_config *alt = client_cfg(tw_name_alt);
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("127.0.0.1", S.port), alt), TETHER_OK);
    ck_assert_str_eq(k.info.peer_common_name, "alt.localhost");
    wait_accepted(1);
    ck_assert_str_eq(S.info.server_name, "alt.localhost");
    cli_finish(&k);
    tether_tls_config *def = client_cfg(NULL);
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), def), TETHER_OK);
    ck_assert_str_eq(k.info.peer_common_name, "localhost");
    cli_finish(&k);
    /* After a reload, the SNI certificate is still there. */
    ck_assert_int_eq(tether_tls_config_reload(scfg, NULL, NULL, &err), TETHER_OK);
    ck_assert_int_eq(cli_dial_wait(&k, url_for("127.0.0.1", S.port), alt), TETHER_OK);
    ck_assert_str_eq(k.info.peer_common_name, "alt.localhost");
    cli_finish(&k);
    srv_down(scfg);
    tether_tls_config_unref(alt);
    tether_tls_config_unref(def);
}
END_TEST

/* ---- peers that do not speak TLS, deadlines ------------------------------ */

START_TEST(garbage_and_plain_clients_are_rejected)
{
    tether_tls_config *scfg = srv_up("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    int fds0 = th_count_fds();

    /* A good connection that must survive everything below. */
    struct cli good;
    ck_assert_int_eq(cli_dial_wait(&good, url_for("localhost", S.port), ccfg), TETHER_OK);

    /* HTTP. */
    int fd = th_raw_connect(S.port);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(send(fd, http, strlen(http), MSG_NOSIGNAL), (ssize_t)strlen(http));
    wait_server_errors(1);
    ck_assert_int_eq(S.last_error, TETHER_ENOTTLS);
    ASSERT_HAS(S.error_detail, "TLS handshake with 127.0.0.1:");
    ASSERT_HAS(S.error_detail, "does not speak TLS");
    ASSERT_HAS(S.error_detail, "(it sent 'GET / ...')");
    char b;
    ck_assert_int_le(recv(fd, &b, 1, 0), 0); /* closed */
    close(fd);

    /* A port check: connect and close without a word. The server's text
     * must not ask whether its client is a TLS server. */
    fd = th_raw_connect(S.port);
    close(fd);
    wait_server_errors(2);
    ASSERT_HAS(S.error_detail, "the client closed the connection before sending anything");
    ck_assert_msg(strstr(S.error_detail, "TLS server") == NULL, "%s", S.error_detail);

    /* Random bytes. */
    fd = th_raw_connect(S.port);
    uint8_t junk[300];
    th_fill(junk, sizeof junk, 99);
    junk[0] = 0x00;
    ck_assert_int_eq(send(fd, junk, sizeof junk, MSG_NOSIGNAL), (ssize_t)sizeof junk);
    wait_server_errors(3);
    ck_assert_int_eq(S.last_error, TETHER_ENOTTLS);
    ASSERT_HAS(S.error_detail, "does not speak TLS (it sent 00 ");
    close(fd);

    /* A tether client speaking plain tcp:// with len32 framing. */
    struct cli plain;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", S.port);
    cli_dial(&plain, url, NULL);
    ck_assert(th_run_until(&plain.connect_done, 5000));
    ck_assert_int_eq(plain.connect_status, TETHER_OK);
    ck_assert_int_eq(tether_conn_tls_info(plain.c, &plain.info), TETHER_ENOTSUP);
    send_checked(plain.c, 2, 1);
    wait_server_errors(4);
    ck_assert_int_eq(S.last_error, TETHER_ENOTTLS);
    ASSERT_HAS(S.error_detail, "does not speak TLS (it sent 00 00 00 06 ");
    ck_assert(th_run_until(&plain.closed, 5000));

    /* A TLS record header announcing an absurd length. */
    fd = th_raw_connect(S.port);
    const uint8_t hdr[] = {0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00};
    ck_assert_int_eq(send(fd, hdr, sizeof hdr, MSG_NOSIGNAL), (ssize_t)sizeof hdr);
    wait_server_errors(5);
    ck_assert_int_ne(S.last_error, TETHER_OK);
    close(fd);

    /* The good connection is unaffected, and nothing was accepted. */
    send_checked(good.c, 5000, 4);
    wait_msgs(&good, 1, 5000);
    ck_assert_int_eq(S.accepted, 1);
    cli_finish(&good);
    tether_listener_close(S.l);
    th_run_idle(3000);
    ck_assert_int_le(th_count_fds(), fds0);
    tether_tls_config_unref(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

START_TEST(server_handshake_timeout)
{
    tether_tls_config *scfg = srv_up("server", tw_short_hs);
    int fd = th_raw_connect(S.port); /* never sends a ClientHello */
    uint64_t t0 = th_now_ms();
    wait_server_errors(1);
    uint64_t took = th_now_ms() - t0;
    ck_assert_int_eq(S.last_error, TETHER_ETIMEDOUT);
    ASSERT_HAS(S.error_detail, "TLS handshake with 127.0.0.1:");
    ASSERT_HAS(S.error_detail, "timed out after 300 ms");
    ck_assert_uint_ge(took, 250);
    ck_assert_uint_lt(took, 3000);
    char b;
    ck_assert_int_le(recv(fd, &b, 1, 0), 0);
    close(fd);
    ck_assert_int_eq(S.accepted, 0);
    srv_down(scfg);
}
END_TEST

START_TEST(client_handshake_timeout)
{
    /* A TCP listener that never answers: the kernel completes the TCP
     * handshake, nobody speaks TLS. */
    int port;
    int lfd = th_raw_listen(8, &port);

    tether_tls_config *ccfg = client_cfg(NULL);
    struct cli k;
    tether_conn_opts o;
    cli_init_opts(&o, &k, ccfg);
    o.connect_timeout_ms = 400;
    cli_dial_opts(&k, url_for("127.0.0.1", port), &o);
    ck_assert(th_run_until(&k.connect_done, 5000));
    ck_assert_int_eq(k.connect_status, TETHER_ETIMEDOUT);
    ASSERT_HAS(k.connect_detail, "TLS handshake timed out");
    ck_assert(th_run_until(&k.closed, 5000));
    close(lfd);
    tether_tls_config_unref(ccfg);
}
END_TEST

START_TEST(close_notify_and_truncation)
{
    tether_tls_config *scfg = srv_up("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);

    /* The server closes gracefully: close_notify, then a clean EOF. */
    S.close_on_accept = true;
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    ck_assert(th_run_until(&k.closed, 5000));
    ck_assert_msg(k.close_reason == TETHER_EOF, "got %s: %s", tether_err_name(k.close_reason),
                  k.close_detail);

    /* The server drops the connection without close_notify. */
    S.close_on_accept = false;
    S.abort_on_accept = true;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    ck_assert(th_run_until(&k.closed, 5000));
    ck_assert_msg(k.close_reason == TETHER_ETRUNCATED, "got %s: %s",
                  tether_err_name(k.close_reason), k.close_detail);
    ASSERT_HAS(k.close_detail, "without close_notify");

    /* The client closes gracefully: the server sees a clean EOF. */
    S.abort_on_accept = false;
    int closed = S.closed;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    send_checked(k.c, 10, 1);
    wait_msgs(&k, 1, 5000);
    cli_finish(&k);
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    uint64_t deadline = th_now_ms() + 5000;
    while (S.closed == closed && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 20);
    }
    ck_assert_int_eq(S.last_close, TETHER_EOF);
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

/* ---- close_notify in the same segment as the last data ------------------- */

/* A TLS peer on a blocking socket whose OpenSSL writes into a memory BIO,
 * so that the test decides what goes out in one send(): the last data
 * record and close_notify together, with no FIN after them. It then waits
 * for tether to answer with close_notify of its own. */
struct cn_peer {
    int fd;
    bool server;
    int version; /* TLS1_2_VERSION or TLS1_3_VERSION */
    pthread_t thr;
    /* results */
    bool handshake_ok;
    bool got_close_notify; /* tether answered */
    bool got_fin_first;    /* tether closed TCP without answering */
    atomic_bool sent;      /* its first flight is out */
    const char *sni;       /* clients: the name sent, NULL for "localhost" */
    int sig_type;          /* clients: how the server signed (key type NID) */
    int sig_hash;          /* and with which digest (NID_undef for EdDSA) */
    char err[256];
};

/* Sends everything OpenSSL wrote into the memory BIO, in one send(). */
static bool cn_flush(struct cn_peer *p, BIO *wbio)
{
    char buf[64 * 1024];
    int n = BIO_read(wbio, buf, sizeof buf);
    if (n <= 0) {
        return true;
    }
    if (BIO_ctrl_pending(wbio) != 0) {
        return false; /* more than one send's worth: not what the test means */
    }
    return send(p->fd, buf, (size_t)n, MSG_NOSIGNAL) == n;
}

/* Reads what the socket has into the read BIO; false on EOF or error. */
static bool cn_fill(struct cn_peer *p, BIO *rbio, bool *eof)
{
    char buf[16 * 1024];
    ssize_t n = recv(p->fd, buf, sizeof buf, 0);
    if (n <= 0) {
        *eof = n == 0;
        return false;
    }
    BIO_write(rbio, buf, (int)n);
    return true;
}

static void *cn_peer_main(void *arg)
{
    struct cn_peer *p = arg;
    SSL_CTX *ctx = SSL_CTX_new(p->server ? TLS_server_method() : TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, p->version);
    SSL_CTX_set_max_proto_version(ctx, p->version);
    if (p->server) {
        SSL_CTX_use_certificate_chain_file(ctx, CERT("server.pem"));
        SSL_CTX_use_PrivateKey_file(ctx, CERT("server.key"), SSL_FILETYPE_PEM);
    }
    SSL *ssl = SSL_new(ctx);
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rbio, wbio);
    if (p->server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        char sni[256];
        snprintf(sni, sizeof sni, "%s", p->sni != NULL ? p->sni : "localhost");
        SSL_set_tlsext_host_name(ssl, sni);
    }
    struct timeval tv = {.tv_sec = 10};
    setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    bool eof = false;
    for (;;) {
        int r = SSL_do_handshake(ssl);
        if (!cn_flush(p, wbio)) {
            snprintf(p->err, sizeof p->err, "send during handshake failed");
            goto out;
        }
        atomic_store(&p->sent, true);
        if (r == 1) {
            break;
        }
        if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ || !cn_fill(p, rbio, &eof)) {
            snprintf(p->err, sizeof p->err, "handshake failed");
            goto out;
        }
    }
    p->handshake_ok = true;
    if (!p->server) {
        SSL_get_peer_signature_type_nid(ssl, &p->sig_type);
        SSL_get_peer_signature_nid(ssl, &p->sig_hash);
    }
    /* Let tether finish its side (a TLS 1.3 server's tickets, the client's
     * Finished) and see the connection as up before the last words. */
    usleep(200 * 1000);
    /* The last message (len32 framing: "bye") and close_notify, one send. */
    static const unsigned char msg[] = {0, 0, 0, 3, 'b', 'y', 'e'};
    if (SSL_write(ssl, msg, sizeof msg) != (int)sizeof msg || SSL_shutdown(ssl) < 0 ||
        !cn_flush(p, wbio)) {
        snprintf(p->err, sizeof p->err, "send of data + close_notify failed");
        goto out;
    }
    /* Now wait for tether's close_notify. The socket stays open: no FIN. */
    for (;;) {
        char b[256];
        int r = SSL_read(ssl, b, sizeof b);
        if (r > 0) {
            continue; /* an echo, tickets */
        }
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) {
            p->got_close_notify = true;
            break;
        }
        if (e != SSL_ERROR_WANT_READ) {
            snprintf(p->err, sizeof p->err, "SSL_read error %d", e);
            break;
        }
        if (!cn_fill(p, rbio, &eof)) {
            p->got_fin_first = eof;
            snprintf(p->err, sizeof p->err, "%s",
                     eof ? "EOF without close_notify" : "no close_notify within 10 s");
            break;
        }
    }
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

static bool cn_closed(void *arg)
{
    return *(int *)arg != S.closed;
}

/* Runs the loop until the peer thread is done (it ends by itself within
 * its 10 s receive timeout; bounded here too), joins it, closes its fd. */
static void cn_peer_finish(struct cn_peer *p)
{
    uint64_t deadline = th_now_ms() + 15000;
    while (!p->got_close_notify && p->err[0] == '\0' && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 20);
    }
    pthread_join(p->thr, NULL);
    close(p->fd);
}

/* tether as the server: an accepted connection whose peer ends with data and
 * close_notify in one segment delivers the data, reports a clean EOF and
 * answers close_notify. */
static void cn_accepted_by(tether_tls_config *scfg, struct cn_peer *p, bool hello_first);

static void cn_accepted(int version, bool hello_first)
{
    struct cn_peer p = {.server = false, .version = version};
    cn_accepted_by(server_cfg("server", NULL), &p, hello_first);
}

/* The same with the server configuration scfg (released here) and the
 * peer client p (its results stay there). */
static void cn_accepted_by(tether_tls_config *scfg, struct cn_peer *p, bool hello_first)
{
    srv_reset();
    srv_start(scfg);
    S.echo = false;
    int closed = S.closed;
    p->fd = th_raw_connect(S.port);
    ck_assert_int_eq(pthread_create(&p->thr, NULL, cn_peer_main, p), 0);
    if (hello_first) {
        /* The loop has not run: the listener accepts a connection whose
         * ClientHello is already waiting in the socket. */
        for (int i = 0; i < 10000 && !atomic_load(&p->sent); i++) {
            usleep(1000);
        }
        ck_assert(atomic_load(&p->sent));
    }
    bool done = th_run_until_pred(cn_closed, &closed, 15000);
    cn_peer_finish(p);
    ck_assert_msg(p->handshake_ok, "peer: %s", p->err);
    ck_assert_msg(done, "the server never reported the end of the stream");
    ck_assert_int_eq(S.msgs, 1);
    ck_assert_msg(S.last_close == TETHER_EOF, "got %s: %s", tether_err_name(S.last_close),
                  S.close_detail);
    ck_assert_msg(p->got_close_notify, "peer: %s", p->err);
    srv_down(scfg);
}

START_TEST(close_notify_with_last_data_accepted_tls12)
{
    cn_accepted(TLS1_2_VERSION, false);
}
END_TEST

START_TEST(close_notify_with_last_data_accepted_tls13)
{
    cn_accepted(TLS1_3_VERSION, false);
}
END_TEST

/* An accepted connection's first handshake step does not try the socket
 * (the ClientHello usually comes after the accept: TF_AWAIT); one that is
 * already there when the listener accepts must still be read at once
 * (epoll reports it) and the handshake go on. _i: 0 = TLS 1.2, 1 = 1.3. */
START_TEST(client_hello_waiting_at_accept)
{
    cn_accepted(_i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION, true);
}
END_TEST

/* ---- a server's signature algorithms (lib/tls_sigalgs.c) ---------------- */

/* Writes DIR/STEM.pem and DIR/STEM.key: a new key of algorithm alg
 * ("RSA", "ED25519", "EC" with curve) with a certificate for name,
 * issued by the test CA. */
static void gen_cert(const char *dir, const char *stem, EVP_PKEY *pk, const char *name)
{
    FILE *f = fopen(CERT("ca.pem"), "r");
    ck_assert_ptr_nonnull(f);
    X509 *ca = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    f = fopen(CERT("ca.key"), "r");
    ck_assert_ptr_nonnull(f);
    EVP_PKEY *cakey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    ck_assert(ca != NULL && cakey != NULL && pk != NULL);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(th_now_ms() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    char san[128];
    snprintf(san, sizeof san, "DNS:%s", name);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    ck_assert_ptr_nonnull(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ck_assert_int_gt(X509_sign(x, cakey, EVP_sha256()), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/%s.pem", dir, stem);
    f = fopen(path, "w");
    ck_assert(f != NULL && PEM_write_X509(f, x) == 1 && PEM_write_X509(f, ca) == 1);
    fclose(f);
    snprintf(path, sizeof path, "%s/%s.key", dir, stem);
    f = fopen(path, "w");
    ck_assert(f != NULL && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1);
    fclose(f);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(pk);
}

/* How a plain OpenSSL server with OpenSSL's default lists signs its
 * handshake with this certificate, against the peer client's offer:
 * memory BIOs, in this thread. */
static void default_choice(const char *cert, const char *key, int version, int *type, int *hash)
{
    SSL_CTX *sc = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cc = SSL_CTX_new(TLS_client_method());
    ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(sc, cert), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(sc, key, SSL_FILETYPE_PEM), 1);
    SSL_CTX_set_options(sc, SSL_OP_CIPHER_SERVER_PREFERENCE); /* as tether's */
    SSL_CTX_set_min_proto_version(cc, version);
    SSL_CTX_set_max_proto_version(cc, version);
    SSL *srv = SSL_new(sc);
    SSL *cli = SSL_new(cc);
    BIO *a;
    BIO *b;
    ck_assert_int_eq(BIO_new_bio_pair(&a, 0, &b, 0), 1);
    SSL_set_bio(srv, a, a);
    SSL_set_bio(cli, b, b);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    int rs = 0;
    int rc = 0;
    for (int i = 0; i < 50 && (rs != 1 || rc != 1); i++) {
        rc = SSL_do_handshake(cli);
        rs = SSL_do_handshake(srv);
    }
    ck_assert(rs == 1 && rc == 1);
    SSL_get_peer_signature_type_nid(cli, type);
    SSL_get_peer_signature_nid(cli, hash);
    SSL_free(cli);
    SSL_free(srv);
    SSL_CTX_free(cc);
    SSL_CTX_free(sc);
    ERR_clear_error();
}

static const struct {
    const char *alg; /* the default certificate's key, NULL for certs/server */
    const char *sni; /* an SNI certificate's key ("alt.localhost"), or NULL */
    int version;
} SIG_CASES[] = {
    {"RSA", NULL, TLS1_3_VERSION},      {"RSA", NULL, TLS1_2_VERSION},
    {"ED25519", NULL, TLS1_3_VERSION},  {"P-384", NULL, TLS1_3_VERSION},
    {"P-384", NULL, TLS1_2_VERSION},    {NULL, NULL, TLS1_2_VERSION},
    {NULL, "RSA", TLS1_3_VERSION},      {"RSA", "P-256", TLS1_3_VERSION},
    {"RSA", "ED25519", TLS1_2_VERSION},
};

static EVP_PKEY *keygen(const char *alg)
{
    if (strcmp(alg, "RSA") == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    }
    if (strcmp(alg, "ED25519") == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    }
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", alg);
}

/* A server without client authentication keeps only the signature
 * algorithms its key can make; it must still sign as OpenSSL's default
 * would, for each key type and with an SNI certificate of another type
 * (whose list replaces the default certificate's). _i indexes SIG_CASES. */
START_TEST(server_signs_as_with_the_default_list)
{
    char dir[] = "/tmp/tether-sigalgs-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char cert[600];
    char key[600];
    char scert[600];
    char skey[600];
    const char *alg = SIG_CASES[_i].alg;
    if (alg != NULL) {
        gen_cert(dir, "main", keygen(alg), "localhost");
        snprintf(cert, sizeof cert, "%s/main.pem", dir);
        snprintf(key, sizeof key, "%s/main.key", dir);
    } else {
        snprintf(cert, sizeof cert, "%s", CERT("server.pem"));
        snprintf(key, sizeof key, "%s", CERT("server.key"));
    }
    tether_tls_config *scfg = mk_cfg_t(cert, key, CERT("ca.pem"), NULL);
    const char *used_cert = cert;
    const char *used_key = key;
    if (SIG_CASES[_i].sni != NULL) {
        gen_cert(dir, "sni", keygen(SIG_CASES[_i].sni), "alt.localhost");
        snprintf(scert, sizeof scert, "%s/sni.pem", dir);
        snprintf(skey, sizeof skey, "%s/sni.key", dir);
        tether_error err;
        ck_assert_int_eq(tether_tls_config_add_cert(scfg, scert, skey, &err), TETHER_OK);
        used_cert = scert;
        used_key = skey;
    }
    int want_type = 0;
    int want_hash = 0;
    default_choice(used_cert, used_key, SIG_CASES[_i].version, &want_type, &want_hash);
    struct cn_peer p = {.server = false,
                        .version = SIG_CASES[_i].version,
                        .sni = SIG_CASES[_i].sni != NULL ? "alt.localhost" : NULL};
    cn_accepted_by(scfg, &p, false);
    ck_assert_msg(p.sig_type == want_type && p.sig_hash == want_hash,
                  "signed with %s/%s, OpenSSL's default list: %s/%s", OBJ_nid2sn(p.sig_type),
                  OBJ_nid2sn(p.sig_hash), OBJ_nid2sn(want_type), OBJ_nid2sn(want_hash));
    char path[600];
    const char *files[] = {"main.pem", "main.key", "sni.pem", "sni.key"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}
END_TEST

/* tether as the client, against a peer server that ends the same way. */
static void cn_dialled(int version)
{
    int port;
    int lfd = th_raw_listen(1, &port);
    ck_assert_int_eq(fcntl(lfd, F_SETFL, O_NONBLOCK), 0); /* accept4() below polls */

    tether_tls_config *ccfg = client_cfg(NULL);
    struct cli k;
    cli_dial(&k, url_for("localhost", port), ccfg);
    struct cn_peer p = {.server = true, .version = version};
    /* The dial resolves and connects from the loop: run it until the
     * connection arrives. */
    p.fd = -1;
    uint64_t until = th_now_ms() + 10000;
    while (p.fd < 0 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 20);
        p.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    }
    ck_assert_int_ge(p.fd, 0);
    ck_assert_int_eq(pthread_create(&p.thr, NULL, cn_peer_main, &p), 0);
    bool done = th_run_until(&k.closed, 15000);
    cn_peer_finish(&p);
    close(lfd);
    ck_assert_msg(p.handshake_ok, "peer: %s", p.err);
    ck_assert_msg(k.connected, "connect failed: %s", k.connect_detail);
    ck_assert_msg(done, "the client never reported the end of the stream");
    ck_assert_int_eq(k.got, 1);
    ck_assert_msg(k.close_reason == TETHER_EOF, "got %s: %s", tether_err_name(k.close_reason),
                  k.close_detail);
    ck_assert_msg(p.got_close_notify, "peer: %s", p.err);
    tether_tls_config_unref(ccfg);
}

START_TEST(close_notify_with_last_data_dialled_tls12)
{
    cn_dialled(TLS1_2_VERSION);
}
END_TEST

START_TEST(close_notify_with_last_data_dialled_tls13)
{
    cn_dialled(TLS1_3_VERSION);
}
END_TEST

START_TEST(peer_reset_while_writing_never_raises_sigpipe)
{
    /* The library must not rely on the application ignoring SIGPIPE. */
    signal(SIGPIPE, SIG_DFL);
    tether_tls_config *scfg = srv_up("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    for (int i = 0; i < 3; i++) {
        S.abort_on_accept = true;
        struct cli k;
        tether_conn_opts o;
        cli_init_opts(&o, &k, ccfg);
        k.send_on_connect = 16u * 1024u * 1024u;
        o.sndbuf = 16384;
        cli_dial_opts(&k, url_for("localhost", S.port), &o);
        ck_assert(th_run_until(&k.closed, 10000));
        ck_assert_msg(k.close_reason == TETHER_ECONNRESET || k.close_reason == TETHER_ETRUNCATED,
                      "got %s: %s", tether_err_name(k.close_reason), k.close_detail);
    }
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

/* ---- the write and read paths under pressure ------------------------------ */

static void free_cb(void *data, void *ud)
{
    (void)ud;
    free(data);
}

static void bulk_echo(opts_tweak stw)
{
    tether_tls_config *scfg = srv_up("server", stw);
    tether_tls_config *ccfg = client_cfg(NULL);
    struct cli k;
    tether_conn_opts o;
    cli_init_opts(&o, &k, ccfg);
    /* Small socket buffers: OpenSSL often finds the socket full mid-record
     * and the write must be retried. */
    o.sndbuf = 4096;
    o.rcvbuf = 4096;
    cli_dial_opts(&k, url_for("localhost", S.port), &o);
    ck_assert(th_run_until(&k.connect_done, 10000));
    ck_assert_int_eq(k.connect_status, TETHER_OK);
    long n = 0;
    uint32_t x = 12345;
    for (int i = 0; i < 400; i++) {
        x = x * 1103515245u + 12345u;
        size_t len = (x >> 8) % (i % 10 == 0 ? 300000u : 3000u);
        uint32_t seed = (uint32_t)i;
        uint8_t *b = malloc(len + 4);
        memcpy(b, &seed, 4);
        th_fill(b + 4, len, seed);
        if (i % 3 == 0) {
            /* Zero-copy: small separate iovecs for the TLS layer to gather. */
            ck_assert_int_eq(tether_conn_send_zc(k.c, b, len + 4, free_cb, NULL), TETHER_OK);
        } else {
            ck_assert_int_eq(tether_conn_send(k.c, b, len + 4), TETHER_OK);
            free(b);
        }
        n++;
    }
    wait_msgs(&k, n, 30000);
    cli_finish(&k);
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}

START_TEST(bulk_echo_small_buffers_tls13)
{
    bulk_echo(NULL);
}
END_TEST

START_TEST(bulk_echo_small_buffers_tls12)
{
    bulk_echo(tw_tls12);
}
END_TEST

/* Zero-copy payloads just below, at and above multiples of a record, each
 * behind its header, with small messages in between: the TLS layer cuts
 * records where the rest of a payload makes whole ones (transport_tls.c,
 * tls_record_len) and must still send every byte once and in order, also
 * when the small socket buffers make it retry a record. */
START_TEST(zero_copy_payloads_around_record_multiples)
{
    tether_tls_config *scfg = srv_up("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    struct cli k;
    tether_conn_opts o;
    cli_init_opts(&o, &k, ccfg);
    o.sndbuf = 4096;
    o.rcvbuf = 4096;
    cli_dial_opts(&k, url_for("localhost", S.port), &o);
    ck_assert(th_run_until(&k.connect_done, 10000));
    ck_assert_int_eq(k.connect_status, TETHER_OK);
    static const size_t sizes[] = {16380, 16381, 16383, 16384, 16385, 20000,
                                   32764, 32768, 32769, 49151, 65536, 65537};
    long n = 0;
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            uint32_t seed = (uint32_t)(round * 100 + i);
            uint8_t *b = malloc(sizes[i]);
            ck_assert_ptr_nonnull(b);
            memcpy(b, &seed, 4);
            th_fill(b + 4, sizes[i] - 4, seed);
            ck_assert_int_eq(tether_conn_send_zc(k.c, b, sizes[i], free_cb, NULL), TETHER_OK);
            send_checked(k.c, i, seed + 50);
            n += 2;
        }
    }
    wait_msgs(&k, n, 30000);
    cli_finish(&k);
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

static void resume_later(tether_timer *t, void *ud)
{
    (void)ud;
    if (S.last != NULL) {
        tether_conn_resume(S.last);
    }
    tether_timer_stop(t);
}

START_TEST(pause_and_resume_with_buffered_records)
{
    tether_tls_config *scfg = srv_up("server", NULL);
    S.pause_on_accept = true; /* before the loop runs, so before any accept */
    tether_tls_config *ccfg = client_cfg(NULL);
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    for (int i = 0; i < 2000; i++) {
        send_checked(k.c, (size_t)(i % 50), (uint32_t)i);
    }
    /* Let everything reach the server while it is paused. */
    for (int i = 0; i < 20; i++) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(S.msgs, 0);
    tether_timer *t;
    ck_assert_int_eq(tether_timer_new(&t, th_loop), TETHER_OK);
    tether_timer_start(t, 50, 0, resume_later, NULL);
    wait_msgs(&k, 2000, 10000);
    tether_timer_free(t);
    cli_finish(&k);
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

/* ---- OpenSSL's buffers released once idle (tls_idle.c) ---------------------- */

static bool both_released(void *arg)
{
    struct cli *k = arg;
    return k->c != NULL && S.last != NULL && !tether__tls_holds_buffers(k->c->tr) &&
           !tether__tls_holds_buffers(S.last->tr);
}

/* Buffers are kept while a connection is busy and released by
 * SSL_free_buffers() once it has been idle for TETHER__TLS_IDLE_MS to
 * twice that; the next exchange allocates them again and works. A paused
 * server with records held in OpenSSL past two sweeps still delivers
 * them all. */
START_TEST(idle_connections_release_buffers)
{
    tether_tls_config *scfg = srv_up("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    struct cli k;
    ck_assert_int_eq(cli_dial_wait(&k, url_for("localhost", S.port), ccfg), TETHER_OK);
    wait_accepted(1);
    ck_assert_ptr_nonnull(S.last);
    /* The server's handshake ended with nothing buffered: released there. */
    ck_assert(!tether__tls_holds_buffers(S.last->tr));

    long n = 0;
    for (int round = 0; round < 3; round++) {
        send_checked(k.c, 100, (uint32_t)n);
        send_checked(k.c, 40000, (uint32_t)n + 1);
        n += 2;
        S.msg_held = false;
        wait_msgs(&k, n, 10000);
        /* Busy: both sides hold them while they read (the client has
         * just read the echo). */
        ck_assert(S.msg_held);
        ck_assert(tether__tls_holds_buffers(k.c->tr));
        /* Idle: the sweep releases both (at most 2 s; the bound is a hang
         * guard only). */
        ck_assert_msg(th_run_until_pred(both_released, &k, 10000),
                      "buffers still held after the idle period (client %d, server %d)",
                      tether__tls_holds_buffers(k.c->tr), tether__tls_holds_buffers(S.last->tr));
    }

    /* Paused with records in flight, across two sweeps, then resumed. */
    tether_conn_pause(S.last);
    for (int i = 0; i < 200; i++) {
        send_checked(k.c, (size_t)(i * 37 % 3000), (uint32_t)(1000 + i));
    }
    tether_timer *t;
    ck_assert_int_eq(tether_timer_new(&t, th_loop), TETHER_OK);
    tether_timer_start(t, 3 * TETHER__TLS_IDLE_MS, 0, resume_later, NULL);
    wait_msgs(&k, n + 200, 20000);
    tether_timer_free(t);
    ck_assert(th_run_until_pred(both_released, &k, 10000));

    cli_finish(&k);
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

/* OpenSSL's heap in use, counted by allocation functions set in main()
 * before OpenSSL allocates anything (one_exchange_keeps_no_buffers). */
static atomic_size_t ossl_heap;
static bool ossl_counted;

union ossl_hdr {
    size_t n;
    max_align_t align;
};

static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    union ossl_hdr *h = malloc(sizeof *h + n);
    if (h == NULL) {
        return NULL;
    }
    h->n = n;
    atomic_fetch_add(&ossl_heap, n);
    return h + 1;
}

static void ossl_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p != NULL) {
        union ossl_hdr *h = (union ossl_hdr *)p - 1;
        atomic_fetch_sub(&ossl_heap, h->n);
        free(h);
    }
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
    if (p == NULL) {
        return ossl_malloc(n, file, line);
    }
    if (n == 0) {
        ossl_free(p, file, line);
        return NULL;
    }
    union ossl_hdr *h = (union ossl_hdr *)p - 1;
    size_t old = h->n;
    union ossl_hdr *g = realloc(h, sizeof *g + n);
    if (g == NULL) {
        return NULL;
    }
    g->n = n;
    atomic_fetch_add(&ossl_heap, n);
    atomic_fetch_sub(&ossl_heap, old);
    return g + 1;
}

static bool all_released(void *arg)
{
    struct cli *ks = arg;
    for (int i = 0; i < 32; i++) {
        if (tether__tls_holds_buffers(ks[i].c->tr)) {
            return false;
        }
    }
    return !tether__tls_holds_buffers(S.last->tr);
}

/* A connection that sends one message now and then and gets one reply
 * keeps no buffers in between: the first two calls after a release that
 * move data run in SSL_MODE_RELEASE_BUFFERS (tls_idle.c). Thirty-two
 * such clients and their server connections, one message and its echo
 * each: OpenSSL's heap (counted by allocation functions of this test's
 * own) grows by less than 4 KiB a connection and side, where one kept
 * buffer is some 17 KiB. Busy from the third call on, a connection keeps
 * them, until the sweep. */
START_TEST(one_exchange_keeps_no_buffers)
{
    enum {
        N = 32
    };
    tether_tls_config *scfg = srv_up("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    static struct cli ks[N];
    memset(ks, 0, sizeof ks);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(cli_dial_wait(&ks[i], url_for("localhost", S.port), ccfg), TETHER_OK);
    }
    wait_accepted(N);
    /* Whatever follows the handshakes (the server's session tickets) is
     * read before the heap is measured. */
    for (int i = 0; i < 10; i++) {
        tether_loop_run_once(th_loop, 10);
    }
    for (int i = 0; i < N; i++) {
        ck_assert(!tether__tls_keeps_buffers(ks[i].c->tr));
    }
    ck_assert_msg(ossl_counted, "OpenSSL allocated before main() set its allocation functions");
    size_t heap0 = atomic_load(&ossl_heap);
    for (int i = 0; i < N; i++) {
        send_checked(ks[i].c, 100, (uint32_t)i);
    }
    for (int i = 0; i < N; i++) {
        wait_msgs(&ks[i], 1, 10000);
    }
    size_t heap1 = atomic_load(&ossl_heap);
    ck_assert_msg(heap1 < heap0 + (size_t)N * 2 * 4096,
                  "OpenSSL's heap grew by %zu bytes for %d exchanges", heap1 - heap0, N);

    /* Busy: after more calls the buffers stay, and the sweep still
     * releases them once the connection is idle. */
    for (int j = 0; j < 5; j++) {
        send_checked(ks[0].c, 100, (uint32_t)(100 + j));
        wait_msgs(&ks[0], 2 + j, 10000);
    }
    ck_assert(tether__tls_keeps_buffers(ks[0].c->tr));
    ck_assert(th_run_until_pred(all_released, ks, 10000));
    ck_assert(!tether__tls_keeps_buffers(ks[0].c->tr));
    send_checked(ks[0].c, 100, 200);
    wait_msgs(&ks[0], 7, 10000);

    for (int i = 0; i < N; i++) {
        cli_finish(&ks[i]);
    }
    srv_down(scfg);
    tether_tls_config_unref(ccfg);
}
END_TEST

START_TEST(many_clients_share_one_config)
{
    tether_tls_config *scfg = srv_up("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    enum {
        N = 50
    };
    static struct cli ks[N];
    for (int i = 0; i < N; i++) {
        cli_dial(&ks[i], url_for("localhost", S.port), ccfg);
    }
    tether_tls_config_unref(ccfg); /* the connections hold it */
    for (int i = 0; i < N; i++) {
        ck_assert(th_run_until(&ks[i].connect_done, 10000));
        ck_assert_int_eq(ks[i].connect_status, TETHER_OK);
        send_checked(ks[i].c, 1000, (uint32_t)i);
    }
    for (int i = 0; i < N; i++) {
        wait_msgs(&ks[i], 1, 10000);
        cli_finish(&ks[i]);
    }
    ck_assert_int_eq(S.accepted, N);
    srv_down(scfg);
}
END_TEST

/* Every TLS connection of a loop reads and writes through the loop's one
 * socket BIO: handshakes in flight side by side, clients and server in
 * one loop, must each see their own socket, and a peer that does not
 * speak TLS among them must be named by its own bytes. */
START_TEST(handshakes_side_by_side_keep_their_own_socket)
{
    tether_tls_config *scfg = srv_up("server", NULL);
    tether_tls_config *ccfg = client_cfg(NULL);
    enum {
        N = 8
    };
    static struct cli ks[N];
    for (int i = 0; i < N; i++) {
        cli_dial(&ks[i], url_for("localhost", S.port), ccfg);
    }
    int fd = th_raw_connect(S.port); /* while those handshakes run */
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(send(fd, http, strlen(http), MSG_NOSIGNAL), (ssize_t)strlen(http));
    for (int i = 0; i < N; i++) {
        ck_assert(th_run_until(&ks[i].connect_done, 10000));
        ck_assert_int_eq(ks[i].connect_status, TETHER_OK);
        send_checked(ks[i].c, 3000 + (size_t)i * 1000, (uint32_t)i);
    }
    wait_server_errors(1);
    ck_assert_int_eq(S.last_error, TETHER_ENOTTLS);
    ASSERT_HAS(S.error_detail, "(it sent 'GET / ...')");
    char b;
    ck_assert_int_le(recv(fd, &b, 1, 0), 0); /* closed */
    close(fd);
    for (int i = 0; i < N; i++) {
        wait_msgs(&ks[i], 1, 10000);
        cli_finish(&ks[i]);
    }
    ck_assert_int_eq(S.accepted, N);
    ck_assert_int_eq(S.errors, 1);
    tether_tls_config_unref(ccfg);
    srv_down(scfg);
}
END_TEST

/* ---- configuration errors ------------------------------------------------ */

START_TEST(config_errors_name_the_problem)
{
    tether_tls_opts o;
    tether_tls_config *cfg = NULL;
    tether_error err;

    tether_tls_opts_init(&o);
    o.cert_file = CERT("missing.pem");
    o.key_file = CERT("server.key");
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, &err), TETHER_ECERT);
    ASSERT_HAS(err.message, "cannot read certificate");
    ASSERT_HAS(err.message, "missing.pem");
    ck_assert_ptr_null(cfg);
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, NULL), TETHER_ECERT); /* no record */

    o.cert_file = CERT("server.pem");
    o.key_file = CERT("client.key");
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, &err), TETHER_ECERT);
    ASSERT_HAS(err.message, "does not match");

    o.key_file = CERT("make-certs.sh");
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, &err), TETHER_ECERT);
    ASSERT_HAS(err.message, "cannot load private key");

    o.key_file = NULL;
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, &err), TETHER_EINVAL);
    ASSERT_HAS(err.message, "together");

    tether_tls_opts_init(&o);
    o.ca_file = CERT("nope.pem");
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, &err), TETHER_ECERT);
    ASSERT_HAS(err.message, "CA file");

    tether_tls_opts_init(&o);
    o.alpn = "a,,b";
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, &err), TETHER_EINVAL);
    ASSERT_HAS(err.message, "ALPN");

    tether_tls_opts_init(&o);
    o.ciphers = "NO-SUCH-CIPHER";
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, &err), TETHER_EINVAL);
    ASSERT_HAS(err.message, "NO-SUCH-CIPHER");

    tether_tls_opts_init(&o);
    o.min_version = TETHER_TLS_VERSION_1_3;
    o.max_version = TETHER_TLS_VERSION_1_2;
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, &err), TETHER_EINVAL);
    o.min_version = (tether_tls_version)11;
    ck_assert_int_eq(tether_tls_config_new(&cfg, &o, &err), TETHER_EINVAL);

    /* A tls:// listener without a configuration, or without a certificate. */
    tether_listener *l = NULL;
    ck_assert_int_eq(tether_listen(&l, th_loop, "tls://127.0.0.1:0", NULL, &err), TETHER_EINVAL);
    ASSERT_HAS(err.message, "conn_opts->tls");
    tether_tls_config *ccfg = client_cfg(NULL);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.tls = ccfg;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &co;
    ck_assert_int_eq(tether_listen(&l, th_loop, "tls://127.0.0.1:0", &lo, &err), TETHER_EINVAL);
    ASSERT_HAS(err.message, "no certificate");
    tether_tls_config_unref(ccfg);

    /* NULL options: a client configuration with the system store. */
    ck_assert_int_eq(tether_tls_config_new(&cfg, NULL, &err), TETHER_OK);
    ck_assert_ptr_eq(tether_tls_config_ref(cfg), cfg);
    tether_tls_config_unref(cfg);
    tether_tls_config_unref(cfg);
    tether_tls_config_unref(NULL);
    ck_assert_str_eq(tether_err_name(TETHER_ENOTTLS), "TETHER_ENOTTLS");
    ck_assert_str_eq(tether_err_name(TETHER_ECERTREQUIRED), "TETHER_ECERTREQUIRED");
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("loopback");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, echo_event_api_with_details);
    tcase_add_test(tc, echo_ipv6_and_default_config_errors);
    tcase_add_test(tc, echo_blocking_api);
    tcase_add_test(tc, config_shared_across_threads);
    tcase_add_test(tc, unknown_ca);
    tcase_add_test(tc, expired_certificate);
    tcase_add_test(tc, not_yet_valid_certificate);
    tcase_add_test(tc, host_name_mismatch);
    tcase_add_test(tc, ip_address_mismatch);
    tcase_add_test(tc, server_name_override_and_insecure);
    tcase_add_test(tc, mtls_required_and_present);
    tcase_add_test(tc, mtls_required_and_missing_tls13);
    tcase_add_test(tc, mtls_required_and_missing_tls12);
    tcase_add_test(tc, mtls_untrusted_client_certificate);
    tcase_add_test(tc, mtls_optional);
    tcase_add_test(tc, alpn_agreement_and_mismatch);
    tcase_add_test(tc, versions_and_mismatch);
    tcase_add_test(tc, no_shared_cipher);
    tcase_add_test(tc, resumption_tls13);
    tcase_add_test(tc, resumption_tls12);
    tcase_add_test(tc, certificate_reload);
    tcase_add_test(tc, sni_selects_certificate);
    tcase_add_test(tc, garbage_and_plain_clients_are_rejected);
    tcase_add_test(tc, server_handshake_timeout);
    tcase_add_test(tc, client_handshake_timeout);
    tcase_add_test(tc, close_notify_and_truncation);
    tcase_add_test(tc, close_notify_with_last_data_accepted_tls12);
    tcase_add_test(tc, close_notify_with_last_data_accepted_tls13);
    tcase_add_loop_test(tc, client_hello_waiting_at_accept, 0, 2);
    tcase_add_loop_test(tc, server_signs_as_with_the_default_list, 0,
                        (int)(sizeof SIG_CASES / sizeof SIG_CASES[0]));
    tcase_add_test(tc, close_notify_with_last_data_dialled_tls12);
    tcase_add_test(tc, close_notify_with_last_data_dialled_tls13);
    tcase_add_test(tc, peer_reset_while_writing_never_raises_sigpipe);
    tcase_add_test(tc, bulk_echo_small_buffers_tls13);
    tcase_add_test(tc, bulk_echo_small_buffers_tls12);
    tcase_add_test(tc, zero_copy_payloads_around_record_multiples);
    tcase_add_test(tc, pause_and_resume_with_buffered_records);
    tcase_add_test(tc, idle_connections_release_buffers);
    tcase_add_test(tc, one_exchange_keeps_no_buffers);
    tcase_add_test(tc, many_clients_share_one_config);
    tcase_add_test(tc, handshakes_side_by_side_keep_their_own_socket);
    tcase_add_test(tc, config_errors_name_the_problem);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    ossl_counted = CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free) == 1;
    return th_run_suite(tls_suite());
}
