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

/* tls_transport.flags */
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

struct tls_transport {
    struct tether_transport base; /* must be first */
    SSL *ssl;
    tether_tls_config *cfg;
    struct tether__tls_gen *gen; /* held during the handshake (SNI), then released */
    char *key;                   /* clients: the session cache key */
    char *err;                   /* detail of the last failure, lazily allocated */
    /* Small types below: idle servers hold many of these (72 bytes). */
    uint16_t wpend;    /* length SSL_write must be repeated with (<= 16 KiB), 0 if none */
    int16_t sys_errno; /* the last socket error seen by the BIO */
    uint16_t flags;
    int8_t deferred; /* an error (TETHER_E*) to report on the next call, after data */
    uint8_t hs_want; /* TETHER_EV_* the handshake waits for */
    uint8_t sd_want; /* TETHER_EV_* the shutdown waits for */
    uint8_t nfirst;
    uint8_t first[TLS_FIRST_MAX];
};

/* ---- transport_tls.c ---------------------------------------------------- */

/* tr as a TLS transport whose handshake has completed: TETHER_OK, or
 * TETHER_ENOTSUP (not TLS) or TETHER_ENOTCONN (the handshake is not done). */
int tether__tls_transport_get(const struct tether_transport *tr, struct tls_transport **out);

/* ---- tls_bio.c ---------------------------------------------------------- */

/* The BIO type of the socket BIO; set once by tether__tls_bio_method(). */
extern int tether__tls_bio_type;

/* The socket BIO's method, made on first use; NULL if OpenSSL is out of
 * memory. Its BIOs take the tls_transport as their data (BIO_set_data). */
BIO_METHOD *tether__tls_bio_method(void);

/* The transport of an SSL made by tether__tls_transport_new(), else NULL.
 * Found through its BIO (whose data it is) rather than through ex_data,
 * which would cost every connection an allocation. Inline: the message
 * callback calls it for every handshake record. */
static inline struct tls_transport *tether__tls_of(const SSL *ssl)
{
    BIO *b = SSL_get_rbio(ssl);
    if (b == NULL || BIO_method_type(b) != tether__tls_bio_type) {
        return NULL;
    }
    return BIO_get_data(b);
}

/* ---- tls_errors.c ------------------------------------------------------- */

/* Records the detail of a failure (tether_conn_last_error()). */
void tether__tls_set_err(struct tls_transport *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

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
