/* libFuzzer target for the TLS server path: a real tether TLS listener on
 * 127.0.0.1 (tether_listen, the listener's SSL_CTX with its SNI and ALPN
 * callbacks, the TLS transport's socket BIO, handshake and error reporting)
 * fed the fuzzer's bytes as everything a client sends.
 *
 * This drives the listener over a loopback TCP connection rather than a
 * memory BIO pair as OpenSSL's fuzz/server.c does: tether's TLS transport
 * reads the socket itself, and a memory BIO would skip the code under
 * test. Without a deterministic random source the fuzzer cannot complete a
 * handshake (the server's key share is fresh each time), so what it
 * reaches is everything up to the client's Finished: record parsing,
 * ClientHello (SNI, ALPN, versions, groups, ciphers), and with TLS 1.2 the
 * client's plaintext Certificate, which the listeners that ask for one
 * verify with tether's verify callback. The data path after the handshake
 * is covered by the unit tests and fuzz_conn (same read path).
 *
 * Input layout: byte 0 picks one of three listeners (see listeners[]),
 * byte 1 the chunk size (1..256) the rest is written in; the rest is the
 * client's byte stream. After it, the client half-closes, and tether must
 * close the connection within bounded loop iterations, reporting a failed
 * handshake through the listener's on_error with a detail. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tether/tether.h>

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

static struct {
    tether_loop *loop;
    tether_listener *l[N_LISTENERS];
    int port[N_LISTENERS];
    unsigned reports; /* on_error calls for this input */
    unsigned accepts; /* on_accept calls for this input */
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
    /* A completed handshake: possible only with a replayed deterministic
     * client, but then the connection is closed like any other. */
    st.accepts++;
    tether_conn_abort(c);
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
    if (st.loop == NULL) {
        global_init();
    }
    which = data[0] % N_LISTENERS;
    chunk = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    st.reports = st.accepts = 0;
    st.err = 0;
    st.detail[0] = '\0';

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)st.port[which]);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
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
    close(fd);
    return 0;
}
