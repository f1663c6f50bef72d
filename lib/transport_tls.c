/* SPDX-License-Identifier: MIT */
/* The TLS transport: OpenSSL 3 over a connected, non-blocking socket (the
 * handshake, reading, writing and shutdown). Socket I/O goes through the
 * BIO of tls_bio.c; failures are classified by tls_errors.c.
 *
 * Writing. SSL_write runs in partial-write mode with at most one record's
 * plaintext (16 KiB) per call, so each call makes exactly one record. Large
 * iovecs are encrypted in place; runs of small ones (zero-copy messages,
 * headers) are first gathered into a per-thread staging buffer so that
 * records stay full, taking from a large iovec behind them only what keeps
 * the rest of it in whole records (tls_record_len). Bytes are reported as
 * written only once OpenSSL has accepted them. When a record could not be
 * flushed (WANT_WRITE) its bytes stay in the connection's queue and the
 * next call must repeat SSL_write with at least as many bytes, the same
 * ones in front (OpenSSL's retry rule; SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
 * allows them to have moved): `wpend` remembers that length.
 *
 * Reading. SSL_read with read-ahead fills the first iovec with as many
 * records as OpenSSL holds or one recv() brings. has_pending() tells the
 * connection about decrypted or complete records held inside OpenSSL,
 * which epoll cannot see. */
#include "tls_transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* In place in the connection's block: 16 bytes past its plain
 * transport's on a server, which with the 232-byte connection make one
 * 248-byte block (a 256-byte malloc chunk, where the two blocks once took
 * 240 + 64), and 24 on a client, which also keeps its session cache key.
 * The loop's TLS state is found through the SSL's BIO, the configuration
 * and a server's SNI certificates through its SSL_CTX, the detail of a
 * failure in its ex_data; the peer's first bytes, needed only while
 * handshaking, share their bytes with what is needed only after. */
static_assert(sizeof(struct tls_transport) <= TETHER__TLS_TRANSPORT_SIZE,
              "keep the TLS transport small");
static_assert(offsetof(struct tls_transport, key) <= TETHER__TLS_SERVER_TRANSPORT_SIZE,
              "a server's TLS transport ends before the client's key");

/* ---- per-thread staging buffer ----------------------------------------- */

static pthread_key_t g_stage_key;
static pthread_once_t g_stage_once = PTHREAD_ONCE_INIT;
static _Thread_local uint8_t *t_stage;

static void stage_key_init(void)
{
    pthread_key_create(&g_stage_key, free);
}

static uint8_t *stage_buf(void)
{
    if (TETHER__LIKELY(t_stage != NULL)) {
        return t_stage;
    }
    pthread_once(&g_stage_once, stage_key_init);
    uint8_t *b = malloc(TETHER__TLS_RECORD);
    if (b != NULL) {
        /* The key's destructor frees it when the thread exits. */
        pthread_setspecific(g_stage_key, b);
        t_stage = b;
    }
    return b;
}

/* The generation of SSL_CTXs a server's transport holds while it
 * handshakes: that of its SSL_CTX, the default one or the one SNI chose. */
static inline struct tether__tls_gen *tls_gen(const struct tls_transport *t)
{
    return tether__tls_ctx_gen(SSL_get_SSL_CTX(t->ssl));
}

/* ---- callbacks from OpenSSL -------------------------------------------- */

int tether__tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_transport *t = tether__tls_of(ssl);
    if (t == NULL || (t->base.flags & TF_SERVER) || t->key == NULL ||
        tether__tls_cfg(t)->no_resumption) {
        return 0;
    }
    tether__tls_cache_put(tether__tls_cfg(t), t->key, sess);
    return 1; /* the cache keeps the reference */
}

int tether__tls_client_cert_cb(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
    (void)x509;
    (void)pkey;
    /* Called only when the server asks for a certificate and none is
     * configured: remember it, to explain the server's refusal. */
    struct tls_transport *t = tether__tls_of(ssl);
    if (t != NULL) {
        t->base.flags |= TF_CERT_REQUESTED;
    }
    return 0;
}

int tether__tls_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                               const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const tether_tls_config *cfg = arg;
    unsigned char *sel = NULL;
    /* Server preference: the first of our protocols that the client offers. */
    if (SSL_select_next_proto(&sel, outlen, cfg->alpn, cfg->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

int tether__tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    const struct tether__tls_gen *g = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    for (size_t i = 0; i < g->nsni; i++) {
        if (X509_check_host(g->sni[i].leaf, name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, g->sni[i].ctx);
            /* SSL_set_SSL_CTX() replaced the certificate slots, and the
             * signature algorithms set for the default key with them. */
            if (tether__tls_ctx_cfg(g->sni[i].ctx)->client_auth == TETHER_TLS_CLIENT_AUTH_NONE) {
                tether__tls_server_sigalgs(ssl);
            }
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

/* ---- transport operations ---------------------------------------------- */

/* SSL_get_error() reads the thread's error queue, which must hold nothing
 * from before the call it judges. ERR_clear_error() wipes all 16 slots of
 * the queue (some 400 instructions); peeking first makes the usual empty
 * queue cost a fifth of that on every record read and written and every
 * handshake step. */
static inline void tls_clear_errors(void)
{
    if (TETHER__UNLIKELY(ERR_peek_error() != 0)) {
        ERR_clear_error();
    }
}

/* Clients: notes the server's CertificateRequest and the first message it
 * sends after the handshake (a TLS 1.3 session ticket), for
 * tls_await_verdict(). Removed once the handshake is complete, since
 * OpenSSL calls it for every record. */
static void tls_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                       SSL *ssl, void *arg)
{
    (void)version;
    (void)arg;
    if (write_p || content_type != SSL3_RT_HANDSHAKE || len == 0) {
        return;
    }
    struct tls_transport *t = tether__tls_of(ssl);
    if (t == NULL) {
        return;
    }
    uint8_t type = ((const uint8_t *)buf)[0];
    if (type == SSL3_MT_CERTIFICATE_REQUEST) {
        t->base.flags |= TF_CR_SEEN;
    } else if (type == SSL3_MT_NEWSESSION_TICKET) {
        t->base.flags |= TF_POST_HS;
    }
}

/* TLS 1.3 clients that were asked for a certificate: the server judges it
 * after our side of the handshake is done, and says so with its first
 * message: an alert that refuses it, or session tickets (or data) once it
 * has accepted it. Until then the connection is not reported up, so that a
 * refusal fails the handshake as it does with TLS 1.2 instead of closing a
 * connection that on_connect called established. TETHER_OK once the
 * server has accepted, TETHER_EAGAIN while waiting, or the refusal. */
static int tls_await_verdict(struct tls_transport *t)
{
    if ((t->base.flags & (TF_SERVER | TF_CR_SEEN)) != TF_CR_SEEN ||
        tether__tls_cfg(t)->no_client_cert_wait || SSL_version(t->ssl) < TLS1_3_VERSION ||
        (t->base.flags & TF_POST_HS)) {
        return TETHER_OK;
    }
    uint8_t b;
    tls_clear_errors();
    int r = SSL_peek(t->ssl, &b, 1);
    if (r > 0 || (t->base.flags & TF_POST_HS)) {
        return TETHER_OK; /* data (kept for the first read) or a ticket */
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        tls_clear_errors();
        t->want = e == SSL_ERROR_WANT_READ ? TETHER_EV_READ : TETHER_EV_WRITE;
        return TETHER_EAGAIN;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        return TETHER_OK; /* accepted, then closed: the first read says so */
    }
    return tether__tls_fail(t, e);
}

static int tls_handshake_step(struct tls_transport *t, bool *done)
{
    *done = false;
    if (t->base.flags & TF_HS_DONE) {
        *done = true;
        return TETHER_OK;
    }
    tether__tls_bind(t);
    if (!(t->base.flags & TF_OWN_DONE)) {
        tls_clear_errors();
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                t->want = TETHER_EV_READ;
                return TETHER_EAGAIN;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                t->want = TETHER_EV_WRITE;
                return TETHER_EAGAIN;
            }
            return tether__tls_fail(t, e);
        }
        t->want = 0;
        const tether_tls_config *cfg = tether__tls_cfg(t);
        if (!(t->base.flags & TF_SERVER) && cfg->alpn != NULL) {
            const unsigned char *p = NULL;
            unsigned int pl = 0;
            SSL_get0_alpn_selected(t->ssl, &p, &pl);
            if (pl == 0) {
                tether__tls_set_err(t,
                                    "ALPN mismatch: the server selected none of our protocols (%s)",
                                    cfg->alpn_text);
                return TETHER_EALPN;
            }
        }
        t->base.flags |= TF_OWN_DONE;
    }
    int rv = tls_await_verdict(t);
    if (rv != TETHER_OK) {
        return rv;
    }
    t->want = 0;
    if (!(t->base.flags & TF_SERVER)) {
        SSL_set_msg_callback(t->ssl, NULL);
    } else {
        /* The SNI certificates are only needed while handshaking. */
        tether__tls_gen_unref(tls_gen(t));
    }
    t->base.flags |= TF_HS_DONE;
    /* The peer's first bytes are no longer needed: their room becomes
     * the write, idle-list and deferred-error state, and
     * the BIO keeps no more. */
    t->nfirst = TLS_FIRST_MAX;
    t->wpend = 0;
    t->deferred = 0;
    tether__tls_idle_hs_done(t);
    *done = true;
    return TETHER_OK;
}

static int tls_handshake(struct tether_transport *tr, bool *done)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    int rv = tls_handshake_step(t, done);
    /* The next step runs when the socket is readable (or writable): the
     * peer may have answered by then. */
    t->base.flags &= (uint16_t)~TF_AWAIT;
    return rv;
}

static int tls_readv(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                     size_t *nread)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    (void)iovcnt;
    *nread = 0;
    if (t->deferred != 0) {
        return t->deferred;
    }
    if (t->base.flags & TF_RD_CLOSED) {
        /* The close_notify that came with the data of the previous call:
         * the end of the stream. */
        return TETHER_OK;
    }
    uint8_t *p = iov[0].iov_base;
    size_t cap = iov[0].iov_len;
    size_t got = 0;
    tether__tls_bind(t);
    t->base.flags &= (uint16_t) ~(TF_RD_DRAINED | TF_RD_WANTS_W);
    while (got < cap) {
        int want = cap - got > INT_MAX ? INT_MAX : (int)(cap - got);
        tls_clear_errors();
        int r = SSL_read(t->ssl, p + got, want);
        if (r > 0) {
            got += (size_t)r;
            if (!SSL_has_pending(t->ssl)) {
                /* OpenSSL holds nothing more; whatever the socket still has
                 * is reported by epoll. */
                break;
            }
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            t->base.flags |= TF_RD_DRAINED;
            break;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            t->base.flags |= TF_RD_WANTS_W;
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: a clean end of stream (0 bytes) once the data
             * before it has been delivered. If it came in the same read as
             * that data, OpenSSL has consumed it and epoll will never
             * report it again (the peer may well wait for our answer
             * without sending a FIN): remember it, and has_pending() makes
             * the connection come back for the end of the stream. */
            if (got > 0) {
                t->base.flags |= TF_RD_CLOSED;
            }
            break;
        }
        int rv = tether__tls_fail(t, e);
        if (got > 0) {
            t->deferred = (int8_t)rv;
            break;
        }
        return rv;
    }
    if (got > 0) {
        tether__tls_idle_touch(t); /* after the reads: see tls_idle.c */
    }
    *nread = got;
    if (got == 0 && (t->base.flags & (TF_RD_DRAINED | TF_RD_WANTS_W))) {
        return TETHER_EAGAIN;
    }
    return TETHER_OK;
}

/* One SSL_write of at most one record: TETHER_OK with *acc bytes accepted,
 * TETHER_EAGAIN when OpenSSL needs the socket (wpend is set: the next call
 * must present at least these n bytes again), or an error. */
static int tls_write_one(struct tls_transport *t, const uint8_t *buf, size_t n, size_t *acc)
{
    tls_clear_errors();
    int r = SSL_write(t->ssl, buf, (int)n);
    if (r > 0) {
        t->wpend = 0;
        *acc = (size_t)r;
        return TETHER_OK;
    }
    *acc = 0;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        if (e == SSL_ERROR_WANT_READ) {
            t->base.flags |= TF_WR_WANTS_R;
        }
        t->wpend = (uint16_t)n;
        return TETHER_EAGAIN;
    }
    int rv = tether__tls_fail(t, e);
    if (rv == TETHER_ECONNRESET && (t->base.flags & TF_HS_DONE)) {
        int arv = tether__tls_probe_alert(t);
        if (arv != 0) {
            rv = arv;
        }
    }
    return rv;
}

/* The length of the next record, which starts curlen bytes before the end
 * of iov[i]: a full record from a piece that holds one, else the piece
 * with the pieces behind it, up to a full record. A large piece behind
 * small ones is cut where the rest of it makes whole records, so that it
 * is written from where it is and only the cut is copied (a message's
 * header in front of a 64 KiB payload: a record of the header alone, as
 * a blocking program writes it, not 16 KiB staged); this takes no more
 * records than filling every record would. Never less than wpend, the
 * length OpenSSL holds encrypted from a call that could not finish. A
 * result not above curlen is written in place, a larger one staged. */
static size_t tls_record_len(const struct iovec *iov, int iovcnt, int i, size_t curlen,
                             size_t wpend)
{
    const size_t rec = TETHER__TLS_RECORD;
    if (curlen >= rec) {
        return rec;
    }
    size_t n = curlen;
    for (int j = i + 1; j < iovcnt && n < rec; j++) {
        size_t len = iov[j].iov_len;
        if (len >= rec) {
            size_t cut = len % rec;
            if (n + cut <= rec) {
                n += cut;
            }
            break;
        }
        n += TETHER__MIN(len, rec - n);
    }
    if (n < wpend) {
        /* The pieces moved since that call: fill the record instead. */
        n = curlen;
        for (int j = i + 1; j < iovcnt && n < rec; j++) {
            n += TETHER__MIN(iov[j].iov_len, rec - n);
        }
    }
    return n;
}

/* tls_writev() without the idle touch. */
static int tls_write_records(struct tls_transport *t, const struct iovec *iov, int iovcnt,
                             size_t *nwritten)
{
    tether__tls_bind(t);
    t->base.flags &= (uint16_t)~TF_WR_WANTS_R;
    if (iovcnt == 1 && iov[0].iov_len - 1 < TETHER__TLS_RECORD && iov[0].iov_len >= t->wpend) {
        /* One piece that makes one record (a reply, a single message):
         * what the loop below would do, without the cursor. */
        int rv = tls_write_one(t, iov[0].iov_base, iov[0].iov_len, nwritten);
        return rv == TETHER_OK && *nwritten == 0 ? TETHER_EAGAIN : rv;
    }
    size_t done = 0;
    int i = 0;
    size_t off = 0; /* position inside iov[i] */
    int rv = TETHER_OK;
    for (;;) {
        while (i < iovcnt && iov[i].iov_len == off) {
            i++;
            off = 0;
        }
        if (i == iovcnt) {
            break;
        }
        const uint8_t *cur = (const uint8_t *)iov[i].iov_base + off;
        size_t curlen = iov[i].iov_len - off;
        size_t n = tls_record_len(iov, iovcnt, i, curlen, t->wpend);
        size_t acc = 0;
        if (n <= curlen) {
            /* A record straight from the caller's memory. */
            rv = tls_write_one(t, cur, n, &acc);
        } else {
            /* Gather pieces into one record. */
            uint8_t *st = stage_buf();
            if (st == NULL) {
                rv = TETHER_ENOMEM;
                tether__tls_set_err(t, "out of memory for the TLS staging buffer");
                break;
            }
            size_t got = 0;
            int gi = i;
            size_t goff = off;
            while (got < n) {
                size_t k = TETHER__MIN(iov[gi].iov_len - goff, n - got);
                memcpy(st + got, (const uint8_t *)iov[gi].iov_base + goff, k);
                got += k;
                goff += k;
                if (goff == iov[gi].iov_len) {
                    gi++;
                    goff = 0;
                }
            }
            rv = tls_write_one(t, st, n, &acc);
        }
        if (rv != TETHER_OK) {
            break;
        }
        done += acc;
        /* Advance the cursor by what OpenSSL accepted. */
        while (acc > 0) {
            size_t k = TETHER__MIN(acc, iov[i].iov_len - off);
            off += k;
            acc -= k;
            if (off == iov[i].iov_len && acc > 0) {
                i++;
                off = 0;
            }
        }
    }
    if (done > 0) {
        if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
            t->deferred = (int8_t)rv; /* report after the bytes that did go */
        }
        *nwritten = done;
        return TETHER_OK;
    }
    return rv == TETHER_OK ? TETHER_EAGAIN : rv;
}

static int tls_writev(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                      size_t *nwritten)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    *nwritten = 0;
    if (t->deferred != 0) {
        return t->deferred;
    }
    int rv = tls_write_records(t, iov, iovcnt, nwritten);
    if (*nwritten > 0) {
        tether__tls_idle_touch(t); /* after the writes: see tls_idle.c */
    }
    return rv;
}

static unsigned tls_want_events(const struct tether_transport *tr)
{
    const struct tls_transport *t = (const struct tls_transport *)tr;
    if (!(t->base.flags & TF_HS_DONE)) {
        return t->want;
    }
    unsigned ev = t->want;
    if (t->base.flags & TF_RD_WANTS_W) {
        ev |= TETHER_EV_WRITE;
    }
    if (t->base.flags & TF_WR_WANTS_R) {
        ev |= TETHER_EV_READ;
    }
    return ev;
}

static bool tls_has_pending(const struct tether_transport *tr)
{
    const struct tls_transport *t = (const struct tls_transport *)tr;
    if (t->ssl == NULL || !(t->base.flags & TF_HS_DONE) || t->deferred != 0) {
        return false;
    }
    if (t->base.flags & TF_RD_CLOSED) {
        return true; /* the end of the stream, which epoll cannot see */
    }
    if (SSL_pending(t->ssl) > 0) {
        return true;
    }
    /* Read-ahead may hold more records; after WANT_READ what it holds is
     * an incomplete record that needs the socket. */
    return !(t->base.flags & TF_RD_DRAINED) && SSL_has_pending(t->ssl);
}

static int tls_shutdown(struct tether_transport *tr, bool *done)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    *done = false;
    if (t->base.flags & TF_HS_DONE) {
        tether__tls_idle_touch(t);
        tether__tls_bind(t);
        tls_clear_errors();
        int r = SSL_shutdown(t->ssl);
        if (r < 0) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) {
                t->want = TETHER_EV_WRITE;
                return TETHER_EAGAIN;
            }
            if (e == SSL_ERROR_WANT_READ) {
                t->want = TETHER_EV_READ;
                return TETHER_EAGAIN;
            }
            t->want = 0;
            *done = true;
            return tether__tls_fail(t, e);
        }
        t->want = 0; /* (before the handshake is done, want is its own) */
    }
    /* close_notify is out: end the TCP stream too, as a plain connection
     * would, and let the connection drain the peer's remaining input. */
    *done = true;
    if (shutdown(tr->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
        t->base.last_errno = errno;
        tether__tls_set_err(t, "shutdown: %s", strerror(errno));
        return tether__errno_to_err(errno);
    }
    return TETHER_OK;
}

static void tls_destroy(struct tether_transport *tr)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    tether__tls_idle_remove(t);
    tether_tls_config *cfg = NULL; /* (none taken without an SSL) */
    if (t->ssl != NULL) {
        cfg = tether__tls_cfg(t);
        if ((t->base.flags & (TF_SERVER | TF_HS_DONE)) == TF_SERVER) {
            tether__tls_gen_unref(tls_gen(t)); /* held while handshaking */
        }
        tether__tls_err_free(t);
        if ((t->base.flags & TF_HS_DONE) && t->deferred == 0 &&
            SSL_get_shutdown(t->ssl) == SSL_RECEIVED_SHUTDOWN) {
            /* The peer said close_notify and we are closing without having
             * answered: answer, best effort, so that its read ends cleanly. */
            ERR_clear_error();
            tether__tls_bind(t);
            SSL_shutdown(t->ssl);
        }
        SSL_free(t->ssl); /* and its reference to the loop's BIO */
    }
    ERR_clear_error();
    if (tr->fd >= 0) {
        close(tr->fd);
    }
    if (!(t->base.flags & TF_SERVER)) {
        free(t->key);
    }
    tether_tls_config_unref(cfg);
    /* (t is in the connection's block: nothing of it to free.) */
}

static const char *tls_last_error(const struct tether_transport *tr)
{
    const struct tls_transport *t = (const struct tls_transport *)tr;
    return tether__tls_err(t);
}

static const struct tether_transport_ops tls_ops = {
    .name = "tls",
    .handshake = tls_handshake,
    .readv = tls_readv,
    .writev = tls_writev,
    .want_events = tls_want_events,
    .has_pending = tls_has_pending,
    .shutdown = tls_shutdown,
    .destroy = tls_destroy,
    .last_error = tls_last_error,
};

/* ---- creation ---------------------------------------------------------- */

static bool is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Client set-up: SNI, what to verify, and a session to resume. */
static int tls_client_setup(struct tls_transport *t, const char *host)
{
    tether_tls_config *cfg = tether__tls_cfg(t);
    const char *name = cfg->server_name != NULL ? cfg->server_name : host;
    if (name == NULL || name[0] == '\0') {
        tether__tls_set_err(t, "no host name to verify the server's certificate against");
        return TETHER_EINVAL;
    }
    bool ip = is_ip_literal(name);
    if (!ip && SSL_set_tlsext_host_name(t->ssl, name) != 1) {
        tether__tls_set_err(t, "invalid server name '%s'", name);
        return TETHER_EINVAL;
    }
    if (cfg->insecure) {
        /* Nothing is verified, but a verify hook must still be able to
         * refuse: OpenSSL ignores a failed verification under
         * SSL_VERIFY_NONE, and tls_peer.c's callback accepts whatever the
         * hook accepts. */
        SSL_set_verify(t->ssl, cfg->verify_cb != NULL ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       cfg->verify_cb != NULL ? tether__tls_verify_cb : NULL);
    } else {
        X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
        X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok =
            ip ? X509_VERIFY_PARAM_set1_ip_asc(p, name) : X509_VERIFY_PARAM_set1_host(p, name, 0);
        if (ok != 1) {
            tether__tls_set_err(t, "cannot verify against the name '%s'", name);
            return TETHER_EINVAL;
        }
        SSL_set_verify(t->ssl, SSL_VERIFY_PEER, tether__tls_verify_cb);
    }
    if (!cfg->no_resumption) {
        /* Sessions are resumed per target: the host as dialled, the port
         * and the name verified. */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int port = 0;
        if (getpeername(t->base.fd, (struct sockaddr *)&ss, &sl) == 0) {
            port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
        size_t kl = strlen(host != NULL ? host : "") + strlen(name) + 16;
        t->key = malloc(kl);
        if (t->key == NULL) {
            return TETHER_ENOMEM;
        }
        snprintf(t->key, kl, "%s:%d|%s", host != NULL ? host : "", port, name);
        SSL_SESSION *s = tether__tls_cache_get(cfg, t->key);
        if (s != NULL) {
            SSL_set_session(t->ssl, s);
            SSL_SESSION_free(s);
        }
    }
    if (!cfg->no_client_cert_wait) {
        SSL_set_msg_callback(t->ssl, tls_msg_cb);
    }
    SSL_set_connect_state(t->ssl);
    return TETHER_OK;
}

static void tls_server_setup(struct tls_transport *t)
{
    int mode = SSL_VERIFY_NONE;
    const tether_tls_config *cfg = tether__tls_cfg(t);
    if (cfg->client_auth == TETHER_TLS_CLIENT_AUTH_OPTIONAL) {
        mode = SSL_VERIFY_PEER;
    } else if (cfg->client_auth == TETHER_TLS_CLIENT_AUTH_REQUIRED) {
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    SSL_set_verify(t->ssl, mode, mode != SSL_VERIFY_NONE ? tether__tls_verify_cb : NULL);
    if (mode == SSL_VERIFY_NONE) {
        tether__tls_server_sigalgs(t->ssl); /* (less memory per connection) */
    }
    if (cfg->alpn != NULL) {
        /* SSL_new() copied the SSL_CTX's protocol list, which only a
         * client sends: a server selects from cfg->alpn in
         * tether__tls_alpn_select_cb. The copy would stay with every
         * accepted connection (32 bytes of heap, issue #12). */
        SSL_set_alpn_protos(t->ssl, NULL, 0);
    }
    SSL_set_accept_state(t->ssl);
}

int tether__tls_transport_init(struct tether_transport *room, tether_loop *loop,
                               tether_tls_config *cfg, int fd, const char *host, bool server)
{
    struct tls_idle *idle = tether__tls_idle_get(loop);
    if (idle == NULL) {
        close(fd);
        return TETHER_ENOMEM;
    }
    struct tls_transport *t = (struct tls_transport *)room;
    /* (A server's room ends before the client's key.) */
    memset(t, 0, server ? TETHER__TLS_SERVER_TRANSPORT_SIZE : sizeof *t);
    t->base.ops = &tls_ops;
    t->base.fd = fd;
    struct tether__tls_gen *g = tether__tls_gen_get(cfg);
    t->ssl = SSL_new(g->ctx); /* which holds its SSL_CTX */
    if (t->ssl != NULL) {
        tether_tls_config_ref(cfg); /* t's, found through the SSL_CTX (tether__tls_cfg) */
    }
    if (server) {
        /* Just accepted: the client's first flight (ClientHello) usually
         * comes after the accept, so the first step does not try the
         * socket; a ClientHello already there is reported by epoll at
         * once. */
        t->base.flags |= TF_SERVER | TF_AWAIT;
    }
    /* A server keeps g, its SNI certificates, until the handshake is
     * done, and finds it again through its SSL_CTX (tls_gen). */
    if (!server || t->ssl == NULL) {
        tether__tls_gen_unref(g);
    }
    int rv = TETHER_OK;
    if (t->ssl == NULL) {
        ERR_clear_error();
        rv = TETHER_ENOMEM;
    } else {
        /* The loop's BIO, one reference more (tls_idle.c). */
        BIO *bio = ((struct tls_loop *)(void *)idle)->bio;
        BIO_up_ref(bio);
        SSL_set_bio(t->ssl, bio, bio);
        tether__tls_bind(t);
        /* While handshaking, buffers are released after each flight, as
         * far apart as they come: a server with many handshakes under way
         * does not hold theirs at once. tls_idle.c takes over at the end. */
        SSL_set_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
        if (server) {
            tls_server_setup(t);
        } else {
            rv = tls_client_setup(t, host);
        }
    }
    if (rv != TETHER_OK) {
        tls_destroy(&t->base); /* closes fd */
        return rv;
    }
    return TETHER_OK;
}

/* ---- for tls_peer.c ----------------------------------------------------- */

int tether__tls_transport_get(const struct tether_transport *tr, struct tls_transport **out)
{
    *out = NULL;
    if (tr == NULL || tr->ops != &tls_ops) {
        return TETHER_ENOTSUP;
    }
    struct tls_transport *t = (struct tls_transport *)tr;
    if (!(t->base.flags & TF_HS_DONE)) {
        return TETHER_ENOTCONN;
    }
    *out = t;
    return TETHER_OK;
}
