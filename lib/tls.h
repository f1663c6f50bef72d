/* SPDX-License-Identifier: MIT */
/* TLS internals shared by tls.c (configuration objects, SSL_CTX generations
 * and the client session cache), transport_tls.c (the transport),
 * tls_peer.c (peer details and the verify hook) and the connection code
 * that selects TLS (conn.c, conn_opts.c, conn_tls.c, listener.c,
 * reconnect.c). It knows nothing of connections. */
#ifndef TETHER_TLS_INT_H
#define TETHER_TLS_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <openssl/ssl.h>

#include "transport.h"

/* Size of one TLS record's plaintext: the write path fills records to this. */
#define TETHER__TLS_RECORD 16384u

/* One generation of SSL_CTXs: the default certificate plus the SNI
 * certificates. tether_tls_config_reload() builds a new generation and
 * swaps it in; connections keep the SSL_CTX they started with (an SSL holds
 * a reference to its SSL_CTX), and a handshake in progress keeps the whole
 * generation (for the SNI callback) until it ends. */
struct tether__tls_sni {
    SSL_CTX *ctx;
    X509 *leaf; /* the certificate whose names are matched against SNI */
};

struct tether__tls_gen {
    atomic_uint refs;
    SSL_CTX *ctx; /* the default certificate (none on a client-only config) */
    size_t nsni;
    struct tether__tls_sni *sni;
};

struct tether__tls_cache_entry; /* tls.c */

struct tether_tls_config {
    atomic_uint refs;
    pthread_mutex_t mu; /* guards gen, the SNI file lists and the session cache */
    struct tether__tls_gen *gen;

    /* Copies of the options, for rebuilding a generation. */
    char *ca_file;
    char *ca_dir;
    char *cert_file;
    char *key_file;
    char *ciphers;
    char *ciphersuites;
    char *server_name;
    char *alpn_text;     /* as given, for error messages */
    unsigned char *alpn; /* wire format: length-prefixed protocol names */
    unsigned alpn_len;
    char **sni_cert;
    char **sni_key;
    size_t nsni;
    int min_version; /* OpenSSL's TLS1_2_VERSION / TLS1_3_VERSION */
    int max_version;
    int handshake_timeout_ms;
    tether_tls_client_auth client_auth;
    bool insecure;
    bool no_resumption;
    bool no_client_cert_wait;
    tether_tls_verify_cb verify_cb; /* NULL for none */
    void *verify_ud;

    /* Client session cache, keyed by target. */
    struct tether__tls_cache_entry *cache;
    size_t ncache;
    uint64_t cache_tick;
};

/* ---- tls.c ------------------------------------------------------------- */

/* Chooses the TLS configuration of a connection from the one its options
 * name (given, may be NULL) and stores a reference to it in *out. Servers
 * require one with a certificate; clients without one get the shared
 * default client configuration. Fills err on failure (*out is then NULL). */
int tether__tls_config_select(tether_tls_config **out, tether_tls_config *given, bool server,
                              tether_error *err);

/* The configuration an SSL_CTX of a generation was made for (kept in its
 * ex_data, so that a TLS transport need not hold the pointer); NULL for
 * any other SSL_CTX. */
tether_tls_config *tether__tls_ctx_cfg(const SSL_CTX *ctx);

/* The generation an SSL_CTX of a generation belongs to (kept in its
 * ex_data, so that a server's TLS transport need not hold the pointer
 * while it handshakes); valid while a reference to it is held. */
struct tether__tls_gen *tether__tls_ctx_gen(const SSL_CTX *ctx);

/* The current generation, with a reference for the caller. */
struct tether__tls_gen *tether__tls_gen_get(tether_tls_config *cfg);
void tether__tls_gen_unref(struct tether__tls_gen *g);

/* Client session cache. get returns a session to offer (a reference owned
 * by the caller) or NULL; put takes ownership of sess. */
SSL_SESSION *tether__tls_cache_get(tether_tls_config *cfg, const char *key);
void tether__tls_cache_put(tether_tls_config *cfg, const char *key, SSL_SESSION *sess);

/* The server-side handshake deadline of accepted connections (ms, < 0 for none). */
int tether__tls_handshake_timeout_ms(const tether_tls_config *cfg);

/* Describes the newest OpenSSL error for a message: the reason string, or
 * the system error for ERR_LIB_SYS. */
void tether__tls_err_text(unsigned long e, char *buf, size_t len);

/* ---- tls_sigalgs.c ----------------------------------------------------- */

/* Notes, in ctx's ex_data, the signature algorithms its key can make
 * (for keys tls_sigalgs.c knows); called once its key is loaded. */
void tether__tls_sigalgs_note(SSL_CTX *ctx);

/* A server that asks for no client certificate: restricts the algorithms
 * ssl takes from the client's list to those its SSL_CTX's key can make
 * (the same choice, less memory per connection); nothing if the SSL_CTX
 * has no such note. Before the ClientHello is processed, and again after
 * SNI changed the SSL_CTX. */
void tether__tls_server_sigalgs(SSL *ssl);

/* ---- transport_tls.c --------------------------------------------------- */

/* Wraps a connected, non-blocking socket in TLS, for a connection of
 * loop (whose list of busy TLS transports it joins while it holds
 * OpenSSL's buffers: tls_idle.c). The transport is built in place at
 * room, which must have TETHER__TLS_TRANSPORT_SIZE bytes (transport.h;
 * TETHER__TLS_SERVER_TRANSPORT_SIZE on a server) and stay allocated
 * until its destroy(), which frees nothing of it.
 * host is the name the client dialled (for SNI and verification), NULL
 * on servers. Takes ownership of fd (closes it on failure too, and
 * leaves nothing in room to destroy). */
int tether__tls_transport_init(struct tether_transport *room, tether_loop *loop,
                               tether_tls_config *cfg, int fd, const char *host, bool server);

/* ---- tls_idle.c -------------------------------------------------------- */

/* OpenSSL's read and write buffers are released once a connection has
 * made no read or write for between this and twice this many
 * milliseconds: the period of the loop's sweep. */
#define TETHER__TLS_IDLE_MS 1000u

/* For tests: tr is a TLS transport past its handshake that may hold
 * OpenSSL's read and write buffers (it is on its loop's idle list, busy or
 * on probation after its first read or write); false once
 * SSL_free_buffers() released them (after TETHER__TLS_IDLE_MS to twice
 * that without I/O), until the next read or write. */
bool tether__tls_holds_buffers(const struct tether_transport *tr);

/* For tests: tr is a TLS transport past its handshake that keeps its
 * buffers between calls (busy: SSL_MODE_RELEASE_BUFFERS cleared). */
bool tether__tls_keeps_buffers(const struct tether_transport *tr);

/* Callbacks installed on every SSL_CTX by tls.c, implemented next to the
 * transport they report to. */
int tether__tls_new_session_cb(SSL *ssl, SSL_SESSION *sess);
int tether__tls_client_cert_cb(SSL *ssl, X509 **x509, EVP_PKEY **pkey);
int tether__tls_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                               const unsigned char *in, unsigned int inlen, void *arg);
int tether__tls_servername_cb(SSL *ssl, int *alert, void *arg);

/* ---- tls_peer.c -------------------------------------------------------- */

/* What the TLS transport tr negotiated, for tether_conn_tls_info(): fills
 * the fields of *out after size (the caller zeroes it and sets size).
 * Returns TETHER_ENOTSUP when tr is not a TLS transport and
 * TETHER_ENOTCONN while its handshake has not finished. */
int tether__tls_transport_info(const struct tether_transport *tr, tether_tls_info *out);

/* The certificate the peer of tr presented, as for
 * tether_conn_tls_peer_cert() (*out_len 0 when there is none); the same
 * errors as tether__tls_transport_info(). */
int tether__tls_transport_peer_cert(const struct tether_transport *tr,
                                    tether_tls_cert_format format, void *buf, size_t cap,
                                    size_t *out_len);

/* The SSL of tr for <tether/openssl.h>; NULL when tether__tls_transport_info()
 * would fail. */
SSL *tether__tls_transport_ssl(const struct tether_transport *tr);

/* The certificate verify callback of configurations with a verify hook.
 * Runs OpenSSL's verification, then the hook, and turns a refusal into the
 * alert the hook chose. */
int tether__tls_cert_verify_cb(X509_STORE_CTX *sctx, void *arg);

#endif /* TETHER_TLS_INT_H */
