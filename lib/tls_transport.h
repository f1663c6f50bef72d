/* SPDX-License-Identifier: MIT */
/* The TLS transport's state, shared by transport_tls.c (the transport:
 * handshake, reading, writing), tls_bio.c (its socket BIO), tls_errors.c
 * (what its failures mean) and tls_peer.c (what the application learns
 * about the peer: the details behind tether_conn_tls_info(), the peer
 * certificate and the verify hook). Nothing else includes it. */
#ifndef TETHER_TLS_TRANSPORT_H
#define TETHER_TLS_TRANSPORT_H

#include "tls.h"

#define TLS_FIRST_MAX 6 /* peer bytes kept to recognise a peer that is not TLS */

/* tls_transport.base.flags */
#define TF_SERVER 0x0001u
#define TF_HS_DONE 0x0002u
#define TF_CERT_REQUESTED 0x0004u /* the server asked us for a certificate we do not have */
#define TF_VERIFY_ERR 0x0008u     /* the verify callback recorded the reason */
#define TF_RD_DRAINED 0x0010u     /* the last SSL_read needed the socket */
#define TF_RD_WANTS_W 0x0020u     /* SSL_read is blocked on a write */
#define TF_WR_WANTS_R 0x0040u     /* SSL_write is blocked on a read */
#define TF_EOF 0x0080u            /* the socket returned end of stream */
#define TF_RD_CLOSED 0x0100u      /* close_notify read behind data not yet returned */
#define TF_CR_SEEN 0x0200u        /* clients: the server sent a CertificateRequest */
#define TF_POST_HS 0x0400u        /* clients: a post-handshake message (a ticket) arrived */
#define TF_OWN_DONE 0x0800u       /* clients: our side is done; waiting for the server's word */
#define TF_HOOK_REJECT 0x1000u    /* the verify hook refused the peer */
#define TF_BUF_LISTED 0x2000u /* on the loop's list of transports holding buffers (tls_idle.c) */
#define TF_BUF_USED 0x4000u   /* busy: keeps its buffers until a sweep finds it idle */
/* The peer cannot have sent anything new yet: a handshake step just wrote
 * our flight, which it must answer, or (servers) the connection was just
 * accepted. The BIO's reads report "would block" without a recv() until
 * the step ends (tls_bio.c): the recv() would fail with EAGAIN, and the
 * step waits for readability anyway, which level-triggered epoll reports
 * at once if the bytes did come. */
#define TF_AWAIT 0x8000u

struct tls_idle;

/* The start of a loop's TLS state (struct tls_idle, tls_idle.c): its
 * socket BIO, shared by all its TLS transports, whose data this is, and
 * the transport whose SSL call is running, which the BIO and OpenSSL's
 * callbacks work for (tether__tls_bind). */
struct tls_loop {
    BIO *bio;
    struct tls_transport *cur;
};

/* Idle servers hold many of these: 32 bytes on a server, 40 on a client,
 * built in place in the connection's block (its plain transport's 16
 * bytes and a tail: TETHER__TLS_SERVER_TRANSPORT_SIZE and
 * TETHER__TLS_TRANSPORT_SIZE), not a block of their own. The
 * configuration (a reference of the transport's) is found through the
 * SSL_CTX (tether__tls_cfg), the detail of the last failure through the
 * SSL's ex_data (tether__tls_err), as only failing connections have one,
 * and a server's SNI certificates, which it holds while handshaking,
 * through the SSL_CTX too (tether__tls_ctx_gen). */
struct tls_transport {
    /* Must be first. base.last_errno: the last socket error the BIO saw;
     * base.flags: the TF_* flags. */
    struct tether_transport base;
    SSL *ssl; /* its BIO is the loop's: the way to struct tls_idle */
    /* TETHER_EV_* the handshake waits for, and once it is done (a shutdown
     * needs a finished handshake) what the shutdown waits for. */
    uint8_t want;
    /* The count of first[]; TLS_FIRST_MAX once the handshake is done, so
     * that the BIO keeps no more. */
    uint8_t nfirst;
    union {
        uint8_t first[TLS_FIRST_MAX]; /* while handshaking */
        struct {                      /* once the handshake is done */
            uint16_t wpend; /* length SSL_write must be repeated with (<= 16 KiB), 0 if none */
            /* Position in the loop's idle list while TF_BUF_LISTED (24
             * bits: a loop lists at most TLS_IDLE_MAX): tls_idle.c. */
            uint16_t idle_lo;
            uint8_t idle_hi;
            int8_t deferred; /* an error (TETHER_E*) to report on the next call, after data */
        };
    };
    /* Clients only (a server's room ends here): the session cache key. */
    char *key;
};

#define TLS_IDLE_MAX ((1u << 24) - 1) /* transports a loop's idle list holds at most */

/* The configuration t was made with: its SSL holds the SSL_CTX, whichever
 * certificate SNI chose, and each SSL_CTX of a configuration knows it. */
static inline tether_tls_config *tether__tls_cfg(const struct tls_transport *t)
{
    return tether__tls_ctx_cfg(SSL_get_SSL_CTX(t->ssl));
}

/* ---- transport_tls.c ---------------------------------------------------- */

/* tr as a TLS transport whose handshake has completed: TETHER_OK, or
 * TETHER_ENOTSUP (not TLS) or TETHER_ENOTCONN (the handshake is not done). */
int tether__tls_transport_get(const struct tether_transport *tr, struct tls_transport **out);

/* ---- tls_idle.c --------------------------------------------------------- */

/* OpenSSL's read and write buffers (some 17 KiB each) are kept while a
 * connection is busy and released once it has been idle for between
 * TETHER__TLS_IDLE_MS (tls.h) and twice that: each loop keeps a list of
 * its TLS transports that may hold buffers, and one timer sweeps it. A
 * connection counts as busy from its second read or write with data after
 * a release and keeps its buffers from the third; until then it runs with
 * SSL_MODE_RELEASE_BUFFERS, so one request and its reply now and then
 * keep no buffers in between. */

/* The idle list of the loop, made on its first TLS transport; NULL when
 * out of memory. */
struct tls_idle *tether__tls_idle_get(tether_loop *loop);

/* tether__tls_idle_touch()'s slow path: the first read or write since a
 * release lists t (on failure t stays off the list, its buffers still
 * released after every call); the next one, or the first since a sweep
 * found t busy, marks it used and keeps its buffers from then on. */
void tether__tls_idle_note(struct tls_transport *t);

/* Takes t off the list: it is being destroyed. */
void tether__tls_idle_remove(struct tls_transport *t);

/* The loop's TLS state of t, found through the loop's BIO. */
static inline struct tls_idle *tether__tls_idle_of(const struct tls_transport *t)
{
    return BIO_get_data(SSL_get_rbio(t->ssl));
}

/* Points the loop's socket BIO, which all its TLS transports share, at t:
 * before every SSL call on t that may read, write or run a callback. */
static inline void tether__tls_bind(struct tls_transport *t)
{
    ((struct tls_loop *)(void *)tether__tls_idle_of(t))->cur = t;
}

/* The handshake is done: releases the buffers it used at once when they
 * hold nothing (else SSL_MODE_RELEASE_BUFFERS, which stays, frees them
 * once read). */
void tether__tls_idle_hs_done(struct tls_transport *t);

/* After every read and write that moved data: the per-message cost of
 * idle detection, a test of two bits (and, for the first two calls after a
 * release and the first after each sweep, tether__tls_idle_note()). */
static inline void tether__tls_idle_touch(struct tls_transport *t)
{
    if (TETHER__UNLIKELY((t->base.flags & (TF_BUF_LISTED | TF_BUF_USED)) !=
                         (TF_BUF_LISTED | TF_BUF_USED))) {
        tether__tls_idle_note(t);
    }
}

/* ---- tls_bio.c ---------------------------------------------------------- */

/* The BIO type of the socket BIO; set once by tether__tls_bio_method(). */
extern int tether__tls_bio_type;

/* The socket BIO's method, made on first use; NULL if OpenSSL is out of
 * memory. Its BIOs take a struct tls_loop as their data (BIO_set_data). */
BIO_METHOD *tether__tls_bio_method(void);

/* The transport of an SSL made by tether__tls_transport_init(), else NULL;
 * valid inside the SSL calls the transport makes (callbacks), which is
 * when the loop's shared BIO points at it (tether__tls_bind). Found
 * through the BIO rather than through ex_data, which would cost every
 * connection an allocation. Inline: the message callback calls it for
 * every handshake record. */
static inline struct tls_transport *tether__tls_of(const SSL *ssl)
{
    BIO *b = SSL_get_rbio(ssl);
    if (b == NULL || BIO_method_type(b) != tether__tls_bio_type) {
        return NULL;
    }
    const struct tls_loop *l = BIO_get_data(b);
    return l != NULL ? l->cur : NULL;
}

/* ---- tls_errors.c ------------------------------------------------------- */

/* Records the detail of a failure (tether_conn_last_error()), in a buffer
 * allocated on the first and kept in the SSL's ex_data. */
void tether__tls_set_err(struct tls_transport *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The detail recorded, or NULL; and its release (before SSL_free). */
char *tether__tls_err(const struct tls_transport *t);
void tether__tls_err_free(struct tls_transport *t);

/* Classifies a failed SSL call (ssl_err from SSL_get_error()) into a
 * TETHER_E* code and records its detail. Called with the OpenSSL error
 * queue of that call; leaves it empty. */
int tether__tls_fail(struct tls_transport *t, int ssl_err);

/* After a write failed because the peer reset the connection, looks for an
 * alert it sent before closing: its code, or 0 if there is none. */
int tether__tls_probe_alert(struct tls_transport *t);

/* The verify callback of every SSL (SSL_set_verify): records the first
 * verification failure with the certificate it concerns; returns ok. */
int tether__tls_verify_cb(int ok, X509_STORE_CTX *sctx);

/* ---- tls_peer.c --------------------------------------------------------- */

/* A name in RFC 2253 form, cut to len - 1 bytes; true if it was cut. */
bool tether__tls_name_rfc2253(const X509_NAME *n, char *buf, size_t len);

/* subjectAltName entries, comma-separated ("DNS:localhost,IP:127.0.0.1,
 * URI:spiffe://example.org/x"); true if they did not all fit. */
bool tether__tls_format_sans(X509 *x, char *buf, size_t len);

/* The name a client checks the server's certificate against: the host
 * name, else the IP address it was given; "" if neither is set. */
void tether__tls_expected_name(SSL *ssl, char *buf, size_t len);

#endif /* TETHER_TLS_TRANSPORT_H */
