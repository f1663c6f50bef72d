/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the TLS server path: a real tether TLS listener on
 * 127.0.0.1 (tether_listen, the listener's SSL_CTX with its SNI and ALPN
 * callbacks, the TLS transport's socket BIO, handshake, records, close and
 * error reporting) fed the fuzzer's bytes as everything a client sends.
 *
 * This drives the listener over a loopback TCP connection rather than a
 * memory BIO pair as OpenSSL's fuzz/server.c does: tether's TLS transport
 * reads the socket through its own BIO, and a memory BIO would skip the
 * code under test. As in OpenSSL's fuzzers, a deterministic random source
 * (below) makes the server's answers the same in every run, so the seeds
 * recorded from real clients (FUZZ_TLS_RECORD, below) complete their
 * handshakes when replayed and the fuzzer reaches the records after them:
 * data, alerts, close_notify, anything a client may send once connected.
 *
 * Input layout: byte 0 picks one of three listeners (see listeners[]),
 * byte 1 the chunk size (1..256) the rest is written in; the rest is the
 * client's byte stream. After it, the client half-closes, and tether must
 * close the connection within bounded loop iterations: a failed handshake
 * is reported through the listener's on_error at most once, with a code
 * and a detail, and an established connection ends with its on_close. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <tether/tether.h>

#include "net_helpers.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s (last report: %d %s)\n", __FILE__,        \
                    __LINE__, #cond, st.err, st.detail);                                           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define CLOSE_ROUNDS 400 /* loop iterations for tether to drop the connection */

#define CERT(f) TETHER_CERTS_DIR "/" f

/* The listeners: plain; TLS 1.2 only asking for an optional client
 * certificate, with ALPN and an SNI certificate; TLS 1.2-1.3 requiring a
 * client certificate, with an SNI certificate and no resumption. */
static const struct {
    tether_tls_client_auth auth;
    tether_tls_version max_version;
    const char *alpn;
    bool sni;
    bool no_resumption;
} listeners[] = {
    {TETHER_TLS_CLIENT_AUTH_NONE, TETHER_TLS_VERSION_1_3, NULL, false, false},
    {TETHER_TLS_CLIENT_AUTH_OPTIONAL, TETHER_TLS_VERSION_1_2, "fuzz/1,h2", true, false},
    {TETHER_TLS_CLIENT_AUTH_REQUIRED, TETHER_TLS_VERSION_1_3, "h2", true, true},
};
#define N_LISTENERS (sizeof listeners / sizeof listeners[0])

/* ---- a deterministic random source --------------------------------------
 *
 * An OpenSSL provider whose random generator returns 1, 2, 3, ... for every
 * request (as OpenSSL's own fuzz/fuzz_rand.c does), installed as the DRBG
 * type before anything draws a random number. The server's random, key
 * share, session ids and signatures are then the same in every run, so a
 * recorded client's bytes complete the handshake again when replayed, and
 * the fuzzer reaches the records after it. For fuzzing only: the keys this
 * makes are public. */

static void *drng_newctx(void *provctx, void *parent, const OSSL_DISPATCH *parent_calls)
{
    (void)provctx;
    (void)parent;
    (void)parent_calls;
    int *state = OPENSSL_malloc(sizeof *state);
    if (state != NULL) {
        *state = EVP_RAND_STATE_UNINITIALISED;
    }
    return state;
}

static void drng_freectx(void *vrng)
{
    OPENSSL_free(vrng);
}

static int drng_instantiate(void *vrng, unsigned int strength, int prediction_resistance,
                            const unsigned char *pstr, size_t pstr_len, const OSSL_PARAM params[])
{
    (void)strength;
    (void)prediction_resistance;
    (void)pstr;
    (void)pstr_len;
    (void)params;
    *(int *)vrng = EVP_RAND_STATE_READY;
    return 1;
}

static int drng_uninstantiate(void *vrng)
{
    *(int *)vrng = EVP_RAND_STATE_UNINITIALISED;
    return 1;
}

static int drng_generate(void *vrng, unsigned char *out, size_t outlen, unsigned int strength,
                         int prediction_resistance, const unsigned char *adin, size_t adinlen)
{
    (void)vrng;
    (void)strength;
    (void)prediction_resistance;
    (void)adin;
    (void)adinlen;
    for (size_t i = 0; i < outlen; i++) {
        out[i] = (unsigned char)(i + 1);
    }
    return 1;
}

static int drng_enable_locking(void *vrng)
{
    (void)vrng;
    return 1;
}

static int drng_get_ctx_params(void *vrng, OSSL_PARAM params[])
{
    OSSL_PARAM *p = OSSL_PARAM_locate(params, OSSL_RAND_PARAM_STATE);
    if (p != NULL && !OSSL_PARAM_set_int(p, *(int *)vrng)) {
        return 0;
    }
    p = OSSL_PARAM_locate(params, OSSL_RAND_PARAM_STRENGTH);
    if (p != NULL && !OSSL_PARAM_set_uint(p, 256)) {
        return 0;
    }
    p = OSSL_PARAM_locate(params, OSSL_RAND_PARAM_MAX_REQUEST);
    if (p != NULL && !OSSL_PARAM_set_size_t(p, 1u << 16)) {
        return 0;
    }
    return 1;
}

static const OSSL_PARAM *drng_gettable_ctx_params(void *vrng, void *provctx)
{
    (void)vrng;
    (void)provctx;
    static const OSSL_PARAM known[] = {
        OSSL_PARAM_int(OSSL_RAND_PARAM_STATE, NULL),
        OSSL_PARAM_uint(OSSL_RAND_PARAM_STRENGTH, NULL),
        OSSL_PARAM_size_t(OSSL_RAND_PARAM_MAX_REQUEST, NULL),
        OSSL_PARAM_END,
    };
    return known;
}

/* OpenSSL's dispatch tables hold functions as void (*)(void). */
#define DRNG_FN(f) ((void (*)(void))(void *)(f))

static const OSSL_DISPATCH drng_functions[] = {
    {OSSL_FUNC_RAND_NEWCTX, DRNG_FN(drng_newctx)},
    {OSSL_FUNC_RAND_FREECTX, DRNG_FN(drng_freectx)},
    {OSSL_FUNC_RAND_INSTANTIATE, DRNG_FN(drng_instantiate)},
    {OSSL_FUNC_RAND_UNINSTANTIATE, DRNG_FN(drng_uninstantiate)},
    {OSSL_FUNC_RAND_GENERATE, DRNG_FN(drng_generate)},
    {OSSL_FUNC_RAND_ENABLE_LOCKING, DRNG_FN(drng_enable_locking)},
    {OSSL_FUNC_RAND_GETTABLE_CTX_PARAMS, DRNG_FN(drng_gettable_ctx_params)},
    {OSSL_FUNC_RAND_GET_CTX_PARAMS, DRNG_FN(drng_get_ctx_params)},
    {0, NULL},
};

static const OSSL_ALGORITHM drng_algorithms[] = {
    {"fuzz", "provider=tether-fuzz-rand", drng_functions, NULL},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM *drng_query(void *provctx, int operation_id, int *no_cache)
{
    (void)provctx;
    *no_cache = 0;
    return operation_id == OSSL_OP_RAND ? drng_algorithms : NULL;
}

static const OSSL_DISPATCH drng_provider[] = {
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, DRNG_FN(drng_query)},
    {0, NULL},
};

static int drng_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                              const OSSL_DISPATCH **out, void **provctx)
{
    (void)handle;
    (void)in;
    *out = drng_provider;
    *provctx = NULL;
    return 1;
}

static OSSL_PROVIDER *drng_prov;

static void drng_unload(void)
{
    OSSL_PROVIDER_unload(drng_prov);
}

static void deterministic_random(void)
{
    if (!OSSL_PROVIDER_add_builtin(NULL, "tether-fuzz-rand", drng_provider_init) ||
        !RAND_set_DRBG_type(NULL, "fuzz", NULL, NULL, NULL) ||
        (drng_prov = OSSL_PROVIDER_try_load(NULL, "tether-fuzz-rand", 1)) == NULL) {
        fprintf(stderr, "fuzz_tls_server: cannot install the deterministic random source\n");
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    /* Registered after OpenSSL's own exit handler, so it runs first. */
    atexit(drng_unload);
}

static struct {
    tether_loop *loop;
    tether_listener *l[N_LISTENERS];
    int port[N_LISTENERS];
    unsigned reports; /* on_error calls for this input */
    unsigned accepts; /* on_accept calls for this input */
    unsigned closes;  /* on_close calls of accepted connections */
    unsigned msgs;    /* messages delivered */
    int err;
    char detail[TETHER_ERROR_MSG_MAX];
} st;

static void on_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l;
    (void)ud;
    st.reports++;
    st.err = err;
    snprintf(st.detail, sizeof st.detail, "%s", detail != NULL ? detail : "(null)");
    FUZZ_CHECK(err < 0);
    FUZZ_CHECK(strcmp(tether_err_name(err), tether_err_name(-100000)) != 0);
    FUZZ_CHECK(detail != NULL && detail[0] != '\0');
}

static void on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    /* A completed handshake: the seeds recorded with the deterministic
     * random source get here, and then the fuzzer reaches the records. */
    st.accepts++;
    tether_conn_set_userdata(c, &st);
}

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    (void)data;
    (void)len;
    FUZZ_CHECK(ud == &st && st.closes == 0);
    st.msgs++;
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    /* Connections that fail their handshake end here too, before any
     * on_accept, with no user data. */
    if (ud == &st) {
        st.closes++;
        FUZZ_CHECK(reason == TETHER_OK || tether_conn_last_error(c)[0] != '\0');
    }
}

static void global_init(void)
{
    if (tether_loop_new(&st.loop, NULL) != TETHER_OK) {
        abort();
    }
    for (size_t i = 0; i < N_LISTENERS; i++) {
        tether_tls_opts to;
        tether_conn_opts co;
        tether_listen_opts lo;
        tether_tls_config *tls;
        tether_error err;

        tether_tls_opts_init(&to);
        to.cert_file = CERT("server.pem");
        to.key_file = CERT("server.key");
        to.ca_file = CERT("ca.pem");
        to.client_auth = listeners[i].auth;
        to.max_version = listeners[i].max_version;
        to.alpn = listeners[i].alpn;
        to.no_resumption = listeners[i].no_resumption;
        if (tether_tls_config_new(&tls, &to, &err) != TETHER_OK ||
            (listeners[i].sni && tether_tls_config_add_cert(tls, CERT("alt.pem"), CERT("alt.key"),
                                                            &err) != TETHER_OK)) {
            fprintf(stderr, "fuzz_tls_server: TLS configuration: %s\n", err.message);
            abort();
        }
        tether_conn_opts_init(&co);
        co.tls = tls;
        co.on_message = on_message;
        co.on_close = on_close;
        tether_listen_opts_init(&lo);
        lo.conn_opts = &co;
        lo.on_accept = on_accept;
        lo.on_error = on_error;
        if (tether_listen(&st.l[i], st.loop, "tls://127.0.0.1:0", &lo, &err) != TETHER_OK) {
            fprintf(stderr, "fuzz_tls_server: listen: %s\n", err.message);
            abort();
        }
        tether_tls_config_unref(tls); /* the listener holds its own reference */
        st.port[i] = tether_listener_port(st.l[i]);
    }
}

static void run_once(void)
{
    int rv = tether_loop_run_once(st.loop, 0);
    FUZZ_CHECK(rv >= 0);
}

/* Reads what the server sent; returns true once it closed the connection. */
static bool drain(int fd)
{
    uint8_t b[16384];
    for (;;) {
        ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (n > 0) {
            continue;
        }
        if (n == 0) {
            return true;
        }
        return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    }
}

/* ---- recording seeds -----------------------------------------------------
 *
 * FUZZ_TLS_RECORD=DIR makes the target record complete client sessions
 * instead of fuzzing: an OpenSSL client (through a BIO pair, so that every
 * byte it sends is seen) does a handshake with each listener, sends two
 * len32 messages and a close_notify, and what it sent is written to DIR as
 * a seed. With the deterministic random source the server answers the
 * replayed bytes exactly as it did here. */

static const struct {
    const char *name;
    size_t which;
    int version;
    const char *cert; /* client certificate (certs/NAME.pem and .key) or NULL */
    const char *sni;
    const unsigned char *alpn;
    unsigned alpn_len;
    bool close_notify;
} sessions[] = {
    {"session-tls13", 0, TLS1_3_VERSION, NULL, "localhost", NULL, 0, true},
    {"session-tls12", 0, TLS1_2_VERSION, NULL, "localhost", NULL, 0, true},
    {"session-tls13-no-close-notify", 0, TLS1_3_VERSION, NULL, NULL, NULL, 0, false},
    {"session-tls12-client-cert-alpn", 1, TLS1_2_VERSION, "client", "alt.localhost",
     (const unsigned char *)"\x06"
                            "fuzz/1",
     7, true},
    {"session-tls13-client-cert-required", 2, TLS1_3_VERSION, "client", "localhost",
     (const unsigned char *)"\x02"
                            "h2",
     3, true},
};

static void record_one(const char *dir, size_t k)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl;
    BIO *inner = NULL;
    BIO *net = NULL;
    uint8_t *rec = NULL;
    size_t rec_len = 0;
    struct sockaddr_in sin;
    char path[4096];
    int fd;
    int phase = 0; /* 0 handshake, 1 data sent, 2 close_notify sent */
    FILE *f;

    if (ctx == NULL) {
        abort();
    }
    st.reports = st.accepts = st.closes = st.msgs = 0;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(ctx, sessions[k].version);
    SSL_CTX_set_max_proto_version(ctx, sessions[k].version);
    if (sessions[k].cert != NULL) {
        char cert[512];
        char key[512];
        snprintf(cert, sizeof cert, "%s/%s.pem", TETHER_CERTS_DIR, sessions[k].cert);
        snprintf(key, sizeof key, "%s/%s.key", TETHER_CERTS_DIR, sessions[k].cert);
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
            abort();
        }
    }
    if (sessions[k].alpn != NULL) {
        SSL_CTX_set_alpn_protos(ctx, sessions[k].alpn, sessions[k].alpn_len);
    }
    ssl = SSL_new(ctx);
    if (ssl == NULL || BIO_new_bio_pair(&inner, 0, &net, 0) != 1) {
        abort();
    }
    SSL_set_bio(ssl, inner, inner);
    SSL_set_connect_state(ssl);
    if (sessions[k].sni != NULL) {
        SSL_set_tlsext_host_name(ssl, sessions[k].sni);
    }

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)st.port[sessions[k].which]);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || fuzz_connect_eintr(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        abort();
    }
    for (int i = 0; i < 2000 && phase < 3; i++) {
        uint8_t b[16384];
        int n;
        if (phase == 0 && SSL_do_handshake(ssl) == 1) {
            static const uint8_t msgs[] = "\0\0\0\5hello\0\0\0\0";
            SSL_write(ssl, msgs, (int)sizeof msgs - 1);
            phase = 1;
        } else if (phase == 1) {
            if (sessions[k].close_notify) {
                SSL_shutdown(ssl);
            }
            phase = 2;
        } else if (phase == 2 && BIO_ctrl_pending(net) == 0 && i > 100) {
            phase = 3;
        }
        while ((n = BIO_read(net, b, (int)sizeof b)) > 0) {
            if (send(fd, b, (size_t)n, MSG_NOSIGNAL) != n) {
                abort();
            }
            rec = realloc(rec, rec_len + (size_t)n);
            memcpy(rec + rec_len, b, (size_t)n);
            rec_len += (size_t)n;
        }
        tether_loop_run_once(st.loop, 1);
        ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (r > 0) {
            BIO_write(net, b, (int)r);
        }
    }
    if (phase < 2) {
        fprintf(stderr, "fuzz_tls_server: %s: the handshake did not complete\n", sessions[k].name);
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s", dir, sessions[k].name);
    f = fopen(path, "wb");
    if (f == NULL || fputc((int)sessions[k].which, f) == EOF || fputc(255, f) == EOF ||
        fwrite(rec, 1, rec_len, f) != rec_len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    printf("recorded %s (%zu bytes): %u accepted, %u messages, %u closed, %u reports\n", path,
           rec_len + 2, st.accepts, st.msgs, st.closes, st.reports);
    free(rec);
    close(fd);
    for (int i = 0; i < 50; i++) {
        tether_loop_run_once(st.loop, 1);
    }
    SSL_free(ssl);
    BIO_free(net);
    SSL_CTX_free(ctx);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("FUZZ_TLS_RECORD");
    (void)argc;
    (void)argv;
    deterministic_random();
    global_init();
    if (dir != NULL) {
        for (size_t k = 0; k < sizeof sessions / sizeof sessions[0]; k++) {
            record_one(dir, k);
        }
        /* Without the leak check at exit: the loop and listeners stay. */
        fflush(stdout);
        _exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_in sin;
    size_t which;
    size_t chunk;
    bool gone = false;
    int one = 1;
    int fd;
    int i;

    if (size < 2) {
        return 0;
    }
    which = data[0] % N_LISTENERS;
    chunk = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    st.reports = st.accepts = st.closes = st.msgs = 0;
    st.err = 0;
    st.detail[0] = '\0';

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)st.port[which]);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || fuzz_connect_eintr(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        perror("fuzz_tls_server: connect");
        abort();
    }
    /* Each chunk its own segment, so the server sees the cuts. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    while (size > 0 && !gone) {
        size_t n = chunk < size ? chunk : size;
        ssize_t w = send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            break; /* the server dropped us */
        }
        if (w > 0) {
            data += w;
            size -= (size_t)w;
        }
        for (i = 0; i < 3; i++) {
            run_once();
        }
        gone = drain(fd);
    }

    /* The end of the client's stream: the server must let go. */
    shutdown(fd, SHUT_WR);
    for (i = 0; i < CLOSE_ROUNDS && !gone; i++) {
        run_once();
        gone = drain(fd);
        if (!gone && i >= CLOSE_ROUNDS / 2) {
            usleep(1000); /* a slow machine: give the kernel time */
        }
    }
    FUZZ_CHECK(gone);
    /* Let the connection's deferred work (report, free) run. */
    for (i = 0; i < 4; i++) {
        run_once();
    }
    FUZZ_CHECK(st.reports <= 1 && st.accepts <= 1);
    FUZZ_CHECK(st.closes == st.accepts); /* an established connection ended too */
    close(fd);
    return 0;
}
